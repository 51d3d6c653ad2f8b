//! Serde mirrors of the diffusers/transformers `config.json` files, with the SD 1.5 values
//! as defaults and an [`sd15`] preset. Unknown fields are ignored; fields Kiln does not
//! implement are checked by each model's `validate` and refused with a clear error.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::models::layers::Activation;

/// A config value diffusers allows as either one number or one per block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerBlock {
    /// The same value for every block.
    One(usize),
    /// One value per down block.
    Each(Vec<usize>),
}

impl PerBlock {
    /// The value for block `i` of `n`.
    pub fn get(&self, i: usize) -> usize {
        match self {
            PerBlock::One(v) => *v,
            PerBlock::Each(v) => v
                .get(i)
                .copied()
                .unwrap_or_else(|| v.last().copied().unwrap_or(1)),
        }
    }

    /// Whether a per-block list has exactly `n` entries (a single value always fits).
    pub fn fits(&self, n: usize) -> bool {
        match self {
            PerBlock::One(_) => true,
            PerBlock::Each(v) => v.len() == n,
        }
    }
}

fn default_4() -> usize {
    4
}
fn default_3() -> usize {
    3
}
fn default_true() -> bool {
    true
}
fn default_groups() -> usize {
    32
}
fn default_norm_eps() -> f64 {
    1e-5
}
fn default_silu() -> String {
    "silu".into()
}

/// Diffusers' `UNet2DConditionModel` config (the fields SD 1.x uses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UNet2DConditionConfig {
    /// Latent channels in.
    #[serde(default = "default_4")]
    pub in_channels: usize,
    /// Latent channels out.
    #[serde(default = "default_4")]
    pub out_channels: usize,
    /// Nominal latent size (informational).
    #[serde(default)]
    pub sample_size: Option<usize>,
    /// Order of sin/cos in the timestep embedding.
    #[serde(default = "default_true")]
    pub flip_sin_to_cos: bool,
    /// Frequency shift of the timestep embedding.
    #[serde(default)]
    pub freq_shift: usize,
    /// e.g. `CrossAttnDownBlock2D`, `DownBlock2D`.
    pub down_block_types: Vec<String>,
    /// e.g. `UpBlock2D`, `CrossAttnUpBlock2D`.
    pub up_block_types: Vec<String>,
    /// Channels per resolution level.
    pub block_out_channels: Vec<usize>,
    /// Resnets per down block (up blocks have one more).
    #[serde(default = "default_layers_per_block")]
    pub layers_per_block: usize,
    /// Width of the text embeddings.
    #[serde(default = "default_cross_attention_dim")]
    pub cross_attention_dim: usize,
    /// In SD 1.x configs this is the number of attention heads (a diffusers naming quirk).
    #[serde(default = "default_attention_head_dim")]
    pub attention_head_dim: PerBlock,
    /// The real number of heads, when a config sets it (takes precedence).
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock>,
    /// Transformer blocks per attention.
    #[serde(default = "default_transformer_layers")]
    pub transformer_layers_per_block: PerBlock,
    /// GroupNorm groups.
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    /// GroupNorm epsilon.
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    /// Activation in resnets and the time embedding.
    #[serde(default = "default_silu")]
    pub act_fn: String,
    /// SD 2.x uses linear proj_in/proj_out; SD 1.x uses 1×1 convs.
    #[serde(default)]
    pub use_linear_projection: bool,
    /// Must be null/absent (SD 1.x has no class conditioning).
    #[serde(default)]
    pub class_embed_type: Option<String>,
    /// Must be null/absent (SDXL uses `text_time`).
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    /// Must be absent or `UNetMidBlock2DCrossAttn`.
    #[serde(default)]
    pub mid_block_type: Option<String>,
}

fn default_layers_per_block() -> usize {
    2
}
fn default_cross_attention_dim() -> usize {
    768
}
fn default_attention_head_dim() -> PerBlock {
    PerBlock::One(8)
}
fn default_transformer_layers() -> PerBlock {
    PerBlock::One(1)
}

impl UNet2DConditionConfig {
    /// Number of heads in the attention of down block `i` (diffusers' rule:
    /// `num_attention_heads or attention_head_dim`).
    pub fn heads(&self, i: usize) -> usize {
        self.num_attention_heads
            .as_ref()
            .unwrap_or(&self.attention_head_dim)
            .get(i)
    }

    /// Whether down block `i` has cross-attention.
    pub fn down_has_attention(&self, i: usize) -> bool {
        self.down_block_types[i] == "CrossAttnDownBlock2D"
    }

    /// Whether up block `i` has cross-attention.
    pub fn up_has_attention(&self, i: usize) -> bool {
        self.up_block_types[i] == "CrossAttnUpBlock2D"
    }

