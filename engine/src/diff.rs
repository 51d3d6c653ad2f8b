//! What an adapter changes, in numbers and a picture: pixel statistics between two images of
//! the same size (mean and max absolute difference on 0–255, share of pixels changed beyond a
//! threshold, PSNR) and a difference heatmap with a colour scale.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::image::RgbImage;

/// Below this mean absolute difference (0–255) an adapter "barely changes the image".
pub const BARELY_CHANGES: f64 = 0.5;

/// Statistics of `b − a`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DiffStats {
    /// Mean |Δ| over every channel of every pixel, 0–255.
    pub mean_abs: f64,
    /// Largest |Δ| of any channel, 0–255.
    pub max_abs: u8,
    /// Share (0–1) of pixels whose largest channel |Δ| exceeds `threshold`.
    pub changed: f64,
    /// The threshold used for `changed`.
    pub threshold: u8,
    /// Peak signal-to-noise ratio in dB (infinite for identical images).
    pub psnr_db: f64,
}

fn same_size(a: &RgbImage, b: &RgbImage) -> Result<()> {
    if (a.width, a.height) != (b.width, b.height) {
        return Err(Error::InvalidRequest(format!(
            "cannot compare a {}×{} image with a {}×{} one",
            a.width, a.height, b.width, b.height
        )));
    }
    Ok(())
}

/// Statistics of the difference between `a` and `b` (same size), counting a pixel as changed
/// when one of its channels differs by more than `threshold`.
pub fn diff_stats(a: &RgbImage, b: &RgbImage, threshold: u8) -> Result<DiffStats> {
    same_size(a, b)?;
    let (mut sum, mut sq, mut max, mut changed) = (0u64, 0u64, 0u8, 0usize);
    for (pa, pb) in a.pixels.chunks_exact(3).zip(b.pixels.chunks_exact(3)) {
        let mut px_max = 0u8;
        for (x, y) in pa.iter().zip(pb) {
            let d = x.abs_diff(*y);
            sum += u64::from(d);
            sq += u64::from(d) * u64::from(d);
            px_max = px_max.max(d);
        }
        max = max.max(px_max);
        changed += usize::from(px_max > threshold);
    }
    let n = a.pixels.len().max(1) as f64;
    let mse = sq as f64 / n;
    Ok(DiffStats {
        mean_abs: sum as f64 / n,
        max_abs: max,
        changed: changed as f64 / (a.width * a.height).max(1) as f64,
        threshold,
        psnr_db: if mse == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (255.0f64 * 255.0 / mse).log10()
        },
    })
}

/// The colour of `t` in 0–1 on the heatmap's scale (black → purple → red → yellow → white).
pub fn colormap(t: f32) -> [u8; 3] {
    const STOPS: [(f32, [f32; 3]); 5] = [
        (0.0, [0.0, 0.0, 0.0]),
        (0.25, [80.0, 18.0, 123.0]),
        (0.5, [221.0, 56.0, 60.0]),
        (0.75, [252.0, 200.0, 36.0]),
        (1.0, [255.0, 255.0, 255.0]),
    ];
    let t = t.clamp(0.0, 1.0);
    let i = STOPS
        .iter()
        .rposition(|(s, _)| *s <= t)
        .unwrap_or(0)
        .min(STOPS.len() - 2);
    let ((s0, c0), (s1, c1)) = (STOPS[i], STOPS[i + 1]);
    let w = (t - s0) / (s1 - s0);
    [0, 1, 2].map(|k| (c0[k] + (c1[k] - c0[k]) * w).round() as u8)
}

/// A heatmap of the per-pixel mean |Δ| (0–255) × `gain`, mapped through [`colormap`] (255
/// after gain = the top of the scale).
pub fn heatmap(a: &RgbImage, b: &RgbImage, gain: f32) -> Result<RgbImage> {
    same_size(a, b)?;
    let pixels = a
        .pixels
        .chunks_exact(3)
        .zip(b.pixels.chunks_exact(3))
        .flat_map(|(pa, pb)| {
            let d: f32 = pa
                .iter()
                .zip(pb)
                .map(|(x, y)| f32::from(x.abs_diff(*y)))
                .sum::<f32>()
                / 3.0;
            colormap(d * gain / 255.0)
        })
        .collect();
    Ok(RgbImage {
        width: a.width,
        height: a.height,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(px: &[[u8; 3]]) -> RgbImage {
        RgbImage {
            width: px.len(),
            height: 1,
            pixels: px.iter().flatten().copied().collect(),
        }
    }

    #[test]
    fn statistics_by_hand() {
        let a = img(&[[0, 0, 0], [100, 100, 100], [10, 20, 30], [255, 255, 255]]);
        let b = img(&[[0, 0, 0], [103, 100, 100], [10, 20, 90], [255, 255, 255]]);
        let s = diff_stats(&a, &b, 8).expect("same size");
        assert!((s.mean_abs - 63.0 / 12.0).abs() < 1e-12);
        assert_eq!(
            (s.max_abs, s.changed),
            (60, 0.25),
            "one pixel of four beyond 8"
        );
        let mse = (9.0 + 3600.0) / 12.0;
        assert!((s.psnr_db - 10.0 * (65025.0f64 / mse).log10()).abs() < 1e-9);
        assert_eq!(diff_stats(&a, &a, 0).expect("same").psnr_db, f64::INFINITY);
        assert!(diff_stats(&a, &img(&[[0, 0, 0]]), 8).is_err());
    }

    #[test]
    fn heatmap_scale() {
        assert_eq!(colormap(0.0), [0, 0, 0]);
        assert_eq!(colormap(1.0), [255, 255, 255]);
        let a = img(&[[0, 0, 0], [0, 0, 0]]);
        let b = img(&[[0, 0, 0], [255, 255, 255]]);
        let h = heatmap(&a, &b, 1.0).expect("same size");
        assert_eq!(&h.pixels[..3], &[0, 0, 0]);
        assert_eq!(&h.pixels[3..], &[255, 255, 255]);
        // Gain makes small differences visible.
        let c = img(&[[0, 0, 0], [16, 16, 16]]);
        assert!(
            heatmap(&a, &c, 8.0).expect("ok").pixels[3]
                > heatmap(&a, &c, 1.0).expect("ok").pixels[3]
        );
    }
}
