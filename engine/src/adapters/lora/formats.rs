//! Reading the key dialects of LoRA files into [`RawModule`]s: one per module, with the keys
//! of its down/up factors and where its alpha comes from. Matching modules to the model's
//! layers is done by [`super::targets::TargetIndex`].

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::weights::safetensors::SafeTensors;

use super::targets::Component;

/// How a module names the layer it modifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawTarget {
    /// A kohya name (`lora_unet_…`, `lora_te_…`), resolved through the alias table.
    Kohya(String),
    /// A diffusers module path of a component.
    Module(Component, String),
}

/// Where a module's alpha comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum AlphaSource {
    /// A scalar tensor in the file (kohya `.alpha`).
    Tensor(String),
    /// A value from metadata or `adapter_config.json`.
    Value(f32),
    /// None given: alpha = rank.
    Rank,
}

/// One LoRA module as stored in the file.
#[derive(Debug, Clone)]
pub struct RawModule {
    /// The module's name as the file has it (for reports).
    pub name: String,
    /// The layer it names.
    pub target: RawTarget,
    /// Key of the down (A) factor.
    pub down_key: String,
    /// Key of the up (B) factor.
    pub up_key: String,
    /// Alpha.
    pub alpha: AlphaSource,
    /// PEFT rsLoRA (scale alpha / √r).
    pub rslora: bool,
}

/// The layout of a LoRA file (serialized as `kohya`, `peft`, `peft_folder`, `diffusers_old`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraFormat {
    /// kohya-ss / A1111 (`lora_unet_…lora_down.weight`, `.alpha`).
    Kohya,
    /// PEFT keys in one file (`….lora_A.weight`), as diffusers saves them.
    Peft,
    /// A PEFT folder (`adapter_config.json` + `adapter_model.safetensors`).
    PeftFolder,
    /// diffusers' pre-PEFT attention-processor LoRA (`….lora.down.weight`).
    DiffusersOld,
}

impl LoraFormat {
    /// The serialized name.
    pub fn name(self) -> &'static str {
        match self {
            LoraFormat::Kohya => "kohya",
            LoraFormat::Peft => "peft",
            LoraFormat::PeftFolder => "peft_folder",
            LoraFormat::DiffusersOld => "diffusers_old",
        }
    }
}

impl std::fmt::Display for LoraFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The down, up and alpha keys of one module, as they are found.
type ModuleKeys = (Option<String>, Option<String>, Option<String>);

/// A parsed file.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The file's layout.
    pub format: LoraFormat,
    /// Key dialect details.
    pub dialect: String,
    /// Where alphas came from.
    pub alpha_source: String,
    /// The modules, plus pseudo-modules for keys no dialect explains (they will not match).
    pub modules: Vec<RawModule>,
}

/// PEFT's LoRA settings (`adapter_config.json`, or diffusers' `lora_adapter_metadata`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeftConfig {
    /// `r`.
    pub r: Option<usize>,
    /// `lora_alpha`.
    pub lora_alpha: Option<f32>,
    /// `use_rslora`.
    pub use_rslora: bool,
    /// `alpha_pattern`: module-name suffix → alpha.
    pub alpha_pattern: BTreeMap<String, f32>,
}

impl PeftConfig {
    fn from_json(v: &serde_json::Value) -> Self {
        let num = |k: &str| v.get(k).and_then(|x| x.as_f64());
        PeftConfig {
            r: num("r").map(|x| x as usize),
            lora_alpha: num("lora_alpha").map(|x| x as f32),
            use_rslora: v
                .get("use_rslora")
                .and_then(|x| x.as_bool())
                .unwrap_or(false),
            alpha_pattern: v
                .get("alpha_pattern")
                .and_then(|x| x.as_object())
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, a)| Some((k.clone(), a.as_f64()? as f32)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Reads `adapter_config.json`; None when the file does not exist.
    pub fn read(path: &Path) -> Result<Option<Self>> {
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::format(path, format!("invalid JSON: {e}")))?;
        Ok(Some(Self::from_json(&v)))
    }

    /// The config of one component from diffusers' `lora_adapter_metadata` header JSON
    /// (keys `unet.lora_alpha`, … or unprefixed).
    fn from_metadata(json: &str, component: Component) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_str(json).ok()?;
        let obj = v.as_object()?;
        let prefix = match component {
            Component::Unet => "unet.",
            Component::TextEncoder => "text_encoder.",
        };
        let scoped: serde_json::Map<String, serde_json::Value> = obj
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_owned(), v.clone())))
            .collect();
        if !scoped.is_empty() {
            return Some(Self::from_json(&serde_json::Value::Object(scoped)));
        }
        let nested = obj.get(prefix.trim_end_matches('.'));
        Some(Self::from_json(nested.unwrap_or(&v)))
    }

    /// Alpha for module `path` (PEFT matches `alpha_pattern` keys as module-name suffixes).
    fn alpha_for(&self, path: &str) -> AlphaSource {
        let pattern = self
            .alpha_pattern
            .iter()
            .find(|(k, _)| path == k.as_str() || path.ends_with(&format!(".{k}")));
        match (pattern, self.lora_alpha) {
            (Some((_, a)), _) => AlphaSource::Value(*a),
            (None, Some(a)) => AlphaSource::Value(a),
            (None, None) => AlphaSource::Rank,
        }
    }
}

