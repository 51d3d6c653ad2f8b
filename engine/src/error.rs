//! The engine's error type. Every failure a user can cause has a named variant whose
//! message says what happened and, where possible, what to do about it.

use std::path::PathBuf;

/// Result alias used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a panic said: its payload when that is text (`panic!` with a literal or a formatted
/// message, as Rust and Burn panic), else `None`.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
}

/// A tensor whose shape differs between the file and the model built from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// Diffusers-style name of the tensor.
    pub key: String,
    /// Shape the model expects.
    pub expected: Vec<usize>,
    /// Shape found in the file.
    pub got: Vec<usize>,
}

impl std::fmt::Display for ShapeMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (expected {:?}, file has {:?})",
            self.key, self.expected, self.got
        )
    }
}

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {cause}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The OS error (in the message, so not also a `source`: a chain would repeat it).
        cause: std::io::Error,
    },
    /// Writing a file failed for want of space: the disk is full, or a quota or a file size
    /// limit is reached. Every write is atomic, so the previous file is intact.
    #[error(
        "{path}: not enough space to write this file (the disk is full, or a quota or file \
         size limit is reached: {cause}); free some space and try again — the previous file, \
         if there was one, is intact"
    )]
    DiskFull {
        /// The file that could not be written.
        path: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// A file is not in the format its name or caller promised.
    #[error("{path}: {reason}")]
    Format {
        /// The file involved.
        path: PathBuf,
        /// What is wrong with it, in words a user can act on.
        reason: String,
    },
    /// A file is a Git LFS pointer rather than the real content.
    #[error(
        "{path}: this is a Git LFS pointer file ({size} bytes), not the model itself; \
         download the real file (e.g. `git lfs pull`) and try again"
    )]
    GitLfsPointer {
        /// The file involved.
        path: PathBuf,
        /// Size of the pointer file.
        size: u64,
    },
    /// A file is an HTML page (typically a login or error page saved under a model's name).
    #[error(
        "{path}: this is an HTML web page, not a model; the download probably failed or needed a login"
    )]
    HtmlPage {
        /// The file involved.
        path: PathBuf,
    },
    /// A pickle-based checkpoint, which Kiln never unpickles.
    #[error(
        "{path}: .ckpt/.pt checkpoints are not supported yet (Kiln never unpickles files); \
         convert it to .safetensors first"
    )]
    PickleCheckpoint {
        /// The file involved.
        path: PathBuf,
    },
    /// A model of a family Kiln recognises but does not run.
    #[error(
        "{what} is not supported: {family} checkpoints are recognised but Kiln runs only Stable Diffusion 1.x models for now"
    )]
    UnsupportedFamily {
        /// What was being loaded (a path).
        what: String,
        /// What the model is.
        family: crate::family::ModelFamily,
    },
    /// A model Kiln does not run, of no family it knows (another pipeline).
    #[error("{what} is not supported: {kind}")]
    UnsupportedModel {
        /// What was being loaded (a path or component name).
        what: String,
        /// What the model is, e.g. "pipeline class 'KandinskyPipeline'".
        kind: String,
    },
    /// Tensors the model needs are not in the file.
    #[error("{what}: {} tensor(s) missing, e.g. {}", keys.len(), preview(keys))]
    MissingTensors {
        /// What was being loaded.
        what: String,
        /// The missing tensors (diffusers names).
        keys: Vec<String>,
    },
    /// Tensors in the file that the model does not use.
    #[error("{what}: {} tensor(s) in the file are not used by the model, e.g. {}", keys.len(), preview(keys))]
    UnusedTensors {
        /// What was being loaded.
        what: String,
        /// The unused tensors (names as in the file).
        keys: Vec<String>,
    },
    /// Tensors whose shapes do not match the model.
    #[error("{what}: {} tensor(s) have the wrong shape, e.g. {}", mismatches.len(), mismatches[0])]
    ShapeMismatch {
        /// What was being loaded.
        what: String,
        /// Every mismatch found.
        mismatches: Vec<ShapeMismatch>,
    },
    /// A config (diffusers JSON, CLI option, request) is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A training image that was checked at the start of the run is gone or unreadable when
    /// its turn comes. The rule: training stops there (the batches of a run, and so a
    /// resume, depend on the whole dataset); its checkpoints are intact.
    #[error(
        "{path}: this image was in the dataset when training started and is gone or unreadable \
         now ({cause}); training stopped — its checkpoints are intact: put the image back and \
         resume, or start a new run without it"
    )]
    DatasetChanged {
        /// The image.
        path: PathBuf,
        /// What reading it said.
        cause: String,
    },
    /// A request is invalid (e.g. a size that is not a multiple of the VAE factor).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The requested compute backend was not compiled into this build.
    #[error(
        "device '{name}' is not available in this build (compiled in: {available}); rebuild with `--features {name}`"
    )]
    DeviceUnavailable {
        /// The backend asked for.
        name: String,
        /// The backends this build has.
        available: String,
    },
    /// A backend of this build could not open its device (no adapter or driver, no GPU of
    /// that index).
    #[error(
        "device '{name}' could not be opened: {reason} (this build has: {available}; `auto` uses the first that works, else the CPU)"
    )]
    DeviceNotPresent {
        /// The device asked for.
        name: String,
        /// What went wrong.
        reason: String,
        /// The backends this build has.
        available: String,
    },
    /// The device ran out of memory during a job. The engine stays usable: what the job
    /// allocated is freed.
    #[error(
        "the {device} device ran out of memory{}: try a smaller size, batch 1{}, or another device",
        match asked { Some(b) => format!(" (asked for {:.1} MiB more)", *b as f64 / (1024.0 * 1024.0)), None => String::new() },
        if *half { "" } else { ", f16 precision" }
    )]
    OutOfMemory {
        /// The device (`vulkan`, `cuda:0`, …).
        device: String,
        /// The allocation that failed, in bytes, when the backend said.
        asked: Option<u64>,
        /// Whether the job already ran in half precision (else f16 is suggested).
        half: bool,
    },
    /// The device stopped working (driver reset, GPU removed): nothing more runs on it until
    /// the engine opens it again; the CPU still works.
    #[error(
        "the {device} device was lost ({detail}); restart on the CPU (`--device cpu`) or restart Kiln"
    )]
    DeviceLost {
        /// The device.
        device: String,
        /// What the backend said.
        detail: String,
    },
    /// The tokenizer could not be loaded or failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The job was cancelled by the user.
    #[error("cancelled")]
    Cancelled,
    /// A file is not the kind of adapter it was passed as.
    #[error("{path}: {what}")]
    NotAnAdapter {
        /// The file involved.
        path: PathBuf,
        /// What it seems to be instead.
        what: String,
    },
    /// An adapter type Kiln recognises but cannot apply (LoHa, LoKr, DoRA, …).
    #[error(
        "{path}: this is a {kind} adapter, which Kiln cannot apply yet (LoRA and LoCon are supported)"
    )]
    UnsupportedAdapter {
        /// The file involved.
        path: PathBuf,
        /// e.g. "LyCORIS LoHa".
        kind: String,
    },
    /// An adapter made for another model family.
    #[error("{path}: this LoRA was made for {adapter}; the loaded model is {model}")]
    AdapterFamilyMismatch {
        /// The file involved.
        path: PathBuf,
        /// The adapter's family.
        adapter: crate::family::ModelFamily,
        /// The loaded model's family.
        model: crate::family::ModelFamily,
    },
    /// LoRA modules that match no layer of the loaded model.
    #[error("{path}: {} of {total} LoRA modules match nothing in this model, e.g. {}", unmatched.len(), preview(unmatched))]
    AdapterUnmatched {
        /// The file involved.
        path: PathBuf,
        /// Modules in the file.
        total: usize,
        /// The names of the modules that match nothing.
        unmatched: Vec<String>,
    },
    /// Training produced a NaN or infinite loss or gradient and stopped.
    #[error("training diverged at step {step}: {what} became NaN or infinite; {}", match last_checkpoint { Some(p) => format!("the last good checkpoint is {} (lower the learning rate and resume from it)", p.display()), None => "no checkpoint was saved yet (lower the learning rate and start again)".to_owned() })]
    TrainingDiverged {
        /// The optimiser step that failed (1-based).
        step: usize,
        /// "the loss" or "the gradients".
        what: String,
        /// The newest checkpoint written before it.
        last_checkpoint: Option<std::path::PathBuf>,
    },
    /// A training checkpoint that does not fit this run.
    #[error("{path}: cannot resume from this checkpoint: {reason}")]
    BadCheckpoint {
        /// The checkpoint.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// A computation produced NaN or infinite values.
    #[error("{0} produced NaN or infinite values (try f32 precision or another sampler)")]
    NonFinite(String),
    /// A file passed as a textual-inversion embedding is something else (a LoRA, a checkpoint, …).
    #[error("{path}: not a textual-inversion embedding: {what}")]
    NotAnEmbedding {
        /// The file involved.
        path: PathBuf,
        /// What it seems to be instead, and what to do.
        what: String,
    },
    /// A pickle that calls something a weights file never needs (e.g. `posix.system`).
    /// Kiln never runs pickles; it refuses the file rather than ignore the call.
    #[error(
        "{path}: this pickle calls `{callable}`, which no embedding or weights file needs; \
         the file may be malicious. Kiln did not run it and will not load it"
    )]
    UnsafePickle {
        /// The file involved.
        path: PathBuf,
        /// The Python callable the pickle references, e.g. `posix.system`.
        callable: String,
    },
    /// An embedding whose vectors do not fit the loaded text encoder.
    #[error(
        "{path}: this embedding is {width} wide{made_for}; the loaded model's text encoder is {model_width} wide"
    )]
    EmbeddingWidthMismatch {
        /// The embedding file.
        path: PathBuf,
        /// Width of the embedding's vectors.
        width: usize,
        /// e.g. " (made for SD 2.x)", or empty when the width names no known family.
        made_for: String,
        /// Hidden size of the loaded text encoder.
        model_width: usize,
    },
    /// A token to add to the tokenizer already exists in its vocabulary.
    #[error("token '{token}' is already in the vocabulary; pass another token name")]
    TokenInVocabulary {
        /// The token.
        token: String,
    },
    /// A command needs a loaded model and there is none.
    #[error("no model is loaded; open a checkpoint first")]
    NoModel,
    /// A `<lora:NAME:…>` prompt tag names a LoRA that is not in the LoRA folder.
    #[error("{}", match dir {
        Some(d) => format!("the prompt uses <lora:{name}:…> but {} has no {name}.safetensors", d.display()),
        None => format!("the prompt uses <lora:{name}:…>; say where LoRAs are (--lora-dir DIR, or the LoRA folder in the window's settings)"),
    })]
    LoraTagNotFound {
        /// NAME as written in the tag.
        name: String,
        /// The folder searched (None: no LoRA folder was given).
        dir: Option<PathBuf>,
    },
    /// A recipe's init image is missing or has changed since the recipe was made.
    #[error(
        "{path}: the recipe's init image is missing or has changed since; choose the init image again"
    )]
    InitImageChanged {
        /// The file the recipe names.
        path: PathBuf,
    },
}

