//! Parity on the wgpu backend (`cargo test -p kiln-engine --features wgpu --test wgpu`), the
//! path most users' GPUs take: the text encoder, UNet, VAE and the DDIM pipeline against
//! diffusers, and one LoRA training step against PEFT, each on the reference fixtures of
//! `tests/fixtures`. On a machine without a GPU it runs through Mesa's software Vulkan
//! (lavapipe, Debian `mesa-vulkan-drivers`), as `.ci/run` does. It lives in the engine crate
//! so that building it rebuilds only the engine for the `wgpu` feature, not the studio.
//! Tolerances are the CPU tests' (1e-4 of the largest value) except where a GPU's summation
//! order shows (gradients, 1e-3).
#![cfg(feature = "wgpu")]
#![allow(missing_docs, clippy::unwrap_used, dead_code)]

#[path = "../../tests/fixture_store.rs"]
mod fixture_store;
#[path = "../../tests/reference.rs"]
mod reference;

use kiln_engine::burn::tensor::{Device, Int, Tensor, TensorData};
use kiln_engine::device::DeviceSpec;
use kiln_engine::job::CancelToken;
use kiln_engine::pipeline::StableDiffusion;
use kiln_engine::training::adamw::AdamWConfig;
use kiln_engine::training::lora::{StepOptions, loss_and_grads, train_step};

use reference::{
    assert_close, ddim_request, fixture, image_mean_abs_diff, lora_training_setup, peft_pair,
    reference, tensor_on, training_json, values,
};

const TOL: f32 = 1e-4;

/// The wgpu device, opened as every job opens it (probed: a missing adapter fails here).
fn wgpu() -> Device {
    let opened = DeviceSpec::Wgpu
        .open()
        .expect("a wgpu adapter (lavapipe in CI)");
    assert_eq!(opened.spec, DeviceSpec::Wgpu);
    opened.device
}

/// The text encoder, UNet, VAE (both ways) and a whole DDIM txt2img with CFG of fixture `m` on
/// wgpu against diffusers. One test per fixture, so that they run side by side (on lavapipe
/// each takes minutes).
fn components_and_ddim_match_diffusers(m: &str) {
    let device = wgpu();
    let sd = StableDiffusion::load(&fixture(m), None, &device).unwrap();
    // Text encoder.
    let (ids_shape, ids) = reference(m, "text.input_ids");
    let ids: Vec<i64> = ids.iter().map(|v| *v as i64).collect();
    let ids =
        Tensor::<2, Int>::from_data(TensorData::new(ids, [ids_shape[0], ids_shape[1]]), &device);
    let (_, want) = reference(m, "text.last_hidden_state");
    let got = values(sd.text_encoder.forward(ids, 1));
    assert_close(&format!("{m} wgpu text"), &got, &want, TOL);
    // UNet.
    let (s_shape, sample) = reference(m, "unet.sample");
    let (c_shape, context) = reference(m, "unet.encoder_hidden_states");
    let (_, want) = reference(m, "unet.out");
    let got = sd.unet.forward(
        tensor_on::<4>(&s_shape, sample, &device),
        &vec![537.0; s_shape[0]],
        &tensor_on::<3>(&c_shape, context, &device),
    );
    assert_close(&format!("{m} wgpu UNet"), &values(got), &want, TOL);
    // VAE, both ways.
    let (z_shape, z) = reference(m, "vae.latents");
    let (_, want) = reference(m, "vae.decoded");
    let got = values(sd.vae.decode(tensor_on::<4>(&z_shape, z, &device)));
    assert_close(&format!("{m} wgpu VAE decode"), &got, &want, TOL);
    let (x_shape, x) = reference(m, "vae.image");
    let (_, want) = reference(m, "vae.posterior_mean");
    let got = values(sd.vae.encode_mean(tensor_on::<4>(&x_shape, x, &device)));
    assert_close(&format!("{m} wgpu VAE encode"), &got, &want, TOL);
    // A whole DDIM txt2img with CFG.
    let out = sd
        .generate(&ddim_request(m), &CancelToken::new(), &mut |_| {})
        .unwrap();
    let (_, want_latents) = reference(m, "ddim.latents_out");
    assert_close(
        &format!("{m} wgpu DDIM latents"),
        &out.latents.values,
        &want_latents,
        TOL,
    );
    let diff = image_mean_abs_diff(&out.images, &reference(m, "ddim.image").1);
    assert!(diff <= 0.3, "{m} wgpu image mean |Δ| {diff}");
}

