//! Textual-inversion embeddings, loaded and applied as diffusers' `load_textual_inversion`
//! does.
//!
//! An embedding is `n` learned vectors of the text encoder's width `D`, bound to a token.
//! The files people have come in four forms, all read here without running any pickle:
//!
//! | form | container | content |
//! | --- | --- | --- |
//! | [`TiFormat::A1111Pt`] | `torch.save` (zip or legacy pickle) | `string_to_param: {'*': [n, D]}` (+ `name`, `step`, …) |
//! | [`TiFormat::A1111Safetensors`] | safetensors | `emb_params: [n, D]` (A1111 / kohya) |
//! | [`TiFormat::DiffusersSafetensors`] | safetensors | one tensor `{token: [D] or [n, D]}` (`learned_embeds`) |
//! | [`TiFormat::DiffusersBin`] | `torch.save` of a dict | one tensor `{token: [D] or [n, D]}` |
//!
//! [`apply`] adds the tokens to the [`ClipTokenizer`] (ids 49408, 49409, … in load order)
//! and appends the vectors as rows of the text encoder's token-embedding table
//! `[vocab, hidden]`, so the table always has [`ClipTokenizer::vocab_size`] rows. A token
//! with n > 1 vectors becomes the n tokens `<t>`, `<t>_1`, …, `<t>_{n-1}`, and the tokenizer
//! rewrites `<t>` in prompts to `<t> <t>_1 …` (diffusers' `maybe_convert_prompt`).
//!
//! Pickles are parsed by the `pytorch-reader` crate, which never executes them: a call such
//! as `posix.system` stays an inert name. Kiln additionally refuses any file whose pickle
//! references a callable other than tensor/storage/dtype types, numpy scalars, `OrderedDict`
//! and the like ([`Error::UnsafePickle`]), since an embedding never needs one.

use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::{Tensor, TensorData};
use pytorch_reader::{DType as PtDType, PickleValue, PytorchReader};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::models::clip_text::ClipTextModel;
use crate::tokenizer::{ClipTokenizer, multi_vector_names};
use crate::weights::safetensors::{SafeTensors, sniff_foreign};

/// How an embedding file was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TiFormat {
    /// AUTOMATIC1111 `.pt`: `torch.save` of `{'string_to_param': {'*': [n, D]}, …}`.
    A1111Pt,
    /// `.safetensors` with one `emb_params` tensor `[n, D]` (AUTOMATIC1111 / kohya).
    A1111Safetensors,
    /// diffusers `learned_embeds.safetensors`: one tensor `{token: [D] or [n, D]}`.
    DiffusersSafetensors,
    /// diffusers `learned_embeds.bin`: `torch.save` of `{token: [D] or [n, D]}`.
    DiffusersBin,
}

/// A loaded textual-inversion embedding (host data; nothing is on a device yet).
#[derive(Debug, Clone, Serialize)]
pub struct TextualInversion {
    /// The token it is bound to: the file stem unless another was asked for.
    pub token: String,
    /// The vectors, `n × width`, row-major (`vectors[i]` is the embedding of token name i:
    /// `token`, `token_1`, …). Not serialized (it can be large); see `n_vectors`.
    #[serde(skip)]
    pub vectors: Vec<Vec<f32>>,
    /// Width `D` of each vector: the text encoder's hidden size it was trained for
    /// (768 for SD 1.x, 1024 for SD 2.x).
    pub width: usize,
    /// How the file stored it.
    pub format: TiFormat,
    /// The file it came from.
    pub path: PathBuf,
}

impl TextualInversion {
    /// Number of vectors `n` (= number of tokens the embedding occupies).
    pub fn n_vectors(&self) -> usize {
        self.vectors.len()
    }

    /// The token names the embedding occupies: `token`, `token_1`, …, `token_{n-1}`.
    pub fn token_names(&self) -> Vec<String> {
        multi_vector_names(&self.token, self.vectors.len())
    }
}

/// The model family a text-encoder width belongs to, for error messages.
fn family_of_width(width: usize) -> Option<&'static str> {
    match width {
        768 => Some("SD 1.x"),
        1024 => Some("SD 2.x"),
        1280 | 2048 => Some("SDXL"),
        _ => None,
    }
}

