//! The noise a training step adds: standard normal, plus kohya's noise offset and
//! multi-resolution noise. Shared by every trainer; every draw comes from an RNG derived from
//! the seed and the step, so resumed runs draw the same noise.

use burn::tensor::{Device, Tensor, TensorData};
use rand_distr::{Distribution, StandardNormal};

/// `n` standard-normal samples from `rng`.
pub fn randn(rng: &mut rand_chacha::ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

/// What a training step's noise adds to the standard normal.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoiseOptions {
    /// kohya's "noise offset" (0 = off).
    pub offset: f64,
    /// Levels of multi-resolution noise (0 = off): [`add_multires_noise`].
    pub multires_iterations: usize,
    /// Weight ratio between successive levels of multi-resolution noise.
    pub multires_discount: f64,
}

/// The noise ε of a training step, `[B, C, H, W]` like `shape`: standard normal, plus
/// `offset` × one standard-normal value per image and channel (kohya's "noise offset";
/// nothing is added when it is 0), then multi-resolution noise ([`add_multires_noise`]; none
/// when its iterations are 0). Without the offset the DDPM schedule never fully hides an
/// image's mean colour (ᾱ at t = 999 is still 0.0047 and the mean over H×W latents averages
/// the noise away), so a model never has to learn the overall colour from the caption and
/// samples always take it from their starting noise.
pub fn training_noise(
    rng: &mut rand_chacha::ChaCha8Rng,
    shape: [usize; 4],
    options: &NoiseOptions,
    device: &Device,
) -> Tensor<4> {
    let mut noise = randn(rng, shape.iter().product());
    if options.offset != 0.0 {
        let [b, c, h, w] = shape;
        let offset = options.offset as f32;
        let per_channel = randn(rng, b * c);
        for (plane, p) in noise.chunks_mut(h * w).zip(per_channel) {
            plane.iter_mut().for_each(|v| *v += p * offset);
        }
    }
    add_multires_noise(
        rng,
        &mut noise,
        shape,
        options.multires_iterations,
        options.multires_discount,
    );
    Tensor::from_data(TensorData::new(noise, shape), device)
}

/// Multi-resolution ("pyramid") noise, added to `noise` `[B, C, H, W]` in place: for
/// `level` = 1, 2, … `iterations`, one standard-normal value per image, channel and cell of an
/// (H/2^level)×(W/2^level) grid (at least 1×1), upsampled bilinearly to H×W and weighted
/// `discount`^level; then the sum is divided by its standard deviation (over the batch) so it
/// stays of unit variance. It is meant to do for the coarse layout what the noise offset (the
/// 1×1 level) does for the mean colour: SD's schedule leaves a 4×4 block's mean visible long
/// after the single latents are drowned, so a model may take where the shapes go from the
/// noise rather than from the caption. kohya's `--multires_noise_iterations` /
/// `--multires_noise_discount` (same order: after the offset), with a fixed factor 2 between
/// levels. Nothing changes (and no random number is drawn) when `iterations` is 0.
fn add_multires_noise(
    rng: &mut rand_chacha::ChaCha8Rng,
    noise: &mut [f32],
    shape: [usize; 4],
    iterations: usize,
    discount: f64,
) {
    if iterations == 0 {
        return;
    }
    let [b, c, h, w] = shape;
    for level in 1..=iterations {
        let (gh, gw) = ((h >> level).max(1), (w >> level).max(1));
        let weight = discount.powi(level as i32);
        let grid = randn(rng, b * c * gh * gw);
        let ys: Vec<(usize, usize, f32)> = (0..h).map(|y| bilinear_source(y, h, gh)).collect();
        let xs: Vec<(usize, usize, f32)> = (0..w).map(|x| bilinear_source(x, w, gw)).collect();
        for plane in 0..b * c {
            let g = &grid[plane * gh * gw..(plane + 1) * gh * gw];
            let out = &mut noise[plane * h * w..(plane + 1) * h * w];
            for (y, &(y0, y1, fy)) in ys.iter().enumerate() {
                for (x, &(x0, x1, fx)) in xs.iter().enumerate() {
                    let top = g[y0 * gw + x0] * (1.0 - fx) + g[y0 * gw + x1] * fx;
                    let bottom = g[y1 * gw + x0] * (1.0 - fx) + g[y1 * gw + x1] * fx;
                    out[y * w + x] += weight as f32 * (top * (1.0 - fy) + bottom * fy);
                }
            }
        }
        if gh == 1 && gw == 1 {
            break;
        }
    }
    let n = noise.len() as f64;
    let mean = noise.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = noise
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    if var > 0.0 {
        let scale = (1.0 / var.sqrt()) as f32;
        noise.iter_mut().for_each(|v| *v *= scale);
    }
}