#[test]
fn wgpu_tiny_a_text_encoder_unet_vae_and_ddim_match_diffusers() {
    components_and_ddim_match_diffusers("tiny-a");
}

#[test]
fn wgpu_tiny_b_text_encoder_unet_vae_and_ddim_match_diffusers() {
    components_and_ddim_match_diffusers("tiny-b");
}

/// One LoRA training step on the GPU: PEFT's loss and gradients, and its weights after an
/// AdamW step (the CPU test `one_lora_step_matches_peft_loss_gradients_and_update` on wgpu).
#[test]
fn wgpu_lora_training_step_matches_peft() {
    let meta = training_json();
    let (sd, mut weights, batch) = lora_training_setup(&wgpu());
    let alphas = sd.info.scheduler.alphas_cumprod().unwrap();
    let (loss, grads) =
        loss_and_grads(&sd.unet, &sd.text_encoder, &weights, &batch, &alphas, None).unwrap();
    let want_loss = meta["losses"]["plain"][0].as_f64().unwrap();
    assert!(
        ((loss - want_loss) / want_loss).abs() < 1e-4,
        "wgpu loss {loss} vs {want_loss}"
    );
    for (l, (gd, gu)) in weights.layers.iter().zip(grads) {
        let (a, b) = peft_pair(l, "plain.grad", &l.path);
        assert_close(&format!("wgpu ∂down {}", l.path), &values(gd), &a, 1e-3);
        assert_close(&format!("wgpu ∂up {}", l.path), &values(gu), &b, 1e-3);
    }
    let adamw = AdamWConfig {
        beta1: 0.9,
        beta2: 0.999,
        weight_decay: 1e-2,
        eps: 1e-8,
    };
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
            t: 1,
        },
    )
    .unwrap();
    assert!(((stats.loss - want_loss) / want_loss).abs() < 1e-4);
    // PEFT starts the up matrices at zero, so the down matrices get no gradient at step 1 and
    // each up element moves by ≈ lr·g/|g|: compare the up matrices where the gradient is clear
    // of zero (near zero, AdamW's g/(|g| + ε) turns float noise into a visible difference).
    let mut compared = 0;
    for l in &weights.layers {
        let (_, want) = peft_pair(l, "plain.step1", &l.path);
        let (_, grad) = peft_pair(l, "plain.grad", &l.path);
        let got = values(l.up.clone());
        let max_grad = grad.iter().fold(0f32, |m, g| m.max(g.abs()));
        let max_ref = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        for i in 0..want.len() {
            if grad[i].abs() > 1e-2 * max_grad {
                let d = (got[i] - want[i]).abs() / max_ref;
                assert!(d < 1e-3, "wgpu step 1 up {} [{i}]: {d:e}", l.path);
                compared += 1;
            }
        }
    }
    assert!(compared > 1000, "only {compared} elements compared");
}

