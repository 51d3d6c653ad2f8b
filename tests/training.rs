//! LoRA training against diffusers + PEFT + torch AdamW (`fixtures/ref/training.*`, made by
//! `fixtures/make_training_fixtures.py`): same initial LoRA weights, latents, noise, timesteps
//! and text embeddings → same loss, gradients and updated weights.

use kiln_engine::training::adamw::AdamWConfig;
use kiln_engine::training::lora::{
    Batch, LayerKind, LoraConfig, LoraLayer, LoraWeights, StepOptions, Text, loss_and_grads,
    train_step,
};

use crate::common::{assert_close, reference, tensor};
use crate::lora::tiny_a;
use crate::reference::{
    lora_losses, peft_pair, training_config as config, training_dataset as dataset,
    training_json as json,
};

/// Weights after `steps` AdamW steps (lr 1e-3, eps 1e-8) match PEFT's to 1e-4 of the largest,
/// except where the step-1 gradient `grad` is within ten times the gradient check's own
/// tolerance (1e-3 of the largest) of zero: there AdamW's g/(|g| + eps) turns float noise in
/// a gradient of ~1e-8 into a visible difference (0.51 vs 0.50 of the learning rate), so
/// those few elements are only held to what AdamW can move them (each side at most `steps` ×
/// lr from the start, so at most twice that apart). Such elements must stay rare (at most
/// 2, or 2% of a larger matrix).
fn assert_adamw_close(what: &str, got: &[f32], want: &[f32], grad: &[f32], steps: usize) {
    let max_ref = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_grad = grad.iter().fold(0f32, |m, v| m.max(v.abs()));
    let noisy = |i: usize| grad[i].abs() < 10.0 * 1e-4 * max_grad;
    let bound = 2.0 * steps as f32 * 1e-3;
    let mut worst = 0f32;
    let mut ill = 0;
    for i in 0..want.len() {
        let d = (got[i] - want[i]).abs();
        if noisy(i) {
            ill += 1;
            assert!(
                d <= bound,
                "{what}: element {i} (gradient {:e}) off by {d:e}",
                grad[i]
            );
        } else {
            worst = worst.max(d / max_ref);
        }
    }
    eprintln!("{what}: max|Δ|/max|ref| = {worst:.3e} ({ill} ill-conditioned elements)");
    assert!(worst <= 1e-4, "{what}: relative error {worst:.3e} > 1e-4");
    assert!(
        ill <= (want.len() / 50).max(2),
        "{what}: {ill} of {} elements ill-conditioned",
        want.len()
    );
}

fn setup() -> (kiln_engine::pipeline::StableDiffusion, LoraWeights, Batch) {
    crate::reference::lora_training_setup(&kiln_engine::device::device("cpu").unwrap())
}

fn values<const D: usize>(t: kiln_engine::burn::tensor::Tensor<D>) -> Vec<f32> {
    crate::common::values(t)
}

#[test]
fn one_lora_step_matches_peft_loss_gradients_and_update() {
    let meta = json();
    let (sd, mut weights, batch) = setup();
    let alphas = sd.info.scheduler.alphas_cumprod().unwrap();
    let adamw = AdamWConfig {
        beta1: 0.9,
        beta2: 0.999,
        weight_decay: 1e-2,
        eps: 1e-8,
    };
    // Gradients of step 1.
    let (loss, grads) =
        loss_and_grads(&sd.unet, &sd.text_encoder, &weights, &batch, &alphas, None).unwrap();
    let want_loss = meta["losses"]["plain"][0].as_f64().unwrap();
    assert!(
        ((loss - want_loss) / want_loss).abs() < 1e-4,
        "loss {} vs {want_loss}",
        loss
    );
    for (l, (gd, gu)) in weights.layers.iter().zip(grads) {
        let (a, b) = peft_pair(l, "plain.grad", &l.path);
        assert_close(&format!("∂down {}", l.path), &values(gd), &a, 1e-4);
        assert_close(&format!("∂up {}", l.path), &values(gu), &b, 1e-4);
    }
    // Two AdamW steps: weights after each.
    for step in 1..=2 {
        let stats = train_step(
            &sd.unet,
            &sd.text_encoder,
            &mut weights,
            &batch,
            &alphas,
            &adamw,
            StepOptions {
                lr: 1e-3,
                snr_gamma: None,
                max_grad_norm: None,
                t: step,
            },
        )
        .unwrap();
        let want = meta["losses"]["plain"][step - 1].as_f64().unwrap();
        assert!(
            ((stats.loss - want) / want).abs() < 1e-4,
            "step {step} loss {} vs {want}",
            stats.loss
        );
        for l in &weights.layers {
            let (a, b) = peft_pair(l, &format!("plain.step{step}"), &l.path);
            let (ga, gb) = peft_pair(l, "plain.grad", &l.path);
            assert_adamw_close(
                &format!("step {step} down {}", l.path),
                &values(l.down.clone()),
                &a,
                &ga,
                step,
            );
            assert_adamw_close(
                &format!("step {step} up {}", l.path),
                &values(l.up.clone()),
                &b,
                &gb,
                step,
            );
        }
    }
}

