//! Training adapters on Burn's autodiff: the frozen model runs on an autodiff device, only
//! the adapter's tensors require gradients, and the optimiser ([`adamw`]) updates them with
//! PyTorch's exact AdamW semantics so a step matches diffusers + PEFT + `torch.optim.AdamW`.
//!
//! - [`lora`]: LoRA on the UNet's attention projections (PEFT initialisation, rank/alpha),
//!   epsilon-prediction MSE with optional min-SNR-γ weighting, gradient clipping by global norm.
//! - [`lr_schedule`]: constant, constant with warmup, cosine with warmup, linear.
//! - [`adamw`]: the optimiser and its state (saved in checkpoints).
//! - [`trainer`]: a LoRA or embedding run (dataset, plan, steps, checkpoints, the file);
//!   [`run`]: the loop control every run shares; [`noise`]: the noise a step adds;
//!   [`suggest`]: settings that fit the model and the dataset, with the reasoning.
//! - [`base`] and [`full`]: training a whole model (every weight of the VAE, UNet and text
//!   encoder, from scratch or from a model) — how `kiln-tiny` is made.

pub mod adamw;
pub mod base;
pub mod dataset;
pub mod full;
pub mod lora;
pub mod lr_schedule;
pub mod noise;
pub mod run;
pub mod suggest;
pub mod textual_inversion;
pub mod trainer;

use burn::tensor::{Tensor, TensorData};

use crate::error::{Error, Result};
use crate::models::unet_2d_condition::UNet2DConditionModel;
use crate::tensors::host;
use crate::training::adamw::{AdamWConfig, Moments};

/// The ε-prediction training loss of `unet` on a batch: `latents` and `noise` `[B, C, h, w]`
/// noised to `timesteps`, text `context` `[B, L, D]` (L = 77 for SD 1.x); the per-item MSE,
/// weighted per timestep by `weighting` ([`SnrWeighting`]), averaged over the batch. Returns
/// the loss to differentiate and its value; a NaN or infinite value is [`Error::NonFinite`].
/// A half-precision UNet (a frozen base in f16) gets its input in its own type and its
/// prediction is compared in f32, so the loss and every gradient stay f32.
pub fn denoising_loss(
    unet: &UNet2DConditionModel,
    context: &Tensor<3>,
    latents: Tensor<4>,
    noise: Tensor<4>,
    timesteps: &[usize],
    alphas_cumprod: &[f64],
    weighting: SnrWeighting,
) -> Result<(Tensor<1>, f64)> {
    let b = timesteps.len();
    let device = noise.device();
    let noisy = add_noise(latents, noise.clone(), alphas_cumprod, timesteps);
    let ts: Vec<f32> = timesteps.iter().map(|t| *t as f32).collect();
    let dtype = unet.dtype();
    let pred = unet
        .forward(noisy.cast(dtype), &ts, &context.clone().cast(dtype))
        .cast(burn::tensor::FloatDType::F32);
    let per_item = (pred - noise)
        .square()
        .reshape([b as i32, -1])
        .mean_dim(1)
        .reshape([b]);
    let per_item = match weighting.weights(alphas_cumprod, timesteps) {
        Some(w) => {
            let w: Vec<f32> = w.iter().map(|v| *v as f32).collect();
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
        return Err(Error::NonFinite(if dtype == burn::tensor::DType::F32 {
            "the training loss".into()
        } else {
            format!(
                "the training loss (the frozen model runs in {dtype:?}; train with --precision f32 \
                 if this repeats)"
            )
        }));
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

/// How [`denoising_loss`] weights each timestep's ε-prediction error. In terms of the error of
/// the predicted x₀ (ε-MSE = SNR × x₀-MSE, SNR = ᾱ/(1 − ᾱ)), plain ε-MSE weights a timestep by
/// its SNR; min-SNR-γ caps that at γ so the near-clean steps do not dominate; the floor keeps
/// the noisy steps — where the picture's layout is decided, and only the caption can say
/// where things go — from counting for almost nothing (SNR 0.015 at t = 700 on DDPM's linear
/// schedule): with floor 1 every step noisier than SNR 1 weighs as much as SNR 1, like
/// v-prediction's loss (Salimans & Ho 2022's "truncated SNR" weighting).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SnrWeighting {
    /// min-SNR-γ: the cap of the x₀-space weight (None = no cap).
    pub gamma: Option<f64>,
    /// The floor of the x₀-space weight (0 = none).
    pub floor: f64,
}

impl From<Option<f64>> for SnrWeighting {
    /// min-SNR-γ alone (`None`: the plain MSE).
    fn from(gamma: Option<f64>) -> Self {
        SnrWeighting { gamma, floor: 0.0 }
    }
}

impl SnrWeighting {
    /// The ε-loss weight of each of `timesteps`, `max(min(SNR, γ), floor) / SNR`; None when
    /// every weight is 1 (the plain MSE).
    pub fn weights(&self, alphas_cumprod: &[f64], timesteps: &[usize]) -> Option<Vec<f64>> {
        if self.floor <= 0.0 {
            return self
                .gamma
                .map(|g| min_snr_weights(alphas_cumprod, timesteps, g));
        }
        Some(
            timesteps
                .iter()
                .map(|t| {
                    let a = alphas_cumprod[*t];
                    let snr = a / (1.0 - a);
                    snr.min(self.gamma.unwrap_or(f64::INFINITY)).max(self.floor) / snr
                })
                .collect(),
        )
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedulers::SchedulerConfig;

    /// On DDPM's linear schedule: without a floor the weights are min-SNR-γ's; with floor 1
    /// a step noisier than SNR 1 weighs 1/SNR (its x₀ error counts fully), a step between
    /// SNR 1 and γ weighs 1, and a cleaner one γ/SNR as before.
    #[test]
    fn the_snr_floor_lifts_only_the_noisy_steps() {
        let mut s = SchedulerConfig::sd15();
        (s.beta_schedule, s.beta_start, s.beta_end) =
            (crate::schedulers::BetaSchedule::Linear, 1e-4, 0.02);
        let ab = s.alphas_cumprod().unwrap();
        let snr = |t: usize| ab[t] / (1.0 - ab[t]);
        let ts = [999, 700, 150, 5];
        assert!(snr(999) < 1e-4 && snr(700) < 0.02 && (1.0..5.0).contains(&snr(150)));
        assert!(snr(5) > 5.0);
        let plain = SnrWeighting::from(Some(5.0)).weights(&ab, &ts).unwrap();
        assert_eq!(plain, min_snr_weights(&ab, &ts, 5.0));
        assert_eq!(plain[..3], [1.0, 1.0, 1.0]);
        assert_eq!(SnrWeighting::from(None).weights(&ab, &ts), None);
        let floored = SnrWeighting {
            gamma: Some(5.0),
            floor: 1.0,
        }
        .weights(&ab, &ts)
        .unwrap();
        assert!((floored[0] - 1.0 / snr(999)).abs() < 1e-9 * floored[0]);
        assert!(floored[0] > 1e4, "{floored:?}");
        assert!((floored[1] - 1.0 / snr(700)).abs() < 1e-9 * floored[1]);
        assert_eq!(floored[2], 1.0);
        assert_eq!(floored[3], plain[3]);
    }
}
