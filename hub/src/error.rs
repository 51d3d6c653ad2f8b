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
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The user cancelled the download.
    #[error("cancelled")]
    Cancelled,
    /// The engine could not read a file (hashing a download, classifying a model).
    #[error(transparent)]
    Engine(#[from] kiln_engine::Error),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