/// LoRA on every supported layer kind — UNet attention, feed-forward, 1×1 `proj_in`/`proj_out`,
/// resnet 3×3 convolutions, and the text encoder's attention and MLP (captions encoded inside
/// the graph) — against PEFT: same loss and gradients.
#[test]
fn every_lora_target_kind_matches_peft() {
    let meta = json();
    let mut sd = tiny_a();
    let strings =
        |v: &serde_json::Value| -> Vec<String> { serde_json::from_value(v.clone()).unwrap() };
    let config = LoraConfig {
        rank: 4,
        alpha: 8.0,
        targets: strings(&meta["all_unet_targets"]),
        text_encoder_targets: strings(&meta["all_te_targets"]),
    };
    let device = sd.device().clone();
    let mut weights =
        LoraWeights::init(&mut sd.unet, &mut sd.text_encoder, &config, 0, &device).unwrap();
    let key = |l: &LoraLayer| match l.component {
        kiln_engine::adapters::lora::targets::Component::Unet => format!("unet.{}", l.path),
        kiln_engine::adapters::lora::targets::Component::TextEncoder => {
            format!("te.{}", l.path.trim_start_matches("text_model."))
        }
    };
    let convs = weights
        .layers
        .iter()
        .filter(|l| matches!(l.kind, LayerKind::Conv { .. }))
        .count();
    let te = weights
        .layers
        .iter()
        .filter(|l| l.component == kiln_engine::adapters::lora::targets::Component::TextEncoder)
        .count();
    assert!(
        convs > 0 && te > 0,
        "{convs} conv and {te} text-encoder layers"
    );
    for l in &mut weights.layers {
        let (a, b) = peft_pair(l, "all.init", &key(l));
        l.down = tensor::<2>(&l.down.dims(), a);
        l.up = tensor::<2>(&l.up.dims(), b);
    }
    let prompts: Vec<String> = strings(&meta["all_prompts"]);
    let mut ids = Vec::new();
    for p in &prompts {
        ids.extend(sd.tokenizer.encode(p).unwrap().into_iter().map(i64::from));
    }
    let ids = kiln_engine::burn::tensor::Tensor::<2, kiln_engine::burn::tensor::Int>::from_data(
        kiln_engine::burn::tensor::TensorData::new(ids, [prompts.len(), 77]),
        sd.device(),
    );
    let (ls, latents) = reference("training", "all.latents");
    let (_, noise) = reference("training", "all.noise");
    let batch = Batch {
        latents: tensor::<4>(&ls, latents),
        noise: tensor::<4>(&ls, noise),
        timesteps: vec![300, 800],
        text: Text::Ids(ids),
    };
    let alphas = sd.info.scheduler.alphas_cumprod().unwrap();
    let (loss, grads) =
        loss_and_grads(&sd.unet, &sd.text_encoder, &weights, &batch, &alphas, None).unwrap();
    let want = meta["all_loss"].as_f64().unwrap();
    assert!(
        ((loss - want) / want).abs() < 1e-4,
        "loss {} vs {want}",
        loss
    );
    for (l, (gd, gu)) in weights.layers.iter().zip(grads) {
        let (a, b) = peft_pair(l, "all.grad", &key(l));
        assert_close(&format!("∂down {}", l.path), &values(gd), &a, 1e-4);
        assert_close(&format!("∂up {}", l.path), &values(gu), &b, 1e-4);
    }
    // Saved in kohya form, Kiln's loader matches every module (UNet convs and text encoder).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("all.safetensors");
    weights.save_kohya(&file, &Default::default()).unwrap();
    let fresh = crate::lora::session();
    let adapter = fresh.open_lora(&file).unwrap();
    assert_eq!(adapter.report.matched, adapter.report.modules);
    assert!(adapter.report.text_encoder_layers > 0 && adapter.report.unet_layers > 0);
    // The diffusers/PEFT export is the same adapter: identical images either way.
    let peft = dir.path().join("all.peft.safetensors");
    weights.save_peft(&peft).unwrap();
    let from_peft = fresh.open_lora(&peft).unwrap();
    assert_eq!(from_peft.report.matched, from_peft.report.modules);
    let with = |a| {
        let mut sd = crate::lora::session();
        sd.add_lora(kiln_engine::adapters::AdapterId(0), a, 1.0, true);
        crate::lora::latents(sd.model())
    };
    assert_close(
        "kohya vs PEFT export",
        &with(from_peft),
        &with(adapter),
        1e-6,
    );
}