    /// Checks that every setting is one Kiln implements.
    pub fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        let bad = |m: String| Err(Error::Config(format!("UNet: {m}")));
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return bad(format!(
                "block_out_channels ({n}), down_block_types ({}) and up_block_types ({}) must have the same length",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        for t in &self.down_block_types {
            if t != "CrossAttnDownBlock2D" && t != "DownBlock2D" {
                return bad(format!("down block type '{t}' is not supported"));
            }
        }
        for t in &self.up_block_types {
            if t != "CrossAttnUpBlock2D" && t != "UpBlock2D" {
                return bad(format!("up block type '{t}' is not supported"));
            }
        }
        if self.use_linear_projection {
            return bad("use_linear_projection (SD 2.x style) is not supported yet".into());
        }
        if let Some(t) = &self.class_embed_type {
            return bad(format!("class_embed_type '{t}' is not supported"));
        }
        if let Some(t) = &self.addition_embed_type {
            return bad(format!("addition_embed_type '{t}' (SDXL) is not supported"));
        }
        if let Some(t) = &self.mid_block_type
            && t != "UNetMidBlock2DCrossAttn"
        {
            return bad(format!("mid block type '{t}' is not supported"));
        }
        if self.act_fn != "silu" {
            return bad(format!("act_fn '{}' is not supported", self.act_fn));
        }
        if self.norm_num_groups == 0 {
            return bad("norm_num_groups is 0".into());
        }
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            if c % self.norm_num_groups != 0 {
                return bad(format!(
                    "{c} channels are not divisible by {} norm groups",
                    self.norm_num_groups
                ));
            }
            let heads = self.heads(i);
            if heads == 0 || c % heads != 0 {
                return bad(format!(
                    "{c} channels cannot be split into {heads} attention heads"
                ));
            }
        }
        if !self.attention_head_dim.fits(n) || !self.transformer_layers_per_block.fits(n) {
            return bad("per-block lists must have one entry per block".into());
        }
        Ok(())
    }
}

/// Diffusers' `AutoencoderKL` config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoencoderKLConfig {
    /// Image channels in.
    #[serde(default = "default_3")]
    pub in_channels: usize,
    /// Image channels out.
    #[serde(default = "default_3")]
    pub out_channels: usize,
    /// Channels per level; the VAE scale factor is 2^(len − 1).
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder block (decoder blocks have one more).
    #[serde(default = "default_vae_layers")]
    pub layers_per_block: usize,
    /// Latent channels.
    #[serde(default = "default_4")]
    pub latent_channels: usize,
    /// GroupNorm groups.
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    /// Latents are multiplied by this after encoding (and divided before decoding).
    #[serde(default = "default_scaling_factor")]
    pub scaling_factor: f64,
    /// Nominal image size (informational).
    #[serde(default)]
    pub sample_size: Option<usize>,
    /// Activation.
    #[serde(default = "default_silu")]
    pub act_fn: String,
    /// Whether the mid blocks have attention (true for SD).
    #[serde(default = "default_true")]
    pub mid_block_add_attention: bool,
}

fn default_vae_layers() -> usize {
    1
}
fn default_scaling_factor() -> f64 {
    0.18215
}

impl AutoencoderKLConfig {
    /// Pixels per latent in each direction: 2^(number of blocks − 1).
    pub fn scale_factor(&self) -> usize {
        1 << (self.block_out_channels.len().saturating_sub(1))
    }

    /// Checks that every setting is one Kiln implements.
    pub fn validate(&self) -> Result<()> {
        if self.block_out_channels.is_empty() {
            return Err(Error::Config("VAE: block_out_channels is empty".into()));
        }
        if self.act_fn != "silu" {
            return Err(Error::Config(format!(
                "VAE: act_fn '{}' is not supported",
                self.act_fn
            )));
        }
        if self.norm_num_groups == 0 {
            return Err(Error::Config("VAE: norm_num_groups is 0".into()));
        }
        if let Some(c) = self
            .block_out_channels
            .iter()
            .find(|c| *c % self.norm_num_groups != 0)
        {
            return Err(Error::Config(format!(
                "VAE: {c} channels are not divisible by {} groups",
                self.norm_num_groups
            )));
        }
        Ok(())
    }
}

