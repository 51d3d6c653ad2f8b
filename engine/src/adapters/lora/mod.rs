//! LoRA adapters: every common file format converted into one canonical form (per layer of
//! the loaded model: down and up factors and a scale), a load report, and the stack that
//! merges any number of them into the model's weights.
//!
//! Formats (see [`formats`]): kohya/A1111 (`lora_unet_…`/`lora_te_…` with `.lora_down`,
//! `.lora_up`, `.alpha`; diffusers- or LDM-named blocks; LoCon convs), diffusers/PEFT
//! (`unet.….lora_A/.lora_B`, `text_encoder.…`), the older diffusers `….lora.down/.lora.up`
//! form, and PEFT folders (`adapter_model.safetensors` + `adapter_config.json`).
//!
//! Scale of a layer = adapter weight × alpha / rank (rsLoRA: alpha / √rank); alpha comes from
//! `.alpha` tensors, the `lora_adapter_metadata` header JSON, or `adapter_config.json`, and
//! is the rank when none says otherwise. Strict: a module that matches no layer, a shape
//! that does not fit, or a file made for another model family is an error that says so.

pub mod formats;
pub mod stack;
pub mod targets;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result, ShapeMismatch};
use crate::family::ModelFamily;
use crate::weights::safetensors::SafeTensors;
pub use formats::LoraFormat;
use formats::{AlphaSource, RawModule};
use targets::{Component, LayerShape, Target, TargetIndex};

/// One layer's low-rank update `ΔW = scale · up · down`.
#[derive(Debug, Clone)]
pub struct LoraModule {
    /// The layer it modifies.
    pub target: Target,
    /// Rank r.
    pub rank: usize,
    /// `down` as `[r, in·k·k]` (row-major).
    pub down: Vec<f32>,
    /// `up` as `[out, r]` (row-major).
    pub up: Vec<f32>,
    /// alpha / r (or alpha / √r for rsLoRA).
    pub scale: f32,
}

/// What was found in a LoRA file (shown by `kiln inspect` and the app).
#[derive(Debug, Clone, Serialize)]
pub struct LoraReport {
    /// The file's layout.
    pub format: LoraFormat,
    /// For kohya: `diffusers_blocks`, `ldm_blocks` or both.
    pub dialect: String,
    /// Base family from metadata and shapes, when it can be told.
    pub family: Option<ModelFamily>,
    /// Ranks found.
    pub ranks: BTreeSet<usize>,
    /// Alphas found (as text, to keep them exact).
    pub alphas: BTreeSet<String>,
    /// Where alpha came from.
    pub alpha_source: String,
    /// Modules in the file.
    pub modules: usize,
    /// Modules matched to a layer of the model.
    pub matched: usize,
    /// Names of modules that matched nothing.
    pub unmatched: Vec<String>,
    /// Matched UNet layers.
    pub unet_layers: usize,
    /// Matched text-encoder layers.
    pub text_encoder_layers: usize,
    /// Trigger words from `ss_tag_frequency` (most frequent first) and `ss_output_name`.
    pub trigger_words: Vec<String>,
    /// A1111's short hash (first 12 hex digits of the SHA-256 of the tensor data).
    pub short_hash: String,
}

/// A LoRA file in canonical form.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    /// The file or folder it came from.
    pub path: PathBuf,
    /// Display name (file stem).
    pub name: String,
    /// Every matched layer.
    pub modules: Vec<LoraModule>,
    /// The load report.
    pub report: LoraReport,
}

/// The family of the models LoRAs are checked against.
pub const MODEL_FAMILY: ModelFamily = ModelFamily::Sd1;

fn file_of(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("adapter_model.safetensors")
    } else {
        path.to_owned()
    }
}

/// A1111's short hash of safetensors tensor data: the first 12 hex digits of its SHA-256.
fn short_hash_of(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A1111's short hash of a safetensors file: SHA-256 of everything after the header.
pub fn short_hash(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let n = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize)
        .unwrap_or(0);
    Ok(short_hash_of(bytes.get(8 + n..).unwrap_or(&[])))
}

