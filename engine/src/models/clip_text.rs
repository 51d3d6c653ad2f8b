//! Transformers' `CLIPTextModel`: token + position embeddings, pre-norm transformer
//! encoder layers with causal self-attention, and a final LayerNorm.

use burn::module::Module;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::Result;
use crate::loader::Loader;
use crate::models::config::ClipTextConfig;
use crate::models::layers::{Activation, Embedding, LayerNorm, Linear};

/// `CLIPTextEmbeddings`.
#[derive(Module, Debug)]
pub struct ClipTextEmbeddings {
    /// `[vocab, hidden]`.
    pub token_embedding: Embedding,
    /// `[max_positions, hidden]`.
    pub position_embedding: Embedding,
}

/// `CLIPAttention`: multi-head self-attention with a causal mask.
#[derive(Module, Debug)]
pub struct ClipAttention {
    /// Query projection.
    pub q_proj: Linear,
    /// Key projection.
    pub k_proj: Linear,
    /// Value projection.
    pub v_proj: Linear,
    /// Output projection.
    pub out_proj: Linear,
    /// Number of heads.
    pub heads: usize,
}

impl ClipAttention {
    /// `[B, N, D]` → `[B, N, D]`, each position attending to itself and earlier ones.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, n, d] = x.dims();
        let h = self.heads;
        let split = |t: Tensor<3>| t.reshape([b, n, h, d / h]).swap_dims(1, 2);
        let q = split(self.q_proj.forward(x.clone()));
        let k = split(self.k_proj.forward(x.clone()));
        let v = split(self.v_proj.forward(x));
        let options = AttentionModuleOptions {
            is_causal: true,
            ..Default::default()
        };
        let out = attention(q, k, v, None, None, options);
        self.out_proj
            .forward(out.swap_dims(1, 2).reshape([b, n, d]))
    }
}

/// `CLIPMLP`.
#[derive(Module, Debug)]
pub struct ClipMlp {
    /// hidden → intermediate.
    pub fc1: Linear,
    /// intermediate → hidden.
    pub fc2: Linear,
    /// The config's `hidden_act`.
    #[module(skip)]
    pub activation: Activation,
}

/// `CLIPEncoderLayer` (pre-norm).
#[derive(Module, Debug)]
pub struct ClipEncoderLayer {
    /// Causal self-attention.
    pub self_attn: ClipAttention,
    /// Norm before attention.
    pub layer_norm1: LayerNorm,
    /// Feed-forward.
    pub mlp: ClipMlp,
    /// Norm before the MLP.
    pub layer_norm2: LayerNorm,
}

impl ClipEncoderLayer {
    /// `[B, N, D]` → `[B, N, D]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x));
        let m = self.mlp.fc1.forward(self.layer_norm2.forward(h.clone()));
        h + self.mlp.fc2.forward(self.mlp.activation.forward(m))
    }
}

/// `CLIPEncoder`.
#[derive(Module, Debug)]
pub struct ClipEncoder {
    /// The transformer layers.
    pub layers: Vec<ClipEncoderLayer>,
}

/// `CLIPTextModel` (its `text_model`).
#[derive(Module, Debug)]
pub struct ClipTextModel {
    /// Token and position embeddings.
    pub embeddings: ClipTextEmbeddings,
    /// The encoder layers.
    pub encoder: ClipEncoder,
    /// Applied to the output of the last used layer.
    pub final_layer_norm: LayerNorm,
}

impl ClipTextModel {
    /// Builds the model from `config`, reading weights named as transformers names them
    /// without the `text_model.` prefix (`embeddings.token_embedding.weight`, …).
    pub fn load(config: &ClipTextConfig, ld: &mut Loader) -> Result<Self> {
        config.validate()?;
        let d = config.hidden_size;
        let eps = config.layer_norm_eps;
        let embeddings = ClipTextEmbeddings {
            token_embedding: Embedding::load(
                ld,
                "embeddings.token_embedding",
                config.vocab_size,
                d,
            ),
            position_embedding: Embedding::load(
                ld,
                "embeddings.position_embedding",
                config.max_position_embeddings,
                d,
            ),
        };
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let p = format!("encoder.layers.{i}");
                ClipEncoderLayer {
                    self_attn: ClipAttention {
                        q_proj: Linear::load(ld, &format!("{p}.self_attn.q_proj"), d, d, true),
                        k_proj: Linear::load(ld, &format!("{p}.self_attn.k_proj"), d, d, true),
                        v_proj: Linear::load(ld, &format!("{p}.self_attn.v_proj"), d, d, true),
                        out_proj: Linear::load(ld, &format!("{p}.self_attn.out_proj"), d, d, true),
                        heads: config.num_attention_heads,
                    },
                    layer_norm1: LayerNorm::load(ld, &format!("{p}.layer_norm1"), d, eps),
                    mlp: ClipMlp {
                        fc1: Linear::load(
                            ld,
                            &format!("{p}.mlp.fc1"),
                            d,
                            config.intermediate_size,
                            true,
                        ),
                        fc2: Linear::load(
                            ld,
                            &format!("{p}.mlp.fc2"),
                            config.intermediate_size,
                            d,
                            true,
                        ),
                        activation: config.hidden_act,
                    },
                    layer_norm2: LayerNorm::load(ld, &format!("{p}.layer_norm2"), d, eps),
                }
            })
            .collect();
        let final_layer_norm = LayerNorm::load(ld, "final_layer_norm", d, eps);
        Ok(ClipTextModel {
            embeddings,
            encoder: ClipEncoder { layers },
            final_layer_norm,
        })
    }

    /// Token ids `[B, N]` → hidden states `[B, N, hidden]`.
    ///
    /// `clip_skip` = 1 returns the last layer's output (diffusers' `last_hidden_state`);
    /// `clip_skip` = k > 1 stops k − 1 layers early and applies the final LayerNorm to that
    /// layer's output, as AUTOMATIC1111's "Clip skip" does.
    pub fn forward(&self, ids: Tensor<2, Int>, clip_skip: usize) -> Tensor<3> {
        let [_, n] = ids.dims();
        let device = ids.device();
        let positions = position_ids(n, &device);
        let mut h = self.embeddings.token_embedding.forward(ids)
            + self.embeddings.position_embedding.forward(positions);
        let used = self
            .encoder
            .layers
            .len()
            .saturating_sub(clip_skip.max(1) - 1)
            .max(1);
        for layer in &self.encoder.layers[..used] {
            h = layer.forward(h);
        }
        self.final_layer_norm.forward(h)
    }
}

fn position_ids(n: usize, device: &Device) -> Tensor<2, Int> {
    let ids: Vec<i64> = (0..n as i64).collect();
    Tensor::from_data(TensorData::new(ids, [1, n]), device)
}
