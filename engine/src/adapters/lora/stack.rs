//! The LoRA stack: any number of adapters, each with its own weight (negative allowed) and
//! on/off switch, merged into the model's weights.
//!
//! Merging (`W = W₀ + Σ weightᵢ · ΔWᵢ` over the enabled adapters covering a layer) keeps the
//! pristine base weights `W₀` of every covered layer and each adapter's full-size `ΔWᵢ`
//! (alpha/rank already applied) on the device. Changing one adapter's weight recomputes only
//! the layers that adapter covers, from `W₀`, so nothing drifts and generation afterwards
//! runs at the speed of the plain model (no per-step LoRA cost).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};

use crate::models::paths::map_params;

use super::LoraAdapter;
use super::targets::{Component, LayerShape};

/// A parameter of the model: its component and path (`….to_q.weight`).
pub type ParamKey = (Component, String);

/// One adapter in the stack.
#[derive(Debug, Clone)]
pub struct StackEntry {
    /// The adapter.
    pub adapter: Arc<LoraAdapter>,
    /// Its weight (multiplies alpha/rank).
    pub weight: f32,
    /// Whether it is applied.
    pub enabled: bool,
    /// ΔW per covered parameter, flattened in the parameter's own (Burn) layout.
    deltas: HashMap<ParamKey, Tensor<1>>,
}

impl StackEntry {
    /// The parameters this adapter modifies.
    pub fn covers(&self) -> BTreeSet<ParamKey> {
        self.deltas.keys().cloned().collect()
    }
}

/// The stack and the pristine weights of every layer it has touched.
#[derive(Debug, Clone, Default)]
pub struct LoraStack {
    entries: Vec<StackEntry>,
    pristine: HashMap<ParamKey, Tensor<1>>,
}

/// `scale · up @ down` as a flattened tensor in the layout of the target parameter.
fn delta(module: &super::LoraModule, device: &Device) -> Tensor<1> {
    let r = module.rank;
    let (d_out, cols) = match module.target.shape {
        LayerShape::Linear { d_in, d_out } => (d_out, d_in),
        LayerShape::Conv {
            c_in,
            c_out,
            kernel,
        } => (c_out, c_in * kernel * kernel),
    };
    let up: Tensor<2> = Tensor::from_data(TensorData::new(module.up.clone(), [d_out, r]), device);
    let down: Tensor<2> =
        Tensor::from_data(TensorData::new(module.down.clone(), [r, cols]), device);
    let dw = up.matmul(down) * module.scale;
    let dw = match module.target.shape {
        // Burn's linear weight is [in, out].
        LayerShape::Linear { .. } => dw.transpose(),
        LayerShape::Conv { .. } => dw,
    };
    dw.reshape([d_out * cols])
}

impl LoraStack {
    /// The adapters, in order.
    pub fn entries(&self) -> &[StackEntry] {
        &self.entries
    }

    /// Adds `adapter` at `weight` (enabled); returns the parameters to re-merge.
    pub fn push(
        &mut self,
        adapter: Arc<LoraAdapter>,
        weight: f32,
        device: &Device,
    ) -> BTreeSet<ParamKey> {
        let deltas: HashMap<ParamKey, Tensor<1>> = adapter
            .modules
            .iter()
            .map(|m| {
                (
                    (m.target.component, format!("{}.weight", m.target.path)),
                    delta(m, device),
                )
            })
            .collect();
        let entry = StackEntry {
            adapter,
            weight,
            enabled: true,
            deltas,
        };
        let dirty = entry.covers();
        self.entries.push(entry);
        dirty
    }

    /// Sets entry `i`'s weight; returns the parameters to re-merge (empty if `i` is out of range).
    pub fn set_weight(&mut self, i: usize, weight: f32) -> BTreeSet<ParamKey> {
        match self.entries.get_mut(i) {
            Some(e) if e.weight != weight => {
                e.weight = weight;
                e.covers()
            }
            _ => BTreeSet::new(),
        }
    }

    /// Turns entry `i` on or off; returns the parameters to re-merge.
    pub fn set_enabled(&mut self, i: usize, enabled: bool) -> BTreeSet<ParamKey> {
        match self.entries.get_mut(i) {
            Some(e) if e.enabled != enabled => {
                e.enabled = enabled;
                e.covers()
            }
            _ => BTreeSet::new(),
        }
    }

    /// Removes entry `i`; returns the parameters to re-merge.
    pub fn remove(&mut self, i: usize) -> BTreeSet<ParamKey> {
        if i < self.entries.len() {
            self.entries.remove(i).covers()
        } else {
            BTreeSet::new()
        }
    }

    /// Moves entry `from` to position `to`; returns the parameters to re-merge (the moved
    /// adapter's: the sum over the stack runs in stack order, so its rounding follows it).
    pub fn move_entry(&mut self, from: usize, to: usize) -> BTreeSet<ParamKey> {
        if from >= self.entries.len() || to >= self.entries.len() || from == to {
            return BTreeSet::new();
        }
        let e = self.entries.remove(from);
        let covers = e.covers();
        self.entries.insert(to, e);
        covers
    }

    /// The merged value of parameter `key` given its current value (captured as pristine the
    /// first time the stack touches it).
    pub fn merged(&mut self, key: &ParamKey, current: Tensor<1>) -> Tensor<1> {
        let base = self.pristine.entry(key.clone()).or_insert(current).clone();
        // Accumulate in f32 and round once to the model's precision (f16 on GPUs).
        let dtype = base.dtype();
        let mut w = base.cast(burn::tensor::FloatDType::F32);
        for e in self.entries.iter().filter(|e| e.enabled && e.weight != 0.0) {
            if let Some(d) = e.deltas.get(key) {
                w = w + d.clone().cast(burn::tensor::FloatDType::F32) * e.weight;
            }
        }
        w.cast(dtype)
    }

    /// Converts the kept pristine weights to `dtype` (when the model's precision changes).
    pub fn cast_pristine(&mut self, dtype: burn::tensor::FloatDType) {
        for w in self.pristine.values_mut() {
            *w = w.clone().cast(dtype);
        }
    }
}

impl LoraStack {
    /// Re-merges the `dirty` parameters of `component` into `model` (see [`LoraStack::merged`]).
    pub fn merge_into<M: Module>(
        &mut self,
        component: Component,
        model: M,
        dirty: &BTreeSet<ParamKey>,
    ) -> M {
        let paths: std::collections::HashSet<&str> = dirty
            .iter()
            .filter(|(c, _)| *c == component)
            .map(|(_, p)| p.as_str())
            .collect();
        if paths.is_empty() {
            return model;
        }
        let select = |p: &str| paths.contains(p);
        let mut merge =
            |p: &str, current: Tensor<1>| self.merged(&(component, p.to_owned()), current);
        map_params(model, &select, &mut merge)
    }
}
