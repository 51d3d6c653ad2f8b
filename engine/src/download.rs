//! Getting Stable Diffusion 1.5 (or any diffusers repository) from the Hugging Face Hub — or
//! any server with the Hub's layout — into the models folder: the file list and SHA-256s come
//! from `{endpoint}/api/models/{repo}/tree/{revision}?recursive=1`, files from
//! `{endpoint}/{repo}/resolve/{revision}/{path}`. Each file downloads to `<path>.part`, resumes
//! from there with an HTTP `Range` request after an interruption, is checked against the
//! Hub's SHA-256 (LFS files) and only then renamed into place. Files already complete are
//! skipped.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::pipeline::CancelToken;

/// The public Hub.
pub const HUB: &str = "https://huggingface.co";
/// SD 1.5's diffusers repository (a maintained mirror of runwayml's).
pub const SD15_REPO: &str = "stable-diffusion-v1-5/stable-diffusion-v1-5";

/// The files of a diffusers SD 1.x pipeline Kiln needs (fp32 weights unless `fp16`).
pub fn sd15_files(fp16: bool) -> Vec<String> {
    let w = |dir: &str, name: &str| {
        if fp16 {
            format!("{dir}/{name}.fp16.safetensors")
        } else {
            format!("{dir}/{name}.safetensors")
        }
    };
    vec![
        "model_index.json".into(),
        "scheduler/scheduler_config.json".into(),
        "text_encoder/config.json".into(),
        w("text_encoder", "model"),
        "tokenizer/merges.txt".into(),
        "tokenizer/special_tokens_map.json".into(),
        "tokenizer/tokenizer_config.json".into(),
        "tokenizer/vocab.json".into(),
        "unet/config.json".into(),
        w("unet", "diffusion_pytorch_model"),
        "vae/config.json".into(),
        w("vae", "diffusion_pytorch_model"),
    ]
}

#[derive(Debug, Deserialize)]
struct TreeEntry {
    path: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    lfs: Option<Lfs>,
}

#[derive(Debug, Deserialize)]
struct Lfs {
    oid: String,
}

/// Download progress of one file.
#[derive(Debug, Clone)]
pub struct DownloadProgress {
    /// The file (repository path).
    pub file: String,
    /// Bytes of this file on disk.
    pub done: u64,
    /// Its size.
    pub size: u64,
    /// Files finished so far / in all.
    pub files_done: usize,
    /// Files in all.
    pub files: usize,
}

fn network(url: &str, e: impl std::fmt::Display) -> Error {
    Error::Network {
        url: url.to_owned(),
        reason: e.to_string(),
    }
}

/// Downloads `files` of `repo` at `revision` from `endpoint` into `dest` (resuming partial
/// files, verifying SHA-256s); returns `dest`.
pub fn download(
    endpoint: &str,
    repo: &str,
    revision: &str,
    files: &[String],
    dest: &Path,
    cancel: &CancelToken,
    on_progress: &mut dyn FnMut(DownloadProgress),
) -> Result<PathBuf> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(std::time::Duration::from_secs(15)))
        // A server that accepts the connection but never answers is an error, not a hang
        // (a stalled body is not timed: a 3.4 GB file has no sensible total budget).
        .timeout_recv_response(Some(std::time::Duration::from_secs(60)))
        .build()
        .into();
    let tree_url = format!("{endpoint}/api/models/{repo}/tree/{revision}?recursive=1");
    let tree: Vec<TreeEntry> = agent
        .get(&tree_url)
        .call()
        .map_err(|e| network(&tree_url, e))?
        .body_mut()
        .read_to_string()
        .map_err(|e| network(&tree_url, e))
        .and_then(|text| {
            serde_json::from_str(&text)
                .map_err(|e| network(&tree_url, format!("not a Hub file list: {e}")))
        })?;
    for (k, file) in files.iter().enumerate() {
        let entry = tree
            .iter()
            .find(|e| &e.path == file)
            .ok_or_else(|| Error::Network {
                url: tree_url.clone(),
                reason: format!("the repository has no file {file}"),
            })?;
        let target = dest.join(file);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let sha = entry.lfs.as_ref().map(|l| l.oid.clone());
        let complete = std::fs::metadata(&target).is_ok_and(|m| m.len() == entry.size);
        if !complete {
            fetch(
                &agent,
                &format!("{endpoint}/{repo}/resolve/{revision}/{file}"),
                &target,
                entry.size,
                sha.as_deref(),
                cancel,
                &mut |done| {
                    on_progress(DownloadProgress {
                        file: file.clone(),
                        done,
                        size: entry.size,
                        files_done: k,
                        files: files.len(),
                    })
                },
            )?;
        }
        on_progress(DownloadProgress {
            file: file.clone(),
            done: entry.size,
            size: entry.size,
            files_done: k + 1,
            files: files.len(),
        });
    }
    Ok(dest.to_owned())
}

