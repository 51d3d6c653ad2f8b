//! What can go wrong getting a model. A failed download keeps what arrived (`<file>.part`),
//! so running it again resumes.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong getting or listing models.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A download failed (no network, server error, interrupted transfer).
    #[error("cannot download {url}: {reason}")]
    Network {
        /// What was asked for.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// A downloaded file's SHA-256 is not the one the server announced (the partial file is
    /// removed; the next run downloads it again).
    #[error(
        "{path}: checksum mismatch (expected sha256 {expected}, got {got}); the file was removed, download it again"
    )]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// Announced SHA-256.
        expected: String,
        /// Computed SHA-256.
        got: String,
    },
    /// The user cancelled the download.
    #[error("cancelled")]
    Cancelled,
    /// The engine could not read a file (hashing a download, classifying a model).
    #[error(transparent)]
    Engine(#[from] kiln_engine::Error),
}

impl Error {
    /// Wraps an I/O error with the path it concerns: the engine's [`kiln_engine::Error::Io`],
    /// or [`kiln_engine::Error::DiskFull`] when the disk or a quota is full.
    pub fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        Error::Engine(kiln_engine::Error::io(path, cause))
    }
}
