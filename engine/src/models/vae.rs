//! Diffusers' `AutoencoderKL`: `Encoder`, `Decoder`, `quant_conv`, `post_quant_conv`.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;

use crate::error::Result;
use crate::loader::Loader;
use crate::models::attention::Attention;
use crate::models::config::AutoencoderKLConfig;
use crate::models::layers::{Conv2d, GroupNorm};
use crate::models::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};

const VAE_EPS: f64 = 1e-6;

/// `UNetMidBlock2D` of the VAE: resnet, optional self-attention, resnet.
#[derive(Module, Debug)]
pub struct VaeMidBlock {
    /// Two resnets.
    pub resnets: Vec<ResnetBlock2D>,
    /// Zero or one self-attention.
    pub attentions: Vec<Attention>,
}

impl VaeMidBlock {
    fn load(ld: &mut Loader, path: &str, c: usize, groups: usize, attention: bool) -> Self {
        VaeMidBlock {
            resnets: (0..2)
                .map(|j| {
                    ResnetBlock2D::load(
                        ld,
                        &format!("{path}.resnets.{j}"),
                        c,
                        c,
                        None,
                        groups,
                        VAE_EPS,
                    )
                })
                .collect(),
            attentions: if attention {
                vec![Attention::load_spatial(
                    ld,
                    &format!("{path}.attentions.0"),
                    c,
                    groups,
                )]
            } else {
                Vec::new()
            },
        }
    }

    /// `[B, C, H, W]` → `[B, C, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = self.resnets[0].forward(x, None);
        for attn in &self.attentions {
            h = attn.forward_spatial(h);
        }
        self.resnets[1].forward(h, None)
    }
}

/// `DownEncoderBlock2D`.
#[derive(Module, Debug)]
pub struct DownEncoderBlock2D {
    /// Resnets.
    pub resnets: Vec<ResnetBlock2D>,
    /// Downsampler (absent in the last block).
    pub downsamplers: Vec<Downsample2D>,
}

/// `UpDecoderBlock2D`.
#[derive(Module, Debug)]
pub struct UpDecoderBlock2D {
    /// Resnets.
    pub resnets: Vec<ResnetBlock2D>,
    /// Upsampler (absent in the last block).
    pub upsamplers: Vec<Upsample2D>,
}

/// The VAE encoder: image → moments (mean and log-variance of the latent distribution).
#[derive(Module, Debug)]
pub struct Encoder {
    /// `conv_in`.
    pub conv_in: Conv2d,
    /// `down_blocks`.
    pub down_blocks: Vec<DownEncoderBlock2D>,
    /// `mid_block`.
    pub mid_block: VaeMidBlock,
    /// `conv_norm_out`.
    pub conv_norm_out: GroupNorm,
    /// `conv_out` (→ 2 × latent channels).
    pub conv_out: Conv2d,
}

impl Encoder {
    /// `[B, 3, H, W]` → `[B, 2L, H/f, W/f]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = self.conv_in.forward(x);
        for block in &self.down_blocks {
            for r in &block.resnets {
                h = r.forward(h, None);
            }
            for d in &block.downsamplers {
                h = d.forward(h);
            }
        }
        h = self.mid_block.forward(h);
        self.conv_out.forward(silu(self.conv_norm_out.forward(h)))
    }
}

/// The VAE decoder: latents → image in \[-1, 1\] (unclamped).
#[derive(Module, Debug)]
pub struct Decoder {
    /// `conv_in`.
    pub conv_in: Conv2d,
    /// `mid_block`.
    pub mid_block: VaeMidBlock,
    /// `up_blocks` (deepest first, as diffusers orders them).
    pub up_blocks: Vec<UpDecoderBlock2D>,
    /// `conv_norm_out`.
    pub conv_norm_out: GroupNorm,
    /// `conv_out`.
    pub conv_out: Conv2d,
}

impl Decoder {
    /// `[B, L, h, w]` → `[B, 3, h·f, w·f]`.
    pub fn forward(&self, z: Tensor<4>) -> Tensor<4> {
        let mut h = self.conv_in.forward(z);
        h = self.mid_block.forward(h);
        for block in &self.up_blocks {
            for r in &block.resnets {
                h = r.forward(h, None);
            }
            for u in &block.upsamplers {
                h = u.forward(h, None);
            }
        }
        self.conv_out.forward(silu(self.conv_norm_out.forward(h)))
    }
}

/// `AutoencoderKL`.
#[derive(Module, Debug)]
pub struct AutoencoderKL {
    /// `encoder`.
    pub encoder: Encoder,
    /// `decoder`.
    pub decoder: Decoder,
    /// `quant_conv` (1×1, 2L → 2L).
    pub quant_conv: Conv2d,
    /// `post_quant_conv` (1×1, L → L).
    pub post_quant_conv: Conv2d,
    /// Latents are multiplied by this after encoding.
    pub scaling_factor: f64,
    /// Latent channels.
    pub latent_channels: usize,
}

