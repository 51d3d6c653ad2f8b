//! Diffusers' `LMSDiscreteScheduler` (linear multistep, order 4): each step combines the
//! last derivatives with coefficients that integrate Lagrange polynomials over the step's
//! sigma interval. The integrands are polynomials of degree < 4, which 4-point
//! Gauss–Legendre quadrature integrates exactly (diffusers uses `scipy.integrate.quad`).

use burn::tensor::Tensor;

use crate::error::Result;
use crate::schedulers::euler::{DiscreteSigmas, derivative, discrete_sigmas_methods};
use crate::schedulers::{Noise, Schedule, Scheduler, SchedulerConfig};

/// LMS.
#[derive(Debug, Clone)]
pub struct LmsScheduler {
    d: DiscreteSigmas,
    derivatives: Vec<Tensor<4>>,
}

/// Order of the method (diffusers' default).
const ORDER: usize = 4;

impl LmsScheduler {
    /// Sets up `steps` steps.
    pub fn new(config: &SchedulerConfig, steps: usize, schedule: Schedule) -> Result<Self> {
        Ok(LmsScheduler {
            d: DiscreteSigmas::new(config, steps, schedule)?,
            derivatives: Vec::new(),
        })
    }

    /// ∫ over [σ_t, σ_{t+1}] of the Lagrange basis polynomial of `current` among `order` points.
    fn coefficient(&self, order: usize, t: usize, current: usize) -> f64 {
        let s = &self.d.sigmas;
        let basis = |tau: f64| {
            (0..order).filter(|k| *k != current).fold(1.0, |p, k| {
                p * (tau - s[t - k]) / (s[t - current] - s[t - k])
            })
        };
        // 4-point Gauss–Legendre on [a, b].
        const X: [f64; 4] = [
            -0.861_136_311_594_052_6,
            -0.339_981_043_584_856_3,
            0.339_981_043_584_856_3,
            0.861_136_311_594_052_6,
        ];
        const W: [f64; 4] = [
            0.347_854_845_137_453_9,
            0.652_145_154_862_546_1,
            0.652_145_154_862_546_1,
            0.347_854_845_137_453_9,
        ];
        let (a, b) = (s[t], s[t + 1]);
        let (mid, half) = ((a + b) / 2.0, (b - a) / 2.0);
        X.iter()
            .zip(W)
            .map(|(x, w)| w * basis(mid + half * x))
            .sum::<f64>()
            * half
    }
}

impl Scheduler for LmsScheduler {
    discrete_sigmas_methods!();

    fn step(
        &mut self,
        model_output: Tensor<4>,
        i: usize,
        sample: Tensor<4>,
        _noise: &mut Noise,
    ) -> Tensor<4> {
        self.derivatives
            .push(derivative(&sample, model_output, self.d.sigmas[i]));
        if self.derivatives.len() > ORDER {
            self.derivatives.remove(0);
        }
        let order = (i + 1).min(ORDER);
        let mut prev = sample;
        for (current, d) in self.derivatives.iter().rev().enumerate().take(order) {
            prev = prev + d.clone() * self.coefficient(order, i, current);
        }
        prev
    }
}
