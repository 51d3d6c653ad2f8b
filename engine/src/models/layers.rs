//! The primitive layers every model is made of, with PyTorch's semantics and diffusers'
//! parameter names (`weight`, `bias`). Each is built by a [`Loader`] from its full path.
//!
//! Linear weights are kept in Burn's `[in, out]` layout; the loader transposes PyTorch's
//! `[out, in]` on the way in.

use burn::module::{Module, Param};
use burn::tensor::activation::{gelu, sigmoid, silu};
use burn::tensor::module::{conv2d, embedding, layer_norm, linear};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, FloatDType, Int, Tensor};

use crate::loader::{Init, Loader};

/// A trainable low-rank update beside a frozen weight, as PEFT's LoRA layer:
/// `y += (x · down · up) · scale`.
#[derive(Module, Debug)]
pub struct LoraBranch {
    /// `[in, r]` (PEFT's `lora_A.weight`, transposed).
    pub down: Param<Tensor<2>>,
    /// `[r, out]` (PEFT's `lora_B.weight`, transposed).
    pub up: Param<Tensor<2>>,
    /// `alpha / r` (`alpha / √r` for rsLoRA).
    pub scale: f64,
}

/// `torch.nn.Linear`, with an optional [`LoraBranch`] while training a LoRA (inference merges
/// LoRAs into `weight` instead).
#[derive(Module, Debug)]
pub struct Linear {
    /// `[in, out]` (Burn layout).
    pub weight: Param<Tensor<2>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// Trainable LoRA branch (training only).
    pub lora: Option<LoraBranch>,
}

impl Linear {
    /// Loads `{path}.weight` (and `{path}.bias` when `bias`).
    pub fn load(ld: &mut Loader, path: &str, d_in: usize, d_out: usize, bias: bool) -> Self {
        let weight = ld.tensor(&format!("{path}.weight"), [d_in, d_out], Init::FanInLinear);
        let bias = bias
            .then(|| Param::from_tensor(ld.tensor(&format!("{path}.bias"), [d_out], Init::Zeros)));
        Linear {
            weight: Param::from_tensor(weight),
            bias,
            lora: None,
        }
    }

    /// `[..., in]` → `[..., out]`. A LoRA branch runs in its own type (f32 beside a frozen
    /// f16 weight, as PEFT casts the input to `lora_A`'s dtype) and its output is added in the
    /// layer's.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match &self.lora {
            None => linear(x, self.weight.val(), self.bias.as_ref().map(|b| b.val())),
            Some(l) => {
                let dtype = x.dtype();
                let down = l.down.val();
                let low_in = x.clone().cast(down.dtype());
                let low = linear(linear(low_in, down, None), l.up.val(), None) * l.scale;
                linear(x, self.weight.val(), self.bias.as_ref().map(|b| b.val())) + low.cast(dtype)
            }
        }
    }
}

/// A trainable low-rank update beside a frozen convolution (PEFT's / kohya's LoCon layer):
/// `y += conv₁ₓ₁(conv_k×k(x, down), up) · scale`, `down` using the base layer's stride and
/// padding.
#[derive(Module, Debug)]
pub struct ConvLoraBranch {
    /// `[r, in·k·k]`: PEFT's `lora_A.weight` `[r, in, k, k]`, flattened (kept 2-D so it can be
    /// a gradient-tracked leaf; reshaped in `forward`).
    pub down: Param<Tensor<2>>,
    /// `[out, r]`: PEFT's `lora_B.weight` `[out, r, 1, 1]`, flattened.
    pub up: Param<Tensor<2>>,
    /// Kernel size k of `down`.
    pub kernel: usize,
    /// `alpha / r`.
    pub scale: f64,
}

/// `torch.nn.Conv2d` with square kernels, symmetric padding and no dilation or groups, with an
/// optional [`ConvLoraBranch`] while training a LoRA.
#[derive(Module, Debug)]
pub struct Conv2d {
    /// `[out, in, k, k]`.
    pub weight: Param<Tensor<4>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// Stride in both directions.
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
    /// Trainable LoRA branch (training only).
    pub lora: Option<ConvLoraBranch>,
}

impl Conv2d {
    /// Loads `{path}.weight` `[out, in, k, k]` and `{path}.bias`.
    pub fn load(
        ld: &mut Loader,
        path: &str,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Self {
        let weight = ld.tensor(
            &format!("{path}.weight"),
            [c_out, c_in, kernel, kernel],
            Init::FanIn,
        );
        let bias = ld.tensor(&format!("{path}.bias"), [c_out], Init::Zeros);
        Conv2d {
            weight: Param::from_tensor(weight),
            bias: Some(Param::from_tensor(bias)),
            stride,
            padding,
            lora: None,
        }
    }

    /// `[B, in, H, W]` → `[B, out, H', W']` (a LoRA branch in its own type, as
    /// [`Linear::forward`]).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let options = ConvOptions::new([self.stride; 2], [self.padding; 2], [1, 1], 1);
        let base = |x: Tensor<4>| {
            conv2d(
                x,
                self.weight.val(),
                self.bias.as_ref().map(|b| b.val()),
                options.clone(),
            )
        };
        match &self.lora {
            None => base(x),
            Some(l) => {
                let ([r, flat], [out, _]) = (l.down.val().dims(), l.up.val().dims());
                let k = l.kernel;
                let dtype = x.dtype();
                let down = l.down.val().reshape([r, flat / (k * k), k, k]);
                let low_in = x.clone().cast(down.dtype());
                let low = conv2d(low_in, down, None, options.clone());
                let up = l.up.val().reshape([out, r, 1, 1]);
                let low = conv2d(low, up, None, ConvOptions::new([1, 1], [0, 0], [1, 1], 1));
                base(x) + (low * l.scale).cast(dtype)
            }
        }
    }
}

