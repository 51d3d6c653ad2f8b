//! Benchmarks (not tests): a full-size SD 1.5 UNet forward with random weights, and a whole
//! tiny-model txt2img. `benches/compare.sh` runs these and `benches/torch_side.py` (the same
//! work in PyTorch/diffusers) in one go and prints the ratios.
//!
//! `cargo bench -p kiln-engine --bench sd --profile dev [-- DEVICE]` (DEVICE: cpu, ndarray,
//! wgpu, … — what this build has). Prints one JSON object per measurement.

#![allow(missing_docs, clippy::unwrap_used)]

use std::path::Path;
use std::time::Instant;

use kiln_engine::burn::tensor::{Device, Tensor, TensorData};
use kiln_engine::models::config::sd15;
use kiln_engine::models::unet_2d_condition::UNet2DConditionModel;
use kiln_engine::pipeline::{CancelToken, GenerationRequest, Sampler, StableDiffusion};
use kiln_engine::weights::loader::Loader;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn randn(shape: [usize; 4], device: &Device) -> Tensor<4> {
    let mut noise = kiln_engine::schedulers::Noise::new(&(0..shape[0] as u64).collect::<Vec<_>>());
    noise.randn(shape, device)
}

fn bench_unet(device: &Device, device_name: &str, runs: usize) {
    let config = sd15().unet;
    let mut ld = Loader::random(0, device);
    let unet = UNet2DConditionModel::load(&config, &mut ld).unwrap();
    let sample = randn([2, 4, 32, 32], device);
    let context: Tensor<3> = Tensor::from_data(TensorData::new(vec![0.1f32; 2 * 77 * 768], [2, 77, 768]), device);
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
    println!(r#"{{"bench": "unet_sd15_32x32_b2", "impl": "kiln-{device_name}", "seconds": {:.4}}}"#, median(times));
}

fn bench_tiny_txt2img(device: &Device, device_name: &str, runs: usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-a");
    let sd = StableDiffusion::load(&root, None, device).unwrap();
    let req = GenerationRequest {
        prompts: vec!["a red circle on a blue background".into(), "a photo of a cat".into()],
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
    };
    let mut times = Vec::new();
    for i in 0..runs + 1 {
        let t0 = Instant::now();
        sd.txt2img(&req, &CancelToken::new(), &mut |_| {}).unwrap();
        if i > 0 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    println!(r#"{{"bench": "tiny_a_txt2img_64x64_b2_25steps", "impl": "kiln-{device_name}", "seconds": {:.4}}}"#, median(times));
}

fn main() {
    let name = std::env::args().skip(1).find(|a| !a.starts_with('-')).unwrap_or_else(|| "cpu".into());
    let device = kiln_engine::device::device(&name).unwrap();
    bench_tiny_txt2img(&device, &name, 5);
    bench_unet(&device, &name, 3);
}
