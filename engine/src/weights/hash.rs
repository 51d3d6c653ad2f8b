//! File hashes as A1111 shows them, with a cache so a 4 GB checkpoint is hashed once.
//!
//! "Model hash" is A1111's AutoV2 hash: the first 10 hex digits of the SHA-256 of the whole
//! file. For a diffusers folder (which A1111 cannot load) Kiln hashes the UNet weights file,
//! the part that makes the model. The cache (`hashes.json` in a cache folder) maps a file's
//! canonical path, size and modification time to its full SHA-256.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    size: u64,
    modified_ns: u128,
    sha256: String,
}

/// The SHA-256 (hex) of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The file whose hash stands for the model at `path` (itself, or a folder's UNet weights).
fn hashed_file(path: &Path) -> Result<PathBuf> {
    if !path.is_dir() {
        return Ok(path.to_owned());
    }
    let unet = path.join("unet");
    [
        "diffusion_pytorch_model.safetensors",
        "diffusion_pytorch_model.fp16.safetensors",
    ]
    .iter()
    .map(|f| unet.join(f))
    .find(|p| p.is_file())
    .ok_or_else(|| Error::format(path, "no unet/diffusion_pytorch_model*.safetensors to hash"))
}

/// A1111's "Model hash" of a checkpoint file or diffusers folder (10 hex digits), using and
/// updating the cache in `cache_dir` when given.
pub fn model_hash(path: &Path, cache_dir: Option<&Path>) -> Result<String> {
    let file = hashed_file(path)?;
    let full = match cache_dir {
        Some(dir) => cached_sha256(&file, dir)?,
        None => sha256_file(&file)?,
    };
    Ok(full[..10].to_owned())
}

/// The SHA-256 of `file`, from the cache in `dir` when size and mtime still match.
pub fn cached_sha256(file: &Path, dir: &Path) -> Result<String> {
    let canonical = file.canonicalize().map_err(|e| Error::io(file, e))?;
    let meta = std::fs::metadata(&canonical).map_err(|e| Error::io(file, e))?;
    let modified_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let cache_path = dir.join("hashes.json");
    // A missing or unreadable cache is just empty.
    let mut cache: BTreeMap<String, Entry> = std::fs::read(&cache_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let key = canonical.to_string_lossy().into_owned();
    if let Some(e) = cache.get(&key)
        && e.size == meta.len()
        && e.modified_ns == modified_ns
    {
        return Ok(e.sha256.clone());
    }
    let sha256 = sha256_file(&canonical)?;
    cache.insert(
        key,
        Entry {
            size: meta.len(),
            modified_ns,
            sha256: sha256.clone(),
        },
    );
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let json = serde_json::to_vec_pretty(&cache).map_err(|e| Error::Config(e.to_string()))?;
    if let Err(e) = crate::fs::write_atomic(&cache_path, &json) {
        // The hash is right either way; a read-only cache only costs time.
        tracing::warn!("could not update the hash cache: {e}");
    }
    Ok(sha256)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_like_sha256sum_and_caches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("m.safetensors");
        std::fs::write(&file, b"abc").expect("write");
        // sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(model_hash(&file, None).expect("hash"), "ba7816bf8f");
        let cache = dir.path().join("cache");
        assert_eq!(model_hash(&file, Some(&cache)).expect("hash"), "ba7816bf8f");
        let text = std::fs::read_to_string(cache.join("hashes.json")).expect("cache written");
        assert!(text.contains("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
        // A changed file (other size) is rehashed, not served from the cache.
        std::fs::write(&file, b"abcd").expect("write");
        assert_eq!(
            model_hash(&file, Some(&cache)).expect("hash"),
            &sha256_file(&file).expect("hash")[..10]
        );
        assert_ne!(model_hash(&file, Some(&cache)).expect("hash"), "ba7816bf8f");
    }
}
