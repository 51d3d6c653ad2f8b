//! The CLIP BPE tokenizer, as diffusers runs it (transformers' tokenizers-backed
//! `CLIPTokenizer`): NFC, whitespace runs folded, lowercase, CLIP's split regex, byte-level
//! BPE with `</w>`. The vocabulary is `assets/tokenizer.json` (see `assets/README.md`),
//! compiled into the binary.
//!
//! A prompt becomes 77 ids: BOS 49406, at most 75 tokens (the rest is dropped), EOS 49407,
//! then EOS as padding.

use tokenizers::Tokenizer;

use crate::error::{Error, Result};

/// `<|startoftext|>`.
pub const BOS: u32 = 49406;
/// `<|endoftext|>`, also used as padding.
pub const EOS: u32 = 49407;
/// Sequence length of SD 1.x's text encoder.
pub const MAX_LENGTH: usize = 77;

const TOKENIZER_JSON: &[u8] = include_bytes!("../../assets/tokenizer.json");

/// CLIP's tokenizer.
#[derive(Clone)]
pub struct ClipTokenizer {
    inner: Tokenizer,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClipTokenizer")
    }
}

impl ClipTokenizer {
    /// The bundled SD 1.x tokenizer.
    pub fn sd15() -> Result<Self> {
        let mut inner = Tokenizer::from_bytes(TOKENIZER_JSON).map_err(|e| Error::Tokenizer(e.to_string()))?;
        inner.with_truncation(None).map_err(|e| Error::Tokenizer(e.to_string()))?;
        inner.with_padding(None);
        Ok(ClipTokenizer { inner })
    }

    /// BPE ids of `text` without BOS/EOS, untruncated.
    pub fn tokens(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The 77 ids the text encoder sees: BOS, up to 75 tokens, EOS, EOS padding.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let tokens = self.tokens(text)?;
        let mut ids = Vec::with_capacity(MAX_LENGTH);
        ids.push(BOS);
        ids.extend(tokens.iter().take(MAX_LENGTH - 2));
        ids.push(EOS);
        ids.resize(MAX_LENGTH, EOS);
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_photo_of_a_cat() {
        let t = ClipTokenizer::sd15().expect("tokenizer");
        let ids = t.encode("a photo of a cat").expect("encode");
        assert_eq!(&ids[..7], &[49406, 320, 1125, 539, 320, 2368, 49407]);
        assert!(ids[7..].iter().all(|&i| i == EOS));
        assert_eq!(ids.len(), 77);
    }

    #[test]
    fn long_prompts_keep_bos_75_tokens_eos() {
        let t = ClipTokenizer::sd15().expect("tokenizer");
        let ids = t.encode(&"cat ".repeat(100)).expect("encode");
        assert_eq!(ids.len(), 77);
        assert_eq!(ids[0], BOS);
        assert_eq!(ids[76], EOS);
        assert!(ids[1..76].iter().all(|&i| i == 2368));
    }
}
