//! The shipped model, `assets/models/kiln-tiny` (trained by `kiln train base`, see its
//! README): it is where the studio and the CLI look for it, small, an SD 1.x diffusers folder
//! that diffusers runs with the same result as Kiln, with DDIM and with DPM++ 2M Karras, on
//! its own tokenizer length (32) and noise schedule (`fixtures/ref/kiln-tiny.*`, made by
//! `fixtures/make_kiln_tiny_fixtures.py`), and it draws what the first-run prompt asks and
//! follows held-out prompts (a short `kiln eval shapes`), and the README's striped-fill LoRA
//! trained on it stripes held-out prompts (`kiln eval shapes --style striped --lora`).
//!
//! The shipped model (step 8 of its README) meets issue 8's goals on all 45 held-out prompts
//! of `kiln eval shapes` (colour 91.1%, shape 80.0%; position 31.1%, which is not a goal, so
//! the first-run prompt names no position and the test of it asks for the red circle on blue).

use kiln_engine::job::CancelToken;
use kiln_engine::pipeline::StableDiffusion;

use crate::common::{assert_close, reference};

fn shipped() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/models/kiln-tiny")
}

#[test]
fn the_shipped_model_is_found_small_and_sd1_shaped() {
    let found = kiln_hub::install::bundled_model().expect("the shipped model is found");
    assert_eq!(
        found.canonicalize().unwrap(),
        shipped().canonicalize().unwrap()
    );
    assert!(kiln_hub::install::is_bundled(&found));
    let bytes = kiln_engine::fs::size_on_disk(&shipped());
    assert!(
        bytes < 25 << 20,
        "{bytes} bytes: the shipped model stays under 25 MB"
    );
    let info = kiln_engine::weights::Checkpoint::open(&shipped(), None)
        .unwrap()
        .info;
    assert_eq!(info.family, kiln_engine::family::ModelFamily::Sd1);
    assert_eq!(info.dtype, "F16");
    assert_eq!(
        info.config.text_encoder.vocab_size, 49408,
        "SD's CLIP vocabulary"
    );
}

/// diffusers loads the folder `kiln train base` wrote and its DDIM txt2img from given noise
/// gives the same latents and image as Kiln's.
#[test]
fn diffusers_and_kiln_draw_the_same_from_the_shipped_model() {
    let req = crate::parity::ddim_request("kiln-tiny");
    let device = kiln_engine::device::device("cpu").unwrap();
    let sd = StableDiffusion::load(&shipped(), None, &device).unwrap();
    let out = sd.generate(&req, &CancelToken::new(), &mut |_| {}).unwrap();
    let (_, want) = reference("kiln-tiny", "ddim.latents_out");
    assert_close("kiln-tiny DDIM latents", &out.latents.values, &want, 2e-3);
    let (_, image) = reference("kiln-tiny", "ddim.image");
    let diff = crate::parity::image_mean_abs_diff(&out.images, &image);
    eprintln!("kiln-tiny DDIM image mean|Δ| = {diff:.4}/255");
    assert!(diff <= 0.5, "image mean |Δ| {diff}");
}

/// DPM++ 2M Karras — what the studio and `kiln eval shapes` draw with — matches diffusers on
/// the shipped model with its own noise schedule (`kiln train base --scheduler` can give a
/// model another than SD's).
#[test]
fn dpmpp_2m_karras_matches_diffusers_on_the_shipped_schedule() {
    let mut req = crate::parity::ddim_request("kiln-tiny");
    req.sampler = kiln_engine::schedulers::Sampler::DpmPp2m {
        schedule: kiln_engine::schedulers::Schedule::Karras,
    };
    let device = kiln_engine::device::device("cpu").unwrap();
    let sd = StableDiffusion::load(&shipped(), None, &device).unwrap();
    let out = sd.generate(&req, &CancelToken::new(), &mut |_| {}).unwrap();
    let (_, want) = reference("kiln-tiny", "dpmpp_2m_karras.latents_out");
    assert_close(
        "kiln-tiny DPM++ 2M Karras latents",
        &out.latents.values,
        &want,
        2e-3,
    );
}

