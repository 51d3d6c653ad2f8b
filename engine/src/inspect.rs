//! `kiln inspect`: what a file or folder is, without loading it into a model.

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::family::ModelFamily;
use crate::weights::safetensors::SafeTensors;
use crate::weights::single_file;
use crate::weights::{Checkpoint, CheckpointInfo};

/// What a path holds.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Inspection {
    /// An SD 1.x checkpoint Kiln can load.
    Checkpoint(Box<CheckpointInfo>),
    /// A checkpoint of a family Kiln recognises but does not run.
    UnsupportedCheckpoint {
        /// What it is.
        family: ModelFamily,
    },
    /// A LoRA adapter, matched by name against SD 1.5's layers.
    Lora(Box<crate::adapters::lora::LoraReport>),
    /// A textual-inversion embedding.
    Embedding {
        /// `a1111_pt`, `a1111_safetensors` (emb_params), `diffusers_safetensors` or `diffusers_bin`.
        format: crate::adapters::textual_inversion::TiFormat,
        /// The token it would be loaded under (the file stem).
        token: String,
        /// Vectors per token.
        vectors: usize,
        /// Width of each vector (768 for SD 1.x).
        width: usize,
    },
    /// A safetensors file that is none of the above.
    Unknown {
        /// Number of tensors.
        tensors: usize,
        /// A few of its keys, to help the user.
        sample_keys: Vec<String>,
    },
}

fn embedding(ti: &crate::adapters::textual_inversion::TextualInversion) -> Inspection {
    Inspection::Embedding {
        format: ti.format,
        token: ti.token.clone(),
        vectors: ti.n_vectors(),
        width: ti.width,
    }
}

fn lora_report(path: &Path) -> Result<Inspection> {
    let names = crate::adapters::lora::targets::sd15_names()?;
    let (adapter, _) = crate::adapters::lora::LoraAdapter::read(path, &names, false)?;
    Ok(Inspection::Lora(Box::new(adapter.report)))
}

/// Classifies `path` (a file or a folder).
pub fn inspect(path: &Path) -> Result<Inspection> {
    if path.is_dir() {
        if path.join("adapter_config.json").is_file() {
            return lora_report(path);
        }
        return match Checkpoint::open(path, None) {
            Ok(c) => Ok(Inspection::Checkpoint(Box::new(c.info))),
            Err(Error::UnsupportedFamily { family, .. }) => {
                Ok(Inspection::UnsupportedCheckpoint { family })
            }
            Err(e) => Err(e),
        };
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if matches!(ext.as_str(), "ckpt" | "pt" | "pth" | "bin") {
        // Pickle-based files are only read as embeddings (safely, never executed).
        return match crate::adapters::textual_inversion::load(path, None) {
            Ok(ti) => Ok(embedding(&ti)),
            Err(Error::NotAnEmbedding { .. }) => Err(Error::PickleCheckpoint {
                path: path.to_owned(),
            }),
            Err(e) => Err(e),
        };
    }
    let file = SafeTensors::open_lazy(path)?;
    let keys: Vec<&String> = file.tensors().keys().collect();
    match single_file::family(&file) {
        Some(ModelFamily::Sd1) => {
            let c = Checkpoint::open(path, None)?;
            return Ok(Inspection::Checkpoint(Box::new(c.info)));
        }
        Some(f) => {
            return Ok(Inspection::UnsupportedCheckpoint { family: f });
        }
        None => {}
    }
    if keys.iter().any(|k| k.starts_with("conditioner.embedders.")) {
        return Ok(Inspection::UnsupportedCheckpoint {
            family: ModelFamily::Sdxl,
        });
    }
    let lora_like = keys.iter().any(|k| {
        k.starts_with("lora_unet_")
            || k.starts_with("lora_te")
            || k.contains(".lora_A.")
            || k.contains(".lora_B.")
            || k.contains(".lora.down.")
            || k.contains(".lora_down.")
            || k.contains("_lora.down.")
            || k.contains(".hada_w1_a")
            || k.contains(".lokr_w1")
    });
    if lora_like {
        return lora_report(path);
    }
    let ti_like = keys
        .iter()
        .any(|k| k.as_str() == "emb_params" || k.starts_with("string_to_param"))
        || (keys.len() == 1 && !keys[0].contains('.'));
    if ti_like {
        return crate::adapters::textual_inversion::load(path, None).map(|ti| embedding(&ti));
    }
    Ok(Inspection::Unknown {
        tensors: keys.len(),
        sample_keys: keys.iter().take(5).map(|k| (*k).clone()).collect(),
    })
}
