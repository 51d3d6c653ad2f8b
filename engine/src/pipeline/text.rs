//! Text encoding behind one interface, [`PromptEncoder`]: prompts in AUTOMATIC1111's syntax
//! in, the UNet's text conditioning out. SD 1.x has one CLIP text encoder
//! ([`ClipPromptEncoder`]); SDXL's second encoder joins by implementing the same trait (its
//! hidden states concatenated to the first's, its pooled output in
//! [`PromptEmbeds::pooled`]).

use burn::tensor::{Device, FloatDType, Int, Tensor, TensorData};

use crate::error::Result;
use crate::models::clip_text::ClipTextModel;
use crate::tokenizer::ClipTokenizer;

/// The text conditioning of a batch of prompts.
#[derive(Debug, Clone)]
pub struct PromptEmbeds {
    /// Cross-attention context `[N, 77·k, hidden]` (k chunks of 77 tokens), in f32.
    pub context: Tensor<3>,
    /// A pooled embedding per prompt `[N, P]` (SDXL's added conditioning); None for SD 1.x.
    pub pooled: Option<Tensor<2>>,
}

/// Turns prompts into the UNet's text conditioning.
pub trait PromptEncoder {
    /// The conditioning of `prompts` (A1111 syntax: emphasis, `BREAK`, long prompts in
    /// chunks), every prompt padded to as many chunks as the longest needs. `clip_skip` 1 is
    /// the last layer.
    fn encode(&self, prompts: &[String], clip_skip: usize) -> Result<PromptEmbeds>;
}

/// SD 1.x's text encoding: one CLIP text model and its tokenizer.
#[derive(Debug, Clone, Copy)]
pub struct ClipPromptEncoder<'a> {
    /// The text model.
    pub model: &'a ClipTextModel,
    /// Its tokenizer (with any textual-inversion tokens).
    pub tokenizer: &'a ClipTokenizer,
    /// Where the token ids go.
    pub device: &'a Device,
}

impl PromptEncoder for ClipPromptEncoder<'_> {
    /// Every prompt becomes k 77-token chunks (k = the most any prompt needs; shorter ones
    /// are padded with empty chunks, as A1111 pads the negative prompt to the positive one);
    /// emphasis multiplies each token's embedding and then the chunk is rescaled to its
    /// original mean. (A1111 takes that mean over the whole batch of prompts; Kiln takes it
    /// per prompt so an image does not depend on its batch.) Plain prompts of ≤ 75 tokens
    /// give exactly diffusers' embeddings. Output `[N, 77·k, hidden]`.
    fn encode(&self, prompts: &[String], clip_skip: usize) -> Result<PromptEmbeds> {
        let mut per_prompt = Vec::with_capacity(prompts.len());
        for p in prompts {
            per_prompt.push(crate::prompt::chunks(self.tokenizer, p)?);
        }
        let k = per_prompt.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let len = self.tokenizer.max_length();
        let empty = crate::prompt::Chunk {
            ids: self.tokenizer.encode("")?,
            weights: vec![1.0; len],
        };
        let mut ids: Vec<i64> = Vec::with_capacity(prompts.len() * k * len);
        let mut weights: Vec<f32> = Vec::with_capacity(prompts.len() * k * len);
        for chunks in &per_prompt {
            for c in chunks
                .iter()
                .chain(std::iter::repeat_n(&empty, k - chunks.len()))
            {
                ids.extend(c.ids.iter().map(|&i| i64::from(i)));
                weights.extend(&c.weights);
            }
        }
        let n = prompts.len() * k;
        let ids: Tensor<2, Int> = Tensor::from_data(TensorData::new(ids, [n, len]), self.device);
        let mut z = self.model.forward(ids, clip_skip).cast(FloatDType::F32);
        if weights.iter().any(|w| *w != 1.0) {
            let w: Tensor<3> =
                Tensor::from_data(TensorData::new(weights, [n, len, 1]), self.device);
            let original = z.clone().mean_dims(&[1, 2]);
            let weighted = z * w;
            let new = weighted.clone().mean_dims(&[1, 2]);
            z = weighted * (original / new);
        }
        let hidden = z.dims()[2];
        Ok(PromptEmbeds {
            context: z.reshape([prompts.len(), k * len, hidden]),
            pooled: None,
        })
    }
}
