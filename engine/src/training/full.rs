//! Training every weight of a model — what `kiln train base` does to the UNet, the text
//! encoder and the VAE. Between steps the weights live on the plain device; a step makes
//! every parameter a gradient-tracked leaf ([`track`]), runs forward and backward, reads the
//! gradients by parameter path ([`gradients`]), and [`FullOptimizer::step`] scales them by
//! the clipping factor [`FullOptimizer::clip`] computed from their global norm, applies AdamW
//! exactly as `torch.optim.AdamW` ([`AdamWConfig`]) and moves the exponential moving average
//! of the weights (diffusers' `EMAModel`).
//!
//! Parameters are addressed by `"<component>.<diffusers path>"` (`unet.conv_in.weight`), the
//! names checkpoints store them under; optimiser state is kept flattened (`Tensor<1>`).

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Gradients, Tensor};

use crate::error::{Error, Result};
use crate::models::paths::map_params;
use crate::tensors::host;
use crate::training::adamw::{AdamWConfig, Moments};

/// Flattened gradients by full parameter name (`"unet.conv_in.weight"`).
pub type Grads = BTreeMap<String, Tensor<1>>;

/// `module` with every float parameter a gradient-tracked leaf on the autodiff device.
pub fn track<M: Module>(module: &M) -> M {
    struct Track;
    impl ModuleMapper for Track {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.map(|t| t.autodiff().require_grad())
        }
    }
    module.clone().map(&mut Track)
}

/// Adds the gradient of every parameter of `tracked` (a module made by [`track`]) to `out`,
/// flattened, on the plain device, named `"{prefix}.{path}"`. A parameter the loss does not
/// reach gets zeros (AdamW still decays it, as PyTorch does for a zero gradient).
pub fn gradients<M: Module>(tracked: &M, prefix: &str, grads: &Gradients, out: &mut Grads) {
    struct Collect<'a> {
        stack: Vec<String>,
        prefix: &'a str,
        grads: &'a Gradients,
        out: &'a mut Grads,
    }
    impl ModuleVisitor for Collect<'_> {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.stack.push(name.to_owned());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let t = param.val();
            let numel: usize = t.dims().iter().product();
            let g = t
                .grad(self.grads)
                .map(|g| g.inner())
                .unwrap_or_else(|| t.inner().zeros_like());
            self.out.insert(
                format!("{}.{}", self.prefix, self.stack.join(".")),
                g.reshape([numel]),
            );
        }
    }
    tracked.visit(&mut Collect {
        stack: Vec::new(),
        prefix,
        grads,
        out,
    });
}

/// The EMA decay diffusers' `EMAModel` uses at optimiser step `t` (1-based, without warm-up
/// power): 0 at the first step (the average starts as the weights), then
/// `min(decay, (1 + s) / (10 + s))` with `s = t − 1`.
pub fn ema_decay_at(decay: f64, t: usize) -> f64 {
    if t <= 1 {
        return 0.0;
    }
    let s = (t - 1) as f64;
    ((1.0 + s) / (10.0 + s)).min(decay)
}

/// AdamW moments and EMA weights of the parameters being trained, by full name.
#[derive(Debug, Clone, Default)]
pub struct FullOptimizer {
    /// AdamW first and second moments.
    pub moments: BTreeMap<String, Moments<1>>,
    /// The exponential moving average of each trained weight (empty without EMA).
    pub ema: BTreeMap<String, Tensor<1>>,
}

/// What one [`FullOptimizer::step`] was given.
#[derive(Debug, Clone, Copy)]
pub struct StepSettings {
    /// Optimiser step, 1-based (bias correction, EMA warm-up).
    pub t: usize,
    /// Learning rate.
    pub lr: f64,
    /// Clip the global gradient norm to this.
    pub max_grad_norm: Option<f64>,
    /// EMA decay (None = no EMA).
    pub ema_decay: Option<f64>,
}

impl FullOptimizer {
    /// The global L2 norm of `grads` (one host read), and the factor torch's
    /// `clip_grad_norm_` scales them by: `max / (norm + 1e-6)` when above `max`, else 1.
    /// A NaN or infinite norm is [`Error::NonFinite`].
    pub fn clip(grads: &Grads, max_grad_norm: Option<f64>) -> Result<(f64, f64)> {
        let squares: Vec<Tensor<1>> = grads.values().map(|g| g.clone().square().sum()).collect();
        if squares.is_empty() {
            return Ok((0.0, 1.0));
        }
        let norm = host(Tensor::cat(squares, 0))?
            .iter()
            .map(|v| f64::from(*v))
            .sum::<f64>()
            .sqrt();
        if !norm.is_finite() {
            return Err(Error::NonFinite("the gradients".into()));
        }
        let scale = match max_grad_norm {
            Some(max) if norm > max => max / (norm + 1e-6),
            _ => 1.0,
        };
        Ok((norm, scale))
    }

    /// Updates the parameters of `module` that have a gradient in `grads` under `prefix`:
    /// the gradient times `clip`, then AdamW, then the EMA. Returns the updated module.
    pub fn step<M: Module>(
        &mut self,
        module: M,
        prefix: &str,
        grads: &Grads,
        clip: f64,
        adamw: &AdamWConfig,
        settings: StepSettings,
    ) -> M {
        let name = |path: &str| format!("{prefix}.{path}");
        let select = |path: &str| grads.contains_key(&name(path));
        let (moments, ema) = (&mut self.moments, &mut self.ema);
        map_params(module, &select, &mut |path, value| {
            let key = name(path);
            let Some(g) = grads.get(&key) else {
                return value;
            };
            let m = moments
                .entry(key.clone())
                .or_insert_with(|| Moments::zeros(&value));
            let new = adamw.update(value, g.clone() * clip, m, settings.t, settings.lr);
            if let Some(decay) = settings.ema_decay {
                let d = ema_decay_at(decay, settings.t);
                let avg = match ema.remove(&key) {
                    Some(avg) if d > 0.0 => avg * d + new.clone() * (1.0 - d),
                    _ => new.clone(),
                };
                ema.insert(key, avg);
            }
            new
        })
    }

    /// `module` with the EMA weight of every parameter that has one (under `prefix`).
    pub fn with_ema<M: Module>(&self, module: M, prefix: &str) -> M {
        let name = |path: &str| format!("{prefix}.{path}");
        let select = |path: &str| self.ema.contains_key(&name(path));
        map_params(module, &select, &mut |path, value| {
            self.ema.get(&name(path)).cloned().unwrap_or(value)
        })
    }

    /// Drops the state of every parameter under `prefix` (a component that stops training).
    pub fn forget(&mut self, prefix: &str) {
        let p = format!("{prefix}.");
        self.moments.retain(|k, _| !k.starts_with(&p));
        self.ema.retain(|k, _| !k.starts_with(&p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ema_decay_warms_up_like_diffusers() {
        // diffusers EMAModel(decay=0.999): get_decay(optimization_step) for steps 1, 2, 3, 1000.
        assert_eq!(ema_decay_at(0.999, 1), 0.0);
        assert!((ema_decay_at(0.999, 2) - 2.0 / 11.0).abs() < 1e-15);
        assert!((ema_decay_at(0.999, 3) - 3.0 / 12.0).abs() < 1e-15);
        assert_eq!(ema_decay_at(0.999, 100_000), 0.999);
    }
}
