//! Training a whole model (`kiln train base`): one diffusion step with the UNet and the text
//! encoder both training and one VAE step, against diffusers + torch (`fixtures/ref/base_training.*`,
//! made by `fixtures/make_base_training_fixtures.py`): same loss, global gradient norm,
//! gradients, weights after two AdamW steps and EMA weights. Then whole runs through the CLI:
//! the model it writes loads in Kiln, a resumed run ends with the same weights as one that
//! never stopped, and bad requests are named errors.

use std::path::Path;

use kiln_engine::burn::module::Module;
use kiln_engine::burn::tensor::{Int, Tensor, TensorData};
use kiln_engine::models::paths::named_params;
use kiln_engine::training::adamw::AdamWConfig;
use kiln_engine::training::base::{BaseModels, Trained, VaeLossWeights, diffusion_step, vae_step};
use kiln_engine::training::full::{FullOptimizer, StepSettings};
use kiln_engine::training::lora::{Batch, Text};
use kiln_engine::weights::save::torch_layout;

use crate::common::{fixture, reference, tensor};

fn json() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("ref/base_training.json")).unwrap())
        .unwrap()
}

fn tiny_a_models() -> BaseModels {
    let sd = kiln_engine::pipeline::StableDiffusion::load(
        &fixture("tiny-a"),
        None,
        &kiln_engine::device::device("cpu").unwrap(),
    )
    .unwrap();
    BaseModels {
        config: sd.info.config.clone(),
        scheduler: sd.info.scheduler.clone(),
        text_encoder: sd.text_encoder,
        unet: sd.unet,
        vae: sd.vae,
    }
}

/// The parameter `key` of `module` in PyTorch's layout.
fn param<M: Module>(module: &M, key: &str) -> Vec<f32> {
    let p = named_params(module)
        .into_iter()
        .find(|p| p.path == key)
        .unwrap_or_else(|| panic!("no parameter {key}"));
    torch_layout(p).unwrap().1
}

fn settings(t: usize, meta: &serde_json::Value) -> (AdamWConfig, StepSettings) {
    let f = |k: &str| meta[k].as_f64().unwrap();
    (
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            weight_decay: f("weight_decay"),
            eps: f("eps"),
        },
        StepSettings {
            t,
            lr: f("lr"),
            max_grad_norm: Some(f("max_grad_norm")),
            ema_decay: Some(f("ema_decay")),
        },
    )
}

/// Weights after training against the reference: every element close relative to the
/// tensor's largest (`tol`), and the update itself (`after − before`) within 1% in L2 norm — the
/// measure that does not shrink with the weights' size.
fn assert_trained(what: &str, before: &[f32], got: &[f32], want: &[f32], tol: f32) {
    let err = crate::common::relative_max_error(got, want);
    eprintln!("{what}: max|Δ|/max|ref| = {err:.3e}");
    let (mut diff, mut norm) = (0f64, 0f64);
    for ((b, g), w) in before.iter().zip(got).zip(want) {
        let (dg, dw) = (f64::from(g - b), f64::from(w - b));
        diff += (dg - dw).powi(2);
        norm += dw.powi(2);
    }
    let rel = (diff / norm.max(1e-30)).sqrt();
    eprintln!("{what}: update ‖Δ − Δref‖/‖Δref‖ = {rel:.3e}");
    assert!(
        norm > 0.0 && rel < 1e-2,
        "{what}: update differs by {rel:.3e}"
    );
    assert!(err <= tol, "{what}: relative error {err:.3e} > {tol:.0e}");
}

fn assert_rel(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        ((got - want) / want).abs() < tol,
        "{what}: {got} vs diffusers {want}"
    );
}

