//! Diffusers' `HeunDiscreteScheduler`: Heun's second-order method, two UNet calls per step.
//! As in diffusers, the timestep list interleaves the calls (`t0, t1, t1, t2, t2, …`) and
//! `step` alternates between the Euler predictor and the trapezoidal corrector; the final
//! step to σ = 0 is a plain Euler step.

use burn::tensor::Tensor;

use crate::error::Result;
use crate::schedulers::euler::{DiscreteSigmas, derivative, discrete_sigmas_methods};
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
    /// Interleaved: `t0, t1, t1, t2, t2, …` and their sigmas, then 0.
    d: DiscreteSigmas,
    predictor: Option<Predictor>,
}

impl HeunScheduler {
    /// Sets up `steps` steps (2·steps − 1 UNet calls).
    pub fn new(config: &SchedulerConfig, steps: usize, schedule: Schedule) -> Result<Self> {
        let plain = DiscreteSigmas::new(config, steps, schedule)?;
        let (t, s) = (&plain.timesteps, &plain.sigmas);
        let mut timesteps = vec![t[0]];
        let mut sigmas = vec![s[0]];
        for i in 1..t.len() {
            timesteps.extend([t[i], t[i]]);
            sigmas.extend([s[i], s[i]]);
        }
        sigmas.push(0.0);
        let d = DiscreteSigmas {
            timesteps,
            sigmas,
            init_noise_sigma: plain.init_noise_sigma,
        };
        Ok(HeunScheduler { d, predictor: None })
    }
}

impl Scheduler for HeunScheduler {
    discrete_sigmas_methods!();

    fn order(&self) -> usize {
        2
    }

    fn step(
        &mut self,
        model_output: Tensor<4>,
        i: usize,
        sample: Tensor<4>,
        _noise: &mut Noise,
    ) -> Tensor<4> {
        match self.predictor.take() {
            None => {
                let (sigma, next) = (self.d.sigmas[i], self.d.sigmas[i + 1]);
                let derivative = derivative(&sample, model_output, sigma);
                let dt = next - sigma;
                let prev = sample.clone() + derivative.clone() * dt;
                self.predictor = Some(Predictor {
                    derivative,
                    dt,
                    sample,
                });
                prev
            }
            Some(p) => {
                let derivative = derivative(&sample, model_output, self.d.sigmas[i]);
                let derivative = (p.derivative + derivative) / 2.0;
                p.sample + derivative * p.dt
            }
        }
    }
}