impl AutoencoderKL {
    /// Builds the VAE described by `config`, reading diffusers-named weights from `ld`.
    pub fn load(config: &AutoencoderKLConfig, ld: &mut Loader) -> Result<Self> {
        config.validate()?;
        let ch = &config.block_out_channels;
        let n = ch.len();
        let g = config.norm_num_groups;
        let l = config.latent_channels;
        let lpb = config.layers_per_block;
        let attn = config.mid_block_add_attention;

        let conv_in = Conv2d::load(ld, "encoder.conv_in", config.in_channels, ch[0], 3, 1, 1);
        let mut down_blocks = Vec::with_capacity(n);
        let mut c_out = ch[0];
        for (i, &c) in ch.iter().enumerate() {
            let c_in = c_out;
            c_out = c;
            let p = format!("encoder.down_blocks.{i}");
            down_blocks.push(DownEncoderBlock2D {
                resnets: (0..lpb)
                    .map(|j| {
                        ResnetBlock2D::load(
                            ld,
                            &format!("{p}.resnets.{j}"),
                            if j == 0 { c_in } else { c_out },
                            c_out,
                            None,
                            g,
                            VAE_EPS,
                        )
                    })
                    .collect(),
                downsamplers: if i + 1 < n {
                    vec![Downsample2D::load(
                        ld,
                        &format!("{p}.downsamplers.0"),
                        c_out,
                        true,
                    )]
                } else {
                    Vec::new()
                },
            });
        }
        let encoder = Encoder {
            conv_in,
            down_blocks,
            mid_block: VaeMidBlock::load(ld, "encoder.mid_block", ch[n - 1], g, attn),
            conv_norm_out: GroupNorm::load(ld, "encoder.conv_norm_out", g, ch[n - 1], VAE_EPS),
            conv_out: Conv2d::load(ld, "encoder.conv_out", ch[n - 1], 2 * l, 3, 1, 1),
        };

        let conv_in = Conv2d::load(ld, "decoder.conv_in", l, ch[n - 1], 3, 1, 1);
        let mid_block = VaeMidBlock::load(ld, "decoder.mid_block", ch[n - 1], g, attn);
        let mut up_blocks = Vec::with_capacity(n);
        let mut c_out = ch[n - 1];
        for i in 0..n {
            let c_prev = c_out;
            c_out = ch[n - 1 - i];
            let p = format!("decoder.up_blocks.{i}");
            up_blocks.push(UpDecoderBlock2D {
                resnets: (0..lpb + 1)
                    .map(|j| {
                        ResnetBlock2D::load(
                            ld,
                            &format!("{p}.resnets.{j}"),
                            if j == 0 { c_prev } else { c_out },
                            c_out,
                            None,
                            g,
                            VAE_EPS,
                        )
                    })
                    .collect(),
                upsamplers: if i + 1 < n {
                    vec![Upsample2D::load(ld, &format!("{p}.upsamplers.0"), c_out)]
                } else {
                    Vec::new()
                },
            });
        }
        let decoder = Decoder {
            conv_in,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::load(ld, "decoder.conv_norm_out", g, ch[0], VAE_EPS),
            conv_out: Conv2d::load(ld, "decoder.conv_out", ch[0], config.out_channels, 3, 1, 1),
        };
        Ok(AutoencoderKL {
            encoder,
            decoder,
            quant_conv: Conv2d::load(ld, "quant_conv", 2 * l, 2 * l, 1, 1, 0),
            post_quant_conv: Conv2d::load(ld, "post_quant_conv", l, l, 1, 1, 0),
            scaling_factor: config.scaling_factor,
            latent_channels: l,
        })
    }

    /// Mean of the latent distribution (unscaled): `[B, 3, H, W]` in \[-1, 1\] → `[B, L, H/f, W/f]`.
    pub fn encode_mean(&self, image: Tensor<4>) -> Tensor<4> {
        self.encode(image).0
    }

    /// The latent distribution (unscaled), as diffusers' `DiagonalGaussianDistribution`:
    /// `[B, 3, H, W]` in \[-1, 1\] → (mean, log-variance clamped to \[-30, 20\]), each
    /// `[B, L, H/f, W/f]`.
    pub fn encode(&self, image: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let moments = self.quant_conv.forward(self.encoder.forward(image));
        let l = self.latent_channels;
        (
            moments.clone().narrow(1, 0, l),
            moments.narrow(1, l, l).clamp(-30.0, 20.0),
        )
    }

    /// Decodes unscaled latents: `[B, L, h, w]` → `[B, 3, h·f, w·f]` in about \[-1, 1\].
    pub fn decode(&self, z: Tensor<4>) -> Tensor<4> {
        self.decoder.forward(self.post_quant_conv.forward(z))
    }
}
