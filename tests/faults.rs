//! Faults a long job meets on a user's machine, made real: a full disk (the process's file
//! size limit, `ulimit -f`, which fails writes past it with EFBIG as a full disk fails them
//! with ENOSPC — no root, no mount needed) while writing an image and while downloading, and
//! SIGKILL at random moments of every kind of training, then `--resume latest`.

use std::path::Path;
use std::process::{Command, Output};

use crate::cli::stderr;
use crate::common::fixture;

/// Runs the `kiln` binary with its file size limit at `kib` KiB (SIGXFSZ ignored, so a
/// write past the limit fails with an error instead of killing the process).
fn kiln_with_file_limit(kib: u64, args: &[&str]) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(format!("trap '' XFSZ; ulimit -f {kib}; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .unwrap()
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_full_disk_while_writing_an_image_keeps_the_previous_file_and_leaves_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.png");
    std::fs::write(&out, b"the previous image").unwrap();
    let o = kiln_with_file_limit(
        1,
        &[
            "generate",
            "--model",
            fixture("tiny-b").to_str().unwrap(),
            "--prompt",
            "a cat",
            "--steps",
            "1",
            "--width",
            "64",
            "--height",
            "64",
            "--seed",
            "1",
            "--device",
            "cpu",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let err = stderr(&o);
    assert!(!o.status.success(), "the write should have failed: {err}");
    assert!(
        err.contains("out.png") && err.to_lowercase().contains("too large"),
        "the error names the file and the cause: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"the previous image");
    assert_eq!(
        names(dir.path()),
        ["out.png"],
        "no temporary file left behind"
    );
}

/// A kind of training the kill test runs: its `kiln train` arguments (all but `--out`) and
/// where its result lands in the output folder.
struct Job {
    kind: &'static str,
    args: Vec<String>,
    output: &'static str,
}

/// `kiln train <kind>` (`lora` or `ti`) arguments but `train` and `--out`: tiny-a, named `k`,
/// on `data` at 32×32 for `steps` steps with a checkpoint after each.
fn adapter_args(kind: &str, data: &Path, steps: &str) -> Vec<String> {
    let model = fixture("tiny-a");
    [
        kind,
        "--model",
        model.to_str().unwrap(),
        "--name",
        "k",
        "--data",
        data.to_str().unwrap(),
        "--steps",
        steps,
        "--resolution",
        "32",
        "--checkpoint-every",
        "1",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn jobs(dir: &Path) -> Vec<Job> {
    let lora_data = dir.join("lora-data");
    std::fs::create_dir_all(&lora_data).unwrap();
    crate::reference::training_dataset(&lora_data);
    let shapes = dir.join("shapes");
    crate::common::shapes_dataset(&shapes, &["--count", "12", "--seed", "5", "--size", "16"]);
    let arch = crate::base_training::write_arch(dir);
    let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let mut lora = adapter_args("lora", &lora_data, "60");
    lora.extend(s(&["--lr", "1e-3"]));
    let mut ti = adapter_args("ti", &lora_data, "60");
    ti.extend(s(&["--token", "<k>", "--init-word", "cat", "--lr", "1e-3"]));
    let mut base = s(&["base", "--config", arch.to_str().unwrap()]);
    base.extend(s(&[
        "--data",
        shapes.to_str().unwrap(),
        "--resolution",
        "16",
    ]));
    base.extend(s(&[
        "--vae-batch",
        "4",
        "--batch",
        "4",
        "--vae-steps",
        "4",
        "--steps",
        "6",
    ]));
    base.extend(s(&["--checkpoint-every", "1", "--keep-checkpoints", "0"]));
    base.extend(s(&["--lr-schedule", "constant"]));
    vec![
        Job {
            kind: "lora",
            args: lora,
            output: "k.safetensors",
        },
        Job {
            kind: "ti",
            args: ti,
            output: "k.safetensors",
        },
        Job {
            kind: "base",
            args: base,
            output: "unet/diffusion_pytorch_model.safetensors",
        },
    ]
}

/// Every tensor of a safetensors file, as raw bytes by name (metadata such as timestamps
/// aside): two runs agree bit for bit when these are equal.
fn tensors_of(path: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let file = kiln_engine::weights::safetensors::SafeTensors::open(path)
        .unwrap_or_else(|e| panic!("{} does not load: {e}", path.display()));
    file.tensors()
        .keys()
        .map(|k| {
            let v = file.f32(k).unwrap();
            (k.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect())
        })
        .collect()
}

/// Every checkpoint in `out/checkpoints` loads (files and folders of safetensors).
fn checkpoints_load(out: &Path, when: &str) -> usize {
    if !out.join("checkpoints").is_dir() {
        return 0;
    }
    let mut files = Vec::new();
    crate::common::files_of(out, &out.join("checkpoints"), &mut files);
    let mut n = 0;
    for f in files.iter().filter(|f| f.ends_with(".safetensors")) {
        let p = out.join(f);
        kiln_engine::weights::safetensors::SafeTensors::open(&p)
            .unwrap_or_else(|e| panic!("{when}: {} does not load: {e}", p.display()));
        n += 1;
    }
    n
}

/// SIGKILL at seeded random moments (loading, training, writing a checkpoint) of `kiln train
/// lora|ti|base`, `KILN_KILLS` times each (2 by default; `tools/kill-resume.sh` runs 17, 51
/// in all): after every kill each checkpoint loads, and `--resume latest` from what the
/// kills left finishes with exactly the weights of a run that was never killed.
#[test]
fn sigkill_of_every_training_kind_then_resume_ends_bit_identical() {
    let kills: usize = std::env::var("KILN_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let dir = tempfile::tempdir().unwrap();
    // A fixed-seed xorshift: the kill moments are random but the same on every run.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut random_ms = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        50 + state % 850
    };
    let mut report = Vec::new();
    for job in jobs(dir.path()) {
        let run = |out: &Path, extra: &[&str]| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
            c.arg("train")
                .args(&job.args)
                .args(["--out", out.to_str().unwrap(), "--device", "cpu"])
                .args(extra)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            c
        };
        let straight = dir.path().join(format!("{}-straight", job.kind));
        let o = run(&straight, &[]).output().unwrap();
        assert!(o.status.success(), "{}: {}", job.kind, stderr(&o));
        let want = tensors_of(&straight.join(job.output));

        let killed = dir.path().join(format!("{}-killed", job.kind));
        let started = std::time::Instant::now();
        let mut landed = 0;
        // How many checkpoints the kills have left, each checked to load after its kill.
        let mut checkpoints = 0;
        for k in 0..kills {
            // The first start is fresh; every later one resumes from the newest checkpoint
            // (starts afresh when a kill came before the first).
            let resume: &[&str] = if checkpoints > 0 {
                &["--resume", "latest"]
            } else {
                &[]
            };
            let mut child = run(&killed, resume).spawn().unwrap();
            // Anywhere from start-up (model load) to the last steps and their checkpoints.
            let delay = random_ms();
            std::thread::sleep(std::time::Duration::from_millis(delay));
            if child.try_wait().unwrap().is_none() {
                landed += 1;
            }
            child.kill().unwrap();
            child.wait().unwrap();
            checkpoints =
                checkpoints_load(&killed, &format!("{} kill {k} at {delay} ms", job.kind));
        }
        assert!(
            landed * 2 >= kills,
            "{}: only {landed} of {kills} kills came while it ran",
            job.kind
        );
        let resume: &[&str] = if checkpoints > 0 {
            &["--resume", "latest"]
        } else {
            &[]
        };
        let o = run(&killed, resume).output().unwrap();
        assert!(o.status.success(), "{}: {}", job.kind, stderr(&o));
        let got = tensors_of(&killed.join(job.output));
        assert!(
            got == want,
            "{}: the resumed run's weights differ from the uninterrupted run's",
            job.kind
        );
        report.push(format!(
            "{}: {kills} kills ({landed} while running), bit-identical after resume, {:.0} s",
            job.kind,
            started.elapsed().as_secs_f64()
        ));
    }
    eprintln!("{}", report.join("\n"));
}

/// A download that runs out of space (this test's own binary, re-run under a 64 KiB file
/// size limit, downloads tiny-b from a local Hub-like server) stops with
/// [`kiln_engine::Error::DiskFull`] and leaves no `.part` file holding the space.
#[test]
fn a_full_disk_during_a_download_is_named_and_leaves_no_partial_file() {
    let hub = crate::download::hub(false, false);
    let dest = tempfile::tempdir().unwrap();
    let o = Command::new("bash")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 64; exec \"$0\" \"$@\"")
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "faults::download_under_a_file_size_limit"])
        .args(["--ignored", "--nocapture", "--test-threads", "1"])
        .env("KILN_FAULT_ENDPOINT", &hub.endpoint)
        .env("KILN_FAULT_DEST", dest.path())
        .output()
        .unwrap();
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(o.status.success() && out.contains("1 passed"), "{out}");
}

/// The child of [`a_full_disk_during_a_download_is_named_and_leaves_no_partial_file`].
#[test]
#[ignore = "run by a_full_disk_during_a_download_is_named_and_leaves_no_partial_file"]
fn download_under_a_file_size_limit() {
    let (Some(endpoint), Some(dest)) = (
        std::env::var_os("KILN_FAULT_ENDPOINT"),
        std::env::var_os("KILN_FAULT_DEST"),
    ) else {
        panic!("run by a_full_disk_during_a_download_is_named_and_leaves_no_partial_file");
    };
    let dest = Path::new(&dest);
    let err = crate::download::fetch_all(&endpoint.to_string_lossy(), dest)
        .expect_err("the download outgrows the limit");
    assert!(
        matches!(
            err,
            kiln_hub::Error::Engine(kiln_engine::Error::DiskFull { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("free some space"), "{err}");
    let mut files = Vec::new();
    crate::common::files_of(dest, dest, &mut files);
    assert!(
        files.iter().all(|f| !f.ends_with(".part")),
        "partial files left: {files:?}"
    );
}

/// An image deleted from the dataset while a LoRA trains: when its turn comes, training stops
/// with [`kiln_engine::Error::DatasetChanged`] naming it (the rule: a run's batches depend on
/// the whole dataset, so it does not go on without it), every checkpoint loads, and with the
/// image back `--resume latest` finishes.
#[test]
fn an_image_deleted_mid_training_stops_it_by_name_and_resume_finishes() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    crate::reference::training_dataset(&data);
    let out = dir.path().join("out");
    let args = |extra: &[&str]| {
        let mut v = vec!["train".to_owned()];
        v.extend(adapter_args("lora", &data, "12"));
        let out = out.to_str().unwrap();
        v.extend(
            ["--out", out, "--device", "cpu"]
                .iter()
                .chain(extra)
                .map(|s| (*s).to_owned()),
        );
        v
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args(&["--json"]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    // After the first step (one image read so far), the other images go.
    let mut kept = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("\"event\":\"step\"") {
            for entry in std::fs::read_dir(&data).unwrap() {
                let p = entry.unwrap().path();
                if p.file_name().is_some_and(|n| n != "img0.png") {
                    kept.push((p.clone(), std::fs::read(&p).unwrap()));
                    std::fs::remove_file(&p).unwrap();
                }
            }
            break;
        }
    }
    lines.for_each(drop);
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(
        !o.status.success(),
        "training went on without its images: {err}"
    );
    assert!(
        err.contains("was in the dataset when training started") && err.contains(".png"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(checkpoints_load(&out, "after the stop") > 0);
    for (p, bytes) in kept {
        std::fs::write(p, bytes).unwrap();
    }
    let v = args(&["--resume", "latest"]);
    let o = crate::cli::kiln(&v.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.join("k.safetensors").is_file());
}