fn trigger_words(meta: &BTreeMap<String, String>) -> Vec<String> {
    let mut words = Vec::new();
    // The trainer's own word (modelspec; Kiln writes it) comes first, and then the file's
    // name is not taken for a trigger.
    let phrase = meta
        .get("modelspec.trigger_phrase")
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty());
    words.extend(phrase.clone());
    if let Some(freq) = meta
        .get("ss_tag_frequency")
        .and_then(|s| serde_json::from_str::<BTreeMap<String, BTreeMap<String, u64>>>(s).ok())
    {
        let mut all: BTreeMap<String, u64> = BTreeMap::new();
        for tags in freq.values() {
            for (t, n) in tags {
                *all.entry(t.trim().to_owned()).or_default() += n;
            }
        }
        let mut v: Vec<(String, u64)> = all.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        words.extend(
            v.into_iter()
                .take(10)
                .map(|(t, _)| t)
                .filter(|t| Some(t) != phrase.as_ref()),
        );
    }
    if phrase.is_none()
        && let Some(name) = meta.get("ss_output_name")
        && !words.contains(name)
    {
        words.push(name.clone());
    }
    words
}

fn family_from(
    meta: &BTreeMap<String, String>,
    raw: &[RawModule],
    file: &SafeTensors,
) -> Option<ModelFamily> {
    let base = meta
        .get("ss_base_model_version")
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    let arch = meta
        .get("modelspec.architecture")
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    if base.contains("sdxl")
        || arch.contains("xl")
        || raw
            .iter()
            .any(|m| m.name.starts_with("lora_te1_") || m.name.starts_with("lora_te2_"))
    {
        return Some(ModelFamily::Sdxl);
    }
    if base.contains("v2")
        || meta
            .get("ss_v2")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || arch.contains("v2")
    {
        return Some(ModelFamily::Sd2);
    }
    // Cross-attention key/value inputs: 768 (SD 1.x), 1024 (SD 2.x), 2048 (SDXL).
    let context = raw
        .iter()
        .filter(|m| {
            m.name.contains("attn2") && (m.name.contains("to_k") || m.name.contains("to_v"))
        })
        .find_map(|m| file.info(&m.down_key).and_then(|i| i.shape.get(1).copied()));
    match context {
        Some(2048) => Some(ModelFamily::Sdxl),
        Some(1024) => Some(ModelFamily::Sd2),
        Some(768) => Some(MODEL_FAMILY),
        _ if base.contains("v1") => Some(MODEL_FAMILY),
        _ => None,
    }
}

fn layer_dims(shape: LayerShape) -> (usize, usize, usize) {
    match shape {
        LayerShape::Linear { d_in, d_out } => (d_out, d_in, 1),
        LayerShape::Conv {
            c_in,
            c_out,
            kernel,
        } => (c_out, c_in, kernel),
    }
}

impl LoraAdapter {
    /// Opens a LoRA file (`.safetensors`) or PEFT folder and matches it against `index` (the
    /// loaded model's layers). Any module that matches nothing, a shape that does not fit,
    /// or a file made for another family is an error.
    pub fn open(path: &Path, index: &TargetIndex) -> Result<Self> {
        let (adapter, unmatched) = Self::read(path, index, true)?;
        if !unmatched.is_empty() {
            return Err(Error::AdapterUnmatched {
                path: path.to_owned(),
                total: adapter.report.modules,
                unmatched,
            });
        }
        Ok(adapter)
    }

