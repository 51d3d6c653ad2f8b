//! LoRA training against diffusers + PEFT + torch AdamW (`fixtures/ref/training.*`, made by
//! `fixtures/make_training_fixtures.py`): same initial LoRA weights, latents, noise, timesteps
//! and text embeddings → same loss, gradients and updated weights.

use kiln_engine::training::adamw::AdamWConfig;
use kiln_engine::training::lora::{
    Batch, LoraConfig, LoraWeights, StepOptions, loss_and_grads, train_step,
};

use crate::common::{assert_close, reference, tensor};
use crate::lora::tiny_a;

fn json() -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(crate::common::fixture("ref/training.json")).unwrap(),
    )
    .unwrap()
}

/// PEFT's `lora_A.weight` `[r, in]` / `lora_B.weight` `[out, r]` → Kiln's `[in, r]` / `[r, out]`.
fn peft_pair(prefix: &str, path: &str) -> (Vec<f32>, Vec<f32>) {
    let t = |name: &str| {
        let (shape, v) = reference("training", &format!("{prefix}.{path}.{name}.weight"));
        let (rows, cols) = (shape[0], shape[1]);
        (0..cols)
            .flat_map(|c| (0..rows).map(move |r| (r, c)))
            .map(|(r, c)| v[r * cols + c])
            .collect::<Vec<f32>>()
    };
    (t("lora_A"), t("lora_B"))
}

fn setup() -> (kiln_engine::pipeline::StableDiffusion, LoraWeights, Batch) {
    let mut sd = tiny_a();
    let config = LoraConfig {
        rank: 4,
        alpha: 8.0,
        ..LoraConfig::default()
    };
    let device = sd.device().clone();
    let mut weights = LoraWeights::init(&mut sd.unet, &config, 0, &device).unwrap();
    assert_eq!(
        weights.layers.len(),
        reference_layers(),
        "one LoRA per targeted layer, as PEFT"
    );
    for l in &mut weights.layers {
        let (a, b) = peft_pair("init", &l.path);
        let (din, r) = (l.down.dims()[0], l.down.dims()[1]);
        let dout = l.up.dims()[1];
        l.down = tensor::<2>(&[din, r], a);
        l.up = tensor::<2>(&[r, dout], b);
    }
    let (ls, latents) = reference("training", "latents");
    let (_, noise) = reference("training", "noise");
    let (cs, context) = reference("training", "context");
    let batch = Batch {
        latents: tensor::<4>(&ls, latents),
        noise: tensor::<4>(&ls, noise),
        timesteps: vec![100, 700],
        context: tensor::<3>(&cs, context),
    };
    (sd, weights, batch)
}

fn reference_layers() -> usize {
    let text = std::fs::read(crate::common::fixture("ref/training.safetensors")).unwrap();
    let n = u64::from_le_bytes(text[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8_lossy(&text[8..8 + n]);
    header.matches("\"init.").count() / 2
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
    let (stats, grads) = loss_and_grads(&sd.unet, &weights, &batch, &alphas, None).unwrap();
    let want_loss = meta["losses"]["plain"][0].as_f64().unwrap();
    assert!(
        ((stats.loss - want_loss) / want_loss).abs() < 1e-4,
        "loss {} vs {want_loss}",
        stats.loss
    );
    for (l, (gd, gu)) in weights.layers.iter().zip(grads) {
        let (a, b) = peft_pair("plain.grad", &l.path);
        assert_close(&format!("∂down {}", l.path), &values(gd), &a, 1e-4);
        assert_close(&format!("∂up {}", l.path), &values(gu), &b, 1e-4);
    }
    // Two AdamW steps: weights after each.
    for step in 1..=2 {
        let stats = train_step(
            &sd.unet,
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
            let (a, b) = peft_pair(&format!("plain.step{step}"), &l.path);
            assert_close(
                &format!("step {step} down {}", l.path),
                &values(l.down.clone()),
                &a,
                1e-4,
            );
            assert_close(
                &format!("step {step} up {}", l.path),
                &values(l.up.clone()),
                &b,
                1e-4,
            );
        }
    }
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
    let (_, grads) = loss_and_grads(&sd.unet, &weights, &batch, &alphas, Some(5.0)).unwrap();
    for (l, (gd, gu)) in weights.layers.iter().zip(grads) {
        let (a, b) = peft_pair("min_snr.grad", &l.path);
        assert_close(&format!("min-SNR ∂down {}", l.path), &values(gd), &a, 1e-4);
        assert_close(&format!("min-SNR ∂up {}", l.path), &values(gu), &b, 1e-4);
    }
    let stats = train_step(
        &sd.unet,
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
        let (a, b) = peft_pair("min_snr.step1", &l.path);
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
