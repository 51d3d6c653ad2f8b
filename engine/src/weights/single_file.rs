//! Single-file SD 1.x checkpoints in the original (LDM / CompVis) layout: the key remap
//! table to diffusers names, and architecture inference from tensor shapes.
//!
//! A single file cannot express everything a diffusers config says: attention head counts
//! and GroupNorm group counts are not visible in any shape. Those take SD 1.x values
//! (8 heads per UNet attention, 64-wide CLIP heads, 32 groups, scaling factor 0.18215)
//! unless a diffusers folder with `*/config.json` is given (`--config DIR`, like diffusers'
//! `from_single_file(config=...)`).

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, Result};
use crate::family::ModelFamily;
use crate::models::config::{
    AutoencoderKLConfig, ClipTextConfig, PerBlock, UNet2DConditionConfig, sd15,
};
use crate::weights::safetensors::SafeTensors;

/// Prefix of UNet tensors in an LDM checkpoint.
pub const UNET_PREFIX: &str = "model.diffusion_model.";
/// Prefix of VAE tensors.
pub const VAE_PREFIX: &str = "first_stage_model.";
/// Prefixes of CLIP text-encoder tensors (newer and older transformers layouts).
pub const CLIP_PREFIXES: [&str; 2] = [
    "cond_stage_model.transformer.text_model.",
    "cond_stage_model.transformer.",
];

/// Whether `key` is a buffer or training leftover that real checkpoints carry and Kiln
/// ignores: LatentDiffusion's schedule buffers (`betas`, `alphas_cumprod`, … — top-level
/// names without a dot), EMA copies (`model_ema.*`), and CLIP's `position_ids`.
pub fn is_ignored_key(key: &str) -> bool {
    !key.contains('.') || key.starts_with("model_ema.") || key.ends_with("position_ids")
}

/// Classifies an LDM-layout checkpoint; None when it is not one.
pub fn family(file: &SafeTensors) -> Option<ModelFamily> {
    let t = file.tensors();
    if t.keys().any(|k| k.starts_with("conditioner.embedders."))
        || t.contains_key("model.diffusion_model.label_emb.0.0.weight")
    {
        return Some(ModelFamily::Sdxl);
    }
    let conv_in = t.get("model.diffusion_model.input_blocks.0.0.weight")?;
    if conv_in.shape.get(1) == Some(&9) {
        return Some(ModelFamily::Inpainting);
    }
    if t.keys().any(|k| k.starts_with("cond_stage_model.model.")) {
        return Some(ModelFamily::Sd2);
    }
    let context = t
        .iter()
        .find(|(k, _)| k.starts_with(UNET_PREFIX) && k.ends_with("attn2.to_k.weight"))
        .and_then(|(_, i)| i.shape.get(1).copied());
    if context == Some(1024) {
        return Some(ModelFamily::Sd2);
    }
    Some(ModelFamily::Sd1)
}

/// The shape of `key`, which must have at least `rank` dimensions (the shapes come from the
/// file's header: a crafted file can give any).
fn shape_of<'a>(file: &'a SafeTensors, key: &str, rank: usize) -> Result<&'a [usize]> {
    let shape =
        file.info(key)
            .map(|i| i.shape.as_slice())
            .ok_or_else(|| Error::MissingTensors {
                what: "single-file checkpoint".into(),
                keys: vec![key.to_owned()],
            })?;
    if shape.len() < rank {
        return Err(Error::format(
            file.path(),
            format!("tensor '{key}' has shape {shape:?}; a checkpoint's has {rank} dimensions"),
        ));
    }
    Ok(shape)
}

fn indices(file: &SafeTensors, prefix: &str) -> BTreeSet<usize> {
    file.tensors()
        .keys()
        .filter_map(|k| k.strip_prefix(prefix))
        .filter_map(|rest| rest.split('.').next()?.parse().ok())
        .collect()
}

