//! Shared helpers: fixture paths, reference tensors, comparisons.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use burn::tensor::{Tensor, TensorData};
use kiln_engine::pipeline::StableDiffusion;
use kiln_engine::weights::safetensors::SafeTensors;

pub use kiln_engine::burn;

/// `tests/fixtures/…`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(rel)
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

/// Host data → tensor on the CPU device.
pub fn tensor<const D: usize>(shape: &[usize], values: Vec<f32>) -> Tensor<D> {
    tensor_on(shape, values, &kiln_engine::device::device("cpu").unwrap())
}

/// Host data → tensor on `device`.
pub fn tensor_on<const D: usize>(
    shape: &[usize],
    values: Vec<f32>,
    device: &burn::tensor::Device,
) -> Tensor<D> {
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

/// The two fixture models, each with its layouts.
pub const MODELS: [&str; 2] = ["tiny-a", "tiny-b"];

/// How a fixture model is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `fixtures/{m}/` diffusers folder.
    Diffusers,
    /// `fixtures/{m}.safetensors` with `--config fixtures/{m}`.
    SingleFile,
}

/// Loads (and caches) a fixture model; the models are small, loading them once saves time.
pub fn model(name: &str, layout: Layout) -> &'static StableDiffusion {
    static CACHE: OnceLock<Mutex<Vec<(String, Layout, &'static StableDiffusion)>>> =
        OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(Vec::new()));
    let mut guard = cache.lock().unwrap();
    if let Some((_, _, m)) = guard.iter().find(|(n, l, _)| n == name && *l == layout) {
        return m;
    }
    let device = kiln_engine::device::device("cpu").unwrap();
    let sd = match layout {
        Layout::Diffusers => StableDiffusion::load(&fixture(name), None, &device),
        Layout::SingleFile => StableDiffusion::load(
            &fixture(&format!("{name}.safetensors")),
            Some(&fixture(name)),
            &device,
        ),
    }
    .unwrap_or_else(|e| panic!("loading {name} ({layout:?}): {e}"));
    let leaked: &'static StableDiffusion = Box::leak(Box::new(sd));
    guard.push((name.to_owned(), layout, leaked));
    leaked
}
