//! Shared helpers: fixture paths, reference tensors, comparisons.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use burn::tensor::Tensor;
use kiln_engine::pipeline::StableDiffusion;

pub use crate::reference::{
    assert_close, fixture, reference, reference_json, relative_max_error, tensor_on, values,
};
pub use kiln_engine::burn;

/// Host data → tensor on the CPU device.
pub fn tensor<const D: usize>(shape: &[usize], values: Vec<f32>) -> Tensor<D> {
    tensor_on(shape, values, &kiln_engine::device::device("cpu").unwrap())
}

/// The two fixture models, each with its layouts.
pub const MODELS: [&str; 2] = ["tiny-a", "tiny-b"];

/// How a fixture model is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `fixtures/{m}/` diffusers folder.
    Diffusers,
    /// `fixtures/{m}.safetensors` with `--config fixtures/{m}`.
    SingleFile,
}

/// Loads (and caches) a fixture model; the models are small, loading them once saves time.
pub fn model(name: &str, layout: Layout) -> &'static StableDiffusion {
    type Loaded = (String, Layout, &'static StableDiffusion);
    static CACHE: OnceLock<Mutex<Vec<Loaded>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(Vec::new()));
    let mut guard = cache.lock().unwrap();
    if let Some((_, _, m)) = guard.iter().find(|(n, l, _)| n == name && *l == layout) {
        return m;
    }
    let device = kiln_engine::device::device("cpu").unwrap();
    let sd = match layout {
        Layout::Diffusers => StableDiffusion::load(&fixture(name), None, &device),
        Layout::SingleFile => StableDiffusion::load(
            &fixture(&format!("{name}.safetensors")),
            Some(&fixture(name)),
            &device,
        ),
    }
    .unwrap_or_else(|e| panic!("loading {name} ({layout:?}): {e}"));
    let leaked: &'static StableDiffusion = Box::leak(Box::new(sd));
    guard.push((name.to_owned(), layout, leaked));
    leaked
}

/// A local server with the Hugging Face Hub's layout (see [`hub`]).
pub struct Hub {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// How many `Range` (resume) requests it answered.
    pub ranges: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// What [`hub`] does wrong on purpose.
#[derive(Default, Clone)]
pub struct HubOptions {
    /// The first download of the UNet weights stops halfway (an interrupted transfer).
    pub truncate_once: bool,
    /// A wrong SHA-256 is announced for the VAE weights.
    pub bad_sha: bool,
    /// The first download of the UNet weights pauses halfway until this is set (a slow
    /// network the test controls).
    pub hold: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// Every file under `dir`, as paths relative to `root` with `/`.
pub fn files_of(root: &Path, dir: &Path, out: &mut Vec<String>) {
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

/// Serves `root` as repository `repo` at revision "main": the file list with sizes and
/// SHA-256s at `/api/models/{repo}/tree/main`, files at `/{repo}/resolve/main/{path}`, byte
/// ranges for resuming. One thread, one connection at a time, `Connection: close`.
pub fn hub(root: PathBuf, repo: &str, options: HubOptions) -> Hub {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let ranges = Arc::new(AtomicUsize::new(0));
    let r = ranges.clone();
    let truncate = AtomicBool::new(options.truncate_once);
    let hold = options.hold.clone();
    let hold_pending = AtomicBool::new(hold.is_some());
    let tree_path = format!("/api/models/{repo}/tree/main");
    let resolve_prefix = format!("/{repo}/resolve/main/");
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
            // (status, body, stop after half, pause after half)
            let (status, body, close_early, pause) = if path.starts_with(&tree_path) {
                let mut files = Vec::new();
                files_of(&root, &root, &mut files);
                let tree: Vec<serde_json::Value> = files
                    .iter()
                    .map(|f| {
                        let bytes = std::fs::read(root.join(f)).unwrap();
                        let mut sha = kiln_engine::weights::hash::sha256_file(&root.join(f)).unwrap();
                        if options.bad_sha && f.starts_with("vae/") && f.ends_with(".safetensors") {
                            sha = "0".repeat(64);
                        }
                        serde_json::json!({"type": "file", "path": f, "size": bytes.len(), "lfs": {"oid": sha, "size": bytes.len()}})
                    })
                    .collect();
                ("200 OK", serde_json::to_vec(&tree).unwrap(), false, false)
            } else if let Some(f) = path.strip_prefix(&resolve_prefix) {
                match std::fs::read(root.join(f)) {
                    Ok(bytes) => {
                        let unet = f.starts_with("unet/") && f.ends_with(".safetensors");
                        match range {
                            Some(start) => {
                                r.fetch_add(1, Ordering::SeqCst);
                                ("206 Partial Content", bytes[start..].to_vec(), false, false)
                            }
                            None => {
                                let cut = unet && truncate.swap(false, Ordering::SeqCst);
                                let pause = unet && hold_pending.swap(false, Ordering::SeqCst);
                                ("200 OK", bytes, cut, pause)
                            }
                        }
                    }
                    Err(_) => ("404 Not Found", b"not found".to_vec(), false, false),
                }
            } else {
                ("404 Not Found", b"not found".to_vec(), false, false)
            };
            let len = body.len();
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            );
            if close_early || pause {
                let _ = stream.write_all(&body[..len / 2]);
                let _ = stream.flush();
                if pause && let Some(hold) = &hold {
                    // The test's "network" is stalled until it says go.
                    while !hold.load(Ordering::SeqCst) {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    let _ = stream.write_all(&body[len / 2..]);
                }
            } else {
                let _ = stream.write_all(&body);
            }
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

/// Runs `kiln dataset shapes --out dir` with `args`, checks it succeeded, and returns the
/// images written (sorted).
pub fn shapes_dataset(dir: &Path, args: &[&str]) -> Vec<PathBuf> {
    let mut all = vec!["dataset", "shapes", "--out", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    let o = crate::cli::kiln(&all);
    assert!(o.status.success(), "{}", crate::cli::stderr(&o));
    kiln_engine::training::dataset::image_files(dir).unwrap()
}

/// A port on 127.0.0.1 that nothing listens on.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Copies the folder `from` (recursively) to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