/// Reads a textual-inversion embedding from `path` (any of the [`TiFormat`] forms, detected
/// from the content, not the extension). The token is `token` if given, else the file stem.
///
/// Refuses with a named error: files that are not embeddings (a LoRA, a checkpoint, an
/// empty file, an HTML page, a Git LFS pointer, a truncated file), SDXL embeddings
/// (`clip_l`/`clip_g`), and pickles that reference anything but tensor rebuilding.
pub fn load(path: &Path, token: Option<&str>) -> Result<TextualInversion> {
    let head = read_head(path)?;
    let file_len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if file_len == 0 {
        return Err(Error::NotAnEmbedding {
            path: path.to_owned(),
            what: "the file is empty (0 bytes)".into(),
        });
    }
    let token = match token {
        Some(t) => t.to_owned(),
        None => path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                Error::InvalidRequest(format!(
                    "{}: cannot take a token name from this path; pass one",
                    path.display()
                ))
            })?,
    };
    let is_pickle = matches!(
        sniff_foreign(path, &head, file_len),
        Some(Error::PickleCheckpoint { .. })
    );
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let (format, shape, values) = if is_pickle || (ext != "safetensors" && looks_like_tar(&head)) {
        load_torch(path)?
    } else {
        load_safetensors(path)?
    };
    let ti = build(path, token, format, &shape, values)?;
    tracing::info!(path = %path.display(), token = %ti.token, vectors = ti.n_vectors(), width = ti.width, format = ?ti.format, "loaded textual-inversion embedding");
    Ok(ti)
}

fn read_head(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = Vec::with_capacity(1024);
    f.take(1024)
        .read_to_end(&mut head)
        .map_err(|e| Error::io(path, e))?;
    Ok(head)
}

/// The oldest `torch.save` container (before PyTorch 0.1.10) is a TAR archive.
fn looks_like_tar(head: &[u8]) -> bool {
    head.len() >= 262 && &head[257..262] == b"ustar"
}

/// What a key set that is not an embedding seems to be.
fn not_an_embedding(path: &Path, keys: &[&str]) -> Error {
    let example = keys.first().copied().unwrap_or("");
    let what = if let Some(k) = keys
        .iter()
        .find(|k| k.to_ascii_lowercase().contains("lora"))
    {
        format!(
            "it looks like a LoRA ({} tensors such as '{k}'); load it as a LoRA instead",
            keys.len()
        )
    } else if let Some(k) = keys
        .iter()
        .find(|k| k.contains("hada_") || k.contains("lokr_"))
    {
        format!(
            "it looks like a LyCORIS adapter ({} tensors such as '{k}'); load it as a LoRA instead",
            keys.len()
        )
    } else if let Some(k) = keys.iter().find(|k| {
        k.starts_with("model.diffusion_model.")
            || k.starts_with("first_stage_model.")
            || k.starts_with("cond_stage_model.")
    }) {
        format!(
            "it looks like a Stable Diffusion checkpoint ({} tensors such as '{k}'); load it as the model instead",
            keys.len()
        )
    } else if let Some(k) = keys.iter().find(|k| {
        k.starts_with("down_blocks.")
            || k.starts_with("encoder.down_blocks.")
            || k.contains("text_model.encoder.")
    }) {
        format!(
            "it looks like model weights in diffusers layout ({} tensors such as '{k}')",
            keys.len()
        )
    } else if keys.is_empty() {
        "the file holds no tensors".to_owned()
    } else {
        format!(
            "it has {} tensors (e.g. '{example}'); an embedding has `emb_params`, `string_to_param` or one tensor named after its token",
            keys.len()
        )
    };
    Error::NotAnEmbedding {
        path: path.to_owned(),
        what,
    }
}

/// Refuses SDXL embeddings (`clip_l` + `clip_g`).
fn refuse_sdxl(path: &Path, keys: &[&str]) -> Result<()> {
    if keys.iter().any(|k| *k == "clip_l" || *k == "clip_g") {
        return Err(Error::UnsupportedModel {
            what: path.display().to_string(),
            kind: "this is a Stable Diffusion XL textual-inversion embedding (it has clip_l/clip_g vectors); \
                     Kiln runs SD 1.x, whose embeddings have one set of 768-wide vectors"
                .into(),
        });
    }
    Ok(())
}

