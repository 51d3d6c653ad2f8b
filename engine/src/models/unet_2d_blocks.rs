//! Diffusers' UNet blocks: `CrossAttnDownBlock2D`/`DownBlock2D` (one type with optional
//! attention), `UNetMidBlock2DCrossAttn`, and `CrossAttnUpBlock2D`/`UpBlock2D`.

use burn::module::Module;
use burn::tensor::Tensor;

use crate::loader::Loader;
use crate::models::attention::Transformer2DModel;
use crate::models::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};

/// Settings shared by every block of one UNet.
#[derive(Debug, Clone, Copy)]
pub struct BlockSettings {
    /// Time embedding width.
    pub temb: usize,
    /// GroupNorm groups.
    pub groups: usize,
    /// GroupNorm epsilon in resnets.
    pub eps: f64,
    /// Text embedding width.
    pub context_dim: usize,
}

/// Attention settings of one block (None for blocks without cross-attention).
#[derive(Debug, Clone, Copy)]
pub struct BlockAttention {
    /// Heads.
    pub heads: usize,
    /// Transformer blocks per `Transformer2DModel`.
    pub layers: usize,
}

/// A down block: resnets, optional cross-attention after each, optional downsampler.
#[derive(Module, Debug)]
pub struct DownBlock2D {
    /// The resnets.
    pub resnets: Vec<ResnetBlock2D>,
    /// One transformer per resnet (empty for `DownBlock2D`).
    pub attentions: Vec<Transformer2DModel>,
    /// Stride-2 conv (absent in the last block).
    pub downsamplers: Vec<Downsample2D>,
}