/// min-SNR-γ: loss and gradients at 1e-4. The updated weights are compared at 5e-4: Adam's
/// first step is g/(|g| + ε) — ±lr wherever |g| ≫ ε — so an element whose gradient is within
/// a few ε of zero turns float32 rounding of g into a visible difference (here one element of
/// one matrix, 1.5e-4 of the tensor's largest value).
#[test]
fn min_snr_weighting_matches_diffusers() {
    let meta = json();
    let (sd, mut weights, batch) = setup();
    let alphas = sd.info.scheduler.alphas_cumprod().unwrap();
    let (_, grads) = loss_and_grads(
        &sd.unet,
        &sd.text_encoder,
        &weights,
        &batch,
        &alphas,
        Some(5.0),
    )
    .unwrap();
    for (l, (gd, gu)) in weights.layers.iter().zip(grads) {
        let (a, b) = peft_pair(l, "min_snr.grad", &l.path);
        assert_close(&format!("min-SNR ∂down {}", l.path), &values(gd), &a, 1e-4);
        assert_close(&format!("min-SNR ∂up {}", l.path), &values(gu), &b, 1e-4);
    }
    let stats = train_step(
        &sd.unet,
        &sd.text_encoder,
        &mut weights,
        &batch,
        &alphas,
        &AdamWConfig::default(),
        StepOptions {
            lr: 1e-3,
            snr_gamma: Some(5.0),
            max_grad_norm: None,
            t: 1,
        },
    )
    .unwrap();
    let want = meta["losses"]["min_snr"][0].as_f64().unwrap();
    assert!(
        ((stats.loss - want) / want).abs() < 1e-4,
        "loss {} vs {want}",
        stats.loss
    );
    for l in &weights.layers {
        let (a, b) = peft_pair(l, "min_snr.step1", &l.path);
        assert_close(
            &format!("min-SNR down {}", l.path),
            &values(l.down.clone()),
            &a,
            5e-4,
        );
        assert_close(
            &format!("min-SNR up {}", l.path),
            &values(l.up.clone()),
            &b,
            5e-4,
        );
    }
}

#[test]
fn the_dataset_report_names_every_problem() {
    use kiln_engine::training::dataset::{DatasetOptions, Issue, image_files, validate};
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path());
    std::fs::copy(dir.path().join("img2.png"), dir.path().join("img3.png")).unwrap();
    let tok = kiln_engine::tokenizer::ClipTokenizer::sd15().unwrap();
    let report = validate(
        &image_files(dir.path()).unwrap(),
        &DatasetOptions {
            resolution: 44,
            ..Default::default()
        },
        &tok,
    )
    .unwrap();
    let issues = |name: &str| {
        report
            .entries
            .iter()
            .find(|e| e.path.ends_with(name))
            .unwrap()
            .issues
            .clone()
    };
    assert!(matches!(
        issues("broken.jpg")[..],
        [Issue::MissingCaption, Issue::Unreadable { .. }]
    ));
    assert_eq!(
        issues("img0.png"),
        vec![Issue::TooSmall {
            width: 40,
            height: 48
        }],
        "captioned, but narrower than 44"
    );
    assert_eq!(
        report
            .entries
            .iter()
            .find(|e| e.path.ends_with("img0.png"))
            .unwrap()
            .caption
            .as_deref(),
        Some("a red square with a white diagonal")
    );
    assert!(issues("img3.png").contains(&Issue::Duplicate {
        of: dir.path().join("img2.png")
    }));
    assert_eq!(
        report.usable().count(),
        3,
        "the corrupt file and the duplicate are left out; small ones upscale"
    );
    assert_eq!(
        report.summary(),
        "5 images: 3 usable, 1 unreadable, 1 duplicate, 3 too small (upscaled), 4 without caption"
    );
}