/// Picks the embedding tensor among `keys` → (format, key).
fn pick(path: &Path, keys: &[&str], pickled: bool) -> Result<(TiFormat, String)> {
    refuse_sdxl(path, keys)?;
    if keys.contains(&"emb_params") {
        let format = if pickled {
            TiFormat::A1111Pt
        } else {
            TiFormat::A1111Safetensors
        };
        return Ok((format, "emb_params".into()));
    }
    if pickled {
        if keys.contains(&"string_to_param.*") {
            return Ok((TiFormat::A1111Pt, "string_to_param.*".into()));
        }
        let params: Vec<&&str> = keys
            .iter()
            .filter(|k| k.starts_with("string_to_param."))
            .collect();
        if let [only] = params[..] {
            return Ok((TiFormat::A1111Pt, (*only).to_owned()));
        }
    }
    if let [only] = keys[..] {
        let looks_foreign = only.to_ascii_lowercase().contains("lora")
            || only.starts_with("model.diffusion_model.")
            || only.starts_with("first_stage_model.")
            || only.starts_with("cond_stage_model.");
        if !looks_foreign {
            let format = if pickled {
                TiFormat::DiffusersBin
            } else {
                TiFormat::DiffusersSafetensors
            };
            return Ok((format, only.to_owned()));
        }
    }
    Err(not_an_embedding(path, keys))
}

fn load_safetensors(path: &Path) -> Result<(TiFormat, Vec<usize>, Vec<f32>)> {
    let st = SafeTensors::open(path)?;
    let keys: Vec<&str> = st.tensors().keys().map(String::as_str).collect();
    let (format, key) = pick(path, &keys, false)?;
    let info = st
        .info(&key)
        .ok_or_else(|| Error::format(path, format!("no tensor named '{key}'")))?;
    let shape = info.shape.clone();
    if !info.dtype.is_float() {
        return Err(Error::format(
            path,
            format!(
                "tensor '{key}' has dtype {}, not floating point",
                info.dtype.name()
            ),
        ));
    }
    Ok((format, shape, st.f32(&key)?))
}

/// Callables a `torch.save` pickle may legitimately leave uninterpreted: tensor, storage and
/// dtype types, numpy scalars/arrays, `OrderedDict`, sets, byte decoding. Anything that
/// loads, compiles or runs code (`torch.load`, `torch.jit.*`, `numpy.testing.*`, `os.*`, …)
/// is not allowed.
fn allowed_callable(name: &str) -> bool {
    const TORCH_DENIED: [&str; 14] = [
        "torch.load",
        "torch.hub",
        "torch.jit",
        "torch.ops",
        "torch._C",
        "torch.package",
        "torch.serialization",
        "torch.storage._load_from_bytes",
        "torch.distributed",
        "torch.utils",
        "torch.fx",
        "torch._dynamo",
        "torch.compile",
        "torch.export",
    ];
    if name.starts_with("torch.") {
        return !TORCH_DENIED.iter().any(|d| {
            name == *d
                || name
                    .strip_prefix(d)
                    .is_some_and(|rest| rest.starts_with('.'))
        });
    }
    name.starts_with("numpy.dtypes.")
        || matches!(
            name,
            "numpy.dtype"
                | "numpy.ndarray"
                | "numpy.core.multiarray.scalar"
                | "numpy.core.multiarray._reconstruct"
                | "numpy._core.multiarray.scalar"
                | "numpy._core.multiarray._reconstruct"
                | "collections.OrderedDict"
                | "_codecs.encode"
                | "builtins.set"
                | "builtins.frozenset"
                | "__builtin__.set"
                | "__builtin__.frozenset"
        )
}

/// The first callable in `value` that is not [`allowed_callable`].
fn forbidden_callable(value: &PickleValue) -> Option<String> {
    match value {
        PickleValue::Unsupported(name) if !allowed_callable(name) => Some(name.clone()),
        PickleValue::List(items) => items.iter().find_map(forbidden_callable),
        PickleValue::Dict(map) => map.values().find_map(forbidden_callable),
        _ => None,
    }
}

/// Runs a `pytorch-reader` call, turning its errors — and, defensively, any panic inside
/// the parser — into a format error for `path`.
fn torch_call<T>(
    path: &Path,
    f: impl FnOnce() -> std::result::Result<T, pytorch_reader::PytorchError>,
) -> Result<T> {
    use pytorch_reader::PytorchError;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(PytorchError::Zip(e))) => Err(Error::format(
            path,
            format!(
                "truncated or damaged PyTorch archive (the download was probably interrupted): {e}"
            ),
        )),
        Ok(Err(PytorchError::Io(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(Error::format(
                path,
                format!("truncated PyTorch file (the download was probably interrupted): {e}"),
            ))
        }
        Ok(Err(e)) => Err(Error::format(
            path,
            format!("not a PyTorch file Kiln can read: {e}"),
        )),
        Err(_) => Err(Error::format(
            path,
            "not a PyTorch file Kiln can read (the pickle parser rejected it)",
        )),
    }
}

