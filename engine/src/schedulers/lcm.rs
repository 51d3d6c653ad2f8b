//! Diffusers' `LCMScheduler` (latent consistency models): timesteps picked evenly from a
//! skipping schedule of `original_inference_steps` (50) points, each step maps the sample to
//! the boundary-condition denoised estimate and, except on the last step, re-noises it to the
//! next timestep with seeded noise. Meant for LCM-distilled models or LCM LoRAs (few steps,
//! CFG 1–2); on a plain model it runs but blurs.

use burn::tensor::Tensor;

use crate::error::{Error, Result};
use crate::schedulers::{Noise, Scheduler, SchedulerConfig, add_noise_vp, predict_x0};

/// Points of the original LCM distillation schedule (diffusers' default).
pub const ORIGINAL_INFERENCE_STEPS: usize = 50;
/// Scale of the timestep in the boundary-condition scalings (diffusers' default).
const TIMESTEP_SCALING: f64 = 10.0;
/// σ_data of the consistency-model scalings.
const SIGMA_DATA: f64 = 0.5;

/// LCM.
#[derive(Debug, Clone)]
pub struct LcmScheduler {
    config: SchedulerConfig,
    alphas_cumprod: Vec<f64>,
    final_alpha_cumprod: f64,
    timesteps: Vec<f64>,
}

impl LcmScheduler {
    /// Sets up `steps` steps (1 ≤ steps ≤ 50).
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        config.validate()?;
        let n = config.num_train_timesteps;
        let original = ORIGINAL_INFERENCE_STEPS.min(n);
        if steps == 0 || steps > original {
            return Err(Error::InvalidRequest(format!(
                "LCM takes between 1 and {original} steps, got {steps}"
            )));
        }
        let k = n / original;
        // [k−1, 2k−1, …, n−1] reversed, then `steps` evenly spaced indices (floored).
        let origin: Vec<usize> = (1..=original).rev().map(|i| i * k - 1).collect();
        let timesteps = (0..steps)
            .map(|j| origin[(j as f64 * original as f64 / steps as f64).floor() as usize] as f64)
            .collect();
        let alphas_cumprod = config.alphas_cumprod()?;
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        };
        Ok(LcmScheduler {
            config: config.clone(),
            alphas_cumprod,
            final_alpha_cumprod,
            timesteps,
        })
    }
}

impl Scheduler for LcmScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
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
        let a_t = self.alphas_cumprod[t as usize];
        let scaled = t * TIMESTEP_SCALING;
        let c_skip = SIGMA_DATA * SIGMA_DATA / (scaled * scaled + SIGMA_DATA * SIGMA_DATA);
        let c_out = scaled / (scaled * scaled + SIGMA_DATA * SIGMA_DATA).sqrt();
        let mut x0 = predict_x0(self.config.prediction_type, &sample, model_output, a_t);
        if self.config.clip_sample {
            let r = self.config.clip_sample_range;
            x0 = x0.clamp(-r, r);
        }
        let denoised = x0 * c_out + sample * c_skip;
        if let Some(prev) = self.timesteps.get(i + 1) {
            let a_prev = self
                .alphas_cumprod
                .get(*prev as usize)
                .copied()
                .unwrap_or(self.final_alpha_cumprod);
            let z = noise.randn(denoised.dims(), &denoised.device());
            denoised * a_prev.sqrt() + z * (1.0 - a_prev).sqrt()
        } else {
            denoised
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timesteps_match_diffusers() {
        // diffusers LCMScheduler().set_timesteps(4) → [999, 759, 499, 259]; (8) → [999, 879, …].
        let s = LcmScheduler::new(&SchedulerConfig::sd15(), 4).expect("scheduler");
        assert_eq!(s.timesteps, vec![999.0, 759.0, 499.0, 259.0]);
        let s = LcmScheduler::new(&SchedulerConfig::sd15(), 8).expect("scheduler");
        assert_eq!(
            s.timesteps,
            vec![999.0, 879.0, 759.0, 639.0, 499.0, 379.0, 259.0, 139.0]
        );
    }
}
