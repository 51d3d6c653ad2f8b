//! Getting a model from a Hub-like server: a local HTTP server serves a diffusers folder with
//! the Hub's layout (no test touches the network); interrupted downloads resume, checksums are
//! verified, and an unreachable server is a clear error.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use kiln_engine::download::download;
use kiln_engine::pipeline::CancelToken;

use crate::common::fixture;

struct Hub {
    endpoint: String,
    ranges: Arc<AtomicUsize>,
}

fn files_of(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_of(root, &p, out);
        } else {
            out.push(
                p.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/"),
            );
        }
    }
}

/// Serves `root` as repository "kiln/tiny" at revision "main". With `truncate_once`, the first
/// download of the UNet weights stops halfway; `bad_sha` announces a wrong SHA-256 for the VAE.
fn hub(root: PathBuf, truncate_once: bool, bad_sha: bool) -> Hub {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let ranges = Arc::new(AtomicUsize::new(0));
    let r = ranges.clone();
    let truncate = Arc::new(AtomicBool::new(truncate_once));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let mut range = None;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    range = v.trim().trim_end_matches('-').parse::<usize>().ok();
                }
            }
            let (status, body, close_early) = if path.starts_with("/api/models/kiln/tiny/tree/main")
            {
                let mut files = Vec::new();
                files_of(&root, &root, &mut files);
                let tree: Vec<serde_json::Value> = files
                    .iter()
                    .map(|f| {
                        let bytes = std::fs::read(root.join(f)).unwrap();
                        let mut sha = kiln_engine::weights::hash::sha256_file(&root.join(f)).unwrap();
                        if bad_sha && f.starts_with("vae/") && f.ends_with(".safetensors") {
                            sha = "0".repeat(64);
                        }
                        serde_json::json!({"type": "file", "path": f, "size": bytes.len(), "lfs": {"oid": sha, "size": bytes.len()}})
                    })
                    .collect();
                ("200 OK", serde_json::to_vec(&tree).unwrap(), false)
            } else if let Some(f) = path.strip_prefix("/kiln/tiny/resolve/main/") {
                match std::fs::read(root.join(f)) {
                    Ok(bytes) => {
                        let cut = f.starts_with("unet/")
                            && f.ends_with(".safetensors")
                            && truncate.swap(false, Ordering::SeqCst);
                        match range {
                            Some(start) => {
                                r.fetch_add(1, Ordering::SeqCst);
                                ("206 Partial Content", bytes[start..].to_vec(), false)
                            }
                            None => ("200 OK", bytes, cut),
                        }
                    }
                    Err(_) => ("404 Not Found", b"not found".to_vec(), false),
                }
            } else {
                ("404 Not Found", b"not found".to_vec(), false)
            };
            let len = body.len();
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(if close_early { &body[..len / 2] } else { &body });
            let _ = stream.flush();
            // Closing our side ends the response (a truncated one reads as an interrupted
            // transfer); then wait briefly for the client to close, so nothing is reset.
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        }
    });
    Hub { endpoint, ranges }
}

fn all_files() -> Vec<String> {
    let root = fixture("tiny-b");
    let mut files = Vec::new();
    files_of(&root, &root, &mut files);
    files.sort();
    files
}

/// Downloads every tiny-b file of "kiln/tiny" from `endpoint` into `dest`.
fn fetch_all(endpoint: &str, dest: &Path) -> kiln_engine::Result<PathBuf> {
    download(
        endpoint,
        "kiln/tiny",
        "main",
        &all_files(),
        dest,
        &CancelToken::new(),
        &mut |_| {},
    )
}

#[test]
fn an_interrupted_download_resumes_and_the_model_loads() {
    let hub = hub(fixture("tiny-b"), true, false);
    let dest = tempfile::tempdir().unwrap();
    let files = all_files();
    let mut progress = 0;
    let first = download(
        &hub.endpoint,
        "kiln/tiny",
        "main",
        &files,
        dest.path(),
        &CancelToken::new(),
        &mut |_| progress += 1,
    );
    let err = first.unwrap_err().to_string();
    assert!(err.contains("run it again to resume"), "{err}");
    assert!(progress > 0);
    // Run again: the partial UNet file resumes with a Range request.
    fetch_all(&hub.endpoint, dest.path()).unwrap();
    assert_eq!(
        hub.ranges.load(Ordering::SeqCst),
        1,
        "the second run resumed instead of starting over"
    );
    for f in &files {
        assert_eq!(
            std::fs::read(dest.path().join(f)).unwrap(),
            std::fs::read(fixture("tiny-b").join(f)).unwrap(),
            "{f}"
        );
    }
    let sd = kiln_engine::pipeline::StableDiffusion::load(
        dest.path(),
        None,
        &kiln_engine::device::device("cpu").unwrap(),
    )
    .unwrap();
    assert_eq!(sd.info.family, "Stable Diffusion 1.x");
    // The models folder lists it.
    let models = kiln_engine::download::scan_models(dest.path().parent().unwrap());
    assert!(models.is_ok());
}

#[test]
fn a_wrong_checksum_is_refused_and_nothing_half_written_stays() {
    let hub = hub(fixture("tiny-b"), false, true);
    let dest = tempfile::tempdir().unwrap();
    let err = fetch_all(&hub.endpoint, dest.path()).unwrap_err();
    assert!(
        matches!(err, kiln_engine::Error::ChecksumMismatch { .. }),
        "{err}"
    );
    let vae = dest.path().join("vae");
    let left: Vec<String> = std::fs::read_dir(&vae)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter()
            .all(|n| !n.ends_with(".part") && !n.ends_with(".safetensors")),
        "{left:?}"
    );
}

#[test]
fn an_unreachable_hub_says_so() {
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dest = tempfile::tempdir().unwrap();
    let err = fetch_all(&format!("http://127.0.0.1:{port}"), dest.path()).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "cannot download http://127.0.0.1:{port}/api/models/kiln/tiny/tree/main"
        )),
        "{err}"
    );
}

#[test]
fn a_models_folder_is_classified() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("tiny-b.safetensors"),
        dir.path().join("tiny-b.safetensors"),
    )
    .unwrap();
    std::fs::copy(
        fixture("adapters/kohya_qkvo.safetensors"),
        dir.path().join("style.safetensors"),
    )
    .unwrap();
    std::fs::copy(fixture("adapters/ti_cat.pt"), dir.path().join("cat.pt")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    let models = kiln_engine::download::scan_models(dir.path()).unwrap();
    let kinds: Vec<(String, String)> = models
        .iter()
        .map(|m| {
            (
                m.path.file_name().unwrap().to_string_lossy().into_owned(),
                serde_json::to_value(&m.kind).unwrap()["kind"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("cat.pt".into(), "embedding".into()),
            ("style.safetensors".into(), "lora".into()),
            ("tiny-b.safetensors".into(), "checkpoint".into())
        ]
    );
    assert!(models.iter().all(|m| m.bytes > 0));
    let o = crate::cli::kiln(&["models", "list", dir.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", crate::cli::stderr(&o));
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3);
    // Without a reachable Hub, `models get` says so in one line.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = crate::cli::kiln(&[
        "models",
        "get",
        "sd15",
        "--dest",
        dir.path().join("sd15").to_str().unwrap(),
        "--endpoint",
        &format!("http://127.0.0.1:{port}"),
    ]);
    assert!(
        !o.status.success() && crate::cli::stderr(&o).contains("cannot download"),
        "{}",
        crate::cli::stderr(&o)
    );
}
