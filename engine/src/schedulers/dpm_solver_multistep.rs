//! Diffusers' `DPMSolverMultistepScheduler` with `solver_order = 2`, the midpoint solver,
//! `lower_order_final` and `final_sigmas_type = "zero"`, in its two SD algorithms:
//! `dpmsolver++` (A1111's "DPM++ 2M") and `sde-dpmsolver++` ("DPM++ 2M SDE", which adds seeded
//! noise every step). Also [`MultistepSigmas`], the discretisation it shares with UniPC.

use burn::tensor::Tensor;

use crate::error::{Error, Result};
use crate::schedulers::{
    Noise, PredictionType, Schedule, Scheduler, SchedulerConfig, TimestepSpacing, interp,
    predict_x0, sigma_to_t, train_sigmas,
};

/// Timesteps and sigmas of diffusers' multistep solvers (DPM-Solver, UniPC): `steps + 1`
/// points spaced by the config (class default "linspace") with the last dropped, or
/// Karras/exponential sigmas; then a final σ = 0. Samples live in "VP" space (no input scaling).
#[derive(Debug, Clone)]
pub struct MultistepSigmas {
    /// One integer-valued timestep per step.
    pub timesteps: Vec<f64>,
    /// One sigma per step, then 0.
    pub sigmas: Vec<f64>,
}

impl MultistepSigmas {
    /// `steps` timesteps and sigmas (diffusers' `set_timesteps` of the multistep solvers).
    pub fn new(config: &SchedulerConfig, steps: usize, schedule: Schedule) -> Result<Self> {
        config.validate()?;
        let train = train_sigmas(&config.alphas_cumprod()?);
        let n = config.num_train_timesteps;
        let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
        if steps == 0 || steps > n {
            return Err(Error::InvalidRequest(format!(
                "steps must be between 1 and {n}, got {steps}"
            )));
        }
        // diffusers spaces steps + 1 points and drops the last.
        let mut timesteps: Vec<f64> = match spacing {
            TimestepSpacing::Leading => {
                let ratio = n / (steps + 1);
                (1..=steps)
                    .rev()
                    .map(|i| (i * ratio + config.steps_offset) as f64)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = n as f64 / steps as f64;
                (1..=steps)
                    .rev()
                    .map(|i| (i as f64 * ratio).round() - 1.0)
                    .collect()
            }
            TimestepSpacing::Linspace => (1..=steps)
                .rev()
                .map(|i| (i as f64 * (n - 1) as f64 / steps as f64).round())
                .collect(),
        };
        let mut sigmas = if let Some(s) = schedule.sigmas(train[0], train[n - 1], steps) {
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
        sigmas.push(0.0);
        Ok(MultistepSigmas { timesteps, sigmas })
    }

    /// (α_t, σ_t, λ_t = ln α_t − ln σ_t) at sigma index `i`.
    pub fn alpha_sigma_lambda(&self, i: usize) -> (f64, f64, f64) {
        let sigma = self.sigmas[i];
        let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
        let s = sigma * alpha;
        (alpha, s, alpha.ln() - s.ln())
    }

    /// The data prediction x̂₀ at step `i` from the UNet output.
    pub fn data_prediction(
        &self,
        prediction_type: PredictionType,
        sample: &Tensor<4>,
        model_output: Tensor<4>,
        i: usize,
    ) -> Tensor<4> {
        let (alpha, _, _) = self.alpha_sigma_lambda(i);
        predict_x0(prediction_type, sample, model_output, alpha * alpha)
    }

    /// `α_i·original + σ_i·noise` (diffusers' `add_noise` for these solvers).
    pub fn add_noise(&self, original: Tensor<4>, noise: Tensor<4>, i: usize) -> Tensor<4> {
        let (alpha, sigma, _) = self.alpha_sigma_lambda(i);
        original * alpha + noise * sigma
    }
}

/// Which DPM-Solver++ variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpmAlgorithm {
    /// `dpmsolver++`: deterministic.
    DpmSolverPp,
    /// `sde-dpmsolver++`: stochastic, seeded.
    SdeDpmSolverPp,
}

/// DPM++ 2M / DPM++ 2M SDE.
#[derive(Debug, Clone)]
pub struct DpmSolverMultistepScheduler {
    s: MultistepSigmas,
    algorithm: DpmAlgorithm,
    prediction_type: PredictionType,
    /// The last two data predictions (x̂₀) and their step indices.
    outputs: Vec<(usize, Tensor<4>)>,
}