/// Transformers' `CLIPTextConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipTextConfig {
    /// Token vocabulary size.
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
    /// Width of the hidden states.
    #[serde(default = "default_hidden")]
    pub hidden_size: usize,
    /// MLP width.
    #[serde(default = "default_intermediate")]
    pub intermediate_size: usize,
    /// Encoder layers.
    #[serde(default = "default_layers")]
    pub num_hidden_layers: usize,
    /// Attention heads.
    #[serde(default = "default_heads")]
    pub num_attention_heads: usize,
    /// Sequence length (77).
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    /// MLP activation.
    #[serde(default = "default_act")]
    pub hidden_act: Activation,
    /// LayerNorm epsilon.
    #[serde(default = "default_norm_eps")]
    pub layer_norm_eps: f64,
}

fn default_vocab() -> usize {
    49408
}
fn default_hidden() -> usize {
    768
}
fn default_intermediate() -> usize {
    3072
}
fn default_layers() -> usize {
    12
}
fn default_heads() -> usize {
    12
}
fn default_positions() -> usize {
    77
}
fn default_act() -> Activation {
    Activation::QuickGelu
}

impl ClipTextConfig {
    /// Checks that every setting is one Kiln implements.
    pub fn validate(&self) -> Result<()> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(Error::Config(format!(
                "text encoder: hidden size {} cannot be split into {} heads",
                self.hidden_size, self.num_attention_heads
            )));
        }
        Ok(())
    }
}

/// The three model configs of an SD 1.x pipeline, and its tokenizer's sequence length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StableDiffusionConfig {
    /// The denoiser.
    pub unet: UNet2DConditionConfig,
    /// The autoencoder.
    pub vae: AutoencoderKLConfig,
    /// The text encoder.
    pub text_encoder: ClipTextConfig,
    /// Token ids per prompt (chunk) the text encoder sees: the tokenizer's
    /// `model_max_length`, 77 for SD 1.x. A small model trained on short captions can use
    /// fewer, so its UNet's cross-attention is not spread over dozens of padding tokens.
    #[serde(default = "default_positions")]
    pub tokenizer_max_length: usize,
}

impl StableDiffusionConfig {
    /// The image size the model was made for, in pixels: the UNet's `sample_size` × the VAE's
    /// factor (512 for SD 1.5; 512 when the config does not say).
    pub fn native_size(&self) -> usize {
        self.unet
            .sample_size
            .map(|s| s * self.vae.scale_factor())
            .unwrap_or(512)
    }

    /// [`tokenizer_max_length`](Self::tokenizer_max_length), refused unless it is 3 or more
    /// (BOS, a token, EOS) and at most the text encoder's positions.
    pub fn checked_tokenizer_length(&self) -> Result<usize> {
        let (n, positions) = (
            self.tokenizer_max_length,
            self.text_encoder.max_position_embeddings,
        );
        if !(3..=positions).contains(&n) {
            return Err(Error::InvalidRequest(format!(
                "the tokenizer length must be 3 to {positions} (the text encoder's positions), \
                 not {n}"
            )));
        }
        Ok(n)
    }
}

/// Stable Diffusion 1.5's configs, as in `runwayml/stable-diffusion-v1-5`.
pub fn sd15() -> StableDiffusionConfig {
    StableDiffusionConfig {
        unet: UNet2DConditionConfig {
            in_channels: 4,
            out_channels: 4,
            sample_size: Some(64),
            flip_sin_to_cos: true,
            freq_shift: 0,
            down_block_types: [
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ]
            .map(String::from)
            .to_vec(),
            up_block_types: [
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
            ]
            .map(String::from)
            .to_vec(),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: 2,
            cross_attention_dim: 768,
            attention_head_dim: PerBlock::One(8),
            num_attention_heads: None,
            transformer_layers_per_block: PerBlock::One(1),
            norm_num_groups: 32,
            norm_eps: 1e-5,
            act_fn: "silu".into(),
            use_linear_projection: false,
            class_embed_type: None,
            addition_embed_type: None,
            mid_block_type: None,
        },
        vae: AutoencoderKLConfig {
            in_channels: 3,
            out_channels: 3,
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            latent_channels: 4,
            norm_num_groups: 32,
            scaling_factor: 0.18215,
            sample_size: Some(512),
            act_fn: "silu".into(),
            mid_block_add_attention: true,
        },
        text_encoder: ClipTextConfig {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        },
        tokenizer_max_length: 77,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (fuzz/seeds/model_config/01-vae-norm-groups-zero.json): a
    /// `config.json` with `"norm_num_groups": 0` divided by zero in validation.
    #[test]
    fn zero_norm_groups_are_a_config_error() {
        let mut config = sd15();
        config.vae.norm_num_groups = 0;
        assert!(
            matches!(config.vae.validate(), Err(Error::Config(m)) if m.contains("norm_num_groups"))
        );
        config.unet.norm_num_groups = 0;
        assert!(
            matches!(config.unet.validate(), Err(Error::Config(m)) if m.contains("norm_num_groups"))
        );
    }
}