fn refuse_other_kinds(file: &SafeTensors) -> Result<()> {
    let path = file.path();
    let keys: Vec<&String> = file.tensors().keys().collect();
    if keys.is_empty() {
        return Err(Error::NotAnAdapter {
            path: path.to_owned(),
            what: "the file contains no tensors".into(),
        });
    }
    let any = |pat: &str| keys.iter().any(|k| k.contains(pat));
    if keys
        .iter()
        .any(|k| k.starts_with("model.diffusion_model.") || k.starts_with("first_stage_model."))
    {
        return Err(Error::NotAnAdapter {
            path: path.to_owned(),
            what: "this is a full model checkpoint, not a LoRA; open it as a model".into(),
        });
    }
    if any("emb_params") || any("string_to_param") {
        return Err(Error::NotAnAdapter {
            path: path.to_owned(),
            what: "this is a textual-inversion embedding, not a LoRA; load it as an embedding"
                .into(),
        });
    }
    for (pat, kind) in [
        (".hada_w1_a", "LyCORIS LoHa"),
        (".lokr_w1", "LyCORIS LoKr"),
        (".dora_scale", "DoRA"),
        ("lora_magnitude_vector", "DoRA"),
        (".oft_blocks", "OFT"),
    ] {
        if any(pat) {
            return Err(Error::UnsupportedAdapter {
                path: path.to_owned(),
                kind: kind.into(),
            });
        }
    }
    Ok(())
}

/// Splits a PEFT/diffusers module path into its component and the path inside it.
fn component_path(prefixed: &str, folder_default: Option<Component>) -> (Component, String) {
    for (prefix, c) in [
        ("unet.", Component::Unet),
        ("text_encoder.", Component::TextEncoder),
        ("base_model.model.", Component::Unet),
    ] {
        if let Some(rest) = prefixed.strip_prefix(prefix) {
            let c = if prefix == "base_model.model." {
                folder_default.unwrap_or(c)
            } else {
                c
            };
            let (c, rest) = match rest.strip_prefix("text_model.") {
                Some(r) => (Component::TextEncoder, r),
                None if rest.starts_with("encoder.layers.") => (Component::TextEncoder, rest),
                None => (c, rest),
            };
            return (c, rest.to_owned());
        }
    }
    match prefixed.strip_prefix("text_model.") {
        Some(r) => (Component::TextEncoder, r.to_owned()),
        None => (Component::Unet, prefixed.to_owned()),
    }
}

/// Old diffusers attention-processor names: `attn1.processor.to_q_lora` → `attn1.to_q`.
fn processor_path(path: &str) -> String {
    let Some((module, proc)) = path.split_once(".processor.") else {
        return path.to_owned();
    };
    let layer = proc.trim_end_matches("_lora");
    let layer = if layer == "to_out" { "to_out.0" } else { layer };
    format!("{module}.{layer}")
}