fn load_torch(path: &Path) -> Result<(TiFormat, Vec<usize>, Vec<f32>)> {
    // The whole pickle first, to look for calls no embedding makes.
    let root = torch_call(path, || PytorchReader::read_pickle_data(path, None))?;
    if let Some(callable) = forbidden_callable(&root) {
        tracing::warn!(path = %path.display(), %callable, "refusing a pickle that references a forbidden callable");
        return Err(Error::UnsafePickle {
            path: path.to_owned(),
            callable,
        });
    }
    if !matches!(root, PickleValue::Dict(_)) {
        return Err(Error::NotAnEmbedding {
            path: path.to_owned(),
            what: "the pickle does not hold a dictionary, so it is no torch.save of an embedding"
                .into(),
        });
    }
    let reader = torch_call(path, || PytorchReader::new(path))?;
    let mut names: Vec<&str> = reader.tensors().keys().map(String::as_str).collect();
    names.sort_unstable();
    let (format, key) = pick(path, &names, true)?;
    let tensor = reader
        .get(&key)
        .ok_or_else(|| Error::format(path, format!("no tensor named '{key}'")))?;
    let shape = tensor.shape().to_vec();
    let bytes = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tensor.read()))
        .map_err(|_| Error::format(path, format!("tensor '{key}' could not be read")))?
        .map_err(|e| Error::format(path, format!("tensor '{key}' could not be read: {e}")))?;
    let values = torch_f32(path, &key, tensor.dtype(), &bytes)?;
    Ok((format, shape, values))
}

/// `pytorch-reader` bytes (native-endian, row-major) → f32.
fn torch_f32(path: &Path, key: &str, dtype: PtDType, bytes: &[u8]) -> Result<Vec<f32>> {
    let out = match dtype {
        PtDType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        PtDType::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_ne_bytes([c[0], c[1]]).to_f32())
            .collect(),
        PtDType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_ne_bytes([c[0], c[1]]).to_f32())
            .collect(),
        PtDType::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        other => {
            return Err(Error::format(
                path,
                format!("tensor '{key}' has dtype {other:?}, not floating point"),
            ));
        }
    };
    Ok(out)
}

/// Checks the shape (`[D]` or `[n, D]`) and values, and splits them into vectors.
fn build(
    path: &Path,
    token: String,
    format: TiFormat,
    shape: &[usize],
    values: Vec<f32>,
) -> Result<TextualInversion> {
    let (n, width) = match *shape {
        [d] => (1, d),
        [n, d] => (n, d),
        _ => {
            return Err(Error::format(
                path,
                format!(
                    "the embedding tensor has shape {shape:?}; expected [width] or [vectors, width]"
                ),
            ));
        }
    };
    if n == 0 || width == 0 {
        return Err(Error::format(
            path,
            format!("the embedding tensor is empty (shape {shape:?})"),
        ));
    }
    if values.len() != n * width {
        return Err(Error::format(
            path,
            format!(
                "the embedding tensor has {} values for shape {shape:?}",
                values.len()
            ),
        ));
    }
    if values.iter().any(|v| !v.is_finite()) {
        return Err(Error::format(
            path,
            "the embedding holds NaN or infinite values",
        ));
    }
    let vectors = values.chunks_exact(width).map(<[f32]>::to_vec).collect();
    Ok(TextualInversion {
        token,
        vectors,
        width,
        format,
        path: path.to_owned(),
    })
}

