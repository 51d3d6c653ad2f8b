//! Benchmarks (not tests): a full-size SD 1.5 UNet forward with random weights, a whole
//! tiny-model txt2img, seconds per step of every sampler on the tiny model, LoRA stacks, a
//! LoRA training step, the two `kiln train base` steps, and the shipped model's txt2img. `benches/compare.sh` runs these and `benches/torch_side.py` (the same
//! work in PyTorch/diffusers) in one go and prints the ratios.
//!
//! `cargo bench -p kiln-engine --bench sd --profile dev [-- DEVICE] [--quick]` (DEVICE: cpu,
//! ndarray, wgpu, … — what this build has). Prints one JSON object per measurement.
//! `--quick` (or `KILN_BENCH_QUICK=1`) runs every benchmark once at its smallest size — what CI
//! does so a benchmark that breaks fails the run; its timings mean nothing.

#![allow(missing_docs, clippy::unwrap_used)]

use std::path::Path;
use std::time::Instant;

use kiln_engine::burn::tensor::{Device, Tensor, TensorData};
use kiln_engine::job::CancelToken;
use kiln_engine::loader::Loader;
use kiln_engine::models::config::sd15;
use kiln_engine::models::unet_2d_condition::UNet2DConditionModel;
use kiln_engine::pipeline::{GenerationRequest, StableDiffusion};
use kiln_engine::schedulers::Sampler;

