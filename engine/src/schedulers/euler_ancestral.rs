//! Diffusers' `EulerAncestralDiscreteScheduler` ("Euler a"): an Euler step to σ_down plus
//! fresh noise of scale σ_up from the explicit seeded [`Noise`] streams.

use burn::tensor::Tensor;

use crate::error::Result;
use crate::schedulers::euler::{DiscreteSigmas, derivative, discrete_sigmas_methods};
use crate::schedulers::{Noise, Schedule, Scheduler, SchedulerConfig};

/// Euler a.
#[derive(Debug, Clone)]
pub struct EulerAncestralScheduler {
    d: DiscreteSigmas,
}

impl EulerAncestralScheduler {
    /// Sets up `steps` steps.
    pub fn new(config: &SchedulerConfig, steps: usize, schedule: Schedule) -> Result<Self> {
        Ok(EulerAncestralScheduler {
            d: DiscreteSigmas::new(config, steps, schedule)?,
        })
    }
}

impl Scheduler for EulerAncestralScheduler {
    discrete_sigmas_methods!();

    fn step(
        &mut self,
        model_output: Tensor<4>,
        i: usize,
        sample: Tensor<4>,
        noise: &mut Noise,
    ) -> Tensor<4> {
        let (sigma, to) = (self.d.sigmas[i], self.d.sigmas[i + 1]);
        let sigma_up = (to * to * (sigma * sigma - to * to) / (sigma * sigma))
            .max(0.0)
            .sqrt();
        let sigma_down = (to * to - sigma_up * sigma_up).max(0.0).sqrt();
        let derivative = derivative(&sample, model_output, sigma);
        let prev = sample + derivative * (sigma_down - sigma);
        let shape = prev.dims();
        let device = prev.device();
        prev + noise.randn(shape, &device) * sigma_up
    }
}