/// Whole LoRA runs on the GPU (16×16 images, so that lavapipe runs them in a few minutes): 10
/// steps at f32 follow the CPU's loss curve to 1e-3 of each loss; 6 steps with the frozen
/// model in f16 (the GPU default) to 1e-2; and a run stopped at its checkpoint on the GPU
/// resumes on the CPU where it left off: the resumed steps' losses follow a run that never
/// left the CPU to 1e-3, its weights to 1e-3 in RMS (AdamW's first steps move each weight by
/// ≈ lr·sign(gradient), so a gradient within float noise of zero may move the other way on
/// another device: the largest single difference is no measure of a resume).
#[test]
fn wgpu_lora_runs_follow_the_cpu_and_resume_on_it() {
    use kiln_engine::job::{PauseToken, Precision, PrecisionChoice};
    use kiln_engine::training::run::TrainingEvent;
    use kiln_engine::training::trainer::{TrainingConfig, latest_checkpoint, train_lora};
    use kiln_engine::weights::safetensors::SafeTensors;
    const RES: usize = 16;
    let data = tempfile::tempdir().unwrap();
    reference::training_dataset(data.path());
    let run = |device: DeviceSpec, precision, steps| {
        let out = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let r = reference::lora_losses(
            device.clone(),
            precision,
            RES,
            steps,
            data.path(),
            out.path(),
        );
        eprintln!(
            "{device} {precision:?}: {steps} steps in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        r
    };
    let (cpu, _, _) = run(DeviceSpec::Cpu, PrecisionChoice::F32, 10);
    let worst = |losses: &[f64], of: &[f64]| {
        losses
            .iter()
            .zip(of)
            .map(|(a, b)| ((a - b) / b).abs())
            .fold(0.0, f64::max)
    };
    let (gpu, p, _) = run(DeviceSpec::Wgpu, PrecisionChoice::F32, 10);
    assert_eq!(p, Precision::F32);
    eprintln!(
        "wgpu f32: largest relative loss difference {:.2e}",
        worst(&gpu, &cpu)
    );
    assert!(worst(&gpu, &cpu) < 1e-3, "{gpu:?}\n{cpu:?}");
    let (half, p, _) = run(DeviceSpec::Wgpu, PrecisionChoice::Auto, 6);
    assert_eq!(
        p,
        Precision::F16,
        "a GPU without bf16 trains over an f16 base"
    );
    eprintln!(
        "wgpu f16: largest relative loss difference {:.2e}",
        worst(&half, &cpu)
    );
    assert!(worst(&half, &cpu) < 1e-2, "{half:?}\n{cpu:?}");

    // Train → resume across devices.
    let config = |out: &std::path::Path, device| TrainingConfig {
        device,
        precision: PrecisionChoice::F32,
        ..reference::with_resolution(reference::training_config(data.path(), out, 6), RES)
    };
    let losses_of =
        |config: &TrainingConfig, resume: Option<&std::path::Path>, cancel: &CancelToken| {
            let mut losses = Vec::new();
            let c = cancel.clone();
            let file = train_lora(
                config,
                resume,
                cancel,
                &PauseToken::default(),
                &mut |e| match e {
                    TrainingEvent::Step { loss, .. } => losses.push(loss),
                    TrainingEvent::Checkpoint { step: 3, .. } if resume.is_none() => c.cancel(),
                    _ => {}
                },
            );
            (file, losses)
        };
    let (split, straight) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (stopped, _) = losses_of(
        &config(split.path(), DeviceSpec::Wgpu),
        None,
        &CancelToken::new(),
    );
    assert!(
        matches!(stopped, Err(kiln_engine::Error::Cancelled)),
        "{stopped:?}"
    );
    let checkpoint = latest_checkpoint(&config(split.path(), DeviceSpec::Cpu)).unwrap();
    let (resumed, resumed_losses) = losses_of(
        &config(split.path(), DeviceSpec::Cpu),
        Some(&checkpoint),
        &CancelToken::new(),
    );
    let mut cpu_losses = Vec::new();
    let cpu_only = train_lora(
        &config(straight.path(), DeviceSpec::Cpu),
        None,
        &CancelToken::new(),
        &PauseToken::default(),
        &mut |e| {
            if let TrainingEvent::Step { loss, .. } = e {
                cpu_losses.push(loss)
            }
        },
    )
    .unwrap();
    assert_eq!(resumed_losses.len(), 3, "steps 4 to 6 ran on the CPU");
    eprintln!(
        "resumed on the CPU: largest relative loss difference {:.2e}",
        worst(&resumed_losses, &cpu_losses[3..])
    );
    assert!(worst(&resumed_losses, &cpu_losses[3..]) < 1e-3);
    let (a, b) = (
        SafeTensors::open(&resumed.unwrap()).unwrap(),
        SafeTensors::open(&cpu_only).unwrap(),
    );
    assert_eq!(a.tensors().len(), b.tensors().len());
    let (mut diff, mut norm) = (0f64, 0f64);
    for name in b.tensors().keys() {
        for (x, y) in a.f32(name).unwrap().iter().zip(b.f32(name).unwrap()) {
            diff += f64::from(x - y).powi(2);
            norm += f64::from(y).powi(2);
        }
    }
    let rms = (diff / norm).sqrt();
    eprintln!("resumed on the CPU: weights differ by {rms:.2e} in RMS");
    assert!(rms < 1e-3, "{rms:e}");
}