/// Two steps of the UNet and the text encoder on one batch: loss and gradient norm of each,
/// then weights and EMA weights after the second, against train_text_to_image.py's recipe.
#[test]
fn a_full_diffusion_step_matches_diffusers_with_clipping_adamw_and_ema() {
    let meta = json();
    let mut models = tiny_a_models();
    let tok = kiln_engine::tokenizer::ClipTokenizer::sd15().unwrap();
    let captions: Vec<String> = serde_json::from_value(meta["captions"].clone()).unwrap();
    let mut ids: Vec<i64> = Vec::new();
    for c in &captions {
        ids.extend(tok.encode(c).unwrap().into_iter().map(i64::from));
    }
    let want_ids: Vec<Vec<i64>> = serde_json::from_value(meta["diffusion_ids"].clone()).unwrap();
    assert_eq!(
        ids,
        want_ids.concat(),
        "the same token ids as CLIPTokenizer"
    );
    let device = kiln_engine::device::device("cpu").unwrap();
    let ids: Tensor<2, Int> = Tensor::from_data(TensorData::new(ids, [2, 77]), &device);
    let (ls, latents) = reference("base_training", "diffusion.latents");
    let (_, noise) = reference("base_training", "diffusion.noise");
    let batch = Batch {
        latents: tensor::<4>(&ls, latents),
        noise: tensor::<4>(&ls, noise),
        timesteps: vec![100, 700],
        text: Text::Ids(ids),
    };
    let alphas = models.scheduler.alphas_cumprod().unwrap();
    let keys = |k: &str| -> Vec<String> { serde_json::from_value(meta[k].clone()).unwrap() };
    let before_unet = models.unet.clone();
    let before_te = models.text_encoder.clone();
    let mut opt = FullOptimizer::default();
    let want = &meta["diffusion"];
    for t in 1..=2 {
        let (adamw, s) = settings(t, &meta);
        let stats = diffusion_step(
            &mut models,
            &mut opt,
            &batch,
            Trained {
                unet: true,
                text_encoder: true,
            },
            &alphas,
            Some(meta["snr_gamma"].as_f64().unwrap()).into(),
            &adamw,
            s,
        )
        .unwrap();
        let i = t - 1;
        assert_rel(
            &format!("step {t} loss"),
            stats.loss,
            want["losses"][i].as_f64().unwrap(),
            1e-4,
        );
        assert_rel(
            &format!("step {t} gradient norm"),
            stats.grad_norm,
            want["grad_norms"][i].as_f64().unwrap(),
            1e-3,
        );
    }
    let unet_ema = opt.with_ema(models.unet.clone(), "unet");
    let te_ema = opt.with_ema(models.text_encoder.clone(), "text_encoder");
    for key in keys("unet_keys") {
        let (_, w) = reference("base_training", &format!("diffusion.step2.unet.{key}"));
        let before = param(&before_unet, &key);
        assert_trained(
            &format!("unet {key} after 2 steps"),
            &before,
            &param(&models.unet, &key),
            &w,
            1e-3,
        );
        let (_, e) = reference("base_training", &format!("diffusion.ema2.unet.{key}"));
        assert_trained(
            &format!("unet {key} EMA"),
            &before,
            &param(&unet_ema, &key),
            &e,
            1e-3,
        );
    }
    for key in keys("text_encoder_keys") {
        let (_, w) = reference(
            "base_training",
            &format!("diffusion.step2.text_encoder.{key}"),
        );
        let before = param(&before_te, &key);
        let got = param(&models.text_encoder, &key);
        assert_trained(
            &format!("text encoder {key} after 2 steps"),
            &before,
            &got,
            &w,
            1e-3,
        );
        let (_, e) = reference(
            "base_training",
            &format!("diffusion.ema2.text_encoder.{key}"),
        );
        assert_trained(
            &format!("text encoder {key} EMA"),
            &before,
            &param(&te_ema, &key),
            &e,
            1e-3,
        );
    }
    // The token-embedding rows of the ids the captions use moved as in torch.
    let used: Vec<usize> = serde_json::from_value(meta["diffusion_used_ids"].clone()).unwrap();
    let table = param(&models.text_encoder, "embeddings.token_embedding.weight");
    let width = models.config.text_encoder.hidden_size;
    let rows: Vec<f32> = used
        .iter()
        .flat_map(|&i| table[i * width..(i + 1) * width].to_vec())
        .collect();
    let (_, want_rows) = reference("base_training", "diffusion.rows.step2");
    let (_, before) = reference("base_training", "diffusion.rows.before");
    assert_trained(
        "used token-embedding rows after 2 steps",
        &before,
        &rows,
        &want_rows,
        1e-3,
    );
}

