//! Diffusers' `DDIMScheduler` (deterministic for η = 0).

use burn::tensor::Tensor;

use crate::error::{Error, Result};
use crate::schedulers::{
    Noise, PredictionType, Scheduler, SchedulerConfig, TimestepSpacing, add_noise_vp, predict_x0,
    spaced_timesteps,
};

/// DDIM with η (0 = deterministic DDIM, 1 = DDPM-like variance).
#[derive(Debug, Clone)]
pub struct DdimScheduler {
    config: SchedulerConfig,
    alphas_cumprod: Vec<f64>,
    final_alpha_cumprod: f64,
    timesteps: Vec<i64>,
    timesteps_f: Vec<f64>,
    step_ratio: i64,
    eta: f64,
}

impl DdimScheduler {
    /// Sets up `steps` inference steps (diffusers' `set_timesteps`). DDIM's default spacing
    /// is "leading".
    pub fn new(config: &SchedulerConfig, steps: usize, eta: f64) -> Result<Self> {
        config.validate()?;
        if !(0.0..=1.0).contains(&eta) {
            return Err(Error::InvalidRequest(format!(
                "eta must be between 0 and 1, got {eta}"
            )));
        }
        let alphas_cumprod = config.alphas_cumprod()?;
        let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Leading);
        let timesteps = spaced_timesteps(config, spacing, steps)?;
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        };
        Ok(DdimScheduler {
            config: config.clone(),
            final_alpha_cumprod,
            timesteps_f: timesteps.iter().map(|t| *t as f64).collect(),
            timesteps,
            step_ratio: (config.num_train_timesteps / steps) as i64,
            alphas_cumprod,
            eta,
        })
    }

    fn alpha(&self, t: i64) -> f64 {
        if t >= 0 {
            self.alphas_cumprod[(t as usize).min(self.alphas_cumprod.len() - 1)]
        } else {
            self.final_alpha_cumprod
        }
    }
}

impl Scheduler for DdimScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps_f
    }

    fn add_noise(&self, original: Tensor<4>, noise: Tensor<4>, i: usize) -> Tensor<4> {
        add_noise_vp(original, noise, self.alpha(self.timesteps[i]))
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
        let a_t = self.alpha(t);
        let a_prev = self.alpha(prev_t);
        let b_t = 1.0 - a_t;
        let kind = self.config.prediction_type;
        let pred_x0 = predict_x0(kind, &sample, model_output.clone(), a_t);
        let pred_eps = match kind {
            PredictionType::VPrediction => model_output * a_t.sqrt() + sample * b_t.sqrt(),
            PredictionType::Sample => (sample - pred_x0.clone() * a_t.sqrt()) / b_t.sqrt(),
            PredictionType::Epsilon => model_output,
        };
        let pred_x0 = if self.config.clip_sample {
            let r = self.config.clip_sample_range;
            pred_x0.clamp(-r, r)
        } else {
            pred_x0
        };
        let variance = ((1.0 - a_prev) / b_t) * (1.0 - a_t / a_prev);
        let std = self.eta * variance.max(0.0).sqrt();
        let direction = pred_eps * (1.0 - a_prev - std * std).max(0.0).sqrt();
        let prev = pred_x0 * a_prev.sqrt() + direction;
        if self.eta > 0.0 {
            let shape = prev.dims();
            let device = prev.device();
            prev + noise.randn(shape, &device) * std
        } else {
            prev
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_spacing_matches_diffusers() {
        let s = DdimScheduler::new(&SchedulerConfig::sd15(), 8, 0.0).expect("scheduler");
        assert_eq!(s.timesteps, vec![876, 751, 626, 501, 376, 251, 126, 1]);
    }

    #[test]
    fn sd15_alphas_cumprod_endpoints() {
        let a = SchedulerConfig::sd15().alphas_cumprod().expect("schedule");
        // Values from diffusers' DDIMScheduler (float32): alphas_cumprod[0], [999].
        assert!((a[0] - 0.999_149_98).abs() < 1e-7, "{}", a[0]);
        assert!((a[999] - 0.004_660_095).abs() < 1e-7, "{}", a[999]);
    }
}
