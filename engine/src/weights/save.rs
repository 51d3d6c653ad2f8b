//! Writing a model as a diffusers folder — what `kiln train base` produces and what diffusers'
//! `StableDiffusionPipeline.from_pretrained`, ComfyUI's diffusers loader and Kiln itself open:
//!
//! ```text
//! model_index.json
//! unet/config.json           unet/diffusion_pytorch_model.safetensors
//! vae/config.json            vae/diffusion_pytorch_model.safetensors
//! text_encoder/config.json   text_encoder/model.safetensors      (keys `text_model.*`, as SD 1.5)
//! tokenizer/tokenizer.json   tokenizer/tokenizer_config.json     (SD 1.5's CLIP tokenizer)
//! scheduler/scheduler_config.json
//! ```
//!
//! Tensors are written in PyTorch's layout (Linear weights `[out, in]`), as f32, f16 or bf16.
//! Configs carry every field diffusers would otherwise fill with a default that differs from
//! the model (`cross_attention_dim`, the VAE's block types, `mid_block_type`). Every file is
//! written to a temporary name and renamed.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Module;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::fs::write_atomic;
use crate::models::config::StableDiffusionConfig;
use crate::models::paths::{NamedParam, named_params};
use crate::schedulers::SchedulerConfig;
use crate::tensors::host;
use crate::weights::safetensors::{Dtype, WriteTensor, write_tensors};

/// The diffusers version the written configs claim (the one Kiln's fixtures come from).
const DIFFUSERS_VERSION: &str = "0.42.1";

/// The models of a pipeline, borrowed for saving.
pub struct Components<'a> {
    /// Text encoder (`text_encoder/`).
    pub text_encoder: &'a crate::models::clip_text::ClipTextModel,
    /// Denoiser (`unet/`).
    pub unet: &'a crate::models::unet_2d_condition::UNet2DConditionModel,
    /// Autoencoder (`vae/`).
    pub vae: &'a crate::models::vae::AutoencoderKL,
}

/// Writes `models` with `config` and `scheduler` as a diffusers folder at `dir` (created if
/// needed; files of the same names are replaced), tensors stored as `dtype`.
pub fn save_diffusers(
    dir: &Path,
    models: Components<'_>,
    config: &StableDiffusionConfig,
    scheduler: &SchedulerConfig,
    dtype: Dtype,
) -> Result<()> {
    let torch_dtype = match dtype {
        Dtype::F16 => "float16",
        Dtype::BF16 => "bfloat16",
        _ => "float32",
    };
    for sub in ["unet", "vae", "text_encoder", "tokenizer", "scheduler"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
    }
    write_module(
        &dir.join("unet/diffusion_pytorch_model.safetensors"),
        models.unet,
        "",
        dtype,
    )?;
    write_module(
        &dir.join("vae/diffusion_pytorch_model.safetensors"),
        models.vae,
        "",
        dtype,
    )?;
    write_module(
        &dir.join("text_encoder/model.safetensors"),
        models.text_encoder,
        "text_model.",
        dtype,
    )?;

    let mut unet = config_value(&config.unet)?;
    unet.insert("_class_name".into(), json!("UNet2DConditionModel"));
    // diffusers builds no mid block at all for an explicit null.
    unet.entry("mid_block_type")
        .or_insert(json!("UNetMidBlock2DCrossAttn"));
    write_json(&dir.join("unet/config.json"), unet)?;

    let n = config.vae.block_out_channels.len();
    let mut vae = config_value(&config.vae)?;
    vae.insert("_class_name".into(), json!("AutoencoderKL"));
    // diffusers' defaults are a single block of each.
    vae.insert(
        "down_block_types".into(),
        json!(vec!["DownEncoderBlock2D"; n]),
    );
    vae.insert("up_block_types".into(), json!(vec!["UpDecoderBlock2D"; n]));
    write_json(&dir.join("vae/config.json"), vae)?;

    let mut te = config_value(&config.text_encoder)?;
    te.insert("architectures".into(), json!(["CLIPTextModel"]));
    te.insert("model_type".into(), json!("clip_text_model"));
    te.insert("bos_token_id".into(), json!(crate::tokenizer::BOS));
    te.insert("eos_token_id".into(), json!(crate::tokenizer::EOS));
    te.insert("pad_token_id".into(), json!(crate::tokenizer::EOS));
    te.insert("dtype".into(), json!(torch_dtype));
    write_json(&dir.join("text_encoder/config.json"), te)?;

    let mut sched = config_value(scheduler)?;
    sched.insert("_class_name".into(), json!("DDIMScheduler"));
    write_json(&dir.join("scheduler/scheduler_config.json"), sched)?;

    write_atomic(
        &dir.join("tokenizer/tokenizer.json"),
        crate::tokenizer::TOKENIZER_JSON,
    )?;
    write_json(
        &dir.join("tokenizer/tokenizer_config.json"),
        serde_json::Map::from_iter([
            ("bos_token".into(), json!("<|startoftext|>")),
            ("eos_token".into(), json!("<|endoftext|>")),
            ("pad_token".into(), json!("<|endoftext|>")),
            ("unk_token".into(), json!("<|endoftext|>")),
            (
                "model_max_length".into(),
                json!(config.tokenizer_max_length),
            ),
            ("tokenizer_class".into(), json!("CLIPTokenizer")),
        ]),
    )?;

    let component = |lib: &str, class: &str| json!([lib, class]);
    write_json(
        &dir.join("model_index.json"),
        serde_json::Map::from_iter([
            ("_class_name".into(), json!("StableDiffusionPipeline")),
            ("feature_extractor".into(), json!([null, null])),
            ("image_encoder".into(), json!([null, null])),
            ("requires_safety_checker".into(), json!(false)),
            ("safety_checker".into(), json!([null, null])),
            ("scheduler".into(), component("diffusers", "DDIMScheduler")),
            (
                "text_encoder".into(),
                component("transformers", "CLIPTextModel"),
            ),
            (
                "tokenizer".into(),
                component("transformers", "CLIPTokenizer"),
            ),
            (
                "unet".into(),
                component("diffusers", "UNet2DConditionModel"),
            ),
            ("vae".into(), component("diffusers", "AutoencoderKL")),
        ]),
    )
}

