//! Getting a model from a Hub-like server: a local HTTP server serves a diffusers folder with
//! the Hub's layout (no test touches the network); interrupted downloads resume, checksums are
//! verified, and an unreachable server is a clear error.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use kiln_engine::download::download;
use kiln_engine::pipeline::CancelToken;

use crate::common::{HubOptions, closed_port, files_of, fixture};

/// tiny-b served as repository "kiln/tiny".
fn hub(truncate_once: bool, bad_sha: bool) -> crate::common::Hub {
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
    let hub = hub(true, false);
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
    let hub = hub(false, true);
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