/// Reads the modules of a LoRA file. `config` is a PEFT folder's `adapter_config.json`.
pub fn parse(file: &SafeTensors, config: Option<&PeftConfig>) -> Result<Parsed> {
    refuse_other_kinds(file)?;
    let keys: Vec<String> = file.tensors().keys().cloned().collect();
    let is_kohya = keys
        .iter()
        .any(|k| k.starts_with("lora_unet_") || k.starts_with("lora_te"));
    if is_kohya {
        return Ok(parse_kohya(&keys));
    }
    let meta = file.metadata().get("lora_adapter_metadata").cloned();
    let mut groups: BTreeMap<String, ModuleKeys> = BTreeMap::new();
    let mut stray = Vec::new();
    let mut format = LoraFormat::Peft;
    use LoraFormat::{DiffusersOld, Peft};
    const SUFFIXES: [(&str, usize, LoraFormat); 9] = [
        (".lora_A.weight", 0, Peft),
        (".lora_A.default.weight", 0, Peft),
        (".lora_B.weight", 1, Peft),
        (".lora_B.default.weight", 1, Peft),
        (".lora.down.weight", 0, DiffusersOld),
        (".lora.up.weight", 1, DiffusersOld),
        (".lora_linear_layer.down.weight", 0, DiffusersOld),
        (".lora_linear_layer.up.weight", 1, DiffusersOld),
        (".alpha", 2, Peft),
    ];
    for key in &keys {
        let processor = key.rsplit_once(".processor.").is_some();
        let hit = SUFFIXES
            .iter()
            .find_map(|(suffix, slot, fmt)| key.strip_suffix(suffix).map(|m| (m, *slot, *fmt)));
        let hit = hit.or_else(|| {
            // `…processor.to_q_lora.down.weight`
            if processor {
                key.strip_suffix(".down.weight")
                    .map(|m| (m, 0, DiffusersOld))
                    .or_else(|| key.strip_suffix(".up.weight").map(|m| (m, 1, DiffusersOld)))
            } else {
                None
            }
        });
        match hit {
            Some((module, slot, fmt)) => {
                if fmt == DiffusersOld {
                    format = fmt;
                }
                let entry = groups.entry(module.to_owned()).or_default();
                let cell = match slot {
                    0 => &mut entry.0,
                    1 => &mut entry.1,
                    _ => &mut entry.2,
                };
                *cell = Some(key.clone());
            }
            None => stray.push(key.clone()),
        }
    }
    if config.is_some() {
        format = LoraFormat::PeftFolder;
    }
    let folder_component = config.map(|_| {
        if keys
            .iter()
            .any(|k| k.contains("text_model.") || k.contains("encoder.layers."))
        {
            Component::TextEncoder
        } else {
            Component::Unet
        }
    });
    let mut modules = Vec::new();
    let mut alpha_source = "none given: alpha = rank".to_owned();
    for (module, (down, up, alpha_key)) in groups {
        let (component, path) = component_path(&module, folder_component);
        let path = processor_path(&path);
        let cfg = config.cloned().or_else(|| {
            meta.as_deref()
                .and_then(|m| PeftConfig::from_metadata(m, component))
        });
        let alpha = match (&alpha_key, &cfg) {
            (Some(k), _) => {
                alpha_source = "per-module .alpha tensors".into();
                AlphaSource::Tensor(k.clone())
            }
            (None, Some(c)) => {
                alpha_source = if config.is_some() {
                    "adapter_config.json".into()
                } else {
                    "lora_adapter_metadata header".into()
                };
                c.alpha_for(&path)
            }
            (None, None) => AlphaSource::Rank,
        };
        match (down, up) {
            (Some(down_key), Some(up_key)) => modules.push(RawModule {
                name: module.clone(),
                target: RawTarget::Module(component, path),
                down_key,
                up_key,
                alpha,
                rslora: cfg.as_ref().is_some_and(|c| c.use_rslora),
            }),
            _ => stray.push(module),
        }
    }
    modules.extend(stray.into_iter().map(unknown));
    Ok(Parsed {
        format,
        dialect: "diffusers module paths".into(),
        alpha_source,
        modules,
    })
}

fn unknown(key: String) -> RawModule {
    RawModule {
        name: key.clone(),
        target: RawTarget::Kohya(format!("unknown:{key}")),
        down_key: String::new(),
        up_key: String::new(),
        alpha: AlphaSource::Rank,
        rslora: false,
    }
}

fn parse_kohya(keys: &[String]) -> Parsed {
    let mut groups: BTreeMap<String, [Option<String>; 3]> = BTreeMap::new();
    let mut stray = Vec::new();
    for key in keys {
        let hit = [".lora_down.weight", ".lora_up.weight", ".alpha"]
            .iter()
            .enumerate()
            .find_map(|(slot, suffix)| key.strip_suffix(suffix).map(|m| (m, slot)));
        match hit {
            Some((module, slot)) => {
                groups.entry(module.to_owned()).or_default()[slot] = Some(key.clone())
            }
            None => stray.push(key.clone()),
        }
    }
    let ldm = groups.keys().any(|k| {
        k.starts_with("lora_unet_input_blocks")
            || k.starts_with("lora_unet_output_blocks")
            || k.starts_with("lora_unet_middle_block")
    });
    let diffusers = groups.keys().any(|k| {
        k.starts_with("lora_unet_down_blocks")
            || k.starts_with("lora_unet_up_blocks")
            || k.starts_with("lora_unet_mid_block")
    });
    let dialect = match (ldm, diffusers) {
        (true, true) => "kohya, LDM- and diffusers-named blocks",
        (true, false) => "kohya, LDM-named blocks",
        _ => "kohya, diffusers-named blocks",
    };
    let any_alpha = groups.values().any(|g| g[2].is_some());
    let mut modules = Vec::new();
    for (name, [down, up, alpha]) in groups {
        match (down, up) {
            (Some(down_key), Some(up_key)) => modules.push(RawModule {
                target: RawTarget::Kohya(name.clone()),
                name,
                down_key,
                up_key,
                alpha: alpha.map(AlphaSource::Tensor).unwrap_or(AlphaSource::Rank),
                rslora: false,
            }),
            _ => stray.push(name),
        }
    }
    modules.extend(stray.into_iter().map(unknown));
    Parsed {
        format: LoraFormat::Kohya,
        dialect: dialect.into(),
        alpha_source: if any_alpha {
            "per-module .alpha tensors".into()
        } else {
            "none given: alpha = rank".into()
        },
        modules,
    }
}
