//! Getting a model from a Hub-like server: a local HTTP server serves a diffusers folder with
//! the Hub's layout (no test touches the network); interrupted downloads resume, checksums are
//! verified, a stalled connection and an unreachable server are clear errors, and a cancel
//! takes effect while nothing arrives.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kiln_engine::job::CancelToken;
use kiln_hub::download::{DownloadOptions, download, download_with};

use crate::common::{HubOptions, closed_port, files_of, fixture};

/// tiny-b served as repository "kiln/tiny".
pub fn hub(truncate_once: bool, bad_sha: bool) -> crate::common::Hub {
    crate::common::hub(
        fixture("tiny-b"),
        "kiln/tiny",
        HubOptions {
            truncate_once,
            bad_sha,
            ..HubOptions::default()
        },
    )
}

fn all_files() -> Vec<String> {
    let root = fixture("tiny-b");
    let mut files = Vec::new();
    files_of(&root, &root, &mut files);
    files.sort();
    files
}

/// Downloads every tiny-b file of "kiln/tiny" from `endpoint` into `dest`.
pub fn fetch_all(endpoint: &str, dest: &Path) -> kiln_hub::Result<PathBuf> {
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
    let hub = hub(true, false);
    let models_dir = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir_in(models_dir.path()).unwrap();
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
    assert_eq!(sd.info.family, kiln_engine::family::ModelFamily::Sd1);
    // The models folder lists it: one entry, the checkpoint, with its size on disk.
    let models = kiln_hub::catalog::scan_models(models_dir.path()).unwrap();
    assert_eq!(models.len(), 1, "{models:?}");
    assert_eq!(models[0].path, dest.path());
    match &models[0].kind {
        kiln_engine::inspect::Inspection::Checkpoint(info) => {
            assert_eq!(info.family, kiln_engine::family::ModelFamily::Sd1);
        }
        other => panic!("listed as {other:?}"),
    }
    let on_disk: u64 = files
        .iter()
        .map(|f| std::fs::metadata(dest.path().join(f)).unwrap().len())
        .sum();
    assert_eq!(models[0].bytes, on_disk);
}

/// tiny-b as "kiln/tiny" from a server that stops halfway through the UNet weights, sending
/// nothing more (the connection stays open) until the returned flag is set.
fn stalling_hub() -> (crate::common::Hub, Arc<AtomicBool>) {
    let go = Arc::new(AtomicBool::new(false));
    let hub = crate::common::hub(
        fixture("tiny-b"),
        "kiln/tiny",
        HubOptions {
            hold: Some(go.clone()),
            ..HubOptions::default()
        },
    );
    (hub, go)
}

/// Runs a download of every tiny-b file on a thread of its own; its result arrives on the
/// returned channel (a test waits for it with a deadline instead of hanging).
fn download_on_thread(
    endpoint: String,
    dest: PathBuf,
    cancel: CancelToken,
    options: DownloadOptions,
    on_progress: impl FnMut(kiln_hub::download::DownloadProgress) + Send + 'static,
) -> std::sync::mpsc::Receiver<kiln_hub::Result<PathBuf>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut on_progress = on_progress;
        let files = all_files();
        let _ = tx.send(download_with(
            &endpoint,
            "kiln/tiny",
            "main",
            &files,
            &dest,
            &cancel,
            &options,
            &mut on_progress,
        ));
    });
    rx
}

