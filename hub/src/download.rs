//! Getting Stable Diffusion 1.5 (or any diffusers repository) from the Hugging Face Hub — or
//! any server with the Hub's layout — into the models folder: the file list and SHA-256s come
//! from `{endpoint}/api/models/{repo}/tree/{revision}?recursive=1`, files from
//! `{endpoint}/{repo}/resolve/{revision}/{path}`. Each file downloads to `<path>.part`, resumes
//! from there with an HTTP `Range` request after an interruption, is checked against the
//! Hub's SHA-256 (LFS files) and only then renamed into place. Files already complete are
//! skipped.
//!
//! A connection that stops delivering bytes mid-file — a dropped Wi-Fi link often leaves the
//! socket open with nothing arriving — is given up after [`DownloadOptions::stall_timeout`]
//! (a minute by default) with an error that says to run it again, which resumes. The body is
//! read on a helper thread, so a cancel takes effect within a tenth of a second even while
//! nothing arrives (the helper ends when its blocked read does).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

use kiln_engine::job::CancelToken;

use crate::error::{Error, Result};

/// The public Hub.
pub const HUB: &str = "https://huggingface.co";
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

/// How a download treats a slow network.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// How long a file's body may go without a single byte before the download stops with
    /// [`Error::Network`] (the `.part` file stays, so running it again resumes).
    pub stall_timeout: Duration,
}

impl Default for DownloadOptions {
    /// A minute: longer than any pause a working connection makes.
    fn default() -> Self {
        DownloadOptions {
            stall_timeout: Duration::from_secs(60),
        }
    }
}

/// How often a wait for body bytes looks at the cancel token.
const CANCEL_POLL: Duration = Duration::from_millis(100);

/// Downloads `files` of `repo` at `revision` from `endpoint` into `dest` (resuming partial
/// files, verifying SHA-256s) with the default [`DownloadOptions`]; returns `dest`.
pub fn download(
    endpoint: &str,
    repo: &str,
    revision: &str,
    files: &[String],
    dest: &Path,
    cancel: &CancelToken,
    on_progress: &mut dyn FnMut(DownloadProgress),
) -> Result<PathBuf> {
    download_with(
        endpoint,
        repo,
        revision,
        files,
        dest,
        cancel,
        &DownloadOptions::default(),
        on_progress,
    )
}

/// [`download`] with `options`.
#[allow(clippy::too_many_arguments)]
pub fn download_with(
    endpoint: &str,
    repo: &str,
    revision: &str,
    files: &[String],
    dest: &Path,
    cancel: &CancelToken,
    options: &DownloadOptions,
    on_progress: &mut dyn FnMut(DownloadProgress),
) -> Result<PathBuf> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(15)))
        // A server that accepts the connection but never answers is an error, not a hang
        // (a body has no total budget — a 3.4 GB file takes what it takes — but a stall in it
        // is timed by `fetch`).
        .timeout_recv_response(Some(Duration::from_secs(60)))
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
                options,
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
#[allow(clippy::too_many_arguments)]
fn fetch(
    agent: &ureq::Agent,
    url: &str,
    target: &Path,
    size: u64,
    sha256: Option<&str>,
    cancel: &CancelToken,
    options: &DownloadOptions,
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
    let response = request.call().map_err(|e| network(url, e))?;
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
    let chunks = body_chunks(response.into_body().into_reader());
    let mut last_byte = Instant::now();
    loop {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let chunk = match chunks.recv_timeout(CANCEL_POLL) {
            Ok(chunk) => chunk.map_err(|e| {
                network(
                    url,
                    format!("{e} after {done} of {size} bytes; run it again to resume"),
                )
            })?,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if last_byte.elapsed() >= options.stall_timeout {
                    return Err(network(
                        url,
                        format!(
                            "no data for {} s after {done} of {size} bytes (the connection \
                             stalled); run it again to resume",
                            options.stall_timeout.as_secs_f32()
                        ),
                    ));
                }
                continue;
            }
            // The helper ends only after its last chunk; had it died, the size check below
            // reports the short file.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Vec::new(),
        };
        if chunk.is_empty() {
            break;
        }
        last_byte = Instant::now();
        if let Err(e) = out.write_all(&chunk) {
            let err = Error::io(&part, e);
            // Out of space: the partial file cannot grow until space is freed, and it holds
            // space the user needs to free; it goes (a later run starts over).
            if matches!(err, Error::Engine(kiln_engine::Error::DiskFull { .. })) {
                drop(out);
                let _ = std::fs::remove_file(&part);
            }
            return Err(err);
        }
        done += chunk.len() as u64;
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
        let got = kiln_engine::weights::hash::sha256_file(&part)?;
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

/// Reads `body` on a helper thread, in chunks of up to 64 KiB, ending with an empty chunk (the
/// end) or an error. The receiver waits with a timeout, so a stalled connection cannot block
/// it; when it is dropped, the helper stops at its next chunk.
fn body_chunks(
    mut body: impl Read + Send + 'static,
) -> std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(4);
    let spawned = std::thread::Builder::new()
        .name("kiln-download-body".into())
        .spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let chunk = body.read(&mut buf).map(|n| buf[..n].to_vec());
                let last = !matches!(&chunk, Ok(c) if !c.is_empty());
                if tx.send(chunk).is_err() || last {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        // No thread: the receiver reports it as a read error.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let _ = tx.send(Err(e));
        return rx;
    }
    rx
}