/// Infers the UNet config from shapes; `heads` and `groups` cannot be seen and come from
/// `defaults` (SD 1.5's unless a config was given).
pub fn infer_unet(
    file: &SafeTensors,
    defaults: &UNet2DConditionConfig,
) -> Result<UNet2DConditionConfig> {
    let p = UNET_PREFIX;
    let conv_in = shape_of(file, &format!("{p}input_blocks.0.0.weight"), 4)?.to_vec();
    let out = shape_of(file, &format!("{p}out.2.weight"), 4)?.to_vec();
    let inputs = indices(file, &format!("{p}input_blocks."));
    let max_i = inputs.iter().max().copied().unwrap_or(0);
    // SD's UNets have 12; an index from a crafted key could be anything up to usize::MAX.
    if max_i > 1000 {
        return Err(Error::format(
            file.path(),
            format!("UNet input block {max_i} is not part of any SD layout"),
        ));
    }
    let downsamplers = inputs
        .iter()
        .filter(|i| {
            file.info(&format!("{p}input_blocks.{i}.0.op.weight"))
                .is_some()
        })
        .count();
    let n = downsamplers + 1;
    if max_i + 1 < n || (max_i + 1) % n != 0 {
        return Err(Error::format(
            file.path(),
            "UNet input blocks do not form a regular SD layout",
        ));
    }
    let lpb = (max_i + 1) / n - 1;
    let mut block_out_channels = Vec::with_capacity(n);
    let mut down_types = Vec::with_capacity(n);
    let mut layers = Vec::with_capacity(n);
    let mut context = None;
    for level in 0..n {
        let first = 1 + level * (lpb + 1);
        let c = shape_of(
            file,
            &format!("{p}input_blocks.{first}.0.out_layers.3.weight"),
            4,
        )?[0];
        block_out_channels.push(c);
        let attn = format!("{p}input_blocks.{first}.1.");
        if file.info(&format!("{attn}proj_in.weight")).is_some() {
            down_types.push("CrossAttnDownBlock2D".to_string());
            layers.push(indices(file, &format!("{attn}transformer_blocks.")).len());
            context = context.or_else(|| {
                file.info(&format!("{attn}transformer_blocks.0.attn2.to_k.weight"))
                    .and_then(|i| i.shape.get(1).copied())
            });
        } else {
            down_types.push("DownBlock2D".to_string());
            layers.push(0);
        }
    }
    let up_types = (0..n)
        .map(|i| {
            let key = format!("{p}output_blocks.{}.1.proj_in.weight", i * (lpb + 1));
            if file.info(&key).is_some() {
                "CrossAttnUpBlock2D"
            } else {
                "UpBlock2D"
            }
            .to_string()
        })
        .collect();
    let mid = format!("{p}middle_block.1.");
    let mid_layers = indices(file, &format!("{mid}transformer_blocks."));
    context = context.or_else(|| {
        file.info(&format!("{mid}transformer_blocks.0.attn2.to_k.weight"))
            .and_then(|i| i.shape.get(1).copied())
    });
    let linear_proj = file
        .info(&format!("{mid}proj_in.weight"))
        .is_some_and(|i| i.shape.len() == 2);
    let attn_layers: Vec<usize> = layers.iter().copied().filter(|l| *l > 0).collect();
    let one_layer_count = attn_layers
        .iter()
        .chain(std::iter::once(&mid_layers.len()))
        .all(|l| *l == attn_layers.first().copied().unwrap_or(mid_layers.len()));
    let transformer_layers_per_block = if one_layer_count {
        PerBlock::One(mid_layers.len().max(1))
    } else {
        PerBlock::Each(layers.iter().map(|l| (*l).max(1)).collect())
    };
    Ok(UNet2DConditionConfig {
        in_channels: conv_in[1],
        out_channels: out[0],
        sample_size: defaults.sample_size,
        flip_sin_to_cos: true,
        freq_shift: 0,
        down_block_types: down_types,
        up_block_types: up_types,
        block_out_channels,
        layers_per_block: lpb,
        cross_attention_dim: context.unwrap_or(defaults.cross_attention_dim),
        attention_head_dim: defaults.attention_head_dim.clone(),
        num_attention_heads: defaults.num_attention_heads.clone(),
        transformer_layers_per_block,
        norm_num_groups: defaults.norm_num_groups,
        norm_eps: defaults.norm_eps,
        act_fn: "silu".into(),
        use_linear_projection: linear_proj,
        class_embed_type: None,
        addition_embed_type: None,
        mid_block_type: None,
    })
}

