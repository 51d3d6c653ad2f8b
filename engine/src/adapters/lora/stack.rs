//! The LoRA stack: any number of adapters, each with its own weight (negative allowed) and
//! on/off switch, merged into the model's weights, each addressed by a [`StackKey`]: the
//! [`AdapterId`] its front end chose, or the prompt tag that asked for it.
//!
//! Merging (`W = W₀ + Σ weightᵢ · ΔWᵢ` over the enabled adapters covering a layer, in stack
//! order) keeps the pristine base weights `W₀` of every covered layer and each adapter's
//! full-size `ΔWᵢ` (alpha/rank already applied) on the device. Changing one adapter's weight
//! recomputes only the layers that adapter covers, from `W₀`, so nothing drifts and generation
//! afterwards runs at the speed of the plain model (no per-step LoRA cost). Prompt-tag entries
//! always follow the front end's entries, so a stack merges in the same order however it was
//! built.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};

use crate::adapters::AdapterId;
use crate::models::paths::map_params;

use super::LoraAdapter;
use super::targets::{Component, LayerShape};

/// A parameter of the model: its component and path (`….to_q.weight`).
pub type ParamKey = (Component, String);

/// What a stack entry is known by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StackKey {
    /// An entry a front end added under its id.
    Adapter(AdapterId),
    /// An entry a `<lora:NAME:WEIGHT>` prompt tag asked for, by its file.
    PromptTag(PathBuf),
}

/// One adapter in the stack.
#[derive(Debug, Clone)]
pub struct StackEntry {
    /// What it is known by.
    pub key: StackKey,
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

    /// Whether it changes the model now (enabled, weight ≠ 0).
    pub fn is_applied(&self) -> bool {
        self.enabled && self.weight != 0.0
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
    /// The adapters, in merge order.
    pub fn entries(&self) -> &[StackEntry] {
        &self.entries
    }

    /// The entry known by `key`.
    pub fn get(&self, key: &StackKey) -> Option<&StackEntry> {
        self.entries.iter().find(|e| &e.key == key)
    }

    fn position(&self, key: &StackKey) -> Option<usize> {
        self.entries.iter().position(|e| &e.key == key)
    }

    /// Adds `adapter` under `key` at `weight` (a front end's entry after the other front-end
    /// entries, a prompt tag's at the end); returns the parameters to re-merge. An entry
    /// already under `key` is replaced.
    pub fn push(
        &mut self,
        key: StackKey,
        adapter: Arc<LoraAdapter>,
        weight: f32,
        enabled: bool,
        device: &Device,
    ) -> BTreeSet<ParamKey> {
        let mut dirty = self.remove(&key);
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
            key,
            adapter,
            weight,
            enabled,
            deltas,
        };
        dirty.extend(entry.covers());
        let at = match entry.key {
            StackKey::Adapter(_) => self
                .entries
                .iter()
                .position(|e| matches!(e.key, StackKey::PromptTag(_)))
                .unwrap_or(self.entries.len()),
            StackKey::PromptTag(_) => self.entries.len(),
        };
        self.entries.insert(at, entry);
        dirty
    }

    /// Sets the weight of the entry known by `key`; returns the parameters to re-merge (none
    /// when there is no such entry or nothing changes).
    pub fn set_weight(&mut self, key: &StackKey, weight: f32) -> BTreeSet<ParamKey> {
        match self.entries.iter_mut().find(|e| &e.key == key) {
            Some(e) if e.weight != weight => {
                e.weight = weight;
                e.covers()
            }
            _ => BTreeSet::new(),
        }
    }

    /// Turns the entry known by `key` on or off; returns the parameters to re-merge.
    pub fn set_enabled(&mut self, key: &StackKey, enabled: bool) -> BTreeSet<ParamKey> {
        match self.entries.iter_mut().find(|e| &e.key == key) {
            Some(e) if e.enabled != enabled => {
                e.enabled = enabled;
                e.covers()
            }
            _ => BTreeSet::new(),
        }
    }

    /// Removes the entry known by `key`; returns the parameters to re-merge.
    pub fn remove(&mut self, key: &StackKey) -> BTreeSet<ParamKey> {
        match self.position(key) {
            Some(i) => self.entries.remove(i).covers(),
            None => BTreeSet::new(),
        }
    }

