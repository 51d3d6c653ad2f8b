//! The CLIP BPE tokenizer, as diffusers runs it (transformers' tokenizers-backed
//! `CLIPTokenizer`): NFC, whitespace runs folded, lowercase, CLIP's split regex, byte-level
//! BPE with `</w>`. The vocabulary is SD 1.5's `tokenizer.json` (see `assets/README.md`),
//! compiled into the binary; the tree holds it once, in the shipped model's folder
//! (`assets/models/kiln-tiny/tokenizer/tokenizer.json`), which uses the very same tokenizer.
//!
//! A prompt becomes 77 ids: BOS 49406, at most 75 tokens (the rest is dropped), EOS 49407,
//! then EOS as padding. A model whose tokenizer config says another `model_max_length` gets
//! that many ids instead ([`ClipTokenizer::with_max_length`]), as transformers pads to it.
//!
//! Textual-inversion embeddings add tokens ([`ClipTokenizer::add_embedding_tokens`]) as
//! diffusers' `load_textual_inversion` does: `tokenizer.add_tokens(token)` one name at a
//! time (non-special, normalized, no strip, not single-word), so the ids run on from the
//! vocabulary — 49408, 49409, … in load order. A token with n vectors is the n names
//! `<t>`, `<t>_1`, …, `<t>_{n-1}`, and prompts are rewritten `<t>` → `<t> <t>_1 …` before
//! tokenizing, exactly like diffusers' `maybe_convert_prompt`.

use std::borrow::Cow;
use std::collections::HashSet;

use tokenizers::{AddedToken, Tokenizer};

use crate::error::{Error, Result};

/// `<|startoftext|>`.
pub const BOS: u32 = 49406;
/// `<|endoftext|>`, also used as padding.
pub const EOS: u32 = 49407;
/// Sequence length of SD 1.x's text encoder (and the default of every model).
pub const MAX_LENGTH: usize = 77;

pub(crate) const TOKENIZER_JSON: &[u8] =
    include_bytes!("../../assets/models/kiln-tiny/tokenizer/tokenizer.json");

/// CLIP's tokenizer, plus any tokens added for textual-inversion embeddings.
#[derive(Clone)]
pub struct ClipTokenizer {
    inner: Tokenizer,
    /// Every name added by [`ClipTokenizer::add_embedding_tokens`] (`<t>`, `<t>_1`, …): the
    /// part of transformers' `added_tokens_encoder` that `maybe_convert_prompt` can expand.
    added: HashSet<String>,
    /// Ids per encoded prompt (`model_max_length`).
    max_length: usize,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("added_tokens", &self.added.len())
            .finish()
    }
}

/// The token names an embedding of `n` vectors occupies: `token`, `token_1`, …,
/// `token_{n-1}` (diffusers' multi-vector naming).
pub fn multi_vector_names(token: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            if i == 0 {
                token.to_owned()
            } else {
                format!("{token}_{i}")
            }
        })
        .collect()
}

impl ClipTokenizer {
    /// The bundled SD 1.x tokenizer.
    pub fn sd15() -> Result<Self> {
        let mut inner =
            Tokenizer::from_bytes(TOKENIZER_JSON).map_err(|e| Error::Tokenizer(e.to_string()))?;
        inner
            .with_truncation(None)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        inner.with_padding(None);
        Ok(ClipTokenizer {
            inner,
            added: HashSet::new(),
            max_length: MAX_LENGTH,
        })
    }

    /// The same tokenizer encoding prompts as `max_length` ids (BOS, at most `max_length` − 2
    /// tokens, EOS, padding), transformers' `model_max_length`. At least 3.
    pub fn with_max_length(mut self, max_length: usize) -> Result<Self> {
        if max_length < 3 {
            return Err(Error::InvalidRequest(format!(
                "a tokenizer length of {max_length} leaves no room for a prompt"
            )));
        }
        self.max_length = max_length;
        Ok(self)
    }

    /// Ids per encoded prompt: 77 for SD 1.x.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Number of ids, added tokens included (49408 for the bare SD 1.x vocabulary). The text
    /// encoder's token-embedding table must have exactly this many rows.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of `token` (a vocabulary entry such as `cat</w>`, or an added token).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Adds the `n` tokens of a textual-inversion embedding named `token` (`token`,
    /// `token_1`, …, `token_{n-1}`) and returns their ids, which continue the vocabulary in
    /// order (49408, 49409, … for the first embedding), as diffusers assigns them.
    ///
    /// Refuses, without adding anything, an empty name, `n` = 0, or a name that is already
    /// in the vocabulary or was added before.
    pub fn add_embedding_tokens(&mut self, token: &str, n: usize) -> Result<Vec<u32>> {
        if token.is_empty() {
            return Err(Error::InvalidRequest(
                "an embedding's token cannot be empty".into(),
            ));
        }
        if n == 0 {
            return Err(Error::InvalidRequest(format!(
                "embedding '{token}' has no vectors"
            )));
        }
        let names = multi_vector_names(token, n);
        if let Some(taken) = names
            .iter()
            .find(|name| self.inner.token_to_id(name).is_some())
        {
            return Err(Error::TokenInVocabulary {
                token: taken.clone(),
            });
        }
        let mut ids = Vec::with_capacity(n);
        for name in names {
            let expected = self.vocab_size() as u32;
            // transformers' `add_tokens(str)` → `AddedToken(content, special=False)`:
            // normalized, no lstrip/rstrip, not single-word.
            self.inner
                .add_tokens([AddedToken::from(name.clone(), false)])
                .map_err(|e| Error::Tokenizer(format!("adding token '{name}': {e}")))?;
            let id = self.inner.token_to_id(&name).ok_or_else(|| {
                Error::Tokenizer(format!("token '{name}' was added but has no id"))
            })?;
            if id != expected {
                return Err(Error::Tokenizer(format!(
                    "token '{name}' got id {id}, expected {expected}"
                )));
            }
            tracing::debug!(token = %name, id, "added embedding token");
            self.added.insert(name);
            ids.push(id);
        }
        Ok(ids)
    }

