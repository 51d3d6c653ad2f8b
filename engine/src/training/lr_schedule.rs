//! Learning-rate schedules, as diffusers' `get_scheduler` names them.

use serde::{Deserialize, Serialize};

/// A schedule over `total` optimiser steps with `warmup` linear warm-up steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// The base rate throughout (warm-up ignored).
    Constant,
    /// Linear warm-up, then constant.
    #[default]
    ConstantWithWarmup,
    /// Linear warm-up, then half a cosine down to 0.
    Cosine,
    /// Linear warm-up, then linear down to 0.
    Linear,
}

impl std::str::FromStr for LrSchedule {
    type Err = crate::error::Error;

    /// `constant`, `constant-with-warmup` (or `constant_with_warmup`), `cosine`, `linear`.
    fn from_str(s: &str) -> crate::error::Result<Self> {
        match s.trim().replace('_', "-").as_str() {
            "constant" => Ok(LrSchedule::Constant),
            "constant-with-warmup" => Ok(LrSchedule::ConstantWithWarmup),
            "cosine" => Ok(LrSchedule::Cosine),
            "linear" => Ok(LrSchedule::Linear),
            other => Err(crate::error::Error::InvalidRequest(format!(
                "unknown learning-rate schedule '{other}' (constant, constant-with-warmup, cosine, linear)"
            ))),
        }
    }
}

impl LrSchedule {
    /// The rate at optimiser step `step` (0-based) of `total`.
    pub fn lr(self, base: f64, step: usize, warmup: usize, total: usize) -> f64 {
        if self != LrSchedule::Constant && step < warmup {
            return base * step as f64 / warmup.max(1) as f64;
        }
        let progress =
            (step - warmup.min(step)) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
        match self {
            LrSchedule::Constant | LrSchedule::ConstantWithWarmup => base,
            LrSchedule::Cosine => {
                base * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
            }
            LrSchedule::Linear => base * (1.0 - progress).max(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_diffusers_get_scheduler() {
        // diffusers: get_scheduler(name, optimizer(lr=1), num_warmup_steps=2, num_training_steps=10)
        let at = |s: LrSchedule| (0..10).map(|i| s.lr(1.0, i, 2, 10)).collect::<Vec<_>>();
        assert_eq!(at(LrSchedule::Constant), vec![1.0; 10]);
        assert_eq!(at(LrSchedule::ConstantWithWarmup)[..3], [0.0, 0.5, 1.0]);
        let lin = at(LrSchedule::Linear);
        assert!(
            (lin[2] - 1.0).abs() < 1e-12
                && (lin[6] - 0.5).abs() < 1e-12
                && (lin[9] - 0.125).abs() < 1e-12,
            "{lin:?}"
        );
        let cos = at(LrSchedule::Cosine);
        assert!(
            (cos[6] - 0.5).abs() < 1e-12
                && (cos[4] - (0.5 * (1.0 + (std::f64::consts::PI * 0.25).cos()))).abs() < 1e-12,
            "{cos:?}"
        );
    }
}