    /// Reads and matches without refusing: the adapter (matched modules only) and the names
    /// of the modules that matched nothing. `check_shapes = false` matches by name only (as
    /// `kiln inspect` does against SD 1.5's layer names without loading a model).
    pub fn read(
        path: &Path,
        index: &TargetIndex,
        check_shapes: bool,
    ) -> Result<(Self, Vec<String>)> {
        let file_path = file_of(path);
        let ext = file_path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        if matches!(ext.as_str(), "pt" | "pth" | "bin" | "ckpt") {
            return Err(Error::PickleCheckpoint { path: file_path });
        }
        let file = SafeTensors::open(&file_path)?;
        let config = if path.is_dir() {
            formats::PeftConfig::read(&path.join("adapter_config.json"))?
        } else {
            None
        };
        let parsed = formats::parse(&file, config.as_ref())?;
        let meta = file.metadata().clone();
        let family = family_from(&meta, &parsed.modules, &file);
        if check_shapes && let Some(adapter) = family.filter(|f| *f != MODEL_FAMILY) {
            return Err(Error::AdapterFamilyMismatch {
                path: path.to_owned(),
                adapter,
                model: MODEL_FAMILY,
            });
        }

        let mut modules = Vec::new();
        let mut unmatched = Vec::new();
        let mut mismatches = Vec::new();
        let mut alphas = BTreeSet::new();
        let mut ranks = BTreeSet::new();
        for raw in &parsed.modules {
            let target = match &raw.target {
                formats::RawTarget::Kohya(name) => index.kohya(name),
                formats::RawTarget::Module(component, p) => index.module(*component, p),
            };
            let Some(target) = target else {
                unmatched.push(raw.name.clone());
                continue;
            };
            let down_shape = file
                .info(&raw.down_key)
                .map(|i| i.shape.clone())
                .unwrap_or_default();
            let up_shape = file
                .info(&raw.up_key)
                .map(|i| i.shape.clone())
                .unwrap_or_default();
            let (d_out, d_in, k) = layer_dims(target.shape);
            let rank = down_shape.first().copied().unwrap_or(0);
            let down_ok = down_shape.len() >= 2
                && down_shape[1] == d_in
                && down_shape.iter().skip(2).all(|&s| s == k)
                && Some(down_shape.iter().product::<usize>()) == rank.checked_mul(d_in * k * k);
            let up_ok = up_shape.len() >= 2
                && up_shape[0] == d_out
                && up_shape[1] == rank
                && up_shape.iter().skip(2).all(|&s| s == 1);
            if check_shapes && (rank == 0 || !down_ok || !up_ok) {
                mismatches.push(ShapeMismatch {
                    key: raw.name.clone(),
                    expected: vec![d_out, d_in, k, k],
                    got: [
                        up_shape.first().copied().unwrap_or(0),
                        down_shape.get(1).copied().unwrap_or(0),
                        rank,
                    ]
                    .to_vec(),
                });
                continue;
            }
            let alpha = match raw.alpha {
                AlphaSource::Tensor(ref key) => {
                    file.f32(key)?.first().copied().unwrap_or(rank as f32)
                }
                AlphaSource::Value(a) => a,
                AlphaSource::Rank => rank as f32,
            };
            let scale = if raw.rslora {
                alpha / (rank as f32).sqrt()
            } else {
                alpha / rank as f32
            };
            alphas.insert(format!("{alpha}"));
            ranks.insert(rank);
            let (down, up) = if check_shapes {
                (file.f32(&raw.down_key)?, file.f32(&raw.up_key)?)
            } else {
                (Vec::new(), Vec::new())
            };
            modules.push(LoraModule {
                target: target.clone(),
                rank,
                down,
                up,
                scale,
            });
        }
        if !mismatches.is_empty() {
            return Err(Error::ShapeMismatch {
                what: format!("{} (LoRA)", path.display()),
                mismatches,
            });
        }
        let report = LoraReport {
            format: parsed.format,
            dialect: parsed.dialect,
            family,
            ranks,
            alphas,
            alpha_source: parsed.alpha_source,
            modules: parsed.modules.len(),
            matched: modules.len(),
            unmatched: unmatched.clone(),
            unet_layers: modules
                .iter()
                .filter(|m| m.target.component == Component::Unet)
                .count(),
            text_encoder_layers: modules
                .iter()
                .filter(|m| m.target.component == Component::TextEncoder)
                .count(),
            trigger_words: trigger_words(&meta),
            short_hash: short_hash_of(file.data()),
        };
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok((
            LoraAdapter {
                path: path.to_owned(),
                name,
                modules,
                report,
            },
            unmatched,
        ))
    }
}