/// Where output pixel `i` of `n` reads from a grid of `m` cells (PyTorch's bilinear
/// upsampling, `align_corners=False`): the two cells and the weight of the second.
fn bilinear_source(i: usize, n: usize, m: usize) -> (usize, usize, f32) {
    let src = ((i as f32 + 0.5) * m as f32 / n as f32 - 0.5).max(0.0);
    let i0 = (src.floor() as usize).min(m - 1);
    let i1 = (i0 + 1).min(m - 1);
    (i0, i1, src - i0 as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::dataset::rng_for;

    /// The noise offset moves each image-and-channel's mean by `offset` × N(0, 1); without it
    /// the mean over 16×16 latents varies by only 1/16.
    #[test]
    fn noise_offset_shifts_each_channel_mean() {
        let device = crate::device::device("cpu").unwrap();
        let channel_mean_std = |offset: f64| {
            let mut rng = rng_for(3, 3, 0);
            let options = NoiseOptions {
                offset,
                ..NoiseOptions::default()
            };
            let noise = training_noise(&mut rng, [64, 4, 16, 16], &options, &device);
            let means: Vec<f32> = noise.mean_dims(&[2, 3]).into_data().try_to_vec().unwrap();
            let m = means.iter().sum::<f32>() / means.len() as f32;
            (means.iter().map(|x| (x - m).powi(2)).sum::<f32>() / means.len() as f32).sqrt()
        };
        let plain = channel_mean_std(0.0);
        assert!((0.04..0.09).contains(&plain), "{plain}");
        let offset = channel_mean_std(0.5);
        assert!((0.4..0.6).contains(&offset), "{offset}");
        // Offset 0 is exactly the plain noise (the LoRA parity fixtures rely on it).
        let mut a = rng_for(3, 3, 0);
        let plain = training_noise(&mut a, [1, 4, 2, 2], &NoiseOptions::default(), &device);
        let mut b = rng_for(3, 3, 0);
        assert_eq!(
            plain.into_data().try_to_vec::<f32>().unwrap(),
            randn(&mut b, 16)
        );
    }

    /// Multi-resolution noise moves the means of 4×4 blocks (what SD's schedule leaves of the
    /// layout) far more than white noise does, keeps unit variance, and is off at 0.
    #[test]
    fn multires_noise_hides_the_coarse_layout() {
        let shape = [16, 4, 16, 16];
        let noise = |iterations: usize| {
            let mut rng = rng_for(4, 3, 0);
            let mut v = randn(&mut rng, shape.iter().product());
            add_multires_noise(&mut rng, &mut v, shape, iterations, 0.8);
            v
        };
        let std = |v: &[f32]| {
            let m = v.iter().sum::<f32>() / v.len() as f32;
            (v.iter().map(|x| (x - m).powi(2)).sum::<f32>() / v.len() as f32).sqrt()
        };
        let block_means = |v: &[f32]| -> Vec<f32> {
            let mut out = Vec::new();
            for plane in v.chunks(256) {
                for by in 0..4 {
                    for bx in 0..4 {
                        let mut s = 0.0;
                        for y in 0..4 {
                            for x in 0..4 {
                                s += plane[(by * 4 + y) * 16 + bx * 4 + x];
                            }
                        }
                        out.push(s / 16.0);
                    }
                }
            }
            out
        };
        let (white, pyramid) = (noise(0), noise(3));
        let mut rng = rng_for(4, 3, 0);
        assert_eq!(
            white,
            randn(&mut rng, white.len()),
            "0 iterations: white noise"
        );
        assert!((std(&pyramid) - 1.0).abs() < 1e-3, "{}", std(&pyramid));
        let (w, p) = (std(&block_means(&white)), std(&block_means(&pyramid)));
        assert!(
            (0.2..0.3).contains(&w),
            "white noise: 4×4 block means of std {w}"
        );
        assert!(
            p > 2.0 * w,
            "multires: 4×4 block means of std {p} (white: {w})"
        );
    }
}