/// Two VAE steps (posterior sampled with given noise, L1 + KL + edge term): loss, gradient
/// norm, weights and EMA weights against torch.
#[test]
fn a_vae_step_matches_torch_with_the_kl_edge_and_detail_terms() {
    let meta = json();
    let mut models = tiny_a_models();
    let before = models.vae.clone();
    let (xs, x) = reference("base_training", "vae.images");
    let (es, eps) = reference("base_training", "vae.eps");
    let mut opt = FullOptimizer::default();
    let want = &meta["vae"];
    for t in 1..=2 {
        let (adamw, s) = settings(t, &meta);
        let stats = vae_step(
            &mut models,
            &mut opt,
            tensor::<4>(&xs, x.clone()),
            tensor::<4>(&es, eps.clone()),
            VaeLossWeights {
                kl: meta["kl_weight"].as_f64().unwrap(),
                edge: meta["edge_weight"].as_f64().unwrap(),
                detail: meta["detail_weight"].as_f64().unwrap(),
            },
            &adamw,
            s,
        )
        .unwrap();
        assert_rel(
            &format!("VAE step {t} loss"),
            stats.loss,
            want["losses"][t - 1].as_f64().unwrap(),
            1e-4,
        );
        assert_rel(
            &format!("VAE step {t} gradient norm"),
            stats.grad_norm,
            want["grad_norms"][t - 1].as_f64().unwrap(),
            1e-3,
        );
    }
    let ema = opt.with_ema(models.vae.clone(), "vae");
    let keys: Vec<String> = serde_json::from_value(meta["vae_keys"].clone()).unwrap();
    for key in keys {
        let b = param(&before, &key);
        let (_, w) = reference("base_training", &format!("vae.step2.vae.{key}"));
        // AdamW moves weights with near-zero gradients (the attention over flat colour
        // blocks) by about ±lr whatever their size: elementwise agreement is looser here.
        assert_trained(
            &format!("VAE {key} after 2 steps"),
            &b,
            &param(&models.vae, &key),
            &w,
            1e-2,
        );
        let (_, e) = reference("base_training", &format!("vae.ema2.vae.{key}"));
        assert_trained(&format!("VAE {key} EMA"), &b, &param(&ema, &key), &e, 1e-2);
    }
}

/// A tiny architecture (so a test run takes seconds) for the CLI runs below.
pub fn write_arch(dir: &Path) -> std::path::PathBuf {
    let arch = serde_json::json!({
        "text_encoder": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                         "num_attention_heads": 2},
        "unet": {"sample_size": 8, "block_out_channels": [32, 32], "layers_per_block": 1,
                 "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                 "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
                 "cross_attention_dim": 32, "attention_head_dim": 2, "norm_num_groups": 8},
        "vae": {"block_out_channels": [16, 16], "layers_per_block": 1, "norm_num_groups": 8,
                "mid_block_add_attention": false}
    });
    let path = dir.join("arch.json");
    std::fs::write(&path, serde_json::to_string_pretty(&arch).unwrap()).unwrap();
    path
}

/// A diffusers scheduler config with DDPM's linear βs (0.0001…0.02).
fn write_scheduler(dir: &Path, schedule: &str, prediction: &str) -> std::path::PathBuf {
    let config = serde_json::json!({
        "_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_start": 0.0001,
        "beta_end": 0.02, "beta_schedule": schedule, "prediction_type": prediction
    });
    let path = dir.join(format!("scheduler-{schedule}-{prediction}.json"));
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

fn shapes(dir: &Path, count: &str) {
    crate::common::shapes_dataset(dir, &["--count", count, "--seed", "5", "--size", "16"]);
}

fn train(args: &[&str]) -> std::process::Output {
    let mut all = vec!["train", "base"];
    all.extend_from_slice(args);
    crate::cli::kiln(&all)
}

/// Runs `kiln train base` with `args` and checks that it fails with a message containing
/// `says`.
fn assert_refused(args: &[&str], says: &str) {
    let o = train(args);
    assert!(!o.status.success(), "{args:?} succeeded");
    let err = crate::cli::stderr(&o);
    assert!(err.contains(says), "{err}");
}

/// `kiln train base` of the `arch` model on `data` into `out` at 16×16, batches of 4 in both
/// phases, `steps` diffusion steps, then `extra`.
fn train_small(
    arch: &Path,
    data: &Path,
    out: &Path,
    steps: &str,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "--config",
        arch.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--resolution",
        "16",
        "--vae-batch",
        "4",
        "--steps",
        steps,
        "--batch",
        "4",
    ];
    args.extend_from_slice(extra);
    train(&args)
}