/// What kind of failure an [`Error`] is, for front ends that act on it (the window's
/// notifications, the HTTP API's status codes) without reading its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// A file could not be read or written.
    Io,
    /// A file is not what it should be (format, pointer, page, pickle, damaged checkpoint).
    BadFile,
    /// A model, adapter or device Kiln recognises but cannot use here.
    Unsupported,
    /// The request or a configuration is invalid.
    InvalidRequest,
    /// The job was cancelled.
    Cancelled,
    /// A computation or training run produced NaN or infinite values.
    NonFinite,
    /// No model is loaded.
    NoModel,
    /// A file the request names is missing or changed.
    NotFound,
    /// The device ran out of memory.
    OutOfMemory,
    /// The device was lost (driver reset); the CPU still works.
    DeviceLost,
}

impl Error {
    /// Its [`ErrorKind`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } | Error::DiskFull { .. } => ErrorKind::Io,
            Error::Format { .. }
            | Error::GitLfsPointer { .. }
            | Error::HtmlPage { .. }
            | Error::PickleCheckpoint { .. }
            | Error::MissingTensors { .. }
            | Error::UnusedTensors { .. }
            | Error::ShapeMismatch { .. }
            | Error::NotAnAdapter { .. }
            | Error::NotAnEmbedding { .. }
            | Error::UnsafePickle { .. }
            | Error::BadCheckpoint { .. } => ErrorKind::BadFile,
            Error::UnsupportedModel { .. }
            | Error::UnsupportedFamily { .. }
            | Error::UnsupportedAdapter { .. }
            | Error::AdapterFamilyMismatch { .. }
            | Error::AdapterUnmatched { .. }
            | Error::EmbeddingWidthMismatch { .. }
            | Error::DeviceUnavailable { .. }
            | Error::DeviceNotPresent { .. } => ErrorKind::Unsupported,
            Error::Config(_)
            | Error::InvalidRequest(_)
            | Error::Tokenizer(_)
            | Error::TokenInVocabulary { .. } => ErrorKind::InvalidRequest,
            Error::Cancelled => ErrorKind::Cancelled,
            Error::NonFinite(_) | Error::TrainingDiverged { .. } => ErrorKind::NonFinite,
            Error::NoModel => ErrorKind::NoModel,
            Error::OutOfMemory { .. } => ErrorKind::OutOfMemory,
            Error::DeviceLost { .. } => ErrorKind::DeviceLost,
            Error::LoraTagNotFound { .. }
            | Error::InitImageChanged { .. }
            | Error::DatasetChanged { .. } => ErrorKind::NotFound,
        }
    }
}

fn preview(keys: &[String]) -> String {
    let shown: Vec<&str> = keys.iter().take(5).map(String::as_str).collect();
    let more = if keys.len() > 5 {
        format!(" … and {} more", keys.len() - 5)
    } else {
        String::new()
    };
    format!("{}{more}", shown.join(", "))
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let path = path.into();
        match cause.kind() {
            K::StorageFull | K::QuotaExceeded | K::FileTooLarge => Error::DiskFull { path, cause },
            _ => Error::Io { path, cause },
        }
    }

    /// A format error for `path`.
    pub fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
