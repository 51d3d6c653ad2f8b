//! Diffusers' `DDPMScheduler` (ancestral sampling with the "fixed_small" variance), with the
//! config's spacing (class default "leading"). Stochastic: noise comes from the explicit
//! seeded [`Noise`] streams.

use burn::tensor::Tensor;

use crate::error::Result;
use crate::schedulers::{
    Noise, PredictionType, Scheduler, SchedulerConfig, TimestepSpacing, add_noise_vp, predict_x0,
    spaced_timesteps,
};

/// DDPM.
#[derive(Debug, Clone)]
pub struct DdpmScheduler {
    alphas_cumprod: Vec<f64>,
    timesteps: Vec<i64>,
    timesteps_f: Vec<f64>,
    step_ratio: i64,
    clip: Option<f64>,
    prediction_type: PredictionType,
}

impl DdpmScheduler {
    /// Sets up `steps` steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        config.validate()?;
        let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Leading);
        let timesteps = spaced_timesteps(config, spacing, steps)?;
        Ok(DdpmScheduler {
            alphas_cumprod: config.alphas_cumprod()?,
            timesteps_f: timesteps.iter().map(|t| *t as f64).collect(),
            timesteps,
            step_ratio: (config.num_train_timesteps / steps) as i64,
            clip: config.clip_sample.then_some(config.clip_sample_range),
            prediction_type: config.prediction_type,
        })
    }
}

impl Scheduler for DdpmScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps_f
    }

    fn add_noise(&self, original: Tensor<4>, noise: Tensor<4>, i: usize) -> Tensor<4> {
        add_noise_vp(
            original,
            noise,
            self.alphas_cumprod[self.timesteps[i] as usize],
        )
    }

    fn step(
        &mut self,
        model_output: Tensor<4>,
        i: usize,
        sample: Tensor<4>,
        noise: &mut Noise,
    ) -> Tensor<4> {
        let t = self.timesteps[i];
        let prev_t = t - self.step_ratio;
        let a_t = self.alphas_cumprod[(t as usize).min(self.alphas_cumprod.len() - 1)];
        let a_prev = if prev_t >= 0 {
            self.alphas_cumprod[prev_t as usize]
        } else {
            1.0
        };
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let current_alpha = a_t / a_prev;
        let current_beta = 1.0 - current_alpha;
        let pred_x0 = predict_x0(self.prediction_type, &sample, model_output, a_t);
        let pred_x0 = match self.clip {
            Some(r) => pred_x0.clamp(-r, r),
            None => pred_x0,
        };
        let mean = pred_x0 * (a_prev.sqrt() * current_beta / b_t)
            + sample * (current_alpha.sqrt() * b_prev / b_t);
        if t > 0 {
            let std = (b_prev / b_t * current_beta).max(1e-20).sqrt();
            let shape = mean.dims();
            let device = mean.device();
            mean + noise.randn(shape, &device) * std
        } else {
            mean
        }
    }
}
