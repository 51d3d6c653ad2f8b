//! Training adapters on Burn's autodiff: the frozen model runs on an autodiff device, only
//! the adapter's tensors require gradients, and the optimiser ([`adamw`]) updates them with
//! PyTorch's exact AdamW semantics so a step matches diffusers + PEFT + `torch.optim.AdamW`.
//!
//! - [`lora`]: LoRA on the UNet's attention projections (PEFT initialisation, rank/alpha),
//!   epsilon-prediction MSE with optional min-SNR-γ weighting, gradient clipping by global norm.
//! - [`lr_schedule`]: constant, constant with warmup, cosine with warmup, linear.
//! - [`adamw`]: the optimiser and its state (saved in checkpoints).

pub mod adamw;
pub mod dataset;
pub mod lora;
pub mod lr_schedule;
pub mod textual_inversion;
pub mod trainer;

use burn::tensor::Tensor;

/// √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε with one timestep per batch item: `latents`, `noise` `[B, C, h, w]`.
pub fn add_noise(
    latents: Tensor<4>,
    noise: Tensor<4>,
    alphas_cumprod: &[f64],
    timesteps: &[usize],
) -> Tensor<4> {
    let [b, _, _, _] = latents.dims();
    let device = latents.device();
    let column = |f: &dyn Fn(f64) -> f64| -> Tensor<4> {
        let v: Vec<f32> = timesteps
            .iter()
            .map(|t| f(alphas_cumprod[*t]) as f32)
            .collect();
        Tensor::<1>::from_data(burn::tensor::TensorData::new(v, [b]), &device).reshape([b, 1, 1, 1])
    };
    latents * column(&|a| a.sqrt()) + noise * column(&|a| (1.0 - a).sqrt())
}

/// min-SNR-γ loss weights for ε-prediction (Hang et al. 2023, as diffusers'
/// `compute_snr`): `min(SNR_t, γ) / SNR_t` with `SNR_t = ᾱ_t / (1 − ᾱ_t)`.
pub fn min_snr_weights(alphas_cumprod: &[f64], timesteps: &[usize], gamma: f64) -> Vec<f64> {
    timesteps
        .iter()
        .map(|t| {
            let a = alphas_cumprod[*t];
            let snr = a / (1.0 - a);
            snr.min(gamma) / snr
        })
        .collect()
}
