//! Diffusers' `Attention`, `FeedForward` (GEGLU), `BasicTransformerBlock` and
//! `Transformer2DModel` as SD 1.x uses them.

use burn::module::Module;
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, FloatDType, Tensor};

use burn::nn::{Dropout, DropoutConfig};

use crate::loader::Loader;
use crate::models::layers::{Conv2d, GroupNorm, LayerNorm, Linear};

/// Diffusers' `Attention` (scaled dot-product, `heads` heads of `dim / heads` each). With a
/// `group_norm` it is the VAE's spatial self-attention (see [`Attention::forward_spatial`]).
#[derive(Module, Debug)]
pub struct Attention {
    /// GroupNorm applied to a spatial input first (VAE mid-block attention only).
    pub group_norm: Option<GroupNorm>,
    /// Query projection.
    pub to_q: Linear,
    /// Key projection (from the context width for cross-attention).
    pub to_k: Linear,
    /// Value projection.
    pub to_v: Linear,
    /// `to_out.0`: output projection (`to_out.1` is dropout).
    pub to_out: Vec<Linear>,
    /// Number of heads.
    pub heads: usize,
}

impl Attention {
    /// Loads `{path}.to_q/k/v/out.0`; `context_dim` is the key/value input width.
    pub fn load(
        ld: &mut Loader,
        path: &str,
        dim: usize,
        context_dim: usize,
        heads: usize,
        qkv_bias: bool,
    ) -> Self {
        Attention {
            group_norm: None,
            to_q: Linear::load(ld, &format!("{path}.to_q"), dim, dim, qkv_bias),
            to_k: Linear::load(ld, &format!("{path}.to_k"), context_dim, dim, qkv_bias),
            to_v: Linear::load(ld, &format!("{path}.to_v"), context_dim, dim, qkv_bias),
            to_out: vec![Linear::load(
                ld,
                &format!("{path}.to_out.0"),
                dim,
                dim,
                true,
            )],
            heads,
        }
    }

    /// `x` `[B, N, dim]`, `context` `[B, M, context_dim]` (None = self-attention) → `[B, N, dim]`.
    pub fn forward(&self, x: Tensor<3>, context: Option<&Tensor<3>>) -> Tensor<3> {
        let [b, n, d] = x.dims();
        let h = self.heads;
        let ctx = context.cloned().unwrap_or_else(|| x.clone());
        let m = ctx.dims()[1];
        let (q, k, v) = (
            self.to_q.forward(x),
            self.to_k.forward(ctx.clone()),
            self.to_v.forward(ctx),
        );
        // The host kernel breaks the autodiff graph: only for plain f32 tensors (a LoRA being
        // trained makes the projections autodiff tensors).
        if crate::models::cpu_attention::applies(&q.device(), d / h)
            && q.dtype() == burn::tensor::DType::F32
            && !(q.is_autodiff() || k.is_autodiff() || v.is_autodiff())
        {
            return self.to_out[0].forward(crate::models::cpu_attention::attention(q, k, v, h));
        }
        let q = q.reshape([b, n, h, d / h]).swap_dims(1, 2);
        let k = k.reshape([b, m, h, d / h]).swap_dims(1, 2);
        let v = v.reshape([b, m, h, d / h]).swap_dims(1, 2);
        let out = if q.dtype() != DType::F32 && q.is_autodiff() {
            // Under autodiff Burn's attention is its decomposed form in the tensors' type;
            // in half precision the softmax runs in f32 (as PyTorch's autocast does) so its
            // sums over thousands of scores keep their bits.
            let dtype = q.dtype();
            let scale = 1.0 / ((d / h) as f64).sqrt();
            let scores = q.matmul(k.swap_dims(2, 3)).cast(FloatDType::F32) * scale;
            softmax(scores, 3).cast(dtype).matmul(v)
        } else {
            // Burn's flash kernels on GPUs keep the softmax statistics in f32; the CPU
            // backend computes half-precision attention in f32.
            attention(q, k, v, None, None, AttentionModuleOptions::default())
        };
        self.to_out[0].forward(out.swap_dims(1, 2).reshape([b, n, d]))
    }
}

/// `GELU` gate of the feed-forward: `proj` produces value and gate halves.
#[derive(Module, Debug)]
pub struct Geglu {
    /// dim → 2 × inner.
    pub proj: Linear,
}

/// `FeedForward` with GEGLU. `net` mirrors diffusers' `ModuleList`: `net.0` (GEGLU),
/// `net.1` (dropout), `net.2` (linear, inner → dim), so parameter paths equal diffusers keys.
#[derive(Module, Debug)]
pub struct FeedForward {
    /// `(GEGLU, Dropout, Linear)`.
    pub net: (Geglu, Dropout, Linear),
}

impl FeedForward {
    /// Loads `{path}.net.0.proj` and `{path}.net.2` (inner = 4 × dim).
    pub fn load(ld: &mut Loader, path: &str, dim: usize) -> Self {
        let inner = 4 * dim;
        FeedForward {
            net: (
                Geglu {
                    proj: Linear::load(ld, &format!("{path}.net.0.proj"), dim, 2 * inner, true),
                },
                DropoutConfig::new(0.0).init(),
                Linear::load(ld, &format!("{path}.net.2"), inner, dim, true),
            ),
        }
    }

