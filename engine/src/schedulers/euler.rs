//! Diffusers' `EulerDiscreteScheduler` (deterministic: `s_churn = 0`), and the
//! k-diffusion-style discretisation ([`DiscreteSigmas`]) it shares with Euler a, Heun and LMS:
//! the config's spacing (class default "linspace") or Karras/exponential sigmas. Timesteps
//! passed to the UNet are fractional for "linspace" and the sigma schedules, as in diffusers.

use burn::tensor::Tensor;

use crate::error::Result;
use crate::schedulers::{
    Noise, Schedule, Scheduler, SchedulerConfig, TimestepSpacing, interp, sigma_to_t,
    spaced_timesteps, train_sigmas,
};

/// Timesteps, their sigmas and the input scaling of the sigma-parameterised samplers.
#[derive(Debug, Clone)]
pub struct DiscreteSigmas {
    /// One (possibly fractional) timestep per UNet call.
    pub timesteps: Vec<f64>,
    /// One sigma per timestep, then 0.
    pub sigmas: Vec<f64>,
    /// Factor for the initial noise.
    pub init_noise_sigma: f64,
}

impl DiscreteSigmas {
    /// `steps` timesteps and sigmas (diffusers' `set_timesteps` of the Euler family).
    pub fn new(config: &SchedulerConfig, steps: usize, schedule: Schedule) -> Result<Self> {
        config.validate()?;
        let train = train_sigmas(&config.alphas_cumprod()?);
        let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
        let n = config.num_train_timesteps;
        let mut timesteps: Vec<f64> = if spacing == TimestepSpacing::Linspace {
            // Not rounded for this family.
            (0..steps)
                .rev()
                .map(|i| i as f64 * (n - 1) as f64 / (steps.max(2) - 1) as f64)
                .collect()
        } else {
            spaced_timesteps(config, spacing, steps)?
                .into_iter()
                .map(|t| t as f64)
                .collect()
        };
        let mut sigmas: Vec<f64> = timesteps.iter().map(|t| interp(*t, &train)).collect();
        if let Some(s) = schedule.sigmas(sigmas[sigmas.len() - 1], sigmas[0], steps) {
            sigmas = s;
            let log_sigmas: Vec<f64> = train.iter().map(|s| s.ln()).collect();
            timesteps = sigmas.iter().map(|s| sigma_to_t(*s, &log_sigmas)).collect();
        }
        let max_sigma = sigmas.iter().cloned().fold(0.0, f64::max);
        let init_noise_sigma = if matches!(
            spacing,
            TimestepSpacing::Linspace | TimestepSpacing::Trailing
        ) {
            max_sigma
        } else {
            (max_sigma * max_sigma + 1.0).sqrt()
        };
        sigmas.push(0.0);
        Ok(DiscreteSigmas {
            timesteps,
            sigmas,
            init_noise_sigma,
        })
    }

    /// The UNet input at call `i`: `sample / √(σᵢ² + 1)`.
    pub fn scale_model_input(&self, sample: Tensor<4>, i: usize) -> Tensor<4> {
        let s = self.sigmas[i];
        sample / (s * s + 1.0).sqrt()
    }

    /// `original + σᵢ·noise` (variance-exploding form).
    pub fn add_noise(&self, original: Tensor<4>, noise: Tensor<4>, i: usize) -> Tensor<4> {
        original + noise * self.sigmas[i]
    }
}

/// The [`Scheduler`] methods of a sampler built on [`DiscreteSigmas`] (in a field `d`):
/// timesteps, `init_noise_sigma`, input scaling and `add_noise` all come from it.
macro_rules! discrete_sigmas_methods {
    () => {
        fn timesteps(&self) -> &[f64] {
            &self.d.timesteps
        }

        fn init_noise_sigma(&self) -> f64 {
            self.d.init_noise_sigma
        }

        fn scale_model_input(&self, sample: Tensor<4>, i: usize) -> Tensor<4> {
            self.d.scale_model_input(sample, i)
        }

        fn add_noise(&self, original: Tensor<4>, noise: Tensor<4>, i: usize) -> Tensor<4> {
            self.d.add_noise(original, noise, i)
        }
    };
}
pub(crate) use discrete_sigmas_methods;

/// `dx/dσ = (x − x̂₀) / σ` for an ε-prediction, computed as diffusers does (through x̂₀).
pub fn derivative(sample: &Tensor<4>, eps: Tensor<4>, sigma: f64) -> Tensor<4> {
    let pred_x0 = sample.clone() - eps * sigma;
    (sample.clone() - pred_x0) / sigma
}

/// Euler (k-diffusion's "Euler").
#[derive(Debug, Clone)]
pub struct EulerScheduler {
    d: DiscreteSigmas,
}

impl EulerScheduler {
    /// Sets up `steps` steps (diffusers' `set_timesteps`).
    pub fn new(config: &SchedulerConfig, steps: usize, schedule: Schedule) -> Result<Self> {
        Ok(EulerScheduler {
            d: DiscreteSigmas::new(config, steps, schedule)?,
        })
    }
}

impl Scheduler for EulerScheduler {
    discrete_sigmas_methods!();

    fn step(
        &mut self,
        model_output: Tensor<4>,
        i: usize,
        sample: Tensor<4>,
        _noise: &mut Noise,
    ) -> Tensor<4> {
        let sigma = self.d.sigmas[i];
        let derivative = derivative(&sample, model_output, sigma);
        sample + derivative * (self.d.sigmas[i + 1] - sigma)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_default_spacing_is_linspace_as_diffusers() {
        // SD 1.5's config has no timestep_spacing; diffusers' EulerDiscreteScheduler then uses
        // "linspace": [999, 856.2857, …, 0], init_noise_sigma 14.6146.
        let d =
            DiscreteSigmas::new(&SchedulerConfig::sd15(), 8, Schedule::Default).expect("sigmas");
        let want = [
            999.0, 856.2857, 713.5714, 570.8571, 428.1429, 285.4286, 142.7143, 0.0,
        ];
        assert!(
            d.timesteps
                .iter()
                .zip(want)
                .all(|(a, b)| (a - b).abs() < 1e-4),
            "{:?}",
            d.timesteps
        );
        assert!(
            (d.init_noise_sigma - 14.614_646_9).abs() < 1e-5,
            "{}",
            d.init_noise_sigma
        );
    }
}