#[test]
fn resuming_from_a_checkpoint_gives_the_same_adapter_as_never_stopping() {
    use kiln_engine::job::CancelToken;
    use kiln_engine::job::PauseToken;
    use kiln_engine::training::run::TrainingEvent;
    use kiln_engine::training::trainer::train_lora;
    let data = tempfile::tempdir().unwrap();
    dataset(data.path());
    let (straight, split) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut losses = Vec::new();
    let a = train_lora(
        &config(data.path(), straight.path(), 6),
        None,
        &CancelToken::new(),
        &PauseToken::default(),
        &mut |e| {
            if let TrainingEvent::Step { loss, .. } = e {
                losses.push(loss);
            }
        },
    )
    .unwrap();
    // Stop after 3 steps (the checkpoint), then resume to 6.
    let cancel = CancelToken::new();
    let c = cancel.clone();
    let first = train_lora(
        &config(data.path(), split.path(), 6),
        None,
        &cancel,
        &PauseToken::default(),
        &mut |e| {
            if let TrainingEvent::Checkpoint { step: 3, .. } = e {
                c.cancel();
            }
        },
    );
    assert!(
        matches!(first, Err(kiln_engine::Error::Cancelled)),
        "{first:?}"
    );
    let checkpoint =
        kiln_engine::training::trainer::latest_checkpoint(&config(data.path(), split.path(), 6))
            .unwrap();
    assert!(checkpoint.ends_with("checkpoints/shapes-step000003.safetensors"));
    let mut resumed_losses = Vec::new();
    let b = train_lora(
        &config(data.path(), split.path(), 6),
        Some(&checkpoint),
        &CancelToken::new(),
        &PauseToken::default(),
        &mut |e| {
            if let TrainingEvent::Step { loss, .. } = e {
                resumed_losses.push(loss);
            }
        },
    )
    .unwrap();
    assert_eq!(
        resumed_losses,
        losses[3..],
        "the loss curve goes on where it was"
    );
    let (fa, fb) = (
        kiln_engine::weights::safetensors::SafeTensors::open(&a).unwrap(),
        kiln_engine::weights::safetensors::SafeTensors::open(&b).unwrap(),
    );
    for name in fa.tensors().keys() {
        assert_eq!(
            fa.f32(name).unwrap(),
            fb.f32(name).unwrap(),
            "{name}: identical weights"
        );
    }
    // The result is a LoRA Kiln (and A1111/ComfyUI/diffusers) loads, and it changes images.
    let mut sd = crate::lora::session();
    let adapter = sd.open_lora(&a).unwrap();
    assert_eq!(adapter.report.matched, adapter.report.modules);
    let before = crate::lora::latents(sd.model());
    sd.add_lora(kiln_engine::adapters::AdapterId(0), adapter, 1.0, true);
    assert_ne!(crate::lora::latents(sd.model()), before);
}