impl DpmSolverMultistepScheduler {
    /// Sets up `steps` steps (diffusers' `set_timesteps`).
    pub fn new(
        config: &SchedulerConfig,
        steps: usize,
        schedule: Schedule,
        algorithm: DpmAlgorithm,
    ) -> Result<Self> {
        Ok(DpmSolverMultistepScheduler {
            s: MultistepSigmas::new(config, steps, schedule)?,
            algorithm,
            prediction_type: config.prediction_type,
            outputs: Vec::new(),
        })
    }
}

impl Scheduler for DpmSolverMultistepScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.s.timesteps
    }

    fn add_noise(&self, original: Tensor<4>, noise: Tensor<4>, i: usize) -> Tensor<4> {
        self.s.add_noise(original, noise, i)
    }

    fn step(
        &mut self,
        model_output: Tensor<4>,
        i: usize,
        sample: Tensor<4>,
        noise: &mut Noise,
    ) -> Tensor<4> {
        let n = self.s.timesteps.len();
        let x0 = self
            .s
            .data_prediction(self.prediction_type, &sample, model_output, i);
        self.outputs.push((i, x0.clone()));
        if self.outputs.len() > 2 {
            self.outputs.remove(0);
        }
        let (_, sigma_s0, lambda_s0) = self.s.alpha_sigma_lambda(i);
        let (alpha_t, sigma_t, lambda_t) = self.s.alpha_sigma_lambda(i + 1);
        let h = lambda_t - lambda_s0;
        // First order on the first step taken (img2img may start later) and the last.
        let d1 = if self.outputs.len() == 2 && i != n - 1 {
            let (j, m1) = self.outputs[0].clone();
            let (_, _, lambda_s1) = self.s.alpha_sigma_lambda(j);
            let r0 = (lambda_s0 - lambda_s1) / h;
            Some((x0.clone() - m1) / r0)
        } else {
            None
        };
        match self.algorithm {
            DpmAlgorithm::DpmSolverPp => {
                let coef = alpha_t * ((-h).exp() - 1.0);
                let prev = sample * (sigma_t / sigma_s0) - x0 * coef;
                match d1 {
                    Some(d1) => prev - d1 * (0.5 * coef),
                    None => prev,
                }
            }
            DpmAlgorithm::SdeDpmSolverPp => {
                let coef = alpha_t * (1.0 - (-2.0 * h).exp());
                let mut prev = sample.clone() * (sigma_t / sigma_s0 * (-h).exp()) + x0 * coef;
                if let Some(d1) = d1 {
                    prev = prev + d1 * (0.5 * coef);
                }
                let scale = sigma_t * (1.0 - (-2.0 * h).exp()).max(0.0).sqrt();
                // diffusers draws noise on every step, the last included (where σ_t = 0).
                let z = noise.randn(sample.dims(), &sample.device());
                prev + z * scale
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_default_spacing_is_linspace_as_diffusers() {
        // diffusers' DPMSolverMultistepScheduler on SD 1.5's config (no timestep_spacing).
        let s =
            MultistepSigmas::new(&SchedulerConfig::sd15(), 8, Schedule::Default).expect("sigmas");
        assert_eq!(
            s.timesteps,
            vec![999.0, 874.0, 749.0, 624.0, 500.0, 375.0, 250.0, 125.0]
        );
    }

    #[test]
    fn exponential_and_karras_timesteps_match_diffusers() {
        let mut config = SchedulerConfig::sd15();
        config.timestep_spacing = Some(TimestepSpacing::Leading);
        let e = MultistepSigmas::new(&config, 8, Schedule::Exponential).expect("scheduler");
        // diffusers: [998, 834, …] — only the first differs (its float32 t(σ_max) is 998.99…).
        assert_eq!(
            e.timesteps,
            vec![999.0, 834.0, 621.0, 359.0, 133.0, 30.0, 4.0, 0.0]
        );
        let k = MultistepSigmas::new(&config, 8, Schedule::Karras).expect("scheduler");
        assert_eq!(
            k.timesteps,
            vec![999.0, 890.0, 746.0, 549.0, 299.0, 90.0, 12.0, 0.0]
        );
    }
}
