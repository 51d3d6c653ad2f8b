//! Diffusers' `EulerDiscreteScheduler` (deterministic: `s_churn = 0`), with the config's
//! spacing (class default "linspace") or Karras sigmas. Timesteps passed to the UNet are
//! fractional for "linspace" and Karras, as in diffusers.

use burn::tensor::Tensor;

use crate::error::Result;
use crate::schedulers::{Noise, Schedule, Scheduler, SchedulerConfig, interp, sigma_to_t, spaced_timesteps, train_sigmas};

/// Euler (k-diffusion's "Euler").
#[derive(Debug, Clone)]
pub struct EulerScheduler {
    timesteps: Vec<f64>,
    /// One sigma per step, then 0.
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
}

/// The k-diffusion-style discretisation shared by Euler, Euler a and Heun: timesteps (the
/// config's spacing, class default "linspace", unrounded), their sigmas (or Karras sigmas and
/// the matching fractional timesteps), and `init_noise_sigma`. The trailing 0 is not included.
pub fn discrete_sigmas(config: &SchedulerConfig, steps: usize, schedule: Schedule) -> Result<(Vec<f64>, Vec<f64>, f64)> {
    config.validate()?;
        let train = train_sigmas(&config.alphas_cumprod()?);
        let spacing = config.timestep_spacing.clone().unwrap_or_else(|| "linspace".into());
        let n = config.num_train_timesteps;
        let mut timesteps: Vec<f64> = if spacing == "linspace" {
            // Not rounded for Euler.
            (0..steps).rev().map(|i| i as f64 * (n - 1) as f64 / (steps.max(2) - 1) as f64).collect()
        } else {
            spaced_timesteps(config, &spacing, steps)?.into_iter().map(|t| t as f64).collect()
        };
        let mut sigmas: Vec<f64> = timesteps.iter().map(|t| interp(*t, &train)).collect();
        if let Some(s) = schedule.sigmas(sigmas[sigmas.len() - 1], sigmas[0], steps) {
            sigmas = s;
            let log_sigmas: Vec<f64> = train.iter().map(|s| s.ln()).collect();
            timesteps = sigmas.iter().map(|s| sigma_to_t(*s, &log_sigmas)).collect();
        }
        let max_sigma = sigmas.iter().cloned().fold(0.0, f64::max);
        let init_noise_sigma = if spacing == "linspace" || spacing == "trailing" { max_sigma } else { (max_sigma * max_sigma + 1.0).sqrt() };
        Ok((timesteps, sigmas, init_noise_sigma))
}

impl EulerScheduler {
    /// Sets up `steps` steps (diffusers' `set_timesteps`).
    pub fn new(config: &SchedulerConfig, steps: usize, schedule: Schedule) -> Result<Self> {
        let (timesteps, mut sigmas, init_noise_sigma) = discrete_sigmas(config, steps, schedule)?;
        sigmas.push(0.0);
        Ok(EulerScheduler { timesteps, sigmas, init_noise_sigma })
    }
}

impl Scheduler for EulerScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    fn scale_model_input(&self, sample: Tensor<4>, i: usize) -> Tensor<4> {
        let s = self.sigmas[i];
        sample / (s * s + 1.0).sqrt()
    }

    fn step(&mut self, model_output: Tensor<4>, i: usize, sample: Tensor<4>, _noise: &mut Noise) -> Tensor<4> {
        let sigma = self.sigmas[i];
        let pred_x0 = sample.clone() - model_output * sigma;
        let derivative = (sample.clone() - pred_x0) / sigma;
        sample + derivative * (self.sigmas[i + 1] - sigma)
    }
}