/// The losses of a `--json` run's step events, in order.
fn losses(events: &[serde_json::Value]) -> Vec<f64> {
    crate::cli::events_of(events, "step")
        .map(|e| e["loss"].as_f64().unwrap())
        .collect()
}

/// `kiln train base` from an architecture file: the VAE phase, then the UNet and text encoder;
/// the losses fall, the output is a diffusers folder Kiln loads and generates from, with the
/// VAE's scaling factor measured from its latents and the weights stored in f16.
#[test]
fn kiln_train_base_trains_a_model_that_loads_and_generates() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    shapes(&data, "24");
    let arch = write_arch(dir.path());
    let out = dir.path().join("model");
    let o = train(&[
        "--config",
        arch.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--resolution",
        "16",
        "--vae-steps",
        "30",
        "--vae-batch",
        "8",
        "--vae-lr",
        "3e-3",
        "--steps",
        "30",
        "--batch",
        "8",
        "--lr",
        "2e-3",
        "--warmup",
        "0",
        "--lr-schedule",
        "constant",
        "--checkpoint-every",
        "0",
        "--fp16",
        "--json",
    ]);
    assert!(o.status.success(), "{}", crate::cli::stderr(&o));
    let events = crate::cli::json_events(&o);
    let phases: Vec<_> = crate::cli::events_of(&events, "phase")
        .map(|e| (e["phase"].as_str().unwrap(), e["steps"].as_u64().unwrap()))
        .collect();
    assert_eq!(phases, [("vae", 30), ("diffusion", 30)]);
    // The plan names both phases and adds them up.
    let started = crate::cli::events_of(&events, "started").next().unwrap();
    assert_eq!(started["from_step"], 0);
    let plan = started["plan_text"].as_str().unwrap();
    assert!(
        plan.starts_with("the VAE 30 steps at batch 8 (≈ ")
            && plan.contains("÷ batch 8 = ")
            && plan.ends_with("; 60 steps in all"),
        "{plan}"
    );
    let l = losses(&events);
    assert_eq!(l.len(), 60, "{events:?}");
    let steps: Vec<u64> = crate::cli::events_of(&events, "step")
        .map(|e| e["step"].as_u64().unwrap())
        .collect();
    assert_eq!(
        steps,
        (1..=60).collect::<Vec<_>>(),
        "one event per step, in order"
    );
    assert_eq!(
        events.last().unwrap(),
        &serde_json::json!({"event": "finished", "output": out}),
        "the stream ends with the output"
    );
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    assert!(
        mean(&l[20..30]) < 0.8 * mean(&l[..3]),
        "the VAE learns: {:?}",
        &l[..30]
    );
    assert!(
        mean(&l[55..]) < mean(&l[30..35]),
        "the UNet learns: {:?}",
        &l[30..]
    );
    // A diffusers folder, f16, that Kiln loads and generates from.
    for f in [
        "model_index.json",
        "unet/config.json",
        "vae/config.json",
        "text_encoder/config.json",
        "tokenizer/tokenizer.json",
        "scheduler/scheduler_config.json",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let info = kiln_engine::weights::Checkpoint::open(&out, None)
        .unwrap()
        .info;
    assert_eq!(info.dtype, "F16");
    let scaling = info.config.vae.scaling_factor;
    assert!(
        scaling.is_finite() && scaling > 0.0 && scaling != 0.18215,
        "{scaling}"
    );
    let vae_cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("vae/config.json")).unwrap())
            .unwrap();
    assert_eq!(
        vae_cfg["down_block_types"],
        serde_json::json!(["DownEncoderBlock2D", "DownEncoderBlock2D"])
    );
    let png = dir.path().join("x.png");
    let o = crate::cli::kiln(&[
        "generate",
        "--model",
        out.to_str().unwrap(),
        "--prompt",
        "a red circle",
        "--steps",
        "3",
        "--seed",
        "1",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", crate::cli::stderr(&o));
    let img = kiln_engine::image::read_png(&png).unwrap();
    assert_eq!((img.width, img.height), (16, 16), "the model's native size");
    // Only the newest checkpoints are kept (the phase ends: steps 30 and 60; keep 2).
    let ckpts: Vec<_> = std::fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .collect();
    assert_eq!(ckpts.len(), 2);
}

/// A run stopped after a checkpoint and resumed with `--resume latest` ends with exactly the
/// weights of a run that never stopped (every random choice derives from the seed and step).
#[test]
fn a_resumed_base_run_ends_with_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    shapes(&data, "12");
    let arch = write_arch(dir.path());
    let attempt = |out: &Path, steps: &str, extra: &[&str]| {
        let mut args = vec![
            "--vae-steps",
            "4",
            "--checkpoint-every",
            "2",
            "--keep-checkpoints",
            "0",
            "--lr-schedule",
            "constant",
        ];
        args.extend_from_slice(extra);
        train_small(&arch, &data, out, steps, &args)
    };
    let run = |out: &Path, steps: &str, extra: &[&str]| {
        let mut extra = extra.to_vec();
        extra.push("--json");
        let o = attempt(out, steps, &extra);
        assert!(o.status.success(), "{}", crate::cli::stderr(&o));
        crate::cli::json_events(&o)
    };
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    run(&a, "6", &[]);
    // The same run, stopped at step 6 of 10 (mid diffusion phase), on `--device cpu` …
    run(&b, "2", &["--device", "cpu"]);
    // … then continued to the end from its newest checkpoint (same seed, same schedule: the
    // first part ran with --steps 2, so the learning rate must not depend on it: constant).
    let events = run(&b, "6", &["--resume", "latest"]);
    let started = crate::cli::events_of(&events, "started").next().unwrap();
    assert_eq!(started["from_step"], 6, "{started}");
    assert_eq!(started["device"], "cpu", "resumed under `auto`: {started}");
    let steps: Vec<u64> = crate::cli::events_of(&events, "step")
        .map(|e| e["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [7, 8, 9, 10], "only the steps left run");
    let phases: Vec<&str> = crate::cli::events_of(&events, "phase")
        .map(|e| e["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        ["diffusion"],
        "a resumed run names the phase it resumes in"
    );
    // Resuming with a setting that changes the weights is refused, naming it.
    let linear = write_scheduler(dir.path(), "linear", "epsilon");
    for (flag, value, name) in [
        ("--seed", "5", "seed"),
        ("--noise-offset", "0.5", "noise_offset"),
        ("--scheduler", linear.to_str().unwrap(), "scheduler"),
        ("--snr-floor", "1", "snr_floor"),
        ("--tokenizer-max-length", "16", "tokenizer_max_length"),
    ] {
        let o = attempt(&b, "8", &[flag, value, "--resume", "latest"]);
        let err = crate::cli::stderr(&o);
        assert!(!o.status.success(), "{err}");
        assert!(err.contains(&format!("other settings ({name})")), "{err}");
    }
    for f in [
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    ] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f}: resumed = uninterrupted"
        );
    }
}

