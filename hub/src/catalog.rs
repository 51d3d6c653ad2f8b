//! The models Kiln knows how to get, and what a models folder holds: Stable Diffusion 1.5's
//! repository and files, where a download of it goes, and [`scan_models`], which lists the
//! checkpoints, LoRAs and embeddings of a folder as the engine classifies them.

use std::path::{Path, PathBuf};

use kiln_engine::fs::size_on_disk;

use crate::error::{Error, Result};

/// SD 1.5's diffusers repository (a maintained mirror of runwayml's).
pub const SD15_REPO: &str = "stable-diffusion-v1-5/stable-diffusion-v1-5";

/// The files of a diffusers SD 1.x pipeline Kiln needs (fp32 weights unless `fp16`).
pub fn sd15_files(fp16: bool) -> Vec<String> {
    let w = |dir: &str, name: &str| {
        if fp16 {
            format!("{dir}/{name}.fp16.safetensors")
        } else {
            format!("{dir}/{name}.safetensors")
        }
    };
    vec![
        "model_index.json".into(),
        "scheduler/scheduler_config.json".into(),
        "text_encoder/config.json".into(),
        w("text_encoder", "model"),
        "tokenizer/merges.txt".into(),
        "tokenizer/special_tokens_map.json".into(),
        "tokenizer/tokenizer_config.json".into(),
        "tokenizer/vocab.json".into(),
        "unet/config.json".into(),
        w("unet", "diffusion_pytorch_model"),
        "vae/config.json".into(),
        w("vae", "diffusion_pytorch_model"),
    ]
}

/// Where Stable Diffusion 1.5 goes in `models_dir` (a folder per precision).
pub fn sd15_dest(models_dir: &Path, fp16: bool) -> PathBuf {
    models_dir.join(if fp16 {
        "stable-diffusion-v1-5-fp16"
    } else {
        "stable-diffusion-v1-5"
    })
}

/// What a models folder holds, classified by the engine.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelEntry {
    /// The file or folder.
    pub path: PathBuf,
    /// What it is.
    pub kind: kiln_engine::inspect::Inspection,
    /// Size on disk in bytes.
    pub bytes: u64,
    /// What is wrong with it, when Kiln cannot use it at all (unreadable, truncated, or no
    /// model Kiln knows); its `kind` is then `unknown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Every checkpoint, LoRA and embedding directly in `dir` (diffusers folders count as one
/// entry), and every other `.safetensors`, `.pt` or `.bin` file or model-like folder with what
/// is wrong with it (`problem`), so that a broken download is seen rather than missing.
pub fn scan_models(dir: &Path) -> Result<Vec<ModelEntry>> {
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    paths.sort();
    for path in paths {
        let candidate = if path.is_dir() {
            path.join("model_index.json").exists() || path.join("adapter_config.json").exists()
        } else {
            path.extension()
                .is_some_and(|e| matches!(e.to_str(), Some("safetensors" | "pt" | "bin")))
        };
        if !candidate {
            continue;
        }
        let (kind, problem) = match kiln_engine::inspect::inspect(&path) {
            Ok(kiln_engine::inspect::Inspection::Unknown {
                tensors,
                sample_keys,
            }) => {
                let problem = format!(
                    "not a checkpoint, LoRA or embedding Kiln knows ({tensors} tensors{})",
                    sample_keys
                        .first()
                        .map(|k| format!(", such as {k}"))
                        .unwrap_or_default()
                );
                let kind = kiln_engine::inspect::Inspection::Unknown {
                    tensors,
                    sample_keys,
                };
                (kind, Some(problem))
            }
            Ok(kind) => (kind, None),
            Err(e) => (
                kiln_engine::inspect::Inspection::Unknown {
                    tensors: 0,
                    sample_keys: Vec::new(),
                },
                Some(e.to_string()),
            ),
        };
        out.push(ModelEntry {
            bytes: size_on_disk(&path),
            path,
            kind,
            problem,
        });
    }
    Ok(out)
}