    /// `[B, N, dim]` → `[B, N, dim]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let projected = self.net.0.proj.forward(x);
        let mut halves = projected.chunk(2, 2);
        let gate = halves.pop().expect("two halves");
        let value = halves.pop().expect("two halves");
        self.net.2.forward(self.net.1.forward(value * gelu(gate)))
    }
}

/// `BasicTransformerBlock`: self-attention, cross-attention, feed-forward, each pre-norm
/// with a residual.
#[derive(Module, Debug)]
pub struct BasicTransformerBlock {
    /// Norm before self-attention.
    pub norm1: LayerNorm,
    /// Self-attention.
    pub attn1: Attention,
    /// Norm before cross-attention.
    pub norm2: LayerNorm,
    /// Cross-attention to the text embeddings.
    pub attn2: Attention,
    /// Norm before the feed-forward.
    pub norm3: LayerNorm,
    /// GEGLU feed-forward.
    pub ff: FeedForward,
}

impl BasicTransformerBlock {
    /// Loads the block at `path`.
    pub fn load(ld: &mut Loader, path: &str, dim: usize, context_dim: usize, heads: usize) -> Self {
        BasicTransformerBlock {
            norm1: LayerNorm::load(ld, &format!("{path}.norm1"), dim, 1e-5),
            attn1: Attention::load(ld, &format!("{path}.attn1"), dim, dim, heads, false),
            norm2: LayerNorm::load(ld, &format!("{path}.norm2"), dim, 1e-5),
            attn2: Attention::load(ld, &format!("{path}.attn2"), dim, context_dim, heads, false),
            norm3: LayerNorm::load(ld, &format!("{path}.norm3"), dim, 1e-5),
            ff: FeedForward::load(ld, &format!("{path}.ff"), dim),
        }
    }

    /// `x` `[B, N, dim]`, `context` `[B, M, context_dim]` → `[B, N, dim]`.
    pub fn forward(&self, x: Tensor<3>, context: &Tensor<3>) -> Tensor<3> {
        let x = self.attn1.forward(self.norm1.forward(x.clone()), None) + x;
        let x = self
            .attn2
            .forward(self.norm2.forward(x.clone()), Some(context))
            + x;
        self.ff.forward(self.norm3.forward(x.clone())) + x
    }
}

/// `Transformer2DModel` with 1×1-conv `proj_in`/`proj_out` (SD 1.x).
#[derive(Module, Debug)]
pub struct Transformer2DModel {
    /// GroupNorm (ε = 1e-6) on the input.
    pub norm: GroupNorm,
    /// 1×1 conv into the transformer width.
    pub proj_in: Conv2d,
    /// The transformer blocks.
    pub transformer_blocks: Vec<BasicTransformerBlock>,
    /// 1×1 conv back.
    pub proj_out: Conv2d,
}

impl Transformer2DModel {
    /// Loads the model at `path` for `channels` channels.
    pub fn load(
        ld: &mut Loader,
        path: &str,
        channels: usize,
        heads: usize,
        layers: usize,
        context_dim: usize,
        groups: usize,
    ) -> Self {
        Transformer2DModel {
            norm: GroupNorm::load(ld, &format!("{path}.norm"), groups, channels, 1e-6),
            proj_in: Conv2d::load(ld, &format!("{path}.proj_in"), channels, channels, 1, 1, 0),
            transformer_blocks: (0..layers)
                .map(|i| {
                    BasicTransformerBlock::load(
                        ld,
                        &format!("{path}.transformer_blocks.{i}"),
                        channels,
                        context_dim,
                        heads,
                    )
                })
                .collect(),
            proj_out: Conv2d::load(ld, &format!("{path}.proj_out"), channels, channels, 1, 1, 0),
        }
    }

    /// `x` `[B, C, H, W]`, `context` `[B, M, context_dim]` → `[B, C, H, W]`.
    pub fn forward(&self, x: Tensor<4>, context: &Tensor<3>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let hidden = self.proj_in.forward(self.norm.forward(x.clone()));
        let mut tokens = hidden.reshape([b, c, h * w]).swap_dims(1, 2);
        for block in &self.transformer_blocks {
            tokens = block.forward(tokens, context);
        }
        let hidden = tokens.swap_dims(1, 2).reshape([b, c, h, w]);
        self.proj_out.forward(hidden) + x
    }
}

impl Attention {
    /// The VAE's mid-block attention at `path`: `group_norm` (ε = 1e-6), single-head
    /// attention over all pixels with biased q/k/v, residual.
    pub fn load_spatial(ld: &mut Loader, path: &str, channels: usize, groups: usize) -> Self {
        let group_norm = Some(GroupNorm::load(
            ld,
            &format!("{path}.group_norm"),
            groups,
            channels,
            1e-6,
        ));
        Attention {
            group_norm,
            ..Attention::load(ld, path, channels, channels, 1, true)
        }
    }

    /// `[B, C, H, W]` → `[B, C, H, W]`: (group-normed) self-attention over the H×W pixels plus
    /// the input.
    pub fn forward_spatial(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let normed = match &self.group_norm {
            Some(norm) => norm.forward(x.clone()),
            None => x.clone(),
        };
        let tokens = normed.reshape([b, c, h * w]).swap_dims(1, 2);
        let out = self.forward(tokens, None);
        out.swap_dims(1, 2).reshape([b, c, h, w]) + x
    }
}
