//! AdamW exactly as `torch.optim.AdamW` (decoupled weight decay applied first, bias-corrected
//! moments, `eps` added to `√v̂`), on plain (non-autodiff) tensors. Burn's own AdamW differs in
//! defaults and clips per tensor; owning the update also makes its state easy to checkpoint.

use burn::tensor::Tensor;

/// Hyper-parameters (PyTorch's defaults except the learning rate, given per step).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// Weight decay (decoupled).
    pub weight_decay: f64,
    /// Added to √v̂.
    pub eps: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            weight_decay: 1e-2,
            eps: 1e-8,
        }
    }
}

/// First and second moments of one parameter.
#[derive(Debug, Clone)]
pub struct Moments<const D: usize> {
    /// m.
    pub m: Tensor<D>,
    /// v.
    pub v: Tensor<D>,
}

impl<const D: usize> Moments<D> {
    /// Zero moments shaped like `param`.
    pub fn zeros(param: &Tensor<D>) -> Self {
        Moments {
            m: param.zeros_like(),
            v: param.zeros_like(),
        }
    }
}

impl AdamWConfig {
    /// One update of `param` with gradient `grad` at optimiser step `t` (1-based) and
    /// learning rate `lr`; returns the new parameter.
    pub fn update<const D: usize>(
        &self,
        param: Tensor<D>,
        grad: Tensor<D>,
        state: &mut Moments<D>,
        t: usize,
        lr: f64,
    ) -> Tensor<D> {
        let param = param * (1.0 - lr * self.weight_decay);
        state.m = state.m.clone() * self.beta1 + grad.clone() * (1.0 - self.beta1);
        state.v = state.v.clone() * self.beta2 + grad.square() * (1.0 - self.beta2);
        let bc1 = 1.0 - self.beta1.powi(t as i32);
        let bc2 = 1.0 - self.beta2.powi(t as i32);
        // torch: p -= lr/bc1 · m / (√v/√bc2 + eps)
        let denom = state.v.clone().sqrt() / bc2.sqrt() + self.eps;
        param - state.m.clone() / denom * (lr / bc1)
    }
}