/// Infers the VAE config from shapes (groups and scaling factor from `defaults`).
pub fn infer_vae(
    file: &SafeTensors,
    defaults: &AutoencoderKLConfig,
) -> Result<AutoencoderKLConfig> {
    let p = VAE_PREFIX;
    let levels = indices(file, &format!("{p}encoder.down."));
    let n = levels.len();
    if n == 0 {
        return Err(Error::MissingTensors {
            what: "VAE".into(),
            keys: vec![format!("{p}encoder.down.0.*")],
        });
    }
    let block_out_channels = (0..n)
        .map(|i| {
            shape_of(
                file,
                &format!("{p}encoder.down.{i}.block.0.conv1.weight"),
                4,
            )
            .map(|s| s[0])
        })
        .collect::<Result<Vec<_>>>()?;
    let lpb = indices(file, &format!("{p}encoder.down.0.block.")).len();
    Ok(AutoencoderKLConfig {
        in_channels: shape_of(file, &format!("{p}encoder.conv_in.weight"), 4)?[1],
        out_channels: shape_of(file, &format!("{p}decoder.conv_out.weight"), 4)?[0],
        block_out_channels,
        layers_per_block: lpb,
        latent_channels: shape_of(file, &format!("{p}decoder.conv_in.weight"), 4)?[1],
        norm_num_groups: defaults.norm_num_groups,
        scaling_factor: defaults.scaling_factor,
        sample_size: defaults.sample_size,
        act_fn: "silu".into(),
        mid_block_add_attention: file
            .info(&format!("{p}encoder.mid.attn_1.q.weight"))
            .is_some(),
    })
}

/// The CLIP prefix this file uses.
pub fn clip_prefix(file: &SafeTensors) -> &'static str {
    CLIP_PREFIXES
        .into_iter()
        .find(|p| {
            file.info(&format!("{p}embeddings.token_embedding.weight"))
                .is_some()
        })
        .unwrap_or(CLIP_PREFIXES[0])
}

/// Infers the CLIP text config (heads from `defaults` when given, else 64-wide heads).
pub fn infer_clip(file: &SafeTensors, defaults: Option<&ClipTextConfig>) -> Result<ClipTextConfig> {
    let p = clip_prefix(file);
    let tok = shape_of(file, &format!("{p}embeddings.token_embedding.weight"), 2)?.to_vec();
    let pos = shape_of(file, &format!("{p}embeddings.position_embedding.weight"), 2)?.to_vec();
    let layers = indices(file, &format!("{p}encoder.layers.")).len();
    let fc1 = shape_of(file, &format!("{p}encoder.layers.0.mlp.fc1.weight"), 2)?.to_vec();
    let sd = sd15().text_encoder;
    Ok(ClipTextConfig {
        vocab_size: tok[0],
        hidden_size: tok[1],
        intermediate_size: fc1[0],
        num_hidden_layers: layers,
        num_attention_heads: defaults
            .map(|d| d.num_attention_heads)
            .unwrap_or((tok[1] / 64).max(1)),
        max_position_embeddings: pos[0],
        hidden_act: defaults.map(|d| d.hidden_act).unwrap_or(sd.hidden_act),
        layer_norm_eps: defaults
            .map(|d| d.layer_norm_eps)
            .unwrap_or(sd.layer_norm_eps),
    })
}