/// `torch.nn.GroupNorm` (affine).
#[derive(Module, Debug)]
pub struct GroupNorm {
    /// `[C]` scale.
    pub weight: Param<Tensor<1>>,
    /// `[C]` shift.
    pub bias: Param<Tensor<1>>,
    /// Number of groups.
    pub num_groups: usize,
    /// Added to the variance.
    pub eps: f64,
}

impl GroupNorm {
    /// Loads `{path}.weight` and `{path}.bias` for `channels` channels.
    pub fn load(ld: &mut Loader, path: &str, num_groups: usize, channels: usize, eps: f64) -> Self {
        let weight = ld.tensor(&format!("{path}.weight"), [channels], Init::Ones);
        let bias = ld.tensor(&format!("{path}.bias"), [channels], Init::Zeros);
        GroupNorm {
            weight: Param::from_tensor(weight),
            bias: Param::from_tensor(bias),
            num_groups,
            eps,
        }
    }

    /// `[B, C, H, W]` → `[B, C, H, W]`, normalised over each group of C/G channels × H × W.
    /// A half-precision input is normalised in f32 (mean and variance of thousands of values
    /// lose their low bits, or overflow, in f16 — as PyTorch's GroupNorm accumulates in f32)
    /// and returned in its own type.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let dtype = x.dtype();
        let g = self.num_groups;
        let x = in_f32(x).reshape([b, g, (c / g) * h * w]);
        let mean = x.clone().mean_dim(2);
        let centered = x - mean;
        let var = centered.clone().square().mean_dim(2);
        let normed = centered / (var + self.eps).sqrt();
        let normed = normed.reshape([b, c, h, w]);
        let out = normed * in_f32(self.weight.val()).reshape([1, c, 1, 1])
            + in_f32(self.bias.val()).reshape([1, c, 1, 1]);
        out.cast(dtype)
    }
}

/// `torch.nn.LayerNorm` over the last dimension.
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// `[D]` scale.
    pub weight: Param<Tensor<1>>,
    /// `[D]` shift.
    pub bias: Param<Tensor<1>>,
    /// Added to the variance.
    pub eps: f64,
}

impl LayerNorm {
    /// Loads `{path}.weight` and `{path}.bias`.
    pub fn load(ld: &mut Loader, path: &str, dim: usize, eps: f64) -> Self {
        let weight = ld.tensor(&format!("{path}.weight"), [dim], Init::Ones);
        let bias = ld.tensor(&format!("{path}.bias"), [dim], Init::Zeros);
        LayerNorm {
            weight: Param::from_tensor(weight),
            bias: Param::from_tensor(bias),
            eps,
        }
    }

    /// `[..., D]` → `[..., D]`; statistics in f32 for a half-precision input (see
    /// [`GroupNorm::forward`]), the result in the input's type.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dtype = x.dtype();
        layer_norm(
            in_f32(x),
            in_f32(self.weight.val()),
            Some(in_f32(self.bias.val())),
            self.eps,
        )
        .cast(dtype)
    }
}

/// `x` in f32 (a no-op for an f32 tensor).
pub fn in_f32<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.dtype() == DType::F32 {
        x
    } else {
        x.cast(FloatDType::F32)
    }
}

/// `torch.nn.Embedding`.
#[derive(Module, Debug)]
pub struct Embedding {
    /// `[num_embeddings, dim]`.
    pub weight: Param<Tensor<2>>,
}

impl Embedding {
    /// Loads `{path}.weight`.
    pub fn load(ld: &mut Loader, path: &str, num: usize, dim: usize) -> Self {
        Embedding {
            weight: Param::from_tensor(ld.tensor(
                &format!("{path}.weight"),
                [num, dim],
                Init::Normal(0.02),
            )),
        }
    }

    /// `[B, N]` ids → `[B, N, dim]`.
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        embedding(self.weight.val(), ids)
    }
}

/// Activation functions named as transformers/diffusers configs name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x * sigmoid(1.702 x)` (OpenAI CLIP).
    QuickGelu,
    /// Exact (erf) GELU.
    Gelu,
    /// `x * sigmoid(x)`.
    Silu,
}

impl Activation {
    /// Applies the activation element-wise.
    pub fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::QuickGelu => x.clone() * sigmoid(x * 1.702),
            Activation::Gelu => gelu(x),
            Activation::Silu => silu(x),
        }
    }
}