/// `--scheduler` replaces the architecture's noise schedule and `--tokenizer-max-length` its
/// 77-token captions: the run trains on them (the UNet comes out different from the same run
/// on SD's schedule) and the saved model carries both, so Kiln reads it back with them.
/// `--multires-noise-iterations` changes what the UNet learns, not the VAE.
#[test]
fn a_noise_schedule_tokenizer_length_and_multires_noise_given_are_trained_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    shapes(&data, "8");
    let arch = write_arch(dir.path());
    let linear = write_scheduler(dir.path(), "linear", "epsilon");
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec!["--vae-steps", "2", "--warmup", "0"];
        args.extend_from_slice(extra);
        let o = train_small(&arch, &data, out, "2", &args);
        assert!(o.status.success(), "{}", crate::cli::stderr(&o));
    };
    let (sd, lin) = (dir.path().join("sd"), dir.path().join("lin"));
    run(&sd, &[]);
    run(
        &lin,
        &[
            "--scheduler",
            linear.to_str().unwrap(),
            "--tokenizer-max-length",
            "16",
        ],
    );
    let saved = |m: &Path| -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(m.join("scheduler/scheduler_config.json")).unwrap(),
        )
        .unwrap()
    };
    assert_eq!(saved(&sd)["beta_schedule"], "scaled_linear");
    assert_eq!(saved(&lin)["beta_schedule"], "linear");
    assert_eq!(saved(&lin)["beta_end"], 0.02);
    let tokenizer = |m: &Path| -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(m.join("tokenizer/tokenizer_config.json")).unwrap(),
        )
        .unwrap()
    };
    assert_eq!(tokenizer(&sd)["model_max_length"], 77);
    assert_eq!(tokenizer(&lin)["model_max_length"], 16);
    let device = kiln_engine::device::device("cpu").unwrap();
    let back = kiln_engine::pipeline::StableDiffusion::load(&lin, None, &device).unwrap();
    assert_eq!(back.tokenizer.max_length(), 16);
    assert_eq!(
        back.info.scheduler.beta_schedule,
        kiln_engine::schedulers::BetaSchedule::Linear
    );
    let unet = "unet/diffusion_pytorch_model.safetensors";
    assert_eq!(
        std::fs::read(sd.join("vae/diffusion_pytorch_model.safetensors")).unwrap(),
        std::fs::read(lin.join("vae/diffusion_pytorch_model.safetensors")).unwrap(),
        "the VAE phase does not use the noise schedule"
    );
    assert_ne!(
        std::fs::read(sd.join(unet)).unwrap(),
        std::fs::read(lin.join(unet)).unwrap(),
        "the UNet trained on the given schedule"
    );
    // Multi-resolution noise reaches the diffusion phase (and only it).
    let pyramid = dir.path().join("pyramid");
    run(&pyramid, &["--multires-noise-iterations", "2"]);
    assert_eq!(
        std::fs::read(sd.join("vae/diffusion_pytorch_model.safetensors")).unwrap(),
        std::fs::read(pyramid.join("vae/diffusion_pytorch_model.safetensors")).unwrap(),
    );
    assert_ne!(
        std::fs::read(sd.join(unet)).unwrap(),
        std::fs::read(pyramid.join(unet)).unwrap(),
        "the UNet trained on multi-resolution noise"
    );
    // A schedule this trainer cannot learn is refused before any work.
    let v = write_scheduler(dir.path(), "linear", "v_prediction");
    assert_refused(
        &[
            "--config",
            arch.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            dir.path().join("v").to_str().unwrap(),
            "--resolution",
            "16",
            "--scheduler",
            v.to_str().unwrap(),
        ],
        "prediction_type \"v_prediction\"",
    );
}