/// How big and how often: the real measurements, or CI's one quick pass.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// Timed runs after the warm-up.
    runs: usize,
    /// Latent side of the full-size SD 1.5 UNet forward.
    unet_latent: usize,
    /// Denoising steps of the txt2img benchmarks.
    steps: usize,
    /// Batch of the whole-model training steps.
    base_batch: usize,
    /// Warm-up steps of the LoRA training step.
    train_warmup: usize,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Sizes {
                runs: 1,
                unet_latent: 8,
                steps: 2,
                base_batch: 2,
                train_warmup: 1,
            }
        } else {
            Sizes {
                runs: std::env::var("KILN_BENCH_RUNS")
                    .ok()
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(3),
                unet_latent: 32,
                steps: 0,
                base_batch: 32,
                train_warmup: 3,
            }
        }
    }

    /// `steps` in quick mode, else `full`.
    fn steps_or(&self, full: usize) -> usize {
        if self.steps > 0 { self.steps } else { full }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn randn(shape: [usize; 4], device: &Device) -> Tensor<4> {
    let mut noise = kiln_engine::schedulers::Noise::new(&(0..shape[0] as u64).collect::<Vec<_>>());
    noise.randn(shape, device)
}

fn bench_unet(device: &Device, device_name: &str, sizes: Sizes) {
    let runs = sizes.runs;
    let side = sizes.unet_latent;
    let config = sd15().unet;
    let mut ld = Loader::random(0, device);
    let unet = UNet2DConditionModel::load(&config, &mut ld).unwrap();
    let sample = randn([2, 4, side, side], device);
    let context: Tensor<3> = Tensor::from_data(
        TensorData::new(vec![0.1f32; 2 * 77 * 768], [2, 77, 768]),
        device,
    );
    let mut times = Vec::new();
    for i in 0..runs + 1 {
        let t0 = Instant::now();
        let out = unet.forward(sample.clone(), &[500.0, 500.0], &context);
        // Reading a value forces lazy/fused backends to finish.
        let _ = out.into_data();
        if i > 0 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    println!(
        r#"{{"bench": "unet_sd15_{side}x{side}_b2", "impl": "kiln-{device_name}", "seconds": {:.4}}}"#,
        median(times)
    );
}

fn tiny_request() -> GenerationRequest {
    GenerationRequest {
        prompts: vec![
            "a red circle on a blue background".into(),
            "a photo of a cat".into(),
        ],
        negatives: vec!["blurry".into(), "ugly, low quality".into()],
        sampler: Sampler::Ddim { eta: 0.0 },
        steps: 25,
        cfg: 7.5,
        seed: 0,
        width: 64,
        height: 64,
        batch: 1,
        latents: None,
        clip_skip: 1,
        init_image: None,
        preview: false,
        step_noise: None,
    }
}

/// The fixture models as git stores them, expanded (shared with the integration tests).
#[path = "../../tests/fixture_store.rs"]
mod fixture_store;

fn tiny_model(device: &Device) -> StableDiffusion {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    fixture_store::materialize(&fixtures);
    StableDiffusion::load(&fixtures.join("tiny-a"), None, device).unwrap()
}

fn bench_tiny_txt2img(device: &Device, device_name: &str, sizes: Sizes, runs: usize) {
    let sd = tiny_model(device);
    let mut req = tiny_request();
    req.steps = sizes.steps_or(25);
    let steps = req.steps;
    let mut times = Vec::new();
    for i in 0..runs + 1 {
        let t0 = Instant::now();
        sd.generate(&req, &CancelToken::new(), &mut |_| {}).unwrap();
        if i > 0 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    println!(
        r#"{{"bench": "tiny_a_txt2img_64x64_b2_{steps}steps", "impl": "kiln-{device_name}", "seconds": {:.4}}}"#,
        median(times)
    );
}

/// Seconds per step and per UNet call of every sampler (tiny-a, 64×64, 2 prompts, CFG, 20
/// steps): samplers should differ only by their UNet calls per step.
fn bench_samplers(device: &Device, device_name: &str, sizes: Sizes) {
    let runs = sizes.runs;
    use kiln_engine::schedulers::Schedule;
    let sd = tiny_model(device);
    for name in Sampler::NAMES {
        let schedule = if matches!(name, "ddim" | "ddpm" | "lcm") {
            Schedule::Default
        } else {
            Schedule::Karras
        };
        let mut req = tiny_request();
        req.sampler = Sampler::from_name(name, schedule, 0.0).unwrap();
        req.steps = sizes.steps_or(20);
        let mut times = Vec::new();
        let mut calls = 0;
        for i in 0..runs + 1 {
            let t0 = Instant::now();
            sd.generate(&req, &CancelToken::new(), &mut |p| calls = p.total)
                .unwrap();
            if i > 0 {
                times.push(t0.elapsed().as_secs_f64());
            }
        }
        let t = median(times);
        println!(
            r#"{{"bench": "sampler_{name}_tiny_a_64x64_b2_{}steps", "impl": "kiln-{device_name}", "seconds": {t:.4}, "unet_calls": {calls}, "seconds_per_step": {:.5}, "seconds_per_unet_call": {:.5}}}"#,
            req.steps,
            t / req.steps as f64,
            t / calls as f64
        );
    }
}

/// One LoRA training step (rank 4 on the attention projections, batch 2, 16×16 latents,
/// AdamW, clipping) on tiny-a — compare `torch_train_step` in torch_side.py.
fn bench_train_step(device: &Device, device_name: &str, sizes: Sizes, runs: usize) {
    let warmup = sizes.train_warmup;
    use kiln_engine::training::adamw::AdamWConfig;
    use kiln_engine::training::lora::{
        Batch, LoraConfig, LoraWeights, StepOptions, Text, train_step,
    };
    let mut sd = tiny_model(device);
    let mut weights = LoraWeights::init(
        &mut sd.unet,
        &mut sd.text_encoder,
        &LoraConfig::default(),
        0,
        device,
    )
    .unwrap();
    let alphas = sd.info.scheduler.alphas_cumprod().unwrap();
    let d = sd.info.config.unet.cross_attention_dim;
    let context: Tensor<3> = Tensor::from_data(
        TensorData::new(vec![0.1f32; 2 * 77 * d], [2, 77, d]),
        device,
    );
    let batch = Batch {
        latents: randn([2, 4, 16, 16], device),
        noise: randn([2, 4, 16, 16], device),
        timesteps: vec![100, 700],
        text: Text::Context(context),
    };
    let mut times = Vec::new();
    for t in 1..=runs + warmup {
        let t0 = Instant::now();
        train_step(
            &sd.unet,
            &sd.text_encoder,
            &mut weights,
            &batch,
            &alphas,
            &AdamWConfig::default(),
            StepOptions {
                lr: 1e-4,
                snr_gamma: None,
                max_grad_norm: Some(1.0),
                t,
            },
        )
        .unwrap();
        if t > warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    println!(
        r#"{{"bench": "lora_train_step_tiny_a_b2_16x16", "impl": "kiln-{device_name}", "seconds": {:.4}}}"#,
        median(times)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args
        .iter()
        .find(|a| !a.starts_with('-'))
        .cloned()
        .unwrap_or_else(|| "cpu".into());
    let quick = args.iter().any(|a| a == "--quick")
        || std::env::var("KILN_BENCH_QUICK").is_ok_and(|v| v == "1");
    let sizes = Sizes::new(quick);
    let device = kiln_engine::device::device(&name).unwrap();
    let only = std::env::var("KILN_BENCH").unwrap_or_default();
    let run = |what: &str| only.is_empty() || only == what;
    if run("txt2img") {
        bench_tiny_txt2img(&device, &name, sizes, if quick { 1 } else { 5 });
    }
    if run("unet") {
        bench_unet(&device, &name, sizes);
    }
    if run("samplers") {
        bench_samplers(&device, &name, sizes);
    }
    if run("train") {
        bench_train_step(&device, &name, sizes, if quick { 1 } else { 30 });
    }
    if run("lora") {
        bench_lora(&device, &name, sizes);
    }
    if run("base") {
        bench_base_steps(&device, &name, sizes);
    }
    if run("kiln-tiny") {
        bench_kiln_tiny(&device, &name, sizes);
    }
}

/// One `kiln train base` step of each phase on the kiln-tiny architecture with random weights
/// (`assets/models/kiln-tiny.arch.json`): UNet + text encoder at batch 32 on 16×16 latents,
/// and the VAE at batch 16 on 64×64 images — compare `base_steps` in torch_side.py.
fn bench_base_steps(device: &Device, device_name: &str, sizes: Sizes) {
    let (runs, b) = (sizes.runs, sizes.base_batch);
    use kiln_engine::burn::tensor::Int;
    use kiln_engine::training::adamw::AdamWConfig;
    use kiln_engine::training::base::{
        Architecture, BaseModels, Trained, VaeLossWeights, diffusion_step, vae_step,
    };
    use kiln_engine::training::full::{FullOptimizer, StepSettings};
    use kiln_engine::training::lora::{Batch, Text};
    let arch = Architecture::read(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/models/kiln-tiny.arch.json"),
    )
    .unwrap();
    let cfg = arch.config;
    let build = |seed| Loader::random(seed, device);
    let mut models = BaseModels {
        text_encoder: kiln_engine::models::clip_text::ClipTextModel::load(
            &cfg.text_encoder,
            &mut build(1),
        )
        .unwrap(),
        unet: UNet2DConditionModel::load(&cfg.unet, &mut build(2)).unwrap(),
        vae: kiln_engine::models::vae::AutoencoderKL::load(&cfg.vae, &mut build(3)).unwrap(),
        config: cfg.clone(),
        scheduler: arch
            .scheduler
            .unwrap_or_else(kiln_engine::schedulers::SchedulerConfig::sd15),
    };
    let alphas = models.scheduler.alphas_cumprod().unwrap();
    // kiln-tiny's architecture file: 64×64 images, latents of the VAE's channels at its
    // factor, captions of the length it gives (77 when it gives none, as this one does).
    let (channels, factor) = (models.vae.latent_channels, cfg.vae.scale_factor());
    let side = 64 / factor;
    let len = cfg.tokenizer_max_length;
    let ids: Vec<i64> = (0..b * len).map(|i| (i % 500) as i64).collect();
    let batch = Batch {
        latents: randn([b, channels, side, side], device),
        noise: randn([b, channels, side, side], device),
        timesteps: (0..b).map(|i| i * 31 % 1000).collect(),
        text: Text::Ids(Tensor::<2, Int>::from_data(
            TensorData::new(ids, [b, len]),
            device,
        )),
    };
    let settings = |t| StepSettings {
        t,
        lr: 1e-4,
        max_grad_norm: Some(1.0),
        ema_decay: Some(0.999),
    };
    let mut opt = FullOptimizer::default();
    let mut times = Vec::new();
    for t in 1..=runs + 1 {
        let t0 = Instant::now();
        let trained = Trained {
            unet: true,
            text_encoder: true,
        };
        diffusion_step(
            &mut models,
            &mut opt,
            &batch,
            trained,
            &alphas,
            Some(5.0).into(),
            &AdamWConfig::default(),
            settings(t),
        )
        .unwrap();
        if t > 1 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    println!(
        r#"{{"bench": "base_diffusion_step_kiln_tiny_arch_b{b}", "impl": "kiln-{device_name}", "seconds": {:.4}}}"#,
        median(times)
    );
    let vb = b.min(16);
    let images = randn([vb, 3, 64, 64], device).clamp(-1.0, 1.0);
    let eps = randn([vb, channels, side, side], device);
    let mut times = Vec::new();
    for t in 1..=runs + 1 {
        let t0 = Instant::now();
        let weights = VaeLossWeights {
            kl: 1e-6,
            edge: 1.0,
            detail: 0.0,
        };
        vae_step(
            &mut models,
            &mut opt,
            images.clone(),
            eps.clone(),
            weights,
            &AdamWConfig::default(),
            settings(t),
        )
        .unwrap();
        if t > 1 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    println!(
        r#"{{"bench": "base_vae_step_kiln_tiny_arch_b{vb}_64x64", "impl": "kiln-{device_name}", "seconds": {:.4}}}"#,
        median(times)
    );
}

/// The shipped model: one 64×64 image, 20 DPM++ 2M Karras steps with CFG (the studio's
/// default kind of request) — compare `kiln_tiny` in torch_side.py.
fn bench_kiln_tiny(device: &Device, device_name: &str, sizes: Sizes) {
    let runs = sizes.runs;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/models/kiln-tiny");
    assert!(
        root.join("model_index.json").is_file(),
        "the shipped model is missing from {}",
        root.display()
    );
    let sd = StableDiffusion::load(&root, None, device).unwrap();
    let mut req = tiny_request();
    // The studio's first prompt with the shipped model.
    req.prompts = vec!["a large red circle on a blue background".into()];
    req.negatives = vec![String::new()];
    req.sampler = Sampler::DpmPp2m {
        schedule: kiln_engine::schedulers::Schedule::Karras,
    };
    req.steps = sizes.steps_or(20);
    let steps = req.steps;
    let mut times = Vec::new();
    for i in 0..runs + 1 {
        let t0 = Instant::now();
        sd.generate(&req, &CancelToken::new(), &mut |_| {}).unwrap();
        if i > 0 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    println!(
        r#"{{"bench": "kiln_tiny_txt2img_64x64_b1_{steps}steps", "impl": "kiln-{device_name}", "seconds": {:.4}}}"#,
        median(times)
    );
}

/// A random rank-`r` LoRA on every attention projection (to_q/k/v/out.0) of `unet`.
fn random_attention_lora(
    unet: &UNet2DConditionModel,
    rank: usize,
    seed: u64,
) -> kiln_engine::adapters::lora::LoraAdapter {
    use kiln_engine::adapters::lora::targets::{Component, TargetIndex};
    use kiln_engine::adapters::lora::{LoraAdapter, LoraModule, LoraReport};
    use rand::{RngExt, SeedableRng};
    let paths = kiln_engine::models::paths::param_paths(unet);
    let index = TargetIndex::new(&paths, &[], 2);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let modules: Vec<LoraModule> = paths
        .iter()
        .filter_map(|(p, _)| p.strip_suffix(".weight"))
        .filter(|p| {
            ["to_q", "to_k", "to_v", "to_out.0"]
                .iter()
                .any(|s| p.ends_with(s))
        })
        .filter_map(|p| index.module(Component::Unet, p).cloned())
        .map(|target| {
            let (d_out, d_in) = match target.shape {
                kiln_engine::adapters::lora::targets::LayerShape::Linear { d_in, d_out } => {
                    (d_out, d_in)
                }
                kiln_engine::adapters::lora::targets::LayerShape::Conv {
                    c_in,
                    c_out,
                    kernel,
                } => (c_out, c_in * kernel * kernel),
            };
            let mut v = |n: usize| {
                (0..n)
                    .map(|_| rng.random_range(-0.01f32..0.01))
                    .collect::<Vec<f32>>()
            };
            LoraModule {
                target,
                rank,
                down: v(rank * d_in),
                up: v(d_out * rank),
                scale: 1.0,
            }
        })
        .collect();
    let report = LoraReport {
        format: kiln_engine::adapters::lora::LoraFormat::Peft,
        dialect: String::new(),
        family: None,
        ranks: [rank].into(),
        alphas: Default::default(),
        alpha_source: String::new(),
        modules: modules.len(),
        matched: modules.len(),
        unmatched: Vec::new(),
        unet_layers: modules.len(),
        text_encoder_layers: 0,
        trigger_words: Vec::new(),
        short_hash: String::new(),
    };
    LoraAdapter {
        path: "synthetic".into(),
        name: format!("synthetic-{seed}"),
        modules,
        report,
    }
}

/// Re-weighting one LoRA in a stack of three on a full-size SD 1.5 UNet, and UNet speed with
/// 0 and 3 merged LoRAs.
fn bench_lora(device: &Device, device_name: &str, sizes: Sizes) {
    use kiln_engine::adapters::AdapterId;
    use kiln_engine::adapters::lora::stack::{LoraStack, StackKey};
    use kiln_engine::adapters::lora::targets::Component;
    let side = sizes.unet_latent;
    let config = sd15().unet;
    let mut ld = Loader::random(0, device);
    let mut unet = UNet2DConditionModel::load(&config, &mut ld).unwrap();
    let sample = randn([2, 4, side, side], device);
    let context: Tensor<3> = Tensor::from_data(
        TensorData::new(vec![0.1f32; 2 * 77 * 768], [2, 77, 768]),
        device,
    );
    let forward = |unet: &UNet2DConditionModel| {
        let t0 = Instant::now();
        let _ = unet
            .forward(sample.clone(), &[500.0, 500.0], &context)
            .into_data();
        t0.elapsed().as_secs_f64()
    };
    let runs = sizes.runs;
    let _ = forward(&unet);
    let plain = median((0..runs).map(|_| forward(&unet)).collect());
    let mut stack = LoraStack::default();
    let mut with1 = 0.0;
    for seed in 0..3 {
        let adapter = std::sync::Arc::new(random_attention_lora(&unet, 16, seed));
        let dirty = stack.push(
            StackKey::Adapter(AdapterId(seed)),
            adapter,
            0.8,
            true,
            device,
        );
        unet = stack.merge_into(Component::Unet, unet, &dirty);
        if seed == 0 {
            let _ = forward(&unet);
            with1 = median((0..runs).map(|_| forward(&unet)).collect());
        }
    }
    let _ = forward(&unet);
    let with3 = median((0..runs).map(|_| forward(&unet)).collect());
    let layers = stack.entries()[1].covers().len();
    let mut times = Vec::new();
    for w in [0.5f32, 0.9, -0.3, 1.2, 0.0]
        .into_iter()
        .take(runs.max(1) + 2)
    {
        let t0 = Instant::now();
        let dirty = stack.set_weight(&StackKey::Adapter(AdapterId(1)), w);
        unet = stack.merge_into(Component::Unet, unet, &dirty);
        // Read one merged weight back so lazy backends finish the work.
        let _ = unet.mid_block.attentions[0].transformer_blocks[0]
            .attn2
            .to_v
            .weight
            .val()
            .into_data();
        times.push(t0.elapsed().as_secs_f64());
    }
    println!(
        r#"{{"bench": "lora_reweight_sd15_unet_{layers}_layers_rank16", "impl": "kiln-{device_name}", "seconds": {:.4}}}"#,
        median(times)
    );
    println!(
        r#"{{"bench": "unet_sd15_{side}x{side}_b2_0_loras", "impl": "kiln-{device_name}", "seconds": {plain:.4}}}"#
    );
    println!(
        r#"{{"bench": "unet_sd15_{side}x{side}_b2_1_lora", "impl": "kiln-{device_name}", "seconds": {with1:.4}}}"#
    );
    println!(
        r#"{{"bench": "unet_sd15_{side}x{side}_b2_3_loras", "impl": "kiln-{device_name}", "seconds": {with3:.4}}}"#
    );
}
