//! "DPM++ 2S a" (k-diffusion's `sample_dpmpp_2s_ancestral`, η = 1), which diffusers does not
//! have: each step goes from σᵢ to σ_down with a second-order single-step DPM-Solver++ (one
//! extra UNet call at the log-midpoint), then adds seeded noise of scale σ_up, as Euler a does.
//! The last step (σ_down = 0) is a plain Euler step. Same discretisation as Euler
//! ([`DiscreteSigmas`]); the UNet-call list interleaves `t(σᵢ), t(σ_midᵢ)`.

use burn::tensor::Tensor;

use crate::error::Result;
use crate::schedulers::euler::{DiscreteSigmas, derivative};
use crate::schedulers::{Noise, Schedule, Scheduler, SchedulerConfig, sigma_to_t, train_sigmas};

/// What the first call of a step left for the second.
#[derive(Debug, Clone)]
struct FirstHalf {
    sample: Tensor<4>,
    step: usize,
}

/// DPM++ 2S a.
#[derive(Debug, Clone)]
pub struct DpmPp2sAncestralScheduler {
    d: DiscreteSigmas,
    /// Per UNet call: (σ of the call, step index, whether it is the step's midpoint call).
    calls: Vec<(f64, usize, bool)>,
    timesteps: Vec<f64>,
    /// Per step: (σ_down, σ_up).
    ancestral: Vec<(f64, f64)>,
    first: Option<FirstHalf>,
}

impl DpmPp2sAncestralScheduler {
    /// Sets up `steps` steps (2·steps − 1 UNet calls).
    pub fn new(config: &SchedulerConfig, steps: usize, schedule: Schedule) -> Result<Self> {
        let d = DiscreteSigmas::new(config, steps, schedule)?;
        let log_sigmas: Vec<f64> = train_sigmas(&config.alphas_cumprod()?)
            .iter()
            .map(|s| s.ln())
            .collect();
        let (mut calls, mut timesteps, mut ancestral) = (Vec::new(), Vec::new(), Vec::new());
        for k in 0..steps {
            let (sigma, to) = (d.sigmas[k], d.sigmas[k + 1]);
            let up = (to * to * (sigma * sigma - to * to) / (sigma * sigma))
                .max(0.0)
                .sqrt();
            let down = (to * to - up * up).max(0.0).sqrt();
            ancestral.push((down, up));
            calls.push((sigma, k, false));
            timesteps.push(d.timesteps[k]);
            if down > 0.0 {
                // Midpoint in log σ: σ_mid = √(σᵢ·σ_down).
                let mid = (sigma * down).sqrt();
                calls.push((mid, k, true));
                timesteps.push(sigma_to_t(mid, &log_sigmas));
            }
        }
        Ok(DpmPp2sAncestralScheduler {
            d,
            calls,
            timesteps,
            ancestral,
            first: None,
        })
    }
}

impl Scheduler for DpmPp2sAncestralScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.d.init_noise_sigma
    }

    fn order(&self) -> usize {
        2
    }

    fn scale_model_input(&self, sample: Tensor<4>, i: usize) -> Tensor<4> {
        let s = self.calls[i].0;
        sample / (s * s + 1.0).sqrt()
    }

    fn add_noise(&self, original: Tensor<4>, noise: Tensor<4>, i: usize) -> Tensor<4> {
        original + noise * self.calls[i].0
    }

    fn step(
        &mut self,
        model_output: Tensor<4>,
        i: usize,
        sample: Tensor<4>,
        noise: &mut Noise,
    ) -> Tensor<4> {
        let (sigma_call, k, midpoint) = self.calls[i];
        let sigma = self.d.sigmas[k];
        let (down, up) = self.ancestral[k];
        let denoised = sample.clone() - model_output.clone() * sigma_call;
        let next = if !midpoint && down == 0.0 {
            // Last step: Euler to σ = 0.
            sample.clone() + derivative(&sample, model_output, sigma) * (down - sigma)
        } else if !midpoint {
            // x₂ = (σ_mid/σ)·x − (e^{−h/2} − 1)·x̂₀ with h = ln σ − ln σ_down.
            let h = sigma.ln() - down.ln();
            let mid = (sigma * down).sqrt();
            let x2 = sample.clone() * (mid / sigma) - denoised * (-h * 0.5).exp_m1();
            self.first = Some(FirstHalf { sample, step: k });
            return x2;
        } else {
            let Some(first) = self.first.take().filter(|f| f.step == k) else {
                // A midpoint call without its first half cannot happen in the pipeline's loop;
                // continue from the given sample as a first-order step.
                return sample.clone()
                    + derivative(&sample, model_output, sigma_call) * (down - sigma_call);
            };
            let h = sigma.ln() - down.ln();
            first.sample * (down / sigma) - denoised * (-h).exp_m1()
        };
        if self.d.sigmas[k + 1] > 0.0 {
            let z = noise.randn(next.dims(), &next.device());
            next + z * up
        } else {
            next
        }
    }
}
