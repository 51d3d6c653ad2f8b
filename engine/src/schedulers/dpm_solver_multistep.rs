//! Diffusers' `DPMSolverMultistepScheduler` as DPM++ 2M: `algorithm_type = "dpmsolver++"`,
//! `solver_order = 2`, midpoint solver, `lower_order_final`, `final_sigmas_type = "zero"`;
//! the config's spacing (class default "linspace") or Karras sigmas.

use burn::tensor::Tensor;

use crate::error::Result;
use crate::schedulers::{
    Noise, Schedule, Scheduler, SchedulerConfig, interp, sigma_to_t, train_sigmas,
};

/// DPM++ 2M.
#[derive(Debug, Clone)]
pub struct DpmSolverMultistepScheduler {
    timesteps: Vec<f64>,
    /// One sigma per step, then 0.
    sigmas: Vec<f64>,
    /// The last two data predictions (x₀).
    outputs: Vec<Tensor<4>>,
}

impl DpmSolverMultistepScheduler {
    /// Sets up `steps` steps (diffusers' `set_timesteps`).
    pub fn new(config: &SchedulerConfig, steps: usize, schedule: Schedule) -> Result<Self> {
        config.validate()?;
        let train = train_sigmas(&config.alphas_cumprod()?);
        let n = config.num_train_timesteps;
        let spacing = config
            .timestep_spacing
            .clone()
            .unwrap_or_else(|| "linspace".into());
        if steps == 0 || steps > n {
            return Err(crate::error::Error::InvalidRequest(format!(
                "steps must be between 1 and {n}, got {steps}"
            )));
        }
        // diffusers spaces steps + 1 points and drops the last.
        let mut timesteps: Vec<f64> = match spacing.as_str() {
            "leading" => {
                let ratio = n / (steps + 1);
                (1..=steps)
                    .rev()
                    .map(|i| (i * ratio + config.steps_offset) as f64)
                    .collect()
            }
            "trailing" => {
                let ratio = n as f64 / steps as f64;
                (1..=steps)
                    .rev()
                    .map(|i| (i as f64 * ratio).round() - 1.0)
                    .collect()
            }
            _ => (1..=steps)
                .rev()
                .map(|i| (i as f64 * (n - 1) as f64 / steps as f64).round())
                .collect(),
        };
        let sigmas = if let Some(s) = schedule.sigmas(train[0], train[n - 1], steps) {
            let log_sigmas: Vec<f64> = train.iter().map(|s| s.ln()).collect();
            // As diffusers: Karras timesteps are rounded, exponential ones truncated (an int64
            // cast). At σ_max diffusers' float32 schedule gives t = 998.99… → 998 while Kiln's
            // f64 schedule gives exactly 999; see the test below.
            timesteps = s
                .iter()
                .map(|x| {
                    let t = sigma_to_t(*x, &log_sigmas);
                    if schedule == Schedule::Karras {
                        t.round()
                    } else {
                        t.trunc()
                    }
                })
                .collect();
            s
        } else {
            timesteps.iter().map(|t| interp(*t, &train)).collect()
        };
        let mut sigmas = sigmas;
        sigmas.push(0.0);
        Ok(DpmSolverMultistepScheduler {
            timesteps,
            sigmas,
            outputs: Vec::new(),
        })
    }
}

/// (α_t, σ_t, λ_t) of a sigma.
fn alpha_sigma_lambda(sigma: f64) -> (f64, f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    let s = sigma * alpha;
    (alpha, s, alpha.ln() - s.ln())
}

impl Scheduler for DpmSolverMultistepScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn scale_model_input(&self, sample: Tensor<4>, _i: usize) -> Tensor<4> {
        sample
    }

    fn step(
        &mut self,
        model_output: Tensor<4>,
        i: usize,
        sample: Tensor<4>,
        _noise: &mut Noise,
    ) -> Tensor<4> {
        let n = self.timesteps.len();
        let (alpha_s0, sigma_s0, lambda_s0) = alpha_sigma_lambda(self.sigmas[i]);
        // Epsilon → data prediction.
        let x0 = (sample.clone() - model_output * sigma_s0) / alpha_s0;
        self.outputs.push(x0.clone());
        if self.outputs.len() > 2 {
            self.outputs.remove(0);
        }
        let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(self.sigmas[i + 1]);
        let h = lambda_t - lambda_s0;
        let first_order = i == 0 || i == n - 1;
        let coef = alpha_t * ((-h).exp() - 1.0);
        let ratio = sigma_t / sigma_s0;
        if first_order {
            sample * ratio - x0 * coef
        } else {
            let (_, _, lambda_s1) = alpha_sigma_lambda(self.sigmas[i - 1]);
            let r0 = (lambda_s0 - lambda_s1) / h;
            let m1 = self.outputs[0].clone();
            let d1 = (x0.clone() - m1) / r0;
            sample * ratio - x0 * coef - d1 * (0.5 * coef)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_and_karras_timesteps_match_diffusers() {
        let mut config = SchedulerConfig::sd15();
        config.timestep_spacing = Some("leading".into());
        let e =
            DpmSolverMultistepScheduler::new(&config, 8, Schedule::Exponential).expect("scheduler");
        // diffusers: [998, 834, …] — only the first differs (its float32 t(σ_max) is 998.99…).
        assert_eq!(
            e.timesteps,
            vec![999.0, 834.0, 621.0, 359.0, 133.0, 30.0, 4.0, 0.0]
        );
        let k = DpmSolverMultistepScheduler::new(&config, 8, Schedule::Karras).expect("scheduler");
        assert_eq!(
            k.timesteps,
            vec![999.0, 890.0, 746.0, 549.0, 299.0, 90.0, 12.0, 0.0]
        );
    }
}