    /// diffusers' `maybe_convert_prompt`: every added token `<t>` found in the tokenized
    /// prompt is replaced in the text by `<t> <t>_1 … <t>_{k}` for as many `<t>_i` as were
    /// added. Borrowed (no work) when no embedding tokens were added.
    pub fn convert_prompt<'a>(&self, text: &'a str) -> Result<Cow<'a, str>> {
        if self.added.is_empty() {
            return Ok(Cow::Borrowed(text));
        }
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        // Unique added tokens, in order of first appearance (Python iterates a set).
        let mut found: Vec<&str> = Vec::new();
        for t in enc.get_tokens() {
            if self.added.contains(t) && !found.contains(&t.as_str()) {
                found.push(t);
            }
        }
        if found.is_empty() {
            return Ok(Cow::Borrowed(text));
        }
        let mut prompt = text.to_owned();
        for token in found {
            let mut replacement = token.to_owned();
            let mut i = 1;
            while self.added.contains(&format!("{token}_{i}")) {
                replacement.push_str(&format!(" {token}_{i}"));
                i += 1;
            }
            if i > 1 {
                prompt = prompt.replace(token, &replacement);
            }
        }
        Ok(Cow::Owned(prompt))
    }

    /// BPE ids of `text` without BOS/EOS, untruncated (multi-vector embedding tokens
    /// expanded first, see [`ClipTokenizer::convert_prompt`]).
    pub fn tokens(&self, text: &str) -> Result<Vec<u32>> {
        let text = self.convert_prompt(text)?;
        let enc = self
            .inner
            .encode(text.as_ref(), false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The [`max_length`](Self::max_length) ids the text encoder sees (77: BOS, up to 75
    /// tokens, EOS, EOS padding; multi-vector embedding tokens expanded first).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let tokens = self.tokens(text)?;
        let n = self.max_length;
        let mut ids = Vec::with_capacity(n);
        ids.push(BOS);
        ids.extend(tokens.iter().take(n - 2));
        ids.push(EOS);
        ids.resize(n, EOS);
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

    /// A model with a shorter `model_max_length` gets that many ids, truncated the same way.
    #[test]
    fn a_shorter_max_length_pads_and_truncates_to_it() {
        let t = ClipTokenizer::sd15()
            .and_then(|t| t.with_max_length(8))
            .expect("tokenizer");
        assert_eq!(t.max_length(), 8);
        let ids = t.encode("a photo of a cat").expect("encode");
        assert_eq!(ids, [49406, 320, 1125, 539, 320, 2368, 49407, EOS]);
        let ids = t.encode(&"cat ".repeat(10)).expect("encode");
        assert_eq!(ids, [BOS, 2368, 2368, 2368, 2368, 2368, 2368, EOS]);
        assert!(ClipTokenizer::sd15().unwrap().with_max_length(2).is_err());
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

    #[test]
    fn added_tokens_continue_the_vocabulary_in_load_order() {
        let mut t = ClipTokenizer::sd15().expect("tokenizer");
        assert_eq!(t.vocab_size(), 49408);
        assert_eq!(
            t.add_embedding_tokens("<kiln-cat>", 1).expect("add"),
            vec![49408]
        );
        assert_eq!(
            t.add_embedding_tokens("<kiln-style>", 2).expect("add"),
            vec![49409, 49410]
        );
        assert_eq!(t.vocab_size(), 49411);
        assert_eq!(t.token_to_id("<kiln-style>_1"), Some(49410));
        let ids = t.encode("a <kiln-cat> in <kiln-style>").expect("encode");
        assert_eq!(&ids[..7], &[BOS, 320, 49408, 530, 49409, 49410, EOS]);
        assert_eq!(
            t.tokens("<kiln-style>").expect("tokens"),
            vec![49409, 49410]
        );
        assert_eq!(
            t.convert_prompt("<kiln-style>, <kiln-cat>")
                .expect("convert"),
            "<kiln-style> <kiln-style>_1, <kiln-cat>"
        );
    }

    #[test]
    fn refuses_tokens_already_in_the_vocabulary() {
        let mut t = ClipTokenizer::sd15().expect("tokenizer");
        let err = t
            .add_embedding_tokens("cat", 1)
            .expect_err("cat is in the vocabulary")
            .to_string();
        assert_eq!(
            err,
            "token 'cat' is already in the vocabulary; pass another token name"
        );
        t.add_embedding_tokens("<x>", 1).expect("add");
        let err = t
            .add_embedding_tokens("<x>", 3)
            .expect_err("already added")
            .to_string();
        assert!(err.contains("'<x>' is already in the vocabulary"), "{err}");
        // A refused multi-vector token adds nothing.
        t.add_embedding_tokens("<y>_1", 1).expect("add");
        assert!(t.add_embedding_tokens("<y>", 2).is_err());
        assert_eq!(t.vocab_size(), 49410);
        assert!(t.add_embedding_tokens("<z>", 0).is_err());
        assert!(t.add_embedding_tokens("", 1).is_err());
    }
}
