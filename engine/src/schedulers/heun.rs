//! Diffusers' `HeunDiscreteScheduler`: Heun's second-order method, two UNet calls per step.
//! As in diffusers, the timestep list interleaves the calls (`t0, t1, t1, t2, t2, …`) and
//! `step` alternates between the Euler predictor and the trapezoidal corrector; the final
//! step to σ = 0 is a plain Euler step.

use burn::tensor::Tensor;

use crate::error::Result;
use crate::schedulers::euler::discrete_sigmas;
use crate::schedulers::{Noise, Schedule, Scheduler, SchedulerConfig};

/// State kept between the predictor and the corrector.
#[derive(Debug, Clone)]
struct Predictor {
    derivative: Tensor<4>,
    dt: f64,
    sample: Tensor<4>,
}

/// Heun.
#[derive(Debug, Clone)]
pub struct HeunScheduler {
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
    predictor: Option<Predictor>,
}

impl HeunScheduler {
    /// Sets up `steps` steps (2·steps − 1 UNet calls).
    pub fn new(config: &SchedulerConfig, steps: usize, schedule: Schedule) -> Result<Self> {
        let (t, s, init_noise_sigma) = discrete_sigmas(config, steps, schedule)?;
        let mut timesteps = vec![t[0]];
        let mut sigmas = vec![s[0]];
        for i in 1..t.len() {
            timesteps.extend([t[i], t[i]]);
            sigmas.extend([s[i], s[i]]);
        }
        sigmas.push(0.0);
        Ok(HeunScheduler { timesteps, sigmas, init_noise_sigma, predictor: None })
    }
}

impl Scheduler for HeunScheduler {
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
        match self.predictor.take() {
            None => {
                let (sigma, next) = (self.sigmas[i], self.sigmas[i + 1]);
                let pred_x0 = sample.clone() - model_output * sigma;
                let derivative = (sample.clone() - pred_x0) / sigma;
                let dt = next - sigma;
                let prev = sample.clone() + derivative.clone() * dt;
                self.predictor = Some(Predictor { derivative, dt, sample });
                prev
            }
            Some(p) => {
                let sigma_next = self.sigmas[i];
                let pred_x0 = sample.clone() - model_output * sigma_next;
                let derivative = (sample - pred_x0) / sigma_next;
                let derivative = (p.derivative + derivative) / 2.0;
                p.sample + derivative * p.dt
            }
        }
    }
}