/// The shipped model paints the background the prompt names, whatever the starting noise:
/// what `--noise-offset` taught it (a model trained without it takes a flat background's
/// colour from the noise, and the earlier kiln-tiny did).
#[test]
fn kiln_tiny_paints_the_background_the_prompt_names() {
    use kiln_shapes::{COLOURS, detect_background, eval_request};
    let device = kiln_engine::device::device("cpu").unwrap();
    let sd = StableDiffusion::load(&shipped(), None, &device).unwrap();
    let backgrounds = ["blue", "black", "yellow", "white"];
    let mut wrong = Vec::new();
    for seed in [1, 2, 3] {
        let prompts = backgrounds
            .iter()
            .map(|bg| format!("a large red circle in the center on a {bg} background"))
            .collect();
        let req = eval_request(prompts, seed, 20, 7.0);
        let out = sd.generate(&req, &CancelToken::new(), &mut |_| {}).unwrap();
        assert_eq!(out.images.len(), backgrounds.len());
        for (bg, img) in backgrounds.iter().zip(&out.images) {
            let got = COLOURS[detect_background(img)].0;
            if got != *bg {
                wrong.push(format!("seed {seed}: asked {bg}, got {got}"));
            }
        }
    }
    assert!(wrong.len() <= 1, "{} of 12 wrong: {wrong:?}", wrong.len());
}

/// Runs the studio's first prompt from the command line without `--model` (DPM++ 2M Karras,
/// 20 steps, CFG 7) at seeds 1–3; returns each image's detection and whether its corner is
/// the dataset's blue.
fn first_run_images() -> Vec<(Option<kiln_shapes::Detection>, bool)> {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    for seed in ["1", "2", "3"] {
        let png = dir.path().join(format!("{seed}.png"));
        let o = crate::cli::kiln(&[
            "generate",
            "--prompt",
            kiln_hub::install::SAMPLE_PROMPT,
            "--sampler",
            "dpmpp-2m",
            "--karras",
            "--steps",
            "20",
            "--cfg",
            "7",
            "--seed",
            seed,
            "--out",
            png.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", crate::cli::stderr(&o));
        let img = kiln_engine::image::read_png(&png).unwrap();
        assert_eq!((img.width, img.height), (64, 64), "the model's native size");
        let d = kiln_shapes::detect(&img);
        let corner = &img.pixels[..3];
        let blue = corner[2] > 150 && corner[0] < 110 && corner[1] < 140;
        eprintln!("seed {seed}: {d:?}, corner {corner:?}");
        out.push((d, blue));
    }
    out
}

/// The studio's first prompt draws what it asks for: the detector reads a red circle, and the
/// background is the dataset's blue.
#[test]
fn the_first_run_prompt_draws_a_red_circle_on_blue() {
    let hits = first_run_images()
        .iter()
        .filter(|(d, blue)| *blue && d.as_ref().is_some_and(|d| (d.colour, d.shape) == (0, 0)))
        .count();
    assert!(hits >= 2, "a red circle on blue in {hits} of 3 seeds");
}

/// A short `kiln eval shapes --limit 10 --json` on held-out shape–colour pairs (never in the
/// training data), with `extra` arguments: its report.
fn short_eval(extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["eval", "shapes", "--limit", "10", "--json"];
    args.extend_from_slice(extra);
    let o = crate::cli::kiln(&args);
    assert!(o.status.success(), "{}", crate::cli::stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The report's accuracy for `what` ("colour", "shape", "striped", …).
fn accuracy(report: &serde_json::Value, what: &str) -> f64 {
    report[format!("{what}_accuracy")].as_f64().unwrap()
}

/// Held-out pairs get the colour and the shape asked for (issue 8's goals on all 45 prompts:
/// colour 90%, shape 70%).
#[test]
fn kiln_tiny_draws_the_held_out_colours_and_shapes_asked_for() {
    let report = short_eval(&[]);
    let (colour, shape) = (accuracy(&report, "colour"), accuracy(&report, "shape"));
    eprintln!("colour {colour} shape {shape}");
    assert!(colour >= 0.8, "{report}");
    assert!(shape >= 0.6, "{report}");
}

/// The README's style LoRA (`assets/loras/kiln-tiny-striped.safetensors`, trained on kiln-tiny
/// with `kiln train lora`, commands in the model's README) stripes held-out striped prompts
/// that kiln-tiny alone mostly fills solid, and keeps the shapes.
#[test]
fn the_striped_lora_stripes_held_out_shapes() {
    let lora = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../assets/loras/kiln-tiny-striped.safetensors");
    let report = short_eval(&["--style", "striped", "--lora", lora.to_str().unwrap()]);
    let with = accuracy(&report, "striped");
    let without = accuracy(&short_eval(&["--style", "striped"]), "striped");
    eprintln!("striped {with} with the LoRA, {without} without");
    assert!(with >= 0.7, "{report}");
    assert!(
        with >= without + 0.2,
        "striped {with} with, {without} without"
    );
    assert!(accuracy(&report, "shape") >= 0.6, "{report}");
}
