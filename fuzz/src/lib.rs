//! What the fuzz targets share: a scratch file per process (the readers under test take
//! paths, as the CLI and the window call them) and the bundled tokenizer, loaded once.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kiln_engine::tokenizer::ClipTokenizer;

/// A folder of this process's own, in memory where the system has `/dev/shm`.
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let made = if shm.is_dir() {
            tempfile::Builder::new().prefix("kiln-fuzz").tempdir_in(shm)
        } else {
            tempfile::Builder::new().prefix("kiln-fuzz").tempdir()
        };
        made.expect("a scratch folder for the fuzz target")
    })
    .path()
}

/// Writes `bytes` to `name` inside [`scratch_dir`] and returns its path (the same path every
/// time for a name, so a run leaves one file behind, removed with the folder at exit).
pub fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch_dir().join(name);
    std::fs::write(&path, bytes).expect("write the scratch file");
    path
}

/// The bundled SD 1.x tokenizer.
pub fn tokenizer() -> &'static ClipTokenizer {
    static TOKENIZER: OnceLock<ClipTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| ClipTokenizer::sd15().expect("the bundled tokenizer"))
}

/// The input as text when it is UTF-8.
pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// Splits off the first byte as a selector among `n` choices (0 for an empty input).
pub fn select(data: &[u8], n: usize) -> (usize, &[u8]) {
    match data.split_first() {
        Some((b, rest)) => (*b as usize % n, rest),
        None => (0, data),
    }
}