/// Issue 26, defect 1: a second run under a finished run's name, stopped early, must not
/// resume from the first run's (later) checkpoint — a fresh run sets the earlier run's
/// checkpoints aside, and what is left to resume is this run's.
#[test]
fn a_fresh_run_under_a_used_name_never_resumes_the_old_run() {
    use kiln_engine::job::{CancelToken, PauseToken};
    use kiln_engine::training::run::TrainingEvent;
    use kiln_engine::training::trainer::{
        checkpoint_summary, existing_run, free_name, latest_checkpoint, train_lora,
    };
    let (data, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    dataset(data.path());
    let quiet = &mut |_| {};
    let first = config(data.path(), out.path(), 6);
    train_lora(
        &first,
        None,
        &CancelToken::new(),
        &PauseToken::default(),
        quiet,
    )
    .unwrap();
    let before = existing_run(out.path(), "shapes");
    assert_eq!(before.checkpoints.len(), 2, "{before:?}");
    assert!(before.result.is_some());
    assert_eq!(free_name(out.path(), "shapes"), "shapes-2");
    assert_eq!(free_name(out.path(), "other"), "other");
    // The same name again (other data seed), stopped after its first checkpoint.
    let mut second = config(data.path(), out.path(), 9);
    second.seed = 8;
    let cancel = CancelToken::new();
    let c = cancel.clone();
    let stopped = train_lora(&second, None, &cancel, &PauseToken::default(), &mut |e| {
        if let TrainingEvent::Checkpoint { .. } = e {
            c.cancel();
        }
    });
    assert!(
        matches!(stopped, Err(kiln_engine::Error::Cancelled)),
        "{stopped:?}"
    );
    let latest = latest_checkpoint(&second).expect("the second run's checkpoint");
    let summary = checkpoint_summary(&latest).unwrap();
    assert_eq!((summary.step, summary.config.seed), (3, 8), "{latest:?}");
    // The first run's checkpoints were moved, not deleted.
    let aside: Vec<_> = std::fs::read_dir(out.path().join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(aside[0].join("shapes-step000006.safetensors").is_file());
    // Resuming it goes on from step 3 of the second run.
    let mut steps = Vec::new();
    train_lora(
        &second,
        Some(&latest),
        &CancelToken::new(),
        &PauseToken::default(),
        &mut |e| {
            if let TrainingEvent::Step { step, .. } = e {
                steps.push(step);
            }
        },
    )
    .unwrap();
    assert_eq!(steps, (4..=9).collect::<Vec<_>>());
}

/// Training with the frozen model in half precision (what a GPU does by default): the run
/// says so, the LoRA it learns and writes stays f32, and its 20-step loss curve follows the
/// f32 run's within f16's (bf16's) rounding — 1e-3 (5e-3) of each loss; measured: 6.7e-5
/// (5.8e-4) on this fixture.
#[test]
fn a_half_precision_base_trains_an_f32_lora_that_follows_the_f32_run() {
    use kiln_engine::device::DeviceSpec;
    use kiln_engine::job::{Precision, PrecisionChoice};
    let data = tempfile::tempdir().unwrap();
    dataset(data.path());
    let out = tempfile::tempdir().unwrap();
    let (f32_losses, p, _) = lora_losses(
        DeviceSpec::Cpu,
        PrecisionChoice::Auto,
        32,
        20,
        data.path(),
        out.path(),
    );
    assert_eq!(p, Precision::F32, "auto is f32 on the CPU");
    for (choice, want, tol) in [
        (PrecisionChoice::F16, Precision::F16, 1e-3),
        (PrecisionChoice::Bf16, Precision::Bf16, 5e-3),
    ] {
        let out = tempfile::tempdir().unwrap();
        let (losses, p, file) =
            lora_losses(DeviceSpec::Cpu, choice, 32, 20, data.path(), out.path());
        assert_eq!(p, want);
        let worst = losses
            .iter()
            .zip(&f32_losses)
            .map(|(a, b)| ((a - b) / b).abs())
            .fold(0.0, f64::max);
        eprintln!("{choice:?}: largest relative loss difference over 20 steps {worst:.2e}");
        assert!(
            worst < tol,
            "{choice:?}: {worst:e}\n{losses:?}\n{f32_losses:?}"
        );
        assert_ne!(
            losses, f32_losses,
            "{choice:?} really ran in half precision"
        );
        let lora = kiln_engine::weights::safetensors::SafeTensors::open(&file).unwrap();
        assert!(
            lora.tensors()
                .values()
                .all(|t| t.dtype == kiln_engine::weights::safetensors::Dtype::F32),
            "the LoRA is written in f32"
        );
    }
}

#[test]
fn a_diverging_run_stops_with_an_error_naming_the_last_checkpoint() {
    use kiln_engine::job::CancelToken;
    use kiln_engine::job::PauseToken;
    use kiln_engine::training::trainer::train_lora;
    let data = tempfile::tempdir().unwrap();
    dataset(data.path());
    let out = tempfile::tempdir().unwrap();
    let mut c = config(data.path(), out.path(), 12);
    c.learning_rate = 1e30;
    c.max_grad_norm = None;
    c.checkpoint_every = 1;
    let err = train_lora(
        &c,
        None,
        &CancelToken::new(),
        &PauseToken::default(),
        &mut |_| {},
    )
    .unwrap_err();
    match &err {
        kiln_engine::Error::TrainingDiverged {
            step,
            last_checkpoint,
            ..
        } => {
            assert!(*step > 1, "the first step is fine, the blow-up comes after");
            let cp = last_checkpoint.clone().unwrap();
            assert!(cp.exists(), "the named checkpoint is there");
        }
        e => panic!("{e:?}"),
    }
    assert!(
        err.to_string()
            .contains("became NaN or infinite; the last good checkpoint is"),
        "{err}"
    );
}

/// SIGKILL at arbitrary moments (some during a checkpoint save) never leaves a checkpoint that
/// does not load: every `*.safetensors` in checkpoints/ opens, and `--resume latest` finishes.
#[test]
fn sigkill_during_training_leaves_loadable_checkpoints() {
    let data = tempfile::tempdir().unwrap();
    dataset(data.path());
    let out = tempfile::tempdir().unwrap();
    let model = crate::common::fixture("tiny-a");
    let args = |steps: &str, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "train",
            "lora",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.path().to_str().unwrap(),
            "--out",
            out.path().to_str().unwrap(),
            "--name",
            "k",
            "--resolution",
            "32",
            "--checkpoint-every",
            "1",
            "--steps",
            steps,
            "--lr",
            "1e-3",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        v
    };
    let checkpoints = out.path().join("checkpoints");
    // The killed runs train on `--device cpu`; the last resume names none (`auto`): a
    // checkpoint resumes on whatever device is asked for.
    for (round, delay_ms) in [7u64, 23, 41].into_iter().enumerate() {
        let resume: &[&str] = if round == 0 {
            &["--device", "cpu"]
        } else {
            &["--resume", "latest", "--device", "cpu"]
        };
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args("100000", resume))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Let it write a few checkpoints, then kill it wherever it is.
        let start = std::time::Instant::now();
        while std::fs::read_dir(&checkpoints)
            .map(|d| d.count())
            .unwrap_or(0)
            < 2 * (round + 1)
            && start.elapsed().as_secs() < 60
        {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        for entry in std::fs::read_dir(&checkpoints).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "safetensors") {
                kiln_engine::weights::safetensors::SafeTensors::open(&p).unwrap_or_else(|e| {
                    panic!("round {round}: {} does not load: {e}", p.display())
                });
            }
        }
    }
    let latest = std::fs::read_dir(&checkpoints)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .max()
        .unwrap();
    let done: usize = latest
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .rsplit("step")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let o = crate::cli::kiln(
        &args(&(done + 2).to_string(), &["--resume", "latest", "--json"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "{}", crate::cli::stderr(&o));
    // The `--json` stream: started at the checkpoint's step, the two steps left (each with
    // its numbers), a checkpoint after each, the output last.
    let events = crate::cli::json_events(&o);
    let started = crate::cli::events_of(&events, "started").next().unwrap();
    assert_eq!(started["from_step"], done as u64, "{started}");
    assert!(started["report"]["entries"].is_array(), "{started}");
    assert_eq!(
        started["device"], "cpu",
        "`auto` resolved to the device it trains on"
    );
    let steps: Vec<_> = crate::cli::events_of(&events, "step").collect();
    assert_eq!(
        steps
            .iter()
            .map(|e| e["step"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [done as u64 + 1, done as u64 + 2]
    );
    for e in &steps {
        assert_eq!(e["total"], done as u64 + 2);
        for k in [
            "loss",
            "smoothed_loss",
            "lr",
            "grad_norm",
            "it_per_s",
            "eta_s",
        ] {
            assert!(e[k].as_f64().is_some_and(f64::is_finite), "{k}: {e}");
        }
    }
    let checkpoints: Vec<_> = crate::cli::events_of(&events, "checkpoint").collect();
    assert_eq!(checkpoints.len(), 2, "{events:?}");
    assert!(
        checkpoints
            .iter()
            .all(|c| std::path::Path::new(c["path"].as_str().unwrap()).is_file())
    );
    let output = out.path().join("k.safetensors");
    assert_eq!(
        events.last().unwrap(),
        &serde_json::json!({"event": "finished", "output": output})
    );
    assert!(output.exists());
}

/// One textual-inversion step against diffusers' textual_inversion.py (2 vectors from "cat"):
/// same token ids, loss, gradient of the new rows and rows after AdamW; the model's own token
/// table is untouched.
#[test]
fn one_textual_inversion_step_matches_diffusers() {
    use kiln_engine::training::textual_inversion::{TiConfig, TiWeights, loss_and_grad};
    let meta = json();
    let mut sd = tiny_a();
    let table_before = values(sd.text_encoder.embeddings.token_embedding.weight.val());
    let config = TiConfig {
        token: "<kiln>".into(),
        vectors: 2,
        init_word: "cat".into(),
    };
    let mut ti = TiWeights::init(&config, &mut sd.tokenizer, &sd.text_encoder).unwrap();
    assert_eq!(ti.ids, [49408, 49409]);
    let (_, init_row) = reference("training", "ti.init_row");
    assert_close(
        "init rows",
        &values(ti.rows.clone()),
        &[init_row.clone(), init_row].concat(),
        1e-6,
    );
    // Kiln writes "<kiln>" in prompts; it expands to "<kiln> <kiln>_1" as diffusers does.
    let prompts = ["a photo of <kiln>", "<kiln> on a table"];
    let mut ids = Vec::new();
    for p in prompts {
        ids.extend(sd.tokenizer.encode(p).unwrap().into_iter().map(i64::from));
    }
    let ids = kiln_engine::burn::tensor::Tensor::<2, kiln_engine::burn::tensor::Int>::from_data(
        kiln_engine::burn::tensor::TensorData::new(ids, [2, 77]),
        sd.device(),
    );
    let (ls, latents) = reference("training", "ti.latents");
    let (_, noise) = reference("training", "ti.noise");
    let alphas = sd.info.scheduler.alphas_cumprod().unwrap();
    let (loss, grad) = loss_and_grad(
        &sd.unet,
        &sd.text_encoder,
        &ti,
        ids,
        tensor::<4>(&ls, latents),
        tensor::<4>(&ls, noise),
        &[250, 600],
        &alphas,
        None,
    )
    .unwrap();
    let want = meta["ti_loss"].as_f64().unwrap();
    assert!(
        ((loss - want) / want).abs() < 1e-4,
        "loss {} vs {want}",
        loss
    );
    assert_close(
        "TI gradient",
        &values(grad.clone()),
        &reference("training", "ti.grad").1,
        1e-4,
    );
    let adamw = AdamWConfig {
        beta1: 0.9,
        beta2: 0.999,
        weight_decay: 1e-2,
        eps: 1e-8,
    };
    ti.rows = adamw.update(ti.rows.clone(), grad, &mut ti.moments, 1, 5e-3);
    assert_close(
        "TI rows after the step",
        &values(ti.rows.clone()),
        &reference("training", "ti.rows_after").1,
        1e-4,
    );
    assert_eq!(
        values(sd.text_encoder.embeddings.token_embedding.weight.val()),
        table_before,
        "the model's own table is untouched"
    );
    // Saved as emb_params, it loads back as an embedding with the same vectors.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kiln.safetensors");
    ti.save(&file, &Default::default()).unwrap();
    let loaded = kiln_engine::adapters::textual_inversion::load(&file, Some("<x>")).unwrap();
    assert_eq!(loaded.vectors.concat(), values(ti.rows.clone()));
}

#[test]
fn a_textual_inversion_run_resumes_identically_and_its_embedding_loads() {
    use kiln_engine::job::CancelToken;
    use kiln_engine::job::PauseToken;
    use kiln_engine::training::run::TrainingEvent;
    use kiln_engine::training::trainer::{latest_checkpoint, train_lora};
    let data = tempfile::tempdir().unwrap();
    dataset(data.path());
    let ti = kiln_engine::training::textual_inversion::TiConfig {
        token: "<shape>".into(),
        vectors: 2,
        init_word: "square".into(),
    };
    let make = |out: &std::path::Path| {
        let mut c = config(data.path(), out, 4);
        c.method = kiln_engine::training::trainer::Method::TextualInversion(ti.clone());
        c.learning_rate = 5e-3;
        c.checkpoint_every = 2;
        // Two micro-batches per step: accumulation resumes exactly too.
        c.gradient_accumulation = 2;
        c.batch_size = 1;
        c
    };
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = kiln_engine::training::trainer::train(
        &make(a_dir.path()),
        None,
        &CancelToken::new(),
        &PauseToken::default(),
        &mut |_| {},
    )
    .unwrap();
    let cancel = CancelToken::new();
    let c = cancel.clone();
    let _ = kiln_engine::training::trainer::train(
        &make(b_dir.path()),
        None,
        &cancel,
        &PauseToken::default(),
        &mut |e| {
            if let TrainingEvent::Checkpoint { step: 2, .. } = e {
                c.cancel();
            }
        },
    );
    let cp = latest_checkpoint(&make(b_dir.path())).unwrap();
    let b = kiln_engine::training::trainer::train(
        &make(b_dir.path()),
        Some(&cp),
        &CancelToken::new(),
        &PauseToken::default(),
        &mut |_| {},
    )
    .unwrap();
    let read = |p: &std::path::Path| {
        kiln_engine::weights::safetensors::SafeTensors::open(p)
            .unwrap()
            .f32("emb_params")
            .unwrap()
    };
    assert_eq!(read(&a), read(&b), "identical embedding after resume");
    // A LoRA checkpoint cannot resume an embedding run.
    let lora_cp = {
        let mut c = make(b_dir.path());
        c.method = kiln_engine::training::trainer::Method::default();
        c
    };
    let err = train_lora(
        &lora_cp,
        Some(&cp),
        &CancelToken::new(),
        &PauseToken::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot resume from this checkpoint"),
        "{err}"
    );
    let mut sd = crate::lora::session();
    sd.load_embedding(kiln_engine::adapters::AdapterId(0), &a, Some("<shape>"))
        .unwrap();
    let mut req = crate::parity::ddim_request("tiny-a");
    req.prompts = vec!["a <shape>".into(), "a square".into()];
    let out = sd
        .model()
        .generate(&req, &CancelToken::new(), &mut |_| {})
        .unwrap();
    assert_eq!(out.images.len(), 2);
}

#[test]
fn kiln_dataset_shapes_is_deterministic_and_captions_match_the_pixels() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let files = crate::common::shapes_dataset(a.path(), &["--count", "40", "--seed", "3"]);
    crate::common::shapes_dataset(b.path(), &["--count", "40", "--seed", "3"]);
    assert_eq!(files.len(), 40);
    for f in &files {
        let name = f.file_name().unwrap();
        assert_eq!(
            std::fs::read(f).unwrap(),
            std::fs::read(b.path().join(name)).unwrap(),
            "same seed, same bytes"
        );
        let caption = std::fs::read_to_string(f.with_extension("txt")).unwrap();
        // Single shapes on a plain background: the detector reads the caption back.
        let scene = kiln_shapes::scene(3, name.to_string_lossy()[..5].parse().unwrap());
        assert_eq!(scene.caption(), caption);
        if let (kiln_shapes::Background::Plain(_), [s]) = (&scene.background, &scene.shapes[..]) {
            let d = kiln_shapes::detect(&kiln_engine::image::read_image(f).unwrap()).unwrap();
            assert_eq!(
                (d.colour, d.shape, d.position),
                (s.colour, s.shape, s.position),
                "{caption}"
            );
        }
    }
    // It is a valid training folder: every image has its caption.
    let tok = kiln_engine::tokenizer::ClipTokenizer::sd15().unwrap();
    let report = kiln_engine::training::dataset::validate(
        &files,
        &kiln_engine::training::dataset::DatasetOptions {
            resolution: 64,
            ..Default::default()
        },
        &tok,
    )
    .unwrap();
    assert_eq!(report.summary(), "40 images: 40 usable");
}

#[test]
fn kiln_dataset_shapes_can_draw_only_single_shapes_on_plain_backgrounds() {
    let dir = tempfile::tempdir().unwrap();
    let files = crate::common::shapes_dataset(
        dir.path(),
        &[
            "--count",
            "30",
            "--seed",
            "3",
            "--max-shapes",
            "1",
            "--backgrounds",
            "plain",
        ],
    );
    assert_eq!(files.len(), 30);
    for f in &files {
        let caption = std::fs::read_to_string(f.with_extension("txt")).unwrap();
        assert!(
            !caption.contains(" and ")
                && !caption.contains("gradient")
                && !caption.contains("half")
                && caption.ends_with(" background"),
            "{caption}"
        );
        // Every one is read back by the detector: one shape, plain background.
        let d = kiln_shapes::detect(&kiln_engine::image::read_image(f).unwrap()).unwrap();
        let colour = kiln_shapes::COLOURS[d.colour].0;
        let shape = kiln_shapes::SHAPES[d.shape];
        assert!(caption.contains(&format!("{colour} {shape}")), "{caption}");
    }
    for bad in [["--max-shapes", "3"], ["--backgrounds", "plaid"]] {
        let o = crate::cli::kiln(&[
            "dataset",
            "shapes",
            "--out",
            dir.path().to_str().unwrap(),
            bad[0],
            bad[1],
        ]);
        assert!(!o.status.success());
        assert!(
            crate::cli::stderr(&o).contains(bad[1]),
            "{}",
            crate::cli::stderr(&o)
        );
    }
}

#[test]
fn kiln_eval_shapes_scores_generated_images_with_the_detector() {
    let o = crate::cli::kiln(&[
        "eval",
        "shapes",
        "--model",
        crate::common::fixture("tiny-b").to_str().unwrap(),
        "--limit",
        "3",
        "--steps",
        "2",
        "--json",
    ]);
    assert!(o.status.success(), "{}", crate::cli::stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["prompts"], 3);
    let items = report["items"].as_array().unwrap();
    assert_eq!(
        items[0]["prompt"],
        "a large green circle at the top left on a white background"
    );
    // The scores are what the items say (the random test model draws noise, so the numbers
    // are low; the shipped model's eval is where they matter).
    let share = |k: &str| items.iter().filter(|i| i[k] == true).count() as f64 / 3.0;
    for k in ["colour", "shape", "position", "background"] {
        assert_eq!(
            report[format!("{k}_accuracy")].as_f64().unwrap(),
            share(k),
            "{k}"
        );
    }
}

/// `--device` on `kiln train`: a backend this build lacks is refused before anything runs,
/// naming what the build has.
#[test]
fn training_on_a_device_this_build_lacks_is_a_named_error() {
    let missing = ["vulkan", "cuda", "metal", "wgpu"]
        .into_iter()
        .find(|d| !kiln_engine::device::available().contains(d))
        .expect("a CPU test build lacks some GPU backend");
    let data = tempfile::tempdir().unwrap();
    dataset(data.path());
    let out = tempfile::tempdir().unwrap();
    let model = crate::common::fixture("tiny-a");
    for kind in ["lora", "ti"] {
        let mut args = vec![
            "train",
            kind,
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.path().to_str().unwrap(),
            "--out",
            out.path().to_str().unwrap(),
            "--resolution",
            "32",
            "--steps",
            "1",
            "--device",
            missing,
        ];
        if kind == "ti" {
            args.extend(["--token", "<t>"]);
        }
        let o = crate::cli::kiln(&args);
        let err = crate::cli::stderr(&o);
        assert!(!o.status.success(), "{err}");
        assert!(
            err.contains(&format!(
                "device '{missing}' is not available in this build"
            )) && err.contains("compiled in: cpu"),
            "{err}"
        );
        assert!(
            !out.path().join("checkpoints").exists(),
            "nothing was written"
        );
    }
}
