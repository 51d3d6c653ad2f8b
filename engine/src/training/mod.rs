//! Training adapters on Burn's autodiff: the frozen model runs on an autodiff device, only
//! the adapter's tensors require gradients, and the optimiser ([`adamw`]) updates them with
//! PyTorch's exact AdamW semantics so a step matches diffusers + PEFT + `torch.optim.AdamW`.
//!
//! - [`lora`]: LoRA on the UNet's attention projections (PEFT initialisation, rank/alpha),
//!   epsilon-prediction MSE with optional min-SNR-γ weighting, gradient clipping by global norm.
//! - [`lr_schedule`]: constant, constant with warmup, cosine with warmup, linear.
//! - [`adamw`]: the optimiser and its state (saved in checkpoints).
//! - [`base`] and [`full`]: training a whole model (every weight of the VAE, UNet and text
//!   encoder, from scratch or from a model) — how `kiln-tiny` is made.

pub mod adamw;
pub mod base;
pub mod dataset;
pub mod full;
pub mod lora;
pub mod lr_schedule;
pub mod textual_inversion;
pub mod trainer;

use burn::tensor::{Tensor, TensorData};

use crate::error::{Error, Result};
use crate::models::unet_2d_condition::UNet2DConditionModel;
use crate::training::adamw::{AdamWConfig, Moments};

/// A tensor's values on the host.
pub(crate) fn host<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| Error::InvalidRequest(format!("reading a tensor: {e:?}")))
}

/// The ε-prediction training loss of `unet` on a batch: `latents` and `noise` `[B, C, h, w]`
/// noised to `timesteps`, text `context` `[B, 77, D]`; the per-item MSE, min-SNR-γ weighted
/// when `snr_gamma` is set, averaged over the batch. Returns the loss to differentiate and its
/// value; a NaN or infinite value is [`Error::NonFinite`].
pub fn denoising_loss(
    unet: &UNet2DConditionModel,
    context: &Tensor<3>,
    latents: Tensor<4>,
    noise: Tensor<4>,
    timesteps: &[usize],
    alphas_cumprod: &[f64],
    snr_gamma: Option<f64>,
) -> Result<(Tensor<1>, f64)> {
    let b = timesteps.len();
    let device = noise.device();
    let noisy = add_noise(latents, noise.clone(), alphas_cumprod, timesteps);
    let ts: Vec<f32> = timesteps.iter().map(|t| *t as f32).collect();
    let pred = unet.forward(noisy, &ts, context);
    let per_item = (pred - noise)
        .square()
        .reshape([b as i32, -1])
        .mean_dim(1)
        .reshape([b]);
    let per_item = match snr_gamma {
        Some(g) => {
            let w: Vec<f32> = min_snr_weights(alphas_cumprod, timesteps, g)
                .iter()
                .map(|v| *v as f32)
                .collect();
            per_item * Tensor::<1>::from_data(TensorData::new(w, [b]), &device)
        }
        None => per_item,
    };
    let loss = per_item.mean();
    let value = f64::from(
        host(loss.clone().inner())?
            .first()
            .copied()
            .unwrap_or(f32::NAN),
    );
    if !value.is_finite() {
        return Err(Error::NonFinite("the training loss".into()));
    }
    Ok((loss, value))
}

/// The global L2 norm of `grads` (as `torch.nn.utils.clip_grad_norm_` measures it).
pub fn global_norm(grads: &[Tensor<2>]) -> Result<f64> {
    let mut sq = 0.0f64;
    for g in grads {
        sq += host(g.clone().square().sum())?
            .iter()
            .map(|v| f64::from(*v))
            .sum::<f64>();
    }
    Ok(sq.sqrt())
}

/// One optimiser step: clips `grads` by their global norm to `max_grad_norm` (scale
/// max/(norm + 1e-6) when above, as torch) and applies AdamW (step `t`, rate `lr`) to each
/// (parameter, moments) in order. Returns the norm before clipping; a NaN or infinite norm is
/// [`Error::NonFinite`] and nothing is updated.
pub fn clipped_update<'a>(
    params: impl IntoIterator<Item = (&'a mut Tensor<2>, &'a mut Moments<2>)>,
    grads: Vec<Tensor<2>>,
    adamw: &AdamWConfig,
    max_grad_norm: Option<f64>,
    t: usize,
    lr: f64,
) -> Result<f64> {
    let norm = global_norm(&grads)?;
    if !norm.is_finite() {
        return Err(Error::NonFinite("the gradients".into()));
    }
    let clip = match max_grad_norm {
        Some(max) if norm > max => max / (norm + 1e-6),
        _ => 1.0,
    };
    for ((param, moments), g) in params.into_iter().zip(grads) {
        *param = adamw.update(param.clone(), g * clip, moments, t, lr);
    }
    Ok(norm)
}

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
