//! Diffusers' `UniPCMultistepScheduler` as used for SD: `solver_order = 2`, `predict_x0`,
//! `solver_type = "bh2"`, `lower_order_final`, no disabled correctors. Every step first
//! corrects the previous prediction with the new model output (UniC), then predicts the next
//! sample (UniP) — one UNet call per step. Same discretisation as DPM-Solver
//! ([`MultistepSigmas`]).

use burn::tensor::Tensor;

use crate::error::Result;
use crate::schedulers::dpm_solver_multistep::MultistepSigmas;
use crate::schedulers::{Noise, PredictionType, Schedule, Scheduler, SchedulerConfig};

/// UniPC (order 2, bh2).
#[derive(Debug, Clone)]
pub struct UniPcMultistepScheduler {
    s: MultistepSigmas,
    prediction_type: PredictionType,
    /// The last two data predictions (x̂₀), oldest first.
    outputs: Vec<Tensor<4>>,
    /// The sample the last prediction started from.
    last_sample: Option<Tensor<4>>,
    /// The order of the last predictor (the next corrector uses it).
    last_order: usize,
}

impl UniPcMultistepScheduler {
    /// Sets up `steps` steps.
    pub fn new(config: &SchedulerConfig, steps: usize, schedule: Schedule) -> Result<Self> {
        Ok(UniPcMultistepScheduler {
            s: MultistepSigmas::new(config, steps, schedule)?,
            prediction_type: config.prediction_type,
            outputs: Vec::new(),
            last_sample: None,
            last_order: 0,
        })
    }

    /// `B(h) = e^{−h} − 1` (bh2, in the x₀-prediction sign convention), `hφ₁` (equal for bh2),
    /// and the step's `h` from sigma index `from` to `to`.
    fn h_terms(&self, from: usize, to: usize) -> (f64, f64) {
        let (_, _, lambda_s0) = self.s.alpha_sigma_lambda(from);
        let (_, _, lambda_t) = self.s.alpha_sigma_lambda(to);
        let h = lambda_t - lambda_s0;
        (h, (-h).exp_m1())
    }

    /// `rk = (λ_{s1} − λ_{s0}) / h`: where the older output sits relative to the step.
    fn rk(&self, older: usize, from: usize, h: f64) -> f64 {
        let (_, _, lambda_s1) = self.s.alpha_sigma_lambda(older);
        let (_, _, lambda_s0) = self.s.alpha_sigma_lambda(from);
        (lambda_s1 - lambda_s0) / h
    }

    /// The exponential-integrator part shared by UniP and UniC: `σ_t/σ_s·x − α_t·hφ₁·m0`.
    fn base(&self, x: Tensor<4>, m0: Tensor<4>, from: usize, to: usize, h_phi_1: f64) -> Tensor<4> {
        let (_, sigma_s0, _) = self.s.alpha_sigma_lambda(from);
        let (alpha_t, sigma_t, _) = self.s.alpha_sigma_lambda(to);
        x * (sigma_t / sigma_s0) - m0 * (alpha_t * h_phi_1)
    }
}

impl Scheduler for UniPcMultistepScheduler {
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
        _noise: &mut Noise,
    ) -> Tensor<4> {
        let n = self.s.timesteps.len();
        let m_t = self
            .s
            .data_prediction(self.prediction_type, &sample, model_output, i);

        // UniC: correct the sample predicted last step, now that m_t is known.
        let sample = match self.last_sample.take() {
            Some(x) if i > 0 => {
                let (h, b_h) = self.h_terms(i - 1, i);
                let hh = -h;
                let m0 = self.outputs[self.outputs.len() - 1].clone();
                let corrected = self.base(x, m0.clone(), i - 1, i, b_h);
                let (alpha_t, _, _) = self.s.alpha_sigma_lambda(i);
                // b_k = hφ_k·k!/B(h), with hφ_{k+1} = hφ_k/hh − 1/(k+1)!.
                let phi1 = b_h / hh - 1.0;
                let b1 = phi1 / b_h;
                let correction = if self.last_order >= 2 && self.outputs.len() == 2 && i >= 2 {
                    let phi2 = phi1 / hh - 0.5;
                    let b2 = phi2 * 2.0 / b_h;
                    let rk = self.rk(i - 2, i - 1, h);
                    let d1 = (self.outputs[0].clone() - m0.clone()) / rk;
                    // Solve [[1, 1], [rk, 1]]·ρ = [b1, b2].
                    let rho0 = (b1 - b2) / (1.0 - rk);
                    let rho1 = b1 - rho0;
                    d1 * rho0 + (m_t.clone() - m0) * rho1
                } else {
                    (m_t.clone() - m0) * 0.5
                };
                corrected - correction * (alpha_t * b_h)
            }
            _ => sample,
        };

        self.outputs.push(m_t.clone());
        if self.outputs.len() > 2 {
            self.outputs.remove(0);
        }
        // Order 2 once two outputs exist, order 1 on the last step.
        let order = if n - i < 2 {
            1
        } else {
            self.outputs.len().min(2)
        };
        self.last_order = order;
        self.last_sample = Some(sample.clone());

        // UniP: predict the next sample.
        let (h, b_h) = self.h_terms(i, i + 1);
        let predicted = self.base(sample, m_t.clone(), i, i + 1, b_h);
        if order == 2 {
            let rk = self.rk(i - 1, i, h);
            let d1 = (self.outputs[0].clone() - m_t) / rk;
            let (alpha_t, _, _) = self.s.alpha_sigma_lambda(i + 1);
            predicted - d1 * (0.5 * alpha_t * b_h)
        } else {
            predicted
        }
    }
}