/// Bad requests are named errors: no architecture and no model, a missing data folder, a
/// file that is no base-training checkpoint, a VAE phase of no steps, components or words
/// to draw anew when everything is random.
#[test]
fn bad_base_training_requests_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    shapes(&data, "4");
    assert_refused(
        &[
            "--data",
            data.to_str().unwrap(),
            "--out",
            dir.path().join("o").to_str().unwrap(),
        ],
        "--config",
    );
    let arch = write_arch(dir.path());
    assert_refused(
        &[
            "--config",
            arch.to_str().unwrap(),
            "--data",
            dir.path().join("nope").to_str().unwrap(),
            "--out",
            dir.path().join("o").to_str().unwrap(),
        ],
        "nope",
    );
    assert_refused(
        &[
            "--config",
            arch.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            dir.path().join("o").to_str().unwrap(),
            "--resolution",
            "16",
            "--resume",
            fixture("tiny-a.safetensors").to_str().unwrap(),
        ],
        "not a Kiln base-training checkpoint",
    );
    // With an architecture file everything is random: --fresh would change nothing.
    for fresh in [["--fresh", "unet"], ["--fresh-words", "circle"]] {
        assert_refused(
            &[
                "--config",
                arch.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
                "--out",
                dir.path().join("o").to_str().unwrap(),
                fresh[0],
                fresh[1],
            ],
            "random already",
        );
    }
    // A VAE that trains for no steps would never get its scaling factor.
    assert_refused(
        &[
            "--config",
            arch.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            dir.path().join("o").to_str().unwrap(),
            "--resolution",
            "16",
            "--vae-steps",
            "0",
        ],
        "at least one step",
    );
}