impl DownBlock2D {
    /// Loads `down_blocks.{i}` style block at `path`.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        ld: &mut Loader,
        path: &str,
        c_in: usize,
        c_out: usize,
        layers: usize,
        attn: Option<BlockAttention>,
        downsample: bool,
        s: BlockSettings,
    ) -> Self {
        let resnets = (0..layers)
            .map(|j| {
                ResnetBlock2D::load(
                    ld,
                    &format!("{path}.resnets.{j}"),
                    if j == 0 { c_in } else { c_out },
                    c_out,
                    Some(s.temb),
                    s.groups,
                    s.eps,
                )
            })
            .collect();
        let attentions = match attn {
            Some(a) => (0..layers)
                .map(|j| {
                    Transformer2DModel::load(
                        ld,
                        &format!("{path}.attentions.{j}"),
                        c_out,
                        a.heads,
                        a.layers,
                        s.context_dim,
                        s.groups,
                    )
                })
                .collect(),
            None => Vec::new(),
        };
        let downsamplers = if downsample {
            vec![Downsample2D::load(
                ld,
                &format!("{path}.downsamplers.0"),
                c_out,
                false,
            )]
        } else {
            Vec::new()
        };
        DownBlock2D {
            resnets,
            attentions,
            downsamplers,
        }
    }

    /// `x` `[B, C_in, H, W]` → (`[B, C_out, H', W']`, the skip states pushed for the up path).
    pub fn forward(
        &self,
        x: Tensor<4>,
        temb: &Tensor<2>,
        context: &Tensor<3>,
    ) -> (Tensor<4>, Vec<Tensor<4>>) {
        let mut states = Vec::new();
        let mut h = x;
        for (j, resnet) in self.resnets.iter().enumerate() {
            h = resnet.forward(h, Some(temb));
            if let Some(attn) = self.attentions.get(j) {
                h = attn.forward(h, context);
            }
            states.push(h.clone());
        }
        for down in &self.downsamplers {
            h = down.forward(h);
            states.push(h.clone());
        }
        (h, states)
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, transformer, resnet.
#[derive(Module, Debug)]
pub struct UNetMidBlock2DCrossAttn {
    /// Two resnets.
    pub resnets: Vec<ResnetBlock2D>,
    /// One transformer.
    pub attentions: Vec<Transformer2DModel>,
}

impl UNetMidBlock2DCrossAttn {
    /// Loads `mid_block`.
    pub fn load(
        ld: &mut Loader,
        path: &str,
        channels: usize,
        attn: BlockAttention,
        s: BlockSettings,
    ) -> Self {
        UNetMidBlock2DCrossAttn {
            resnets: (0..2)
                .map(|j| {
                    ResnetBlock2D::load(
                        ld,
                        &format!("{path}.resnets.{j}"),
                        channels,
                        channels,
                        Some(s.temb),
                        s.groups,
                        s.eps,
                    )
                })
                .collect(),
            attentions: vec![Transformer2DModel::load(
                ld,
                &format!("{path}.attentions.0"),
                channels,
                attn.heads,
                attn.layers,
                s.context_dim,
                s.groups,
            )],
        }
    }

    /// `[B, C, H, W]` → `[B, C, H, W]`.
    pub fn forward(&self, x: Tensor<4>, temb: &Tensor<2>, context: &Tensor<3>) -> Tensor<4> {
        let h = self.resnets[0].forward(x, Some(temb));
        let h = self.attentions[0].forward(h, context);
        self.resnets[1].forward(h, Some(temb))
    }
}

/// An up block: resnets over the concatenation with skip states, optional cross-attention,
/// optional upsampler.
#[derive(Module, Debug)]
pub struct UpBlock2D {
    /// The resnets.
    pub resnets: Vec<ResnetBlock2D>,
    /// One transformer per resnet (empty for `UpBlock2D`).
    pub attentions: Vec<Transformer2DModel>,
    /// Nearest ×2 + conv (absent in the last block).
    pub upsamplers: Vec<Upsample2D>,
}

/// Channel plan of one up block, as diffusers computes it.
#[derive(Debug, Clone, Copy)]
pub struct UpChannels {
    /// Channels of the skip state consumed by the last resnet.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Channels coming from the previous (deeper) block.
    pub c_prev: usize,
}

impl UpBlock2D {
    /// Loads `up_blocks.{i}` style block at `path`.
    pub fn load(
        ld: &mut Loader,
        path: &str,
        ch: UpChannels,
        layers: usize,
        attn: Option<BlockAttention>,
        upsample: bool,
        s: BlockSettings,
    ) -> Self {
        let resnets = (0..layers)
            .map(|j| {
                let skip = if j == layers - 1 { ch.c_in } else { ch.c_out };
                let input = if j == 0 { ch.c_prev } else { ch.c_out };
                ResnetBlock2D::load(
                    ld,
                    &format!("{path}.resnets.{j}"),
                    input + skip,
                    ch.c_out,
                    Some(s.temb),
                    s.groups,
                    s.eps,
                )
            })
            .collect();
        let attentions = match attn {
            Some(a) => (0..layers)
                .map(|j| {
                    Transformer2DModel::load(
                        ld,
                        &format!("{path}.attentions.{j}"),
                        ch.c_out,
                        a.heads,
                        a.layers,
                        s.context_dim,
                        s.groups,
                    )
                })
                .collect(),
            None => Vec::new(),
        };
        let upsamplers = if upsample {
            vec![Upsample2D::load(
                ld,
                &format!("{path}.upsamplers.0"),
                ch.c_out,
            )]
        } else {
            Vec::new()
        };
        UpBlock2D {
            resnets,
            attentions,
            upsamplers,
        }
    }

    /// `x` `[B, C_prev, H, W]`; pops one skip state per resnet from the end of `skips`;
    /// upsamples to `upsample_size` (the next skip's size) → `[B, C_out, H', W']`.
    pub fn forward(
        &self,
        x: Tensor<4>,
        skips: &mut Vec<Tensor<4>>,
        temb: &Tensor<2>,
        context: &Tensor<3>,
        upsample_size: Option<[usize; 2]>,
    ) -> Tensor<4> {
        let mut h = x;
        for (j, resnet) in self.resnets.iter().enumerate() {
            let skip = skips.pop().expect("one skip state per up-block resnet");
            h = resnet.forward(Tensor::cat(vec![h, skip], 1), Some(temb));
            if let Some(attn) = self.attentions.get(j) {
                h = attn.forward(h, context);
            }
        }
        for up in &self.upsamplers {
            h = up.forward(h, upsample_size);
        }
        h
    }
}