/// A parameter in PyTorch's layout: (shape, values), a Linear weight transposed from Burn's
/// `[in, out]` to `[out, in]`.
pub fn torch_layout(param: NamedParam) -> Result<(Vec<usize>, Vec<f32>)> {
    let values = host(param.value)?;
    if !param.linear_weight {
        return Ok((param.shape, values));
    }
    let (rows, cols) = (param.shape[0], param.shape[1]);
    let mut t = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = values[r * cols + c];
        }
    }
    Ok((vec![cols, rows], t))
}

/// Every parameter of `module` under `prefix`, in PyTorch's layout ([`torch_layout`]),
/// written to `path` as `dtype`.
fn write_module<M: Module>(path: &Path, module: &M, prefix: &str, dtype: Dtype) -> Result<()> {
    let mut data = Vec::new();
    for p in named_params(module) {
        let name = format!("{prefix}{}", p.path);
        let (shape, values) = torch_layout(p)?;
        data.push((name, shape, values));
    }
    let writes: Vec<WriteTensor> = data
        .iter()
        .map(|(name, shape, values)| WriteTensor {
            name,
            shape: shape.clone(),
            data: values,
        })
        .collect();
    let mut meta = BTreeMap::new();
    meta.insert("format".to_owned(), "pt".to_owned());
    write_tensors(path, &writes, &meta, dtype)
}

/// A config as a JSON object without null fields (diffusers reads an explicit null as "off",
/// where an absent field takes the class default), stamped with the diffusers version.
fn config_value<T: serde::Serialize>(config: &T) -> Result<serde_json::Map<String, Value>> {
    match serde_json::to_value(config).map_err(|e| Error::Config(e.to_string()))? {
        Value::Object(mut m) => {
            m.retain(|_, v| !v.is_null());
            m.insert("_diffusers_version".into(), json!(DIFFUSERS_VERSION));
            Ok(m)
        }
        _ => Err(Error::Config("a config is not a JSON object".into())),
    }
}

fn write_json(path: &Path, value: serde_json::Map<String, Value>) -> Result<()> {
    let mut text = serde_json::to_string_pretty(&Value::Object(value))
        .map_err(|e| Error::Config(e.to_string()))?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}