/// Applies `ti` to a loaded model: checks its width against the text encoder's hidden size,
/// adds its token names to `tokenizer` and appends its vectors as new rows of
/// `text_encoder.embeddings.token_embedding.weight` (`[vocab, hidden]` → `[vocab + n,
/// hidden]`, same device and dtype). Returns the new token ids (49408, … for the first).
///
/// On error nothing is changed. The embedding table must have as many rows as the
/// tokenizer has ids before and after.
pub fn apply(
    ti: &TextualInversion,
    tokenizer: &mut ClipTokenizer,
    text_encoder: &mut ClipTextModel,
) -> Result<Vec<u32>> {
    let weight = &text_encoder.embeddings.token_embedding.weight;
    let table = weight.base();
    let [rows, hidden] = table.dims();
    if ti.width != hidden {
        let made_for = family_of_width(ti.width)
            .map(|f| format!(" (made for {f})"))
            .unwrap_or_default();
        return Err(Error::EmbeddingWidthMismatch {
            path: ti.path.clone(),
            width: ti.width,
            made_for,
            model_width: hidden,
        });
    }
    let n = ti.vectors.len();
    if n == 0 || ti.vectors.iter().any(|v| v.len() != hidden) {
        return Err(Error::InvalidRequest(format!(
            "embedding '{}' must have at least one vector, each {hidden} wide",
            ti.token
        )));
    }
    if rows != tokenizer.vocab_size() {
        return Err(Error::Config(format!(
            "the text encoder's token-embedding table has {rows} rows but the tokenizer has {} ids; \
             tokens were added to one and not the other",
            tokenizer.vocab_size()
        )));
    }
    let ids = tokenizer.add_embedding_tokens(&ti.token, n)?;
    let device = table.device();
    let data: Vec<f32> = ti.vectors.iter().flatten().copied().collect();
    let new_rows =
        Tensor::<2>::from_data(TensorData::new(data, [n, hidden]), (&device, table.dtype()));
    let id = weight.id;
    text_encoder.embeddings.token_embedding.weight =
        Param::initialized(id, Tensor::cat(vec![table, new_rows], 0));
    tracing::info!(token = %ti.token, ids = ?ids, "applied textual-inversion embedding");
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_callables() {
        assert!(allowed_callable("torch.Tensor"));
        assert!(allowed_callable("collections.OrderedDict"));
        assert!(!allowed_callable("posix.system"));
        assert!(!allowed_callable("builtins.eval"));
        assert!(allowed_callable("torch.float32"));
        assert!(allowed_callable("torch._utils._rebuild_tensor_v2"));
        assert!(!allowed_callable("torch.load"));
        assert!(!allowed_callable("torch.jit._script.RecursiveScriptModule"));
        assert!(!allowed_callable("numpy.testing._private.utils.runstring"));
        let nested = PickleValue::Dict(
            [(
                "a".to_owned(),
                PickleValue::List(vec![
                    PickleValue::Int(1),
                    PickleValue::Unsupported("os.system".into()),
                ]),
            )]
            .into_iter()
            .collect(),
        );
        assert_eq!(forbidden_callable(&nested).as_deref(), Some("os.system"));
    }

    /// How `pytorch-reader` names nested dictionary entries: keys joined with dots.
    #[test]
    fn pytorch_reader_flattens_nested_keys_with_dots() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/adapters");
        let a1111 = PytorchReader::new(dir.join("ti_style.pt")).expect("read");
        assert_eq!(a1111.keys(), ["string_to_param.*"]);
        assert_eq!(
            a1111.get("string_to_param.*").expect("tensor").shape(),
            [2, 32]
        );
        let bin = PytorchReader::new(dir.join("ti_cat_diffusers.bin")).expect("read");
        assert_eq!(bin.keys(), ["<kiln-cat>"]);
        assert_eq!(bin.get("<kiln-cat>").expect("tensor").shape(), [32]);
    }

    #[test]
    fn picks_each_form() {
        let p = Path::new("x");
        assert_eq!(
            pick(p, &["string_to_param.*"], true).expect("a1111").0,
            TiFormat::A1111Pt
        );
        assert_eq!(
            pick(p, &["emb_params"], false).expect("emb").0,
            TiFormat::A1111Safetensors
        );
        assert_eq!(
            pick(p, &["<t>"], false).expect("diffusers").0,
            TiFormat::DiffusersSafetensors
        );
        assert_eq!(
            pick(p, &["<t>"], true).expect("bin").0,
            TiFormat::DiffusersBin
        );
        assert!(matches!(
            pick(p, &["clip_g", "clip_l"], false),
            Err(Error::UnsupportedModel { .. })
        ));
        let err = pick(p, &["lora_unet_x.lora_down.weight"], false)
            .expect_err("lora")
            .to_string();
        assert!(err.contains("LoRA"), "{err}");
        let err = pick(p, &["model.diffusion_model.out.0.weight", "x"], false)
            .expect_err("ckpt")
            .to_string();
        assert!(err.contains("checkpoint"), "{err}");
    }

    /// A pickle nesting lists 10⁶ deep (`EMPTY_LIST` × n, then `APPEND` × n − 1: 2 MB) is
    /// refused by name, quickly, without overflowing a stack.
    #[test]
    fn a_pickle_nesting_a_million_deep_is_refused_quickly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("deep.pt");
        let n = 1_000_000;
        let mut bytes = vec![0x80, 0x02];
        bytes.extend(std::iter::repeat_n(b']', n));
        bytes.extend(std::iter::repeat_n(b'a', n - 1));
        bytes.push(b'.');
        std::fs::write(&path, &bytes).expect("write");
        let start = std::time::Instant::now();
        let err = load(&path, None).expect_err("refused").to_string();
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(err.contains("deep.pt") && err.contains("nest"), "{err}");
    }
}