/// Resnet sub-modules: (LDM name, diffusers name).
const RESNET_NAMES: [(&str, &str); 6] = [
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("emb_layers.1", "time_emb_proj"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("skip_connection", "conv_shortcut"),
];

/// UNet modules outside the blocks: (LDM name, diffusers name). `time_embed.1` and `out.1`
/// are SiLUs; `input_blocks.0` is `conv_in`.
const UNET_TOP_NAMES: [(&str, &str); 5] = [
    ("time_embed.0", "time_embedding.linear_1"),
    ("time_embed.2", "time_embedding.linear_2"),
    ("input_blocks.0.0", "conv_in"),
    ("out.0", "conv_norm_out"),
    ("out.2", "conv_out"),
];

/// `{ldm}.{tail}` → `{diffusers}.{tail}` for the first matching pair of `table`.
fn rename_prefix(rest: &str, table: &[(&str, &str)]) -> Option<String> {
    table.iter().find_map(|(ldm, diffusers)| {
        rest.strip_prefix(ldm)?
            .strip_prefix('.')
            .map(|tail| format!("{diffusers}.{tail}"))
    })
}

fn resnet_rename(rest: &str) -> String {
    rename_prefix(rest, &RESNET_NAMES).unwrap_or_else(|| rest.to_owned())
}

/// Maps an LDM UNet key (without `model.diffusion_model.`) to its diffusers name.
/// `lpb` is layers_per_block. None for keys that have no diffusers counterpart.
pub fn unet_key(key: &str, lpb: usize) -> Option<String> {
    if let Some(top) = rename_prefix(key, &UNET_TOP_NAMES) {
        return Some(top);
    }
    // middle_block.{0,1,2} = resnet, transformer, resnet.
    if let Some(r) = key.strip_prefix("middle_block.") {
        let (j, rest) = r.split_once('.')?;
        return match j {
            "0" => Some(format!("mid_block.resnets.0.{}", resnet_rename(rest))),
            "1" => Some(format!("mid_block.attentions.0.{rest}")),
            "2" => Some(format!("mid_block.resnets.1.{}", resnet_rename(rest))),
            _ => None,
        };
    }
    // input_blocks.{i}: i ≥ 1 counts (lpb resnets [+ transformers], then one downsampler) per level.
    if let Some(r) = key.strip_prefix("input_blocks.") {
        let (i, r) = r.split_once('.')?;
        let (j, rest) = r.split_once('.')?;
        let i: usize = i.parse().ok()?;
        let level = (i - 1) / (lpb + 1);
        let layer = (i - 1) % (lpb + 1);
        return match j {
            "0" if layer == lpb => rest
                .strip_prefix("op.")
                .map(|t| format!("down_blocks.{level}.downsamplers.0.conv.{t}")),
            "0" => Some(format!(
                "down_blocks.{level}.resnets.{layer}.{}",
                resnet_rename(rest)
            )),
            "1" => Some(format!("down_blocks.{level}.attentions.{layer}.{rest}")),
            _ => None,
        };
    }
    // output_blocks.{i}: lpb + 1 per up block; .0 resnet, .1 transformer or upsampler,
    // .2 upsampler after a transformer. An upsampler is just `conv.{weight,bias}`.
    if let Some(r) = key.strip_prefix("output_blocks.") {
        let (i, r) = r.split_once('.')?;
        let (j, rest) = r.split_once('.')?;
        let i: usize = i.parse().ok()?;
        let block = i / (lpb + 1);
        let layer = i % (lpb + 1);
        return match j {
            "0" => Some(format!(
                "up_blocks.{block}.resnets.{layer}.{}",
                resnet_rename(rest)
            )),
            "1" | "2" if rest.starts_with("conv.") => {
                Some(format!("up_blocks.{block}.upsamplers.0.{rest}"))
            }
            "1" => Some(format!("up_blocks.{block}.attentions.{layer}.{rest}")),
            _ => None,
        };
    }
    None
}

/// The inverse of [`unet_key`] for module paths: the LDM name of a diffusers UNet module
/// (`down_blocks.0.attentions.1.proj_in` → `input_blocks.2.1.proj_in`). `up_has_attention[b]`
/// tells whether up block `b` has transformers (its upsampler is then `.2`, else `.1`).
pub fn ldm_module_path(path: &str, lpb: usize, up_has_attention: &[bool]) -> Option<String> {
    let resnet = |rest: &str| -> String {
        let (head, tail) = rest
            .split_once('.')
            .map_or((rest, None), |(h, t)| (h, Some(t)));
        let head = RESNET_NAMES
            .iter()
            .find(|(_, d)| *d == head)
            .map_or(head, |(l, _)| *l);
        match tail {
            Some(t) => format!("{head}.{t}"),
            None => head.to_owned(),
        }
    };
    if let Some((l, _)) = UNET_TOP_NAMES.iter().find(|(_, d)| *d == path) {
        return Some((*l).to_owned());
    }
    let parts: Vec<&str> = path.splitn(5, '.').collect();
    let num = |i: usize| parts.get(i).and_then(|s| s.parse::<usize>().ok());
    let rest = |i: usize| parts.get(i..).map(|p| p.join(".")).unwrap_or_default();
    match (parts.first().copied(), parts.get(1).copied()) {
        (Some("mid_block"), Some("resnets")) => {
            let (j, tail) = (num(2)?, rest(3));
            Some(format!(
                "middle_block.{}.{}",
                if j == 0 { 0 } else { 2 },
                resnet(&tail)
            ))
        }
        (Some("mid_block"), Some("attentions")) => Some(format!("middle_block.1.{}", rest(3))),
        (Some("down_blocks"), _) => {
            let l = num(1)?;
            let kind = parts.get(2)?;
            let j = num(3)?;
            let tail = rest(4);
            match *kind {
                "resnets" => Some(format!(
                    "input_blocks.{}.0.{}",
                    1 + l * (lpb + 1) + j,
                    resnet(&tail)
                )),
                "attentions" => Some(format!("input_blocks.{}.1.{tail}", 1 + l * (lpb + 1) + j)),
                "downsamplers" => Some(format!("input_blocks.{}.0.op", (l + 1) * (lpb + 1))),
                _ => None,
            }
        }
        (Some("up_blocks"), _) => {
            let b = num(1)?;
            let kind = parts.get(2)?;
            let j = num(3)?;
            let tail = rest(4);
            match *kind {
                "resnets" => Some(format!(
                    "output_blocks.{}.0.{}",
                    b * (lpb + 1) + j,
                    resnet(&tail)
                )),
                "attentions" => Some(format!("output_blocks.{}.1.{tail}", b * (lpb + 1) + j)),
                "upsamplers" => {
                    let slot = if up_has_attention.get(b).copied().unwrap_or(false) {
                        2
                    } else {
                        1
                    };
                    Some(format!("output_blocks.{}.{slot}.conv", b * (lpb + 1) + lpb))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// Maps an LDM VAE key (without `first_stage_model.`) to its diffusers name; `levels` is the
/// number of VAE blocks (the decoder's `up.{i}` is diffusers' `up_blocks.{levels-1-i}`).
pub fn vae_key(key: &str, levels: usize) -> Option<String> {
    let (part, rest) = key.split_once('.')?;
    if part == "quant_conv" || part == "post_quant_conv" {
        return Some(key.to_owned());
    }
    if part != "encoder" && part != "decoder" {
        return None;
    }
    let resnet = |r: &str| r.replacen("nin_shortcut.", "conv_shortcut.", 1);
    if let Some(r) = rest.strip_prefix("norm_out.") {
        return Some(format!("{part}.conv_norm_out.{r}"));
    }
    if rest.starts_with("conv_in.") || rest.starts_with("conv_out.") {
        return Some(key.to_owned());
    }
    if let Some(r) = rest.strip_prefix("mid.") {
        let (m, tail) = r.split_once('.')?;
        return match m {
            "block_1" => Some(format!("{part}.mid_block.resnets.0.{}", resnet(tail))),
            "block_2" => Some(format!("{part}.mid_block.resnets.1.{}", resnet(tail))),
            // attn_1: norm → group_norm, q/k/v → to_q/k/v, proj_out → to_out.0 (1×1 convs
            // in the file; the loader accepts them for the linear weights).
            "attn_1" => {
                let (name, t) = tail.split_once('.')?;
                let to = match name {
                    "norm" => "group_norm",
                    "q" => "to_q",
                    "k" => "to_k",
                    "v" => "to_v",
                    "proj_out" => "to_out.0",
                    _ => return None,
                };
                Some(format!("{part}.mid_block.attentions.0.{to}.{t}"))
            }
            _ => None,
        };
    }
    let (kind, r) = rest.split_once('.')?;
    let (i, r) = r.split_once('.')?;
    let i: usize = i.parse().ok()?;
    let (block, sample_name) = match (part, kind) {
        ("encoder", "down") => (i, "downsample"),
        ("decoder", "up") => (levels.checked_sub(1 + i)?, "upsample"),
        _ => return None,
    };
    let blocks = if part == "encoder" {
        "down_blocks"
    } else {
        "up_blocks"
    };
    let samplers = if part == "encoder" {
        "downsamplers"
    } else {
        "upsamplers"
    };
    if let Some(t) = r.strip_prefix("block.") {
        let (j, tail) = t.split_once('.')?;
        return Some(format!(
            "{part}.{blocks}.{block}.resnets.{j}.{}",
            resnet(tail)
        ));
    }
    if let Some(t) = r.strip_prefix(&format!("{sample_name}.conv.")) {
        return Some(format!("{part}.{blocks}.{block}.{samplers}.0.conv.{t}"));
    }
    None
}

/// Builds the diffusers-name → file-key table of one component.
pub fn component_map(
    file: &SafeTensors,
    prefix: &str,
    rename: impl Fn(&str) -> Option<String>,
) -> BTreeMap<String, String> {
    file.tensors()
        .keys()
        .filter(|k| !is_ignored_key(k))
        .filter_map(|k| {
            let rest = k.strip_prefix(prefix)?;
            rename(rest).map(|d| (d, k.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// An in-memory safetensors file of F32 tensors (zeros) with these shapes.
    fn file_of(tensors: &[(&str, &[usize])]) -> SafeTensors {
        let mut header = serde_json::Map::new();
        let mut offset = 0;
        for (name, shape) in tensors {
            let len = 4 * shape.iter().product::<usize>();
            header.insert(
                (*name).to_owned(),
                serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len]}),
            );
            offset += len;
        }
        let header = serde_json::to_vec(&header).expect("json");
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&header);
        bytes.resize(bytes.len() + offset, 0);
        SafeTensors::from_bytes(Path::new("crafted.safetensors"), bytes).expect("valid file")
    }

    /// Shapes come from the file's header: a tensor of too few dimensions, or a block index
    /// no SD layout has, is a named error, never an index out of range or an overflow.
    #[test]
    fn crafted_shapes_and_indices_are_refused_by_name() {
        let p = UNET_PREFIX;
        let conv_in = format!("{p}input_blocks.0.0.weight");
        let out = format!("{p}out.2.weight");
        let flat = file_of(&[(&conv_in, &[4]), (&out, &[4, 4, 3, 3])]);
        let err = infer_unet(&flat, &sd15().unet)
            .expect_err("rank 1")
            .to_string();
        assert!(
            err.contains(&conv_in) && err.contains("4 dimensions"),
            "{err}"
        );
        let far = format!("{p}input_blocks.18446744073709551615.0.in_layers.0.weight");
        let huge = file_of(&[
            (&conv_in, &[4, 4, 3, 3]),
            (&out, &[4, 4, 3, 3]),
            (&far, &[1]),
        ]);
        let err = infer_unet(&huge, &sd15().unet)
            .expect_err("index")
            .to_string();
        assert!(err.contains("not part of any SD layout"), "{err}");
        let tok = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight";
        let clip = file_of(&[(tok, &[8])]);
        assert!(infer_clip(&clip, None).is_err());
        let vae = file_of(&[(
            "first_stage_model.encoder.down.0.block.0.conv1.weight",
            &[2],
        )]);
        assert!(infer_vae(&vae, &sd15().vae).is_err());
    }

    #[test]
    fn unet_keys_follow_the_ldm_layout() {
        let cases = [
            ("time_embed.0.weight", "time_embedding.linear_1.weight"),
            ("input_blocks.0.0.bias", "conv_in.bias"),
            (
                "input_blocks.1.0.in_layers.0.weight",
                "down_blocks.0.resnets.0.norm1.weight",
            ),
            (
                "input_blocks.2.1.proj_in.weight",
                "down_blocks.0.attentions.1.proj_in.weight",
            ),
            (
                "input_blocks.3.0.op.weight",
                "down_blocks.0.downsamplers.0.conv.weight",
            ),
            (
                "input_blocks.4.0.skip_connection.bias",
                "down_blocks.1.resnets.0.conv_shortcut.bias",
            ),
            (
                "middle_block.1.transformer_blocks.0.attn2.to_k.weight",
                "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight",
            ),
            (
                "middle_block.2.emb_layers.1.weight",
                "mid_block.resnets.1.time_emb_proj.weight",
            ),
            (
                "output_blocks.2.1.conv.weight",
                "up_blocks.0.upsamplers.0.conv.weight",
            ),
            (
                "output_blocks.5.2.conv.bias",
                "up_blocks.1.upsamplers.0.conv.bias",
            ),
            (
                "output_blocks.5.1.norm.weight",
                "up_blocks.1.attentions.2.norm.weight",
            ),
            (
                "output_blocks.11.0.out_layers.3.weight",
                "up_blocks.3.resnets.2.conv2.weight",
            ),
            ("out.2.weight", "conv_out.weight"),
        ];
        for (ldm, diffusers) in cases {
            assert_eq!(unet_key(ldm, 2).as_deref(), Some(diffusers), "{ldm}");
        }
        assert_eq!(unet_key("label_emb.0.0.weight", 2), None);
    }

    #[test]
    fn vae_decoder_blocks_are_reversed() {
        assert_eq!(
            vae_key("decoder.up.0.block.1.conv1.weight", 4).as_deref(),
            Some("decoder.up_blocks.3.resnets.1.conv1.weight")
        );
        assert_eq!(
            vae_key("decoder.up.3.upsample.conv.bias", 4).as_deref(),
            Some("decoder.up_blocks.0.upsamplers.0.conv.bias")
        );
        assert_eq!(
            vae_key("encoder.down.1.block.0.nin_shortcut.weight", 4).as_deref(),
            Some("encoder.down_blocks.1.resnets.0.conv_shortcut.weight")
        );
        assert_eq!(
            vae_key("encoder.mid.attn_1.proj_out.weight", 4).as_deref(),
            Some("encoder.mid_block.attentions.0.to_out.0.weight")
        );
        assert_eq!(
            vae_key("decoder.norm_out.bias", 4).as_deref(),
            Some("decoder.conv_norm_out.bias")
        );
        assert_eq!(
            vae_key("encoder.down.0.downsample.conv.weight", 4).as_deref(),
            Some("encoder.down_blocks.0.downsamplers.0.conv.weight")
        );
    }
}
