//! The alias table: every layer of the loaded model a LoRA can modify, under every name a
//! LoRA file may use for it. Built from the model's own parameter paths (which are diffusers
//! keys), so it can never drift from the model:
//!
//! - diffusers / PEFT: the module path itself (`down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q`);
//! - kohya with diffusers-named blocks: `lora_unet_` + path with `.` → `_`;
//! - kohya with original-LDM-named blocks: `lora_unet_` + the LDM path (`input_blocks_1_1_…`);
//! - kohya text encoder: `lora_te_text_model_` + path with `.` → `_`.

use std::collections::HashMap;

use serde::Serialize;

use crate::weights::single_file::ldm_module_path;

/// Which network a layer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// The denoising UNet.
    Unet,
    /// The CLIP text encoder.
    TextEncoder,
}

/// The kind and size of a layer, as the file must describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerShape {
    /// `Linear(in → out)`.
    Linear {
        /// Input features.
        d_in: usize,
        /// Output features.
        d_out: usize,
    },
    /// `Conv2d(in → out, k × k)`.
    Conv {
        /// Input channels.
        c_in: usize,
        /// Output channels.
        c_out: usize,
        /// Kernel size.
        kernel: usize,
    },
}

/// One modifiable layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Network.
    pub component: Component,
    /// Diffusers module path (the parameter is `{path}.weight`).
    pub path: String,
    /// Layer kind and size.
    pub shape: LayerShape,
}

/// Every modifiable layer of a model, by every alias.
#[derive(Debug, Clone, Default)]
pub struct TargetIndex {
    by_alias: HashMap<String, usize>,
    targets: Vec<Target>,
}

impl TargetIndex {
    /// Builds the table from `(parameter path, Burn shape)` lists of the UNet and the text
    /// encoder (see [`crate::models::paths::param_paths`]). `layers_per_block` is the UNet's,
    /// needed for LDM names.
    pub fn new(
        unet: &[(String, Vec<usize>)],
        text_encoder: &[(String, Vec<usize>)],
        layers_per_block: usize,
    ) -> Self {
        let mut index = TargetIndex::default();
        let unet_up_attn: Vec<bool> = (0..8)
            .map(|b| {
                unet.iter()
                    .any(|(p, _)| p.starts_with(&format!("up_blocks.{b}.attentions.")))
            })
            .collect();
        for (component, params) in [
            (Component::Unet, unet),
            (Component::TextEncoder, text_encoder),
        ] {
            for (param, shape) in params {
                let Some(path) = param.strip_suffix(".weight") else {
                    continue;
                };
                if path.contains("embedding") || path.contains("norm") {
                    continue;
                }
                let shape = match shape.as_slice() {
                    // Burn keeps linear weights as [in, out].
                    [d_in, d_out] => LayerShape::Linear {
                        d_in: *d_in,
                        d_out: *d_out,
                    },
                    [c_out, c_in, k, _] => LayerShape::Conv {
                        c_in: *c_in,
                        c_out: *c_out,
                        kernel: *k,
                    },
                    _ => continue,
                };
                let i = index.targets.len();
                index.targets.push(Target {
                    component,
                    path: path.to_owned(),
                    shape,
                });
                let underscored = path.replace('.', "_");
                match component {
                    Component::Unet => {
                        index.by_alias.insert(format!("unet:{path}"), i);
                        index.by_alias.insert(format!("lora_unet_{underscored}"), i);
                        if let Some(ldm) = ldm_module_path(path, layers_per_block, &unet_up_attn) {
                            index
                                .by_alias
                                .insert(format!("lora_unet_{}", ldm.replace('.', "_")), i);
                        }
                    }
                    Component::TextEncoder => {
                        index.by_alias.insert(format!("text_encoder:{path}"), i);
                        index
                            .by_alias
                            .insert(format!("lora_te_text_model_{underscored}"), i);
                    }
                }
            }
        }
        index
    }

    /// The layer a kohya name (`lora_unet_…`, `lora_te_…`) refers to.
    pub fn kohya(&self, name: &str) -> Option<&Target> {
        self.by_alias.get(name).map(|i| &self.targets[*i])
    }

    /// The layer at a diffusers module path of `component`.
    pub fn module(&self, component: Component, path: &str) -> Option<&Target> {
        let key = match component {
            Component::Unet => format!("unet:{path}"),
            Component::TextEncoder => format!("text_encoder:{path}"),
        };
        self.by_alias.get(&key).map(|i| &self.targets[*i])
    }

    /// Number of modifiable layers.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

/// SD 1.5's layer names (shapes are not meaningful): what `kiln inspect` matches a LoRA
/// against without loading a model. Built from a miniature model with SD 1.5's topology
/// (same blocks, layers and transformer depth; tiny widths), so the names can never differ
/// from the real model's.
pub fn sd15_names() -> crate::error::Result<TargetIndex> {
    use crate::loader::Loader;
    use crate::models::clip_text::ClipTextModel;
    use crate::models::config::{PerBlock, sd15};
    use crate::models::paths::param_paths;
    use crate::models::unet_2d_condition::UNet2DConditionModel;
    let mut cfg = sd15();
    cfg.unet.block_out_channels = vec![32; 4];
    cfg.unet.cross_attention_dim = 8;
    cfg.unet.attention_head_dim = PerBlock::One(1);
    cfg.text_encoder.hidden_size = 8;
    cfg.text_encoder.intermediate_size = 8;
    cfg.text_encoder.num_attention_heads = 1;
    cfg.text_encoder.vocab_size = 8;
    let device = crate::device::device("cpu")?;
    let mut ld = Loader::random(0, &device);
    let unet = UNet2DConditionModel::load(&cfg.unet, &mut ld)?;
    let text = ClipTextModel::load(&cfg.text_encoder, &mut ld)?;
    Ok(TargetIndex::new(
        &param_paths(&unet),
        &param_paths(&text),
        cfg.unet.layers_per_block,
    ))
}
