//! The `kiln` command line, run as a user runs it.

use std::path::Path;
use std::process::{Command, Output};

use kiln_engine::image::read_png;
use kiln_engine::weights::safetensors::{SafeTensors, WriteTensor, write_f32};

use crate::common::{assert_close, fixture, reference};
use crate::parity::{ddim_request, image_mean_abs_diff};

pub fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The `--json` event stream of a `kiln train …` run: one JSON object per stdout line.
pub fn json_events(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON event: {l:?}: {e}")))
        .collect()
}

/// The events of `kind` (`"step"`, `"phase"`, …) in a [`json_events`] stream.
pub fn events_of<'a>(
    events: &'a [serde_json::Value],
    kind: &'a str,
) -> impl Iterator<Item = &'a serde_json::Value> + 'a {
    events.iter().filter(move |e| e["event"] == kind)
}

/// Runs `kiln generate` on a fixture with the reference DDIM request (plus `extra` args),
/// writing `img-*.png` and `final.safetensors` into `dir`.
pub fn generate(
    model: &Path,
    config: Option<&Path>,
    m: &str,
    dir: &Path,
    extra: &[&str],
) -> Output {
    generate_request(model, config, &ddim_request(m), dir, extra)
}

/// Runs `kiln generate` for `req`'s prompts, negatives, steps, CFG, size and initial noise
/// (plus `extra` args), writing `img-*.png` and `final.safetensors` into `dir`.
pub fn generate_request(
    model: &Path,
    config: Option<&Path>,
    req: &kiln_engine::pipeline::GenerationRequest,
    dir: &Path,
    extra: &[&str],
) -> Output {
    let latents = req.latents.as_ref().unwrap();
    let noise = dir.join("noise.safetensors");
    write_f32(
        &noise,
        &[WriteTensor {
            name: "latents",
            shape: latents.shape.to_vec(),
            data: &latents.values,
        }],
        &Default::default(),
    )
    .unwrap();
    let (w, h, steps, cfg) = (
        req.width.to_string(),
        req.height.to_string(),
        req.steps.to_string(),
        req.cfg.to_string(),
    );
    let mut args: Vec<&str> = vec!["generate", "--model", model.to_str().unwrap()];
    if let Some(c) = config {
        args.extend(["--config", c.to_str().unwrap()]);
    }
    for (p, n) in req.prompts.iter().zip(&req.negatives) {
        args.extend(["--prompt", p, "--negative", n]);
    }
    let out = dir.join("img.png");
    let saved = dir.join("final.safetensors");
    args.extend([
        "--steps", &steps, "--cfg", &cfg, "--width", &w, "--height", &h,
    ]);
    args.extend([
        "--latents",
        noise.to_str().unwrap(),
        "--save-latents",
        saved.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    args.extend(extra);
    kiln(&args)
}

#[test]
fn generate_matches_diffusers_from_both_layouts() {
    for (m, single) in [("tiny-a", false), ("tiny-b", true)] {
        let dir = tempfile::tempdir().unwrap();
        let o = if single {
            generate(
                &fixture(&format!("{m}.safetensors")),
                Some(&fixture(m)),
                m,
                dir.path(),
                &[],
            )
        } else {
            generate(&fixture(m), None, m, dir.path(), &[])
        };
        assert!(o.status.success(), "{m}: {}", stderr(&o));
        let (_, want_latents) = reference(m, "ddim.latents_out");
        let saved = SafeTensors::open(&dir.path().join("final.safetensors")).unwrap();
        assert_close(
            &format!("{m} CLI latents"),
            &saved.f32("latents").unwrap(),
            &want_latents,
            1e-4,
        );
        let images = [
            read_png(&dir.path().join("img-0.png")).unwrap(),
            read_png(&dir.path().join("img-1.png")).unwrap(),
        ];
        let (_, want_image) = reference(m, "ddim.image");
        let diff = image_mean_abs_diff(&images, &want_image);
        assert!(diff <= 0.3, "{m}: CLI image mean |Δ| {diff}");
        assert!(
            !dir.path().join("img.png").exists(),
            "several images are numbered"
        );
    }
}

#[test]
fn generate_without_seed_prints_the_random_seed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("one.png");
    let o = kiln(&[
        "generate",
        "--model",
        fixture("tiny-b").to_str().unwrap(),
        "--prompt",
        "a cat",
        "--steps",
        "2",
        "--width",
        "16",
        "--height",
        "16",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("seed: "), "{}", stderr(&o));
    let img = read_png(&out).unwrap();
    assert_eq!((img.width, img.height), (16, 16));
}

#[test]
fn tokenize_prints_77_ids_or_the_models_length() {
    let o = kiln(&["tokenize", "a photo of a cat"]);
    assert!(o.status.success());
    let ids: Vec<u32> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(ids.len(), 77);
    assert_eq!(&ids[..7], &[49406, 320, 1125, 539, 320, 2368, 49407]);
    // With a model, as many as its tokenizer takes (the shipped model's: 32).
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/models/kiln-tiny");
    let o = kiln(&[
        "tokenize",
        "a photo of a cat",
        "--model",
        shipped.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let short: Vec<u32> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(short.len(), 32);
    assert_eq!(short[..], ids[..32]);
}

#[test]
fn inspect_names_each_fixture() {
    let cases = [
        (fixture("tiny-a"), "checkpoint", "diffusers"),
        (fixture("tiny-a.safetensors"), "checkpoint", "single_file"),
        (fixture("tiny-b.safetensors"), "checkpoint", "single_file"),
    ];
    for (path, kind, layout) in cases {
        let o = kiln(&["inspect", path.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["kind"], kind, "{}", path.display());
        assert_eq!(v["layout"], layout, "{}", path.display());
        assert_eq!(v["family"], "Stable Diffusion 1.x");
    }
    let o = kiln(&["inspect", fixture("tiny-b.safetensors").to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["dtype"], "BF16");
    assert_eq!(
        v["config"]["vae"]["block_out_channels"],
        serde_json::json!([16, 32, 32]),
        "architecture inferred from shapes"
    );
    assert_eq!(
        v["config"]["unet"]["block_out_channels"],
        serde_json::json!([24, 48])
    );
}

#[test]
fn errors_are_one_line_with_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("model.safetensors");
    std::fs::write(&bogus, "<!DOCTYPE html><html><body>Sign in</body></html>").unwrap();
    let out = dir.path().join("x.png");
    for args in [
        vec![
            "generate",
            "--model",
            bogus.to_str().unwrap(),
            "--prompt",
            "x",
            "--out",
            out.to_str().unwrap(),
        ],
        vec![
            "generate",
            "--model",
            fixture("tiny-b").to_str().unwrap(),
            "--prompt",
            "x",
            "--device",
            "cuda",
            "--out",
            out.to_str().unwrap(),
        ],
        vec![
            "generate",
            "--model",
            fixture("tiny-b").to_str().unwrap(),
            "--prompt",
            "x",
            "--width",
            "30",
            "--out",
            out.to_str().unwrap(),
        ],
        vec![
            "inspect",
            dir.path().join("missing.safetensors").to_str().unwrap(),
        ],
        // `kiln eval` opens its device as every job does.
        vec!["eval", "shapes", "--limit", "1", "--device", "cuda"],
    ] {
        let o = kiln(&args);
        assert!(!o.status.success(), "{args:?} should fail");
        let err = stderr(&o);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.starts_with("kiln: "), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(!out.exists(), "no output on error");
}

/// A half-precision model loaded for half-precision inference never exists in f32 and is
/// never held beside its file: `kiln generate --precision f16 --json` on a model with 707 MiB
/// of f16 files peaks at most 1.2× the weight files above what the same command takes with
/// the tiny built-in model (the constant: program, text encoder, activations); the same model
/// loaded at f32 takes about twice the files, so the check tells the two apart. Measured:
/// 86 MiB for the tiny model, then 1.08× the files at f16 and 2.1× at f32.
#[test]
fn loading_f16_weights_for_f16_inference_costs_about_the_files() {
    use kiln_engine::loader::Loader;
    use kiln_engine::models::unet_2d_condition::UNet2DConditionModel;
    use kiln_engine::weights::safetensors::Dtype;
    let device = kiln_engine::burn::tensor::Device::flex();
    let tiny = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/models/kiln-tiny");
    let sd = kiln_engine::pipeline::StableDiffusion::load(&tiny, None, &device).unwrap();
    // kiln-tiny's text encoder and VAE with a UNet 8× as wide (≈ 370 M parameters).
    let mut config = sd.info.config.clone();
    config.unet.block_out_channels = config
        .unet
        .block_out_channels
        .iter()
        .map(|c| c * 8)
        .collect();
    let mut ld = Loader::random(5, &device).with_dtype(kiln_engine::burn::tensor::DType::F16);
    let unet = UNet2DConditionModel::load(&config.unet, &mut ld).unwrap();
    ld.finish("UNet").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("wide");
    kiln_engine::weights::save::save_diffusers(
        &model,
        kiln_engine::weights::save::Components {
            text_encoder: &sd.text_encoder,
            unet: &unet,
            vae: &sd.vae,
        },
        &config,
        &sd.info.scheduler,
        Dtype::F16,
    )
    .unwrap();
    drop((sd, unet));
    let files: u64 = ["unet", "vae", "text_encoder"]
        .iter()
        .map(|c| {
            std::fs::metadata(model.join(c).join(if *c == "text_encoder" {
                "model.safetensors"
            } else {
                "diffusion_pytorch_model.safetensors"
            }))
            .unwrap()
            .len()
        })
        .sum();
    assert!(files > 200 << 20, "{files}");
    let peak = |model: &std::path::Path, precision: &str| -> f64 {
        let out = dir.path().join(format!("{precision}.png"));
        let o = kiln(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "a red circle",
            "--steps",
            "1",
            "--seed",
            "1",
            "--device",
            "cpu",
            "--precision",
            precision,
            "--json",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value =
            serde_json::from_slice(&o.stdout).expect("one JSON object on stdout");
        assert_eq!(v["precision"], precision);
        assert_eq!(v["device"], "cpu");
        assert!(v["unet_calls_per_second"].as_f64().unwrap() > 0.0, "{v}");
        assert!(out.is_file());
        v["peak_rss_bytes"].as_f64().expect("peak RSS on Linux")
    };
    let base = peak(&tiny, "f16");
    let (half, full) = (peak(&model, "f16"), peak(&model, "f32"));
    let mib = |b: f64| b / f64::from(1 << 20);
    eprintln!(
        "files {:.0} MiB; peak RSS: tiny model {:.0} MiB, f16 {:.0} MiB ({:.2}× the files above it), f32 {:.0} MiB",
        mib(files as f64),
        mib(base),
        mib(half),
        (half - base) / files as f64,
        mib(full)
    );
    assert!(
        half <= base + 1.2 * files as f64,
        "f16 load peaked at {:.0} MiB",
        mib(half)
    );
    assert!(
        full >= base + 1.6 * files as f64,
        "the f32 load holds twice the files"
    );
}

/// Output cut short (`kiln diff a b | head -1`, `kiln inspect M | head`) ends the command
/// quietly with success, as with other Unix tools — not in a panic about printing to stdout:
/// each command that prints runs here with a stdout whose reader has already gone.
#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.png"), dir.path().join("b.png"));
    image::RgbImage::from_pixel(16, 16, image::Rgb([10, 20, 30]))
        .save(&a)
        .unwrap();
    image::RgbImage::from_pixel(16, 16, image::Rgb([12, 20, 30]))
        .save(&b)
        .unwrap();
    let model = crate::common::fixture("tiny-a");
    let (a, b, model) = (
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        model.to_str().unwrap(),
    );
    for args in [
        vec!["diff", a, b],
        vec!["diff", a, b, "--json"],
        vec!["inspect", model],
        vec!["--help"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(&args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = stderr(&o);
        assert!(
            !err.contains("internal error") && !err.contains("panicked"),
            "kiln {args:?}: {err}"
        );
        assert!(o.status.success(), "kiln {args:?}: {:?} {err}", o.status);
    }
}

/// The window opens with a stack, embeddings and a dataset from the command line (issue 26,
/// defect 3): the options are there, and a malformed one is refused before any window opens.
#[test]
fn the_window_takes_loras_embeddings_and_a_dataset_on_the_command_line() {
    let help = kiln(&["--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    for option in [
        "--model <PATH>",
        "--lora <FILE[:W]>",
        "--embedding <FILE[:TOKEN]>",
        "--dataset <DIR>",
    ] {
        assert!(text.contains(option), "{option} in:\n{text}");
    }
    let o = kiln(&["--lora", "style.safetensors:strong"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("must be a number"), "{}", stderr(&o));
    let o = kiln(&["--embedding", "cat.pt:two words"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("must be one word"), "{}", stderr(&o));
}