    /// Puts the front end's entries in the order of `order` (ids not in the stack are
    /// ignored; entries `order` leaves out keep their relative order after the named ones;
    /// prompt-tag entries stay last); returns the parameters to re-merge (those of every entry
    /// that moved: the sum runs in stack order, so its rounding follows it).
    pub fn reorder(&mut self, order: &[AdapterId]) -> BTreeSet<ParamKey> {
        let rank = |e: &StackEntry| match &e.key {
            StackKey::Adapter(id) => (0, order.iter().position(|o| o == id).unwrap_or(order.len())),
            StackKey::PromptTag(_) => (1, 0),
        };
        let before: Vec<StackKey> = self.entries.iter().map(|e| e.key.clone()).collect();
        // A stable sort: unnamed entries keep their order.
        self.entries.sort_by_key(rank);
        self.entries
            .iter()
            .zip(&before)
            .filter(|(e, k)| &e.key != *k)
            .flat_map(|(e, _)| e.covers())
            .collect()
    }

    /// The merged value of parameter `key` given its current value (captured as pristine the
    /// first time the stack touches it).
    pub fn merged(&mut self, key: &ParamKey, current: Tensor<1>) -> Tensor<1> {
        let base = self.pristine.entry(key.clone()).or_insert(current).clone();
        // Accumulate in f32 and round once to the model's precision (f16 on GPUs).
        let dtype = base.dtype();
        let mut w = base.cast(burn::tensor::FloatDType::F32);
        for e in self.entries.iter().filter(|e| e.is_applied()) {
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

#[cfg(test)]
mod tests {
    use super::super::{LoraFormat, LoraModule, LoraReport};
    use super::*;
    use crate::adapters::lora::targets::Target;

    /// A rank-1 adapter on 2→2 linear layers `paths` (UNet) whose ΔW is `value` everywhere.
    fn adapter(value: f32, paths: &[&str]) -> Arc<LoraAdapter> {
        let modules: Vec<LoraModule> = paths
            .iter()
            .map(|p| LoraModule {
                target: Target {
                    component: Component::Unet,
                    path: (*p).to_owned(),
                    shape: LayerShape::Linear { d_in: 2, d_out: 2 },
                },
                rank: 1,
                down: vec![1.0, 1.0],
                up: vec![value, value],
                scale: 1.0,
            })
            .collect();
        Arc::new(LoraAdapter {
            path: "mem".into(),
            name: format!("delta-{value}"),
            report: LoraReport {
                format: LoraFormat::Peft,
                dialect: String::new(),
                family: None,
                ranks: [1].into(),
                alphas: Default::default(),
                alpha_source: String::new(),
                modules: modules.len(),
                matched: modules.len(),
                unmatched: Vec::new(),
                unet_layers: modules.len(),
                text_encoder_layers: 0,
                trigger_words: Vec::new(),
                short_hash: String::new(),
            },
            modules,
        })
    }

    fn id(n: u64) -> StackKey {
        StackKey::Adapter(AdapterId(n))
    }

    fn tag(name: &str) -> StackKey {
        StackKey::PromptTag(format!("/loras/{name}.safetensors").into())
    }

    fn param(path: &str) -> ParamKey {
        (Component::Unet, format!("{path}.weight"))
    }

    fn order(stack: &LoraStack) -> Vec<StackKey> {
        stack.entries().iter().map(|e| e.key.clone()).collect()
    }

    /// The merged value of `path` on a base weight of zeros (its first element: all are equal).
    fn merged(stack: &mut LoraStack, path: &str) -> f32 {
        let device = Device::flex();
        let w = stack.merged(&param(path), Tensor::zeros([4], &device));
        w.into_data().try_to_vec::<f32>().unwrap()[0]
    }

    #[test]
    fn front_end_entries_come_before_prompt_tags_and_merge_as_a_weighted_sum() {
        let device = Device::flex();
        let mut stack = LoraStack::default();
        let dirty = stack.push(id(1), adapter(1.0, &["a"]), 0.5, true, &device);
        assert_eq!(dirty, [param("a")].into());
        stack.push(tag("t"), adapter(10.0, &["a", "b"]), 1.0, true, &device);
        stack.push(id(2), adapter(100.0, &["b"]), -1.0, true, &device);
        assert_eq!(order(&stack), [id(1), id(2), tag("t")]);
        assert_eq!(merged(&mut stack, "a"), 0.5 + 10.0);
        assert_eq!(merged(&mut stack, "b"), 10.0 - 100.0);
        assert_eq!(
            merged(&mut stack, "c"),
            0.0,
            "an uncovered layer is untouched"
        );
    }

    #[test]
    fn the_pristine_weight_is_kept_so_changes_never_accumulate() {
        let device = Device::flex();
        let mut stack = LoraStack::default();
        stack.push(id(1), adapter(1.0, &["a"]), 1.0, true, &device);
        let base = Tensor::<1>::full([4], 3.0, &device);
        let once = stack.merged(&param("a"), base);
        // The model now holds the merged weight; merging again starts from the pristine one.
        stack.set_weight(&id(1), 2.0);
        let twice = stack.merged(&param("a"), once);
        assert_eq!(twice.into_data().try_to_vec::<f32>().unwrap(), [5.0; 4]);
    }

    #[test]
    fn weight_and_switch_changes_name_only_the_layers_they_touch() {
        let device = Device::flex();
        let mut stack = LoraStack::default();
        stack.push(id(1), adapter(1.0, &["a", "b"]), 1.0, true, &device);
        stack.push(id(2), adapter(1.0, &["c"]), 1.0, true, &device);
        assert_eq!(
            stack.set_weight(&id(1), 0.25),
            [param("a"), param("b")].into()
        );
        assert!(
            stack.set_weight(&id(1), 0.25).is_empty(),
            "no change, nothing to merge"
        );
        assert!(
            stack.set_weight(&id(9), 1.0).is_empty(),
            "an unknown id changes nothing"
        );
        assert_eq!(merged(&mut stack, "a"), 0.25);
        assert_eq!(stack.set_enabled(&id(2), false), [param("c")].into());
        assert!(!stack.get(&id(2)).unwrap().is_applied());
        assert_eq!(merged(&mut stack, "c"), 0.0);
        assert!(stack.set_enabled(&id(2), false).is_empty());
        stack.set_weight(&id(1), 0.0);
        assert!(
            !stack.get(&id(1)).unwrap().is_applied(),
            "weight 0 applies nothing"
        );
    }

    #[test]
    fn removing_or_replacing_an_entry_re_merges_what_it_covered() {
        let device = Device::flex();
        let mut stack = LoraStack::default();
        stack.push(id(1), adapter(1.0, &["a"]), 1.0, true, &device);
        stack.push(id(2), adapter(2.0, &["b"]), 1.0, true, &device);
        // Replacing id 1 with an adapter on another layer: both layers are dirty, and the
        // entry keeps its place before the prompt tags but moves after id 2.
        let dirty = stack.push(id(1), adapter(3.0, &["c"]), 1.0, true, &device);
        assert_eq!(dirty, [param("a"), param("c")].into());
        assert_eq!(order(&stack), [id(2), id(1)]);
        assert_eq!(merged(&mut stack, "a"), 0.0);
        assert_eq!(stack.remove(&id(2)), [param("b")].into());
        assert!(stack.remove(&id(2)).is_empty(), "removed once");
        assert_eq!(order(&stack), [id(1)]);
        assert_eq!(merged(&mut stack, "b"), 0.0);
    }

    #[test]
    fn reorder_follows_the_ids_keeps_tags_last_and_names_only_what_moved() {
        let device = Device::flex();
        let mut stack = LoraStack::default();
        for (n, path) in [(1, "a"), (2, "b"), (3, "c")] {
            stack.push(id(n), adapter(1.0, &[path]), 1.0, true, &device);
        }
        stack.push(tag("t"), adapter(1.0, &["d"]), 1.0, true, &device);
        assert!(
            stack
                .reorder(&[AdapterId(1), AdapterId(2), AdapterId(3)])
                .is_empty()
        );
        let dirty = stack.reorder(&[AdapterId(2), AdapterId(1), AdapterId(3)]);
        assert_eq!(order(&stack), [id(2), id(1), id(3), tag("t")]);
        assert_eq!(dirty, [param("a"), param("b")].into());
        // Unknown ids are ignored; unnamed entries follow the named ones in their order.
        stack.reorder(&[AdapterId(3), AdapterId(42)]);
        assert_eq!(order(&stack), [id(3), id(2), id(1), tag("t")]);
    }
}
