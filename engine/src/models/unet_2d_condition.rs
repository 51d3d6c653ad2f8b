//! Diffusers' `UNet2DConditionModel` (SD 1.x).

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;

use crate::error::Result;
use crate::loader::Loader;
use crate::models::config::UNet2DConditionConfig;
use crate::models::embeddings::{TimestepEmbedding, timestep_features};
use crate::models::layers::{Conv2d, GroupNorm};
use crate::models::unet_2d_blocks::{
    BlockAttention, BlockSettings, DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D, UpChannels,
};

/// The denoising UNet.
#[derive(Module, Debug)]
pub struct UNet2DConditionModel {
    /// `time_embedding`.
    pub time_embedding: TimestepEmbedding,
    /// `conv_in`.
    pub conv_in: Conv2d,
    /// `down_blocks`.
    pub down_blocks: Vec<DownBlock2D>,
    /// `mid_block`.
    pub mid_block: UNetMidBlock2DCrossAttn,
    /// `up_blocks`.
    pub up_blocks: Vec<UpBlock2D>,
    /// `conv_norm_out`.
    pub conv_norm_out: GroupNorm,
    /// `conv_out`.
    pub conv_out: Conv2d,
    /// Width of the sinusoidal timestep features (= block_out_channels\[0\]).
    pub time_proj_dim: usize,
    /// Sinusoid order.
    pub flip_sin_to_cos: bool,
    /// Sinusoid frequency shift.
    pub freq_shift: usize,
}

impl UNet2DConditionModel {
    /// Builds the UNet described by `config`, reading diffusers-named weights from `ld`.
    pub fn load(config: &UNet2DConditionConfig, ld: &mut Loader) -> Result<Self> {
        config.validate()?;
        let ch = &config.block_out_channels;
        let n = ch.len();
        let temb = ch[0] * 4;
        let s = BlockSettings {
            temb,
            groups: config.norm_num_groups,
            eps: config.norm_eps,
            context_dim: config.cross_attention_dim,
        };
        let attn = |i: usize, has: bool| {
            has.then(|| BlockAttention {
                heads: config.heads(i),
                layers: config.transformer_layers_per_block.get(i),
            })
        };
        let time_embedding = TimestepEmbedding::load(ld, "time_embedding", ch[0], temb);
        let conv_in = Conv2d::load(ld, "conv_in", config.in_channels, ch[0], 3, 1, 1);
        let mut down_blocks = Vec::with_capacity(n);
        let mut c_out = ch[0];
        for (i, &c) in ch.iter().enumerate().take(n) {
            let c_in = c_out;
            c_out = c;
            down_blocks.push(DownBlock2D::load(
                ld,
                &format!("down_blocks.{i}"),
                c_in,
                c_out,
                config.layers_per_block,
                attn(i, config.down_has_attention(i)),
                i + 1 < n,
                s,
            ));
        }
        let mid_attn = BlockAttention {
            heads: config.heads(n - 1),
            layers: config.transformer_layers_per_block.get(n - 1),
        };
        let mid_block = UNetMidBlock2DCrossAttn::load(ld, "mid_block", ch[n - 1], mid_attn, s);
        let mut up_blocks = Vec::with_capacity(n);
        let mut c_out = ch[n - 1];
        for i in 0..n {
            let c_prev = c_out;
            c_out = ch[n - 1 - i];
            let c_in = ch[(n - 1).saturating_sub(i + 1)];
            let level = n - 1 - i;
            up_blocks.push(UpBlock2D::load(
                ld,
                &format!("up_blocks.{i}"),
                UpChannels {
                    c_in,
                    c_out,
                    c_prev,
                },
                config.layers_per_block + 1,
                attn(level, config.up_has_attention(i)),
                i + 1 < n,
                s,
            ));
        }
        let conv_norm_out = GroupNorm::load(
            ld,
            "conv_norm_out",
            config.norm_num_groups,
            ch[0],
            config.norm_eps,
        );
        let conv_out = Conv2d::load(ld, "conv_out", ch[0], config.out_channels, 3, 1, 1);
        Ok(UNet2DConditionModel {
            time_embedding,
            conv_in,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
            time_proj_dim: ch[0],
            flip_sin_to_cos: config.flip_sin_to_cos,
            freq_shift: config.freq_shift,
        })
    }

    /// The float type of its weights (F32, or F16/BF16 for a half-precision model): what
    /// [`UNet2DConditionModel::forward`] wants its `sample` and `context` in.
    pub fn dtype(&self) -> burn::tensor::DType {
        self.conv_in.weight.val().dtype()
    }

    /// Predicts noise.
    ///
    /// - `sample`: `[B, C_in, h, w]` latents;
    /// - `timesteps`: one (possibly fractional) timestep per batch item;
    /// - `context`: `[B, M, cross_attention_dim]` text embeddings.
    ///
    /// Returns `[B, C_out, h, w]`.
    pub fn forward(&self, sample: Tensor<4>, timesteps: &[f32], context: &Tensor<3>) -> Tensor<4> {
        let device = sample.device();
        let features = timestep_features(
            timesteps,
            self.time_proj_dim,
            self.flip_sin_to_cos,
            self.freq_shift as f64,
            &device,
        )
        .cast(sample.dtype());
        let temb = self.time_embedding.forward(features);
        let mut h = self.conv_in.forward(sample);
        let mut skips = vec![h.clone()];
        for block in &self.down_blocks {
            let (out, states) = block.forward(h, &temb, context);
            h = out;
            skips.extend(states);
        }
        h = self.mid_block.forward(h, &temb, context);
        for block in &self.up_blocks {
            let consumed = block.resnets.len();
            let remaining = skips.len().saturating_sub(consumed);
            let upsample_size = (remaining > 0).then(|| {
                let [_, _, hh, ww] = skips[remaining - 1].dims();
                [hh, ww]
            });
            h = block.forward(h, &mut skips, &temb, context, upsample_size);
        }
        self.conv_out.forward(silu(self.conv_norm_out.forward(h)))
    }
}