/// `fresh` draws a component at random (from the seed) instead of taking the `init` model's,
/// and `text_embedding_std` scales only a random text encoder's token and position
/// embeddings. At 0.5 the encoder's outputs for two captions that differ in one word differ
/// far more than at CLIP's 0.02, where its first attention layer averages the words away.
#[test]
fn a_fresh_text_encoder_is_drawn_at_the_embedding_scale_asked() {
    use kiln_engine::training::base::{BaseTrainingConfig, Part};
    let device = kiln_engine::device::device("cpu").unwrap();
    let base = BaseTrainingConfig {
        init: Some(fixture("tiny-a")),
        seed: 3,
        ..Default::default()
    };
    let build = |fresh: Vec<Part>, std: f64| {
        BaseModels::build(
            &BaseTrainingConfig {
                fresh,
                text_embedding_std: std,
                ..base.clone()
            },
            &device,
        )
        .unwrap()
    };
    let kept = build(vec![], 0.5);
    let clip = build(vec![Part::TextEncoder], 0.02);
    let wide = build(vec![Part::TextEncoder], 0.5);
    let values = |m: &kiln_engine::models::clip_text::ClipTextModel| -> Vec<(String, Vec<f32>)> {
        named_params(m)
            .into_iter()
            .map(|p| (p.path.clone(), torch_layout(p).unwrap().1))
            .collect()
    };
    let original = tiny_a_models();
    assert_eq!(
        values(&kept.text_encoder),
        values(&original.text_encoder),
        "without fresh the text encoder is the init model's"
    );
    let unet_key = "conv_in.weight";
    assert_eq!(param(&wide.unet, unet_key), param(&original.unet, unet_key));
    assert_eq!(
        param(&wide.vae, "encoder.conv_in.weight"),
        param(&original.vae, "encoder.conv_in.weight")
    );
    let (w, c) = (values(&wide.text_encoder), values(&clip.text_encoder));
    assert_ne!(w, values(&original.text_encoder), "fresh draws a new one");
    let mut embeddings = 0;
    for ((path, a), (_, b)) in w.iter().zip(&c) {
        if path.contains("embedding") {
            embeddings += 1;
            for (x, y) in a.iter().zip(b) {
                assert!((x - 25.0 * y).abs() <= 1e-5 * x.abs().max(1.0), "{path}");
            }
            let std = (a.iter().map(|v| v * v).sum::<f32>() / a.len() as f32).sqrt();
            assert!((std - 0.5).abs() < 0.02, "{path}: std {std}");
        } else {
            assert_eq!(a, b, "{path} does not depend on the embedding scale");
        }
    }
    assert_eq!(embeddings, 2, "token and position embeddings");
    // What the scale is for: the words stay apart.
    let largest_gap = |m: &BaseModels| {
        largest_token_gap(
            m,
            "a red circle on a white background",
            "a blue circle on a white background",
        )
    };
    let (narrow_gap, wide_gap) = (largest_gap(&clip), largest_gap(&wide));
    assert!(
        wide_gap > 2.0 * narrow_gap,
        "largest per-token distance {wide_gap} at std 0.5, {narrow_gap} at 0.02"
    );
}

