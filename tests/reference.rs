//! Reading the diffusers/PEFT reference outputs of `tests/fixtures` and comparing with them:
//! shared by the integration tests (`tests/common.rs` re-exports it) and the engine's own
//! GPU-backend tests (`engine/tests/wgpu.rs`, `#[path]`-included), so it uses only
//! `kiln_engine` and [`crate::fixture_store`].

use std::path::{Path, PathBuf};

use kiln_engine::burn::tensor::{Device, Tensor, TensorData};
use kiln_engine::job::LatentsData;
use kiln_engine::pipeline::GenerationRequest;
use kiln_engine::schedulers::Sampler;
use kiln_engine::training::lora::{Batch, LayerKind, LoraConfig, LoraLayer, LoraWeights, Text};
use kiln_engine::weights::safetensors::SafeTensors;

/// `tests/fixtures/…`, with the fixture models expanded from how git stores them (the first
/// call does it: [`crate::fixture_store::materialize`]).
pub fn fixture(rel: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    crate::fixture_store::materialize(&root);
    root.join(rel)
}

/// A reference tensor from `fixtures/ref/{model}.safetensors`: (shape, values).
pub fn reference(model: &str, name: &str) -> (Vec<usize>, Vec<f32>) {
    let file = SafeTensors::open(&fixture(&format!("ref/{model}.safetensors"))).unwrap();
    let shape = file
        .info(name)
        .unwrap_or_else(|| panic!("reference {model}:{name} missing"))
        .shape
        .clone();
    (shape, file.f32(name).unwrap())
}

/// The JSON parameters recorded beside the references.
pub fn reference_json(model: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(&format!("ref/{model}.json"))).unwrap())
        .unwrap()
}

/// Host data → tensor on `device`.
pub fn tensor_on<const D: usize>(shape: &[usize], values: Vec<f32>, device: &Device) -> Tensor<D> {
    let shape: [usize; D] = shape.try_into().unwrap();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Tensor → host values.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

/// max|a − b| / max|b|.
pub fn relative_max_error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "length differs");
    let max_ref = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_diff = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    max_diff / max_ref.max(1e-12)
}

/// Asserts max|Δ| / max|ref| ≤ `tol`, printing the error.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let err = relative_max_error(got, want);
    eprintln!("{what}: max|Δ|/max|ref| = {err:.3e}");
    assert!(err <= tol, "{what}: relative error {err:.3e} > {tol:.0e}");
}

/// The DDIM request recorded in the reference JSON, with the reference's initial noise.
pub fn ddim_request(m: &str) -> GenerationRequest {
    let json = reference_json(m);
    let d = &json["ddim"];
    let (shape, noise) = reference(m, "ddim.latents_in");
    GenerationRequest {
        prompts: serde_json::from_value(d["prompts"].clone()).unwrap(),
        negatives: serde_json::from_value(d["negative_prompts"].clone()).unwrap(),
        sampler: Sampler::Ddim {
            eta: d["eta"].as_f64().unwrap(),
        },
        steps: d["num_inference_steps"].as_u64().unwrap() as usize,
        cfg: d["guidance_scale"].as_f64().unwrap(),
        seed: 0,
        width: d["width"].as_u64().unwrap() as usize,
        height: d["height"].as_u64().unwrap() as usize,
        batch: 1,
        latents: Some(LatentsData {
            shape: shape.try_into().unwrap(),
            values: noise,
        }),
        clip_skip: 1,
        init_image: None,
        preview: false,
        step_noise: None,
    }
}

/// Mean |Δ| on 0–255 between our RGB8 images and diffusers' float images `[B, H, W, 3]` in 0..1.
pub fn image_mean_abs_diff(ours: &[kiln_engine::image::RgbImage], reference: &[f32]) -> f64 {
    let ours: Vec<u8> = ours.iter().flat_map(|i| i.pixels.iter().copied()).collect();
    assert_eq!(ours.len(), reference.len());
    let total: f64 = ours
        .iter()
        .zip(reference)
        .map(|(a, b)| (*a as f64 - (*b as f64 * 255.0).round()).abs())
        .sum();
    total / ours.len() as f64
}

/// The LoRA training references (`fixtures/ref/training.json`, made by
/// `fixtures/make_training_fixtures.py`).
pub fn training_json() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("ref/training.json")).unwrap()).unwrap()
}

/// PEFT's `lora_A.weight` / `lora_B.weight` of `key` → Kiln's layout for `layer`: a linear's
/// `[r, in]` / `[out, r]` transposed to `[in, r]` / `[r, out]`; a convolution's
/// `[r, in, k, k]` / `[out, r, 1, 1]` flattened as they are.
pub fn peft_pair(layer: &LoraLayer, prefix: &str, key: &str) -> (Vec<f32>, Vec<f32>) {
    let t = |name: &str| {
        let (shape, v) = reference("training", &format!("{prefix}.{key}.{name}.weight"));
        if layer.kind != LayerKind::Linear {
            return v;
        }
        let (rows, cols) = (shape[0], shape[1]);
        (0..cols)
            .flat_map(|c| (0..rows).map(move |r| (r, c)))
            .map(|(r, c)| v[r * cols + c])
            .collect::<Vec<f32>>()
    };
    (t("lora_A"), t("lora_B"))
}

