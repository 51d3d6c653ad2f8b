//! The fixture models as git stores them, put back before a test reads them — the rule of
//! `tests/fixtures/stored.py`, which the fixture scripts use:
//!
//! - every `tests/fixtures/**/*.gz` is expanded to the same path without `.gz` (git-ignored)
//!   when that file is missing or older than the `.gz`, atomically (temp + rename);
//! - each fixture folder's `tokenizer/tokenizer.json` is a copy of the one tracked tokenizer,
//!   `assets/models/kiln-tiny/tokenizer/tokenizer.json` (copied again when it differs).
//!
//! Shared by the integration tests (`tests/common.rs`) and the engine's benchmarks
//! (`#[path]`-included), which both read the fixture models.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Fixture folders that get a copy of the shared tokenizer.
const TOKENIZER_FOLDERS: [&str; 2] = ["tiny-a/tokenizer", "tiny-b/tokenizer"];

/// Expands the fixtures under `root` (`tests/fixtures`) once per process; panics with the
/// file when one cannot be written (a test cannot run without it).
pub fn materialize(root: &Path) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let mut gz = Vec::new();
        find_gz(root, &mut gz);
        for file in gz {
            expand(&file).unwrap_or_else(|e| panic!("cannot expand {}: {e}", file.display()));
        }
        let shared = root.join("../../assets/models/kiln-tiny/tokenizer/tokenizer.json");
        for folder in TOKENIZER_FOLDERS {
            let target = root.join(folder).join("tokenizer.json");
            let current = std::fs::read(&target).ok();
            if target.parent().is_some_and(Path::is_dir)
                && current.as_deref() != std::fs::read(&shared).ok().as_deref()
            {
                copy_atomic(&shared, &target)
                    .unwrap_or_else(|e| panic!("cannot write {}: {e}", target.display()));
            }
        }
    });
}

fn find_gz(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            find_gz(&path, out);
        } else if path.extension().is_some_and(|e| e == "gz") {
            out.push(path);
        }
    }
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// `x.gz` → `x`, unless `x` is at least as new.
fn expand(gz: &Path) -> std::io::Result<()> {
    let out = gz.with_extension("");
    if let (Some(o), Some(g)) = (modified(&out), modified(gz))
        && o >= g
    {
        return Ok(());
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(gz)?),
        &mut bytes,
    )?;
    write_atomic(&out, &bytes)
}

fn copy_atomic(from: &Path, to: &Path) -> std::io::Result<()> {
    write_atomic(to, &std::fs::read(from)?)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("{}.partial", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
