//! Every file Kiln writes is written atomically (a temporary file in the same folder, fsync,
//! rename: `kiln_engine::fs::write_atomic`), so a crash, a kill or a full disk never leaves a
//! half-written file under its final name. Two checks: the source of every crate holds no
//! raw write outside the few places that are themselves the atomic step, and each kind of
//! file Kiln writes is written through `write_atomic` where it is written.

use std::path::{Path, PathBuf};

/// The crates whose (non-test) source is checked.
const CRATES: [&str; 5] = ["app", "engine", "hub", "serve", "shapes"];

/// Calls that write or replace a file in place.
const RAW_WRITES: [&str; 6] = [
    "fs::write(",
    "File::create(",
    "OpenOptions::new(",
    "fs::copy(",
    "fs::rename(",
    ".save_with_format(",
];

/// The raw writes allowed, each with why it is safe: (file, call, reason).
const ALLOWED: [(&str, &str, &str); 5] = [
    (
        "engine/src/fs.rs",
        "File::create(",
        "the temporary file of write_atomic",
    ),
    (
        "engine/src/fs.rs",
        "fs::rename(",
        "write_atomic's rename over the target",
    ),
    (
        "hub/src/download.rs",
        "OpenOptions::new(",
        "appends to the resumable `.part` file, never the target",
    ),
    (
        "hub/src/download.rs",
        "fs::rename(",
        "publishes the checked `.part` under its final name",
    ),
    (
        "engine/src/training/trainer.rs",
        "fs::rename(",
        "moves an earlier run's whole checkpoint files aside, in one folder",
    ),
];

/// Each kind of file Kiln writes, the source file that writes it, and the call it uses.
const WRITERS: [(&str, &str); 10] = [
    ("generated images (CLI, window)", "engine/src/image.rs"),
    ("images with their recipe", "engine/src/metadata/mod.rs"),
    (
        "LoRA / embedding / checkpoint exports",
        "engine/src/weights/save.rs",
    ),
    (
        "safetensors files (training checkpoints)",
        "engine/src/weights/safetensors.rs",
    ),
    ("the model hash cache", "engine/src/weights/hash.rs"),
    ("dataset captions (CLI)", "app/src/cli/dataset.rs"),
    ("dataset captions (window)", "app/src/gui/io.rs"),
    ("API outputs", "serve/src/images.rs"),
    ("API images saved on request", "serve/src/http.rs"),
    ("the studio's settings", "app/src/gui/state.rs"),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file's code before its `#[cfg(test)]` module (tests write fixtures as they like).
fn non_test_source(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

#[test]
fn no_raw_file_writes_outside_the_atomic_steps() {
    let mut files = Vec::new();
    for krate in CRATES {
        rust_files(&root().join(krate).join("src"), &mut files);
    }
    assert!(files.len() > 50, "the crates' sources were not found");
    let mut found = Vec::new();
    for path in &files {
        let rel = path
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        for (n, line) in non_test_source(path).lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for call in RAW_WRITES {
                if code.contains(call) && !ALLOWED.iter().any(|(f, c, _)| *f == rel && *c == call) {
                    found.push(format!("{rel}:{}: {}", n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "raw file writes (use kiln_engine::fs::write_atomic, or add the call to ALLOWED \
         with the reason it is atomic):\n{}",
        found.join("\n")
    );
    // Every allowed call still exists (a stale entry would hide a new raw write).
    for (file, call, why) in ALLOWED {
        assert!(
            non_test_source(&root().join(file)).contains(call),
            "{file} no longer has {call} ({why}): drop it from ALLOWED"
        );
    }
}

#[test]
fn every_kind_of_file_is_written_through_write_atomic() {
    for (what, file) in WRITERS {
        assert!(
            non_test_source(&root().join(file)).contains("write_atomic"),
            "{what}: {file} no longer writes through write_atomic"
        );
    }
}
