//! Diffusers' `EulerAncestralDiscreteScheduler` ("Euler a"): an Euler step to σ_down plus
//! fresh noise of scale σ_up from the explicit seeded [`Noise`] streams.

use burn::tensor::Tensor;

use crate::error::Result;
use crate::schedulers::euler::discrete_sigmas;
use crate::schedulers::{Noise, Schedule, Scheduler, SchedulerConfig};

/// Euler a.
#[derive(Debug, Clone)]
pub struct EulerAncestralScheduler {
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
}

impl EulerAncestralScheduler {
    /// Sets up `steps` steps.
    pub fn new(config: &SchedulerConfig, steps: usize, schedule: Schedule) -> Result<Self> {
        let (timesteps, mut sigmas, init_noise_sigma) = discrete_sigmas(config, steps, schedule)?;
        sigmas.push(0.0);
        Ok(EulerAncestralScheduler { timesteps, sigmas, init_noise_sigma })
    }
}

impl Scheduler for EulerAncestralScheduler {
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

    fn step(&mut self, model_output: Tensor<4>, i: usize, sample: Tensor<4>, noise: &mut Noise) -> Tensor<4> {
        let (sigma, to) = (self.sigmas[i], self.sigmas[i + 1]);
        let sigma_up = (to * to * (sigma * sigma - to * to) / (sigma * sigma)).max(0.0).sqrt();
        let sigma_down = (to * to - sigma_up * sigma_up).max(0.0).sqrt();
        let pred_x0 = sample.clone() - model_output * sigma;
        let derivative = (sample.clone() - pred_x0) / sigma;
        let prev = sample + derivative * (sigma_down - sigma);
        let shape = prev.dims();
        let device = prev.device();
        prev + noise.randn(shape, &device) * sigma_up
    }
}