/// One file into `target` via `<target>.part`, resuming, verified, renamed.
fn fetch(
    agent: &ureq::Agent,
    url: &str,
    target: &Path,
    size: u64,
    sha256: Option<&str>,
    cancel: &CancelToken,
    on_bytes: &mut dyn FnMut(u64),
) -> Result<()> {
    let part = target.with_extension(format!(
        "{}.part",
        target.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let have = std::fs::metadata(&part)
        .map(|m| m.len())
        .unwrap_or(0)
        .min(size);
    let mut request = agent.get(url);
    if have > 0 {
        request = request.header("Range", &format!("bytes={have}-"));
    }
    let mut response = request.call().map_err(|e| network(url, e))?;
    // A server that ignores Range answers 200 with the whole file: start over.
    let resumed = have > 0 && response.status() == 206;
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(resumed)
        .write(true)
        .truncate(!resumed)
        .open(&part)
        .map_err(|e| Error::io(&part, e))?;
    let mut done = if resumed { have } else { 0 };
    let mut reader = response.body_mut().as_reader();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let n = reader.read(&mut buf).map_err(|e| {
            network(
                url,
                format!("{e} after {done} of {size} bytes; run it again to resume"),
            )
        })?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).map_err(|e| Error::io(&part, e))?;
        done += n as u64;
        on_bytes(done);
    }
    out.sync_all().map_err(|e| Error::io(&part, e))?;
    drop(out);
    if done != size {
        return Err(network(
            url,
            format!("the download stopped at {done} of {size} bytes; run it again to resume"),
        ));
    }
    if let Some(want) = sha256 {
        let got = crate::weights::hash::sha256_file(&part)?;
        if got != want {
            let _ = std::fs::remove_file(&part);
            return Err(Error::ChecksumMismatch {
                path: target.to_owned(),
                expected: want.to_owned(),
                got,
            });
        }
    }
    std::fs::rename(&part, target).map_err(|e| Error::io(target, e))
}

/// What a models folder holds, classified by the engine.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelEntry {
    /// The file or folder.
    pub path: PathBuf,
    /// What it is.
    pub kind: crate::weights::inspect::Inspection,
    /// Size on disk in bytes.
    pub bytes: u64,
}

fn size_of(path: &Path) -> u64 {
    if path.is_dir() {
        std::fs::read_dir(path)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| size_of(&e.path())).sum())
            .unwrap_or(0)
    } else {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }
}

/// Every checkpoint, LoRA and embedding directly in `dir` (diffusers folders count as one
/// entry); files Kiln cannot classify are left out.
pub fn scan_models(dir: &Path) -> Result<Vec<ModelEntry>> {
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    paths.sort();
    for path in paths {
        let candidate = if path.is_dir() {
            path.join("model_index.json").exists() || path.join("adapter_config.json").exists()
        } else {
            path.extension()
                .is_some_and(|e| matches!(e.to_str(), Some("safetensors" | "pt" | "bin")))
        };
        if !candidate {
            continue;
        }
        match crate::weights::inspect::inspect(&path) {
            Ok(crate::weights::inspect::Inspection::Unknown { .. }) | Err(_) => {}
            Ok(kind) => out.push(ModelEntry {
                bytes: size_of(&path),
                path,
                kind,
            }),
        }
    }
    Ok(out)
}
