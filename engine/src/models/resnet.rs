//! Diffusers' `ResnetBlock2D`, `Downsample2D` and `Upsample2D`.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions, PadMode};

use crate::loader::Loader;
use crate::models::layers::{Conv2d, GroupNorm, Linear};

/// `ResnetBlock2D` (time-scale-shift "default", output scale 1).
#[derive(Module, Debug)]
pub struct ResnetBlock2D {
    /// First norm.
    pub norm1: GroupNorm,
    /// First 3×3 conv.
    pub conv1: Conv2d,
    /// Projects the time embedding to a per-channel bias (UNet only).
    pub time_emb_proj: Option<Linear>,
    /// Second norm.
    pub norm2: GroupNorm,
    /// Second 3×3 conv.
    pub conv2: Conv2d,
    /// 1×1 conv on the skip path when channels change.
    pub conv_shortcut: Option<Conv2d>,
}

impl ResnetBlock2D {
    /// Loads the block at `path`; `temb` is the time embedding width (None in the VAE).
    pub fn load(
        ld: &mut Loader,
        path: &str,
        c_in: usize,
        c_out: usize,
        temb: Option<usize>,
        groups: usize,
        eps: f64,
    ) -> Self {
        ResnetBlock2D {
            norm1: GroupNorm::load(ld, &format!("{path}.norm1"), groups, c_in, eps),
            conv1: Conv2d::load(ld, &format!("{path}.conv1"), c_in, c_out, 3, 1, 1),
            time_emb_proj: temb
                .map(|t| Linear::load(ld, &format!("{path}.time_emb_proj"), t, c_out, true)),
            norm2: GroupNorm::load(ld, &format!("{path}.norm2"), groups, c_out, eps),
            conv2: Conv2d::load(ld, &format!("{path}.conv2"), c_out, c_out, 3, 1, 1),
            conv_shortcut: (c_in != c_out)
                .then(|| Conv2d::load(ld, &format!("{path}.conv_shortcut"), c_in, c_out, 1, 1, 0)),
        }
    }

    /// `x` `[B, C_in, H, W]`, `temb` `[B, T]` → `[B, C_out, H, W]`.
    pub fn forward(&self, x: Tensor<4>, temb: Option<&Tensor<2>>) -> Tensor<4> {
        let mut h = self.conv1.forward(silu(self.norm1.forward(x.clone())));
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            let t = proj.forward(silu(temb.clone()));
            let [b, c] = t.dims();
            h = h + t.reshape([b, c, 1, 1]);
        }
        let h = self.conv2.forward(silu(self.norm2.forward(h)));
        let skip = match &self.conv_shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        skip + h
    }
}

/// `Downsample2D`: a stride-2 3×3 conv. The UNet pads by 1 on every side; the VAE encoder
/// pads only right and bottom by 1 (diffusers' `padding=0` path).
#[derive(Module, Debug)]
pub struct Downsample2D {
    /// The strided conv.
    pub conv: Conv2d,
    /// Whether to pad right/bottom by one before a padding-0 conv (VAE style).
    pub pad_right_bottom: bool,
}

impl Downsample2D {
    /// Loads `{path}.conv`; `vae_padding` selects the VAE's asymmetric padding.
    pub fn load(ld: &mut Loader, path: &str, channels: usize, vae_padding: bool) -> Self {
        let padding = if vae_padding { 0 } else { 1 };
        Downsample2D {
            conv: Conv2d::load(
                ld,
                &format!("{path}.conv"),
                channels,
                channels,
                3,
                2,
                padding,
            ),
            pad_right_bottom: vae_padding,
        }
    }

    /// `[B, C, H, W]` → `[B, C, ⌈H/2⌉, ⌈W/2⌉]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = if self.pad_right_bottom {
            x.pad((0, 1, 0, 1), PadMode::Constant(0.0))
        } else {
            x
        };
        self.conv.forward(x)
    }
}

/// `Upsample2D`: nearest-neighbour ×2 (or to an explicit size), then a 3×3 conv.
#[derive(Module, Debug)]
pub struct Upsample2D {
    /// The conv after upsampling.
    pub conv: Conv2d,
}

impl Upsample2D {
    /// Loads `{path}.conv`.
    pub fn load(ld: &mut Loader, path: &str, channels: usize) -> Self {
        Upsample2D {
            conv: Conv2d::load(ld, &format!("{path}.conv"), channels, channels, 3, 1, 1),
        }
    }

    /// `[B, C, H, W]` → `[B, C, 2H, 2W]`, or `[B, C, size.0, size.1]` when `size` is given.
    pub fn forward(&self, x: Tensor<4>, size: Option<[usize; 2]>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let up = match size {
            Some(s) if s != [2 * h, 2 * w] => interpolate(
                x,
                InterpolateOptions::new(InterpolateMode::Nearest).with_output_size(s),
            ),
            _ => x
                .reshape([b, c, h, 1, w, 1])
                .expand([b, c, h, 2, w, 2])
                .reshape([b, c, 2 * h, 2 * w]),
        };
        self.conv.forward(up)
    }
}
