//! Diffusers' `Timesteps` (sinusoidal projection) and `TimestepEmbedding` (two linears).

use burn::module::Module;
use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor, TensorData};

use crate::loader::Loader;
use crate::models::layers::Linear;

/// Sinusoidal timestep features, as diffusers' `get_timestep_embedding`.
///
/// `timesteps` (one per batch item, may be fractional) → `[B, dim]`.
pub fn timestep_features(
    timesteps: &[f32],
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    device: &Device,
) -> Tensor<2> {
    let half = dim / 2;
    // diffusers computes the frequencies and the products in float32.
    let freqs: Vec<f32> = (0..half)
        .map(|i| (-(10000f32.ln()) * i as f32 / (half as f32 - freq_shift as f32)).exp())
        .collect();
    let mut out = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let args: Vec<f32> = freqs.iter().map(|f| t * f).collect();
        let (sin, cos): (Vec<f32>, Vec<f32>) = args.iter().map(|a| (a.sin(), a.cos())).unzip();
        let (first, second) = if flip_sin_to_cos {
            (cos, sin)
        } else {
            (sin, cos)
        };
        out.extend(first);
        out.extend(second);
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    Tensor::from_data(TensorData::new(out, [timesteps.len(), dim]), device)
}

/// `TimestepEmbedding`: `linear_2(silu(linear_1(x)))`.
#[derive(Module, Debug)]
pub struct TimestepEmbedding {
    /// features → time embedding width.
    pub linear_1: Linear,
    /// width → width.
    pub linear_2: Linear,
}

impl TimestepEmbedding {
    /// Loads `{path}.linear_1` and `{path}.linear_2`.
    pub fn load(ld: &mut Loader, path: &str, d_in: usize, d_out: usize) -> Self {
        TimestepEmbedding {
            linear_1: Linear::load(ld, &format!("{path}.linear_1"), d_in, d_out, true),
            linear_2: Linear::load(ld, &format!("{path}.linear_2"), d_out, d_out, true),
        }
    }

    /// `[B, d_in]` → `[B, d_out]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.linear_2.forward(silu(self.linear_1.forward(x)))
    }
}