#[test]
fn a_stalled_connection_is_given_up_with_a_clear_error_and_resumes() {
    let (hub, go) = stalling_hub();
    let dest = tempfile::tempdir().unwrap();
    let options = DownloadOptions {
        stall_timeout: Duration::from_secs(1),
    };
    let result = download_on_thread(
        hub.endpoint.clone(),
        dest.path().to_owned(),
        CancelToken::new(),
        options,
        |_| {},
    );
    // Without the stall timeout this never returns: the server keeps the connection open.
    let err = result
        .recv_timeout(Duration::from_secs(60))
        .expect("the stalled download returned")
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, kiln_hub::Error::Network { .. }), "{text}");
    assert!(
        text.contains("no data for 1 s after") && text.ends_with("run it again to resume"),
        "{text}"
    );
    let unet = "unet/diffusion_pytorch_model.safetensors";
    let size = std::fs::metadata(fixture("tiny-b").join(unet))
        .unwrap()
        .len();
    let part = dest.path().join(format!("{unet}.part"));
    assert_eq!(
        std::fs::metadata(&part).unwrap().len(),
        size / 2,
        "what arrived before the stall is kept"
    );
    assert!(
        !dest.path().join(unet).exists(),
        "no half file under the real name"
    );
    // The network comes back; running it again resumes from the `.part` file.
    go.store(true, Ordering::SeqCst);
    fetch_all(&hub.endpoint, dest.path()).unwrap();
    assert_eq!(
        hub.ranges.load(Ordering::SeqCst),
        1,
        "resumed, not restarted"
    );
    assert_eq!(
        std::fs::read(dest.path().join(unet)).unwrap(),
        std::fs::read(fixture("tiny-b").join(unet)).unwrap()
    );
}

#[test]
fn a_cancel_takes_effect_while_the_connection_is_stalled() {
    let (hub, go) = stalling_hub();
    let dest = tempfile::tempdir().unwrap();
    let cancel = CancelToken::new();
    let unet_bytes = Arc::new(AtomicBool::new(false));
    let seen = unet_bytes.clone();
    let result = download_on_thread(
        hub.endpoint.clone(),
        dest.path().to_owned(),
        cancel.clone(),
        DownloadOptions::default(),
        move |p| {
            if p.file.starts_with("unet/") && p.done > 0 {
                seen.store(true, Ordering::SeqCst);
            }
        },
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !unet_bytes.load(Ordering::SeqCst) {
        assert!(
            std::time::Instant::now() < deadline,
            "no UNet bytes arrived"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The server now sends nothing; the default stall timeout (a minute) is far off.
    cancel.cancel();
    let outcome = result
        .recv_timeout(Duration::from_secs(30))
        .expect("the cancelled download returned while the connection was stalled");
    assert!(
        matches!(outcome, Err(kiln_hub::Error::Cancelled)),
        "{outcome:?}"
    );
    go.store(true, Ordering::SeqCst);
}

#[test]
fn a_wrong_checksum_is_refused_and_nothing_half_written_stays() {
    let hub = hub(false, true);
    let dest = tempfile::tempdir().unwrap();
    let err = fetch_all(&hub.endpoint, dest.path()).unwrap_err();
    assert!(
        matches!(err, kiln_hub::Error::ChecksumMismatch { .. }),
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
    let port = closed_port();
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
    // Broken files are listed too, with what is wrong (issue 26, defect 4).
    let lora = std::fs::read(fixture("adapters/kohya_qkvo.safetensors")).unwrap();
    std::fs::write(
        dir.path().join("truncated.safetensors"),
        &lora[..lora.len() / 2],
    )
    .unwrap();
    std::fs::write(dir.path().join("text.safetensors"), "not tensors").unwrap();
    let models = kiln_hub::catalog::scan_models(dir.path()).unwrap();
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
            ("text.safetensors".into(), "unknown".into()),
            ("tiny-b.safetensors".into(), "checkpoint".into()),
            ("truncated.safetensors".into(), "unknown".into()),
        ]
    );
    assert!(models.iter().all(|m| m.bytes > 0));
    let problems: Vec<bool> = models.iter().map(|m| m.problem.is_some()).collect();
    assert_eq!(problems, [false, false, true, false, true]);
    let o = crate::cli::kiln(&["models", "list", dir.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", crate::cli::stderr(&o));
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 5);
    assert!(
        listed[0].get("problem").is_none(),
        "only broken files say what is wrong"
    );
    for broken in [&listed[2], &listed[4]] {
        let problem = broken["problem"].as_str().unwrap();
        assert!(!problem.is_empty(), "{broken}");
    }
    // Without a reachable Hub, `models get` says so in one line.
    let port = closed_port();
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