/// `fresh_words` redraws only the token embeddings of the words named, at
/// `text_embedding_std` and from the seed, and keeps the rest of the `init` text encoder: a
/// frozen encoder whose words the UNet already reads keeps them, and the redrawn words move
/// its outputs apart where before they barely differed.
#[test]
fn fresh_words_redraw_only_their_own_token_embeddings() {
    use kiln_engine::training::base::BaseTrainingConfig;
    let device = kiln_engine::device::device("cpu").unwrap();
    let tokenizer = kiln_engine::tokenizer::ClipTokenizer::sd15().unwrap();
    let config = |words: &[&str]| BaseTrainingConfig {
        init: Some(fixture("tiny-a")),
        seed: 5,
        text_embedding_std: 0.5,
        fresh_words: words.iter().map(|w| w.to_string()).collect(),
        ..Default::default()
    };
    let build = |words: &[&str]| BaseModels::build(&config(words), &device);
    let table = |m: &BaseModels| -> (Vec<f32>, usize) {
        let w = m.text_encoder.embeddings.token_embedding.weight.val();
        let dim = w.dims()[1];
        (w.into_data().try_to_vec::<f32>().unwrap(), dim)
    };
    let original = tiny_a_models();
    let kept = build(&[]).unwrap();
    let fresh = build(&["circle", "star", "star"]).unwrap();
    let (before, dim) = table(&kept);
    let (after, _) = table(&fresh);
    assert_eq!(
        table(&build(&["circle", "star"]).unwrap()).0,
        after,
        "drawn from the seed"
    );
    let ids: Vec<usize> = ["circle", "star"]
        .iter()
        .flat_map(|w| tokenizer.tokens(w).unwrap())
        .map(|t| t as usize)
        .collect();
    assert_eq!(ids.len(), 2, "one token each");
    for (row, (a, b)) in after.chunks(dim).zip(before.chunks(dim)).enumerate() {
        if ids.contains(&row) {
            let rms = (a.iter().map(|v| v * v).sum::<f32>() / dim as f32).sqrt();
            assert!(
                (0.3..0.7).contains(&rms),
                "token {row}: rms {rms}, asked 0.5"
            );
            assert_ne!(a, b);
        } else if a != b {
            panic!("token {row} is not one of the words but changed");
        }
    }
    // Everything else is the init model's.
    let rest = |m: &kiln_engine::models::clip_text::ClipTextModel| -> Vec<(String, Vec<f32>)> {
        named_params(m)
            .into_iter()
            .filter(|p| p.path != "embeddings.token_embedding.weight")
            .map(|p| (p.path.clone(), torch_layout(p).unwrap().1))
            .collect()
    };
    assert_eq!(rest(&fresh.text_encoder), rest(&original.text_encoder));
    assert_eq!(
        param(&fresh.unet, "conv_in.weight"),
        param(&original.unet, "conv_in.weight")
    );
    // What it is for: captions that differ in a redrawn word now differ in the outputs.
    let largest_gap = |m: &BaseModels| {
        largest_token_gap(
            m,
            "a red circle on a white background",
            "a red star on a white background",
        )
    };
    let (kept_gap, fresh_gap) = (largest_gap(&kept), largest_gap(&fresh));
    assert!(
        fresh_gap > 2.0 * kept_gap,
        "largest per-token distance circle/star: {fresh_gap} redrawn, {kept_gap} kept"
    );
    // A word with nothing to redraw is refused by name.
    let Err(e) = build(&["circle", " "]) else {
        panic!("a blank word was accepted")
    };
    assert!(e.to_string().contains("--fresh-words"), "{e}");
}

/// The largest per-token distance between the text encoder's outputs for captions `a` and
/// `b` (how far apart one changed word moves them).
fn largest_token_gap(m: &BaseModels, a: &str, b: &str) -> f32 {
    let device = kiln_engine::device::device("cpu").unwrap();
    let tokenizer = kiln_engine::tokenizer::ClipTokenizer::sd15().unwrap();
    let encode = |text: &str| {
        let ids: Vec<i64> = tokenizer
            .encode(text)
            .unwrap()
            .into_iter()
            .map(i64::from)
            .collect();
        let n = ids.len();
        m.text_encoder.forward(
            Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), &device),
            1,
        )
    };
    (encode(a) - encode(b))
        .powf_scalar(2.0)
        .sum_dim(2)
        .sqrt()
        .max()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()[0]
}