/// tiny-a on `device` with PEFT's initial LoRA weights (rank 4, alpha 8, the attention
/// projections) and the reference batch: the start of the one-step training parity.
pub fn lora_training_setup(
    device: &Device,
) -> (kiln_engine::pipeline::StableDiffusion, LoraWeights, Batch) {
    let mut sd =
        kiln_engine::pipeline::StableDiffusion::load(&fixture("tiny-a"), None, device).unwrap();
    let config = LoraConfig {
        rank: 4,
        alpha: 8.0,
        ..LoraConfig::default()
    };
    let mut weights =
        LoraWeights::init(&mut sd.unet, &mut sd.text_encoder, &config, 0, device).unwrap();
    assert_eq!(
        weights.layers.len(),
        reference_layers(),
        "one LoRA per targeted layer, as PEFT"
    );
    for l in &mut weights.layers {
        let (a, b) = peft_pair(l, "init", &l.path);
        l.down = tensor_on::<2>(&l.down.dims(), a, device);
        l.up = tensor_on::<2>(&l.up.dims(), b, device);
    }
    let (ls, latents) = reference("training", "latents");
    let (_, noise) = reference("training", "noise");
    let (cs, context) = reference("training", "context");
    let batch = Batch {
        latents: tensor_on::<4>(&ls, latents, device),
        noise: tensor_on::<4>(&ls, noise, device),
        timesteps: vec![100, 700],
        text: Text::Context(tensor_on::<3>(&cs, context, device)),
    };
    (sd, weights, batch)
}

/// How many LoRA layers PEFT's initial weights name.
fn reference_layers() -> usize {
    let text = std::fs::read(fixture("ref/training.safetensors")).unwrap();
    let n = u64::from_le_bytes(text[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8_lossy(&text[8..8 + n]);
    header.matches("\"init.").count() / 2
}

/// A small training dataset: three distinct images (one captioned), one corrupt file.
pub fn training_dataset(dir: &std::path::Path) {
    for (i, rgb) in [[220u8, 30, 30], [30, 30, 220], [30, 200, 60]]
        .iter()
        .enumerate()
    {
        let (w, h) = (40, 48);
        let pixels = (0..w * h)
            .flat_map(|p| {
                if (p % w) / 10 == (p / w) / 12 {
                    [255, 255, 255]
                } else {
                    *rgb
                }
            })
            .collect();
        kiln_engine::image::write_png(
            &dir.join(format!("img{i}.png")),
            &kiln_engine::image::RgbImage {
                width: w,
                height: h,
                pixels,
            },
            &[],
        )
        .unwrap();
    }
    std::fs::write(dir.join("img0.txt"), "a red square with a white diagonal").unwrap();
    std::fs::write(dir.join("broken.jpg"), b"\xff\xd8 not really a jpeg").unwrap();
}

/// A LoRA run of `steps` steps on tiny-a over [`training_dataset`] (32×32, batch 2, flips
/// and random crops, a checkpoint every 3 steps), written to `out`.
pub fn training_config(
    data: &std::path::Path,
    out: &std::path::Path,
    steps: usize,
) -> kiln_engine::training::trainer::TrainingConfig {
    kiln_engine::training::trainer::TrainingConfig {
        model: fixture("tiny-a"),
        data: data.to_owned(),
        output: out.to_owned(),
        name: "shapes".into(),
        dataset: kiln_engine::training::dataset::DatasetOptions {
            resolution: 32,
            default_caption: "a shape".into(),
            flip: true,
            random_crop: true,
            ..Default::default()
        },
        max_steps: Some(steps),
        batch_size: 2,
        learning_rate: 1e-3,
        checkpoint_every: 3,
        seed: 7,
        ..Default::default()
    }
}

/// The losses of a LoRA run ([`training_config`] at `resolution`) of `steps` steps on `device`
/// at `precision`, the precision its start reported, and the file it wrote.
pub fn lora_losses(
    device: kiln_engine::device::DeviceSpec,
    precision: kiln_engine::job::PrecisionChoice,
    resolution: usize,
    steps: usize,
    data: &std::path::Path,
    out: &std::path::Path,
) -> (Vec<f64>, kiln_engine::job::Precision, std::path::PathBuf) {
    use kiln_engine::training::run::TrainingEvent;
    let mut losses = Vec::new();
    let mut started = None;
    let file = kiln_engine::training::trainer::train_lora(
        &kiln_engine::training::trainer::TrainingConfig {
            precision,
            device,
            checkpoint_every: 0,
            ..with_resolution(training_config(data, out, steps), resolution)
        },
        None,
        &kiln_engine::job::CancelToken::new(),
        &kiln_engine::job::PauseToken::default(),
        &mut |e| match e {
            TrainingEvent::Step { loss, .. } => losses.push(loss),
            TrainingEvent::Started { precision, .. } => started = Some(precision),
            _ => {}
        },
    )
    .unwrap();
    (losses, started.expect("a started event"), file)
}

/// `config` training at `resolution` (square).
pub fn with_resolution(
    mut config: kiln_engine::training::trainer::TrainingConfig,
    resolution: usize,
) -> kiln_engine::training::trainer::TrainingConfig {
    config.dataset.resolution = resolution;
    config
}
