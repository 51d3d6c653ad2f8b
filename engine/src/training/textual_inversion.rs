//! Textual-inversion training (diffusers' `textual_inversion.py`): a new token with N vectors
//! initialised from an init word's embedding; only those rows train — the rest of the token
//! table is never touched (the rows live apart from it and are appended for each forward).
//! The result is written as an A1111/kohya `emb_params` `.safetensors`, which AUTOMATIC1111,
//! ComfyUI, diffusers and Kiln load.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Param;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::models::clip_text::ClipTextModel;
use crate::models::unet_2d_condition::UNet2DConditionModel;
use crate::tokenizer::ClipTokenizer;
use crate::training::adamw::Moments;
use crate::training::denoising_loss;

/// What to learn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TiConfig {
    /// The new token (e.g. `<my-style>`).
    pub token: String,
    /// Vectors per token.
    pub vectors: usize,
    /// A word whose (first) token's embedding starts every vector.
    pub init_word: String,
}

/// The embedding being trained.
#[derive(Debug, Clone)]
pub struct TiWeights {
    /// Its configuration.
    pub config: TiConfig,
    /// Token ids of `token`, `token_1`, … (appended after the model's table).
    pub ids: Vec<u32>,
    /// `[vectors, hidden]`.
    pub rows: Tensor<2>,
    /// AdamW moments of `rows`.
    pub moments: Moments<2>,
}

impl TiWeights {
    /// Adds the token(s) to `tokenizer` and takes the init word's embedding from `text_encoder`.
    pub fn init(
        config: &TiConfig,
        tokenizer: &mut ClipTokenizer,
        text_encoder: &ClipTextModel,
    ) -> Result<Self> {
        if config.vectors == 0 {
            return Err(Error::InvalidRequest(
                "an embedding needs at least one vector".into(),
            ));
        }
        let init = *tokenizer
            .tokens(&config.init_word)?
            .first()
            .ok_or_else(|| {
                Error::InvalidRequest(format!(
                    "the init word '{}' has no tokens",
                    config.init_word
                ))
            })?;
        let table = text_encoder.embeddings.token_embedding.weight.val();
        let [rows, hidden] = table.dims();
        if rows != tokenizer.vocab_size() {
            return Err(Error::Config(
                "the text encoder already has added tokens; train from the plain model".into(),
            ));
        }
        let ids = tokenizer.add_embedding_tokens(&config.token, config.vectors)?;
        // The rows train in f32 whatever the frozen table's precision.
        let row = crate::models::layers::in_f32(
            table.slice([init as usize..init as usize + 1, 0..hidden]),
        );
        let rows = row.repeat_dim(0, config.vectors);
        Ok(TiWeights {
            config: config.clone(),
            ids,
            moments: Moments::zeros(&rows),
            rows,
        })
    }

    /// `text_encoder` with the trained rows appended to its token table (for sampling).
    pub fn install(&self, text_encoder: &ClipTextModel) -> ClipTextModel {
        with_rows(text_encoder, self.rows.clone())
    }

    /// Writes an A1111-style embedding (`emb_params` `[n, hidden]`, `name` and
    /// `string_to_token` metadata) atomically.
    pub fn save(&self, path: &Path, metadata: &BTreeMap<String, String>) -> Result<()> {
        let dims = self.rows.dims();
        let data = self
            .rows
            .clone()
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| Error::InvalidRequest(format!("reading the embedding: {e:?}")))?;
        let mut meta = metadata.clone();
        meta.insert("name".into(), self.config.token.clone());
        let t = crate::weights::safetensors::WriteTensor {
            name: "emb_params",
            shape: dims.to_vec(),
            data: &data,
        };
        crate::weights::safetensors::write_f32(path, &[t], &meta)
    }
}

/// A copy of `text_encoder` whose token table is its own rows followed by `rows` (cast to the
/// table's type; a gradient flows back through the cast to f32 rows).
fn with_rows(text_encoder: &ClipTextModel, rows: Tensor<2>) -> ClipTextModel {
    let mut te = text_encoder.clone();
    let w = &te.embeddings.token_embedding.weight;
    let (id, table) = (w.id, w.val());
    let rows = rows.cast(table.dtype());
    te.embeddings.token_embedding.weight =
        Param::initialized(id, Tensor::cat(vec![table, rows], 0));
    te
}

/// Loss value and the gradient of the embedding rows on a batch: `ids` `[B, 77]` are the
/// captions' token ids (with the new tokens), `latents`/`noise` `[B, C, h, w]`.
#[allow(clippy::too_many_arguments)]
pub fn loss_and_grad(
    unet: &UNet2DConditionModel,
    text_encoder: &ClipTextModel,
    weights: &TiWeights,
    ids: Tensor<2, Int>,
    latents: Tensor<4>,
    noise: Tensor<4>,
    timesteps: &[usize],
    alphas_cumprod: &[f64],
    snr_gamma: Option<f64>,
) -> Result<(f64, Tensor<2>)> {
    let rows = weights.rows.clone().autodiff().require_grad();
    let context = with_rows(text_encoder, rows.clone()).forward(ids, 1);
    let (loss, value) = denoising_loss(
        unet,
        &context,
        latents,
        noise,
        timesteps,
        alphas_cumprod,
        snr_gamma.into(),
    )?;
    let grads = loss.backward();
    let grad = rows
        .grad(&grads)
        .ok_or_else(|| Error::InvalidRequest("the embedding got no gradient".into()))?
        .inner();
    Ok((value, grad))
}
