//! Scaled dot-product attention computed on the host for the CPU backend.
//!
//! Burn's CPU attention materialises the full `[B, H, N, M]` score tensor and runs a scalar,
//! single-threaded `exp` over it, which made attention most of the time of a CPU step (and
//! 1 GB of scores per call for SD 1.5 at 512×512). This kernel processes one query row at a
//! time per thread: scores for all keys (an axpy per head dimension over keys stored
//! transposed, so loops are contiguous and auto-vectorise), an exact max-subtracted softmax
//! with a vectorisable `exp`, and the weighted sum of values — memory O(M) per thread,
//! parallel over (batch, head, row block) with rayon. Same maths as PyTorch's SDPA; used only
//! for plain CPU inference (not under autodiff, not on GPUs) and narrow heads, see [`applies`].
//!
//! Measured with `cargo run -p kiln-engine --example op_timing` (2 cores): heads of width 8,
//! `[4, 4, 1024, 8]`: 21 ms here vs 33 ms for Burn's; SD 1.5's width-40 heads, `[2, 8, 1024, 40]`:
//! 68 ms vs 46 ms — Burn's GEMM-based path wins once heads are wide, so it keeps those.

use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;

/// Widest head for which this kernel beats Burn's (measured, see the module docs).
pub const MAX_HEAD_DIM: usize = 16;

/// Whether the host kernel should run for `head_dim`-wide heads on `device`: the plain CPU
/// (flex) device only. Autodiff devices (training) and GPU devices keep Burn's attention.
pub fn applies(device: &Device, head_dim: usize) -> bool {
    head_dim <= MAX_HEAD_DIM && *device == Device::flex()
}

/// `exp(x)` for `x ≤ 0` (softmax after max subtraction), branch-free so loops over it
/// vectorise: range reduction `x = n·ln2 + r`, a degree-6 polynomial for `e^r` on
/// `|r| ≤ ln2/2`, and `2^n` built from the exponent bits. Relative error < 2e-7.
#[inline(always)]
fn exp_neg(x: f32) -> f32 {
    let x = x.max(-87.0);
    // Round to nearest with the 1.5·2²³ trick (plain SSE2, unlike `f32::round`).
    const MAGIC: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    // The integer n sits in t's low mantissa bits: no float→int conversion needed.
    let ni = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67
                    + r * (0.041_666_668 + r * (0.008_333_334 + r * 0.001_388_889)))));
    let scale = f32::from_bits((ni.wrapping_add(127) as u32).wrapping_shl(23));
    p * scale
}

/// Eight independent accumulators so the reduction vectorises (a single running sum is a
/// dependent chain LLVM may not reorder).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn max(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = a.chunks_exact(8);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    for x in chunks {
        for i in 0..8 {
            acc[i] = acc[i].max(x[i]);
        }
    }
    acc.iter().fold(tail, |m, &x| m.max(x))
}

fn host(t: Tensor<3>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
}

/// Multi-head attention `softmax(q kᵀ · scale) v` with heads laid out along the channels.
///
/// - `q`: `[B, N, C]`, `k`, `v`: `[B, M, C]`, `C = heads × d`;
/// - returns `[B, N, C]`.
pub fn attention(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize) -> Tensor<3> {
    let device = q.device();
    let [b, n, c] = q.dims();
    let m = k.dims()[1];
    let d = c / heads;
    let scale = 1.0 / (d as f32).sqrt();
    let (q, k, v) = (host(q), host(k), host(v));
    let mut out = vec![0f32; b * n * c];
    // Per (batch, head): keys and values transposed to [d, M] so the loops over keys are contiguous.
    let kv: Vec<(Vec<f32>, Vec<f32>)> = (0..b * heads)
        .into_par_iter()
        .map(|bh| {
            let (bi, h) = (bh / heads, bh % heads);
            let mut kt = vec![0f32; d * m];
            let mut vt = vec![0f32; d * m];
            for j in 0..m {
                let base = (bi * m + j) * c + h * d;
                for e in 0..d {
                    kt[e * m + j] = k[base + e] * scale;
                    vt[e * m + j] = v[base + e];
                }
            }
            (kt, vt)
        })
        .collect();
    const ROWS: usize = 16;
    let blocks_per_bh = n.div_ceil(ROWS);
    // Each task owns a block of query rows of one (batch, head) and writes its head's slice.
    let results: Vec<(usize, usize, Vec<f32>)> = (0..b * heads * blocks_per_bh)
        .into_par_iter()
        .map(|task| {
            let bh = task / blocks_per_bh;
            let (bi, h) = (bh / heads, bh % heads);
            let row0 = (task % blocks_per_bh) * ROWS;
            let rows = ROWS.min(n - row0);
            let (kt, vt) = &kv[bh];
            let mut block = vec![0f32; rows * d];
            // Four query rows at a time: every key/value element loaded serves four rows.
            let mut scores = vec![0f32; 4 * m];
            let mut qb = vec![0f32; 4 * d];
            for r0 in (0..rows).step_by(4) {
                let nr = 4.min(rows - r0);
                qb.iter_mut().for_each(|x| *x = 0.0);
                for r in 0..nr {
                    qb[r * d..(r + 1) * d]
                        .copy_from_slice(&q[(bi * n + row0 + r0 + r) * c + h * d..][..d]);
                }
                scores.iter_mut().for_each(|x| *x = 0.0);
                {
                    let (s0, rest) = scores.split_at_mut(m);
                    let (s1, rest) = rest.split_at_mut(m);
                    let (s2, s3) = rest.split_at_mut(m);
                    for e in 0..d {
                        let (a0, a1, a2, a3) = (qb[e], qb[d + e], qb[2 * d + e], qb[3 * d + e]);
                        let krow = &kt[e * m..(e + 1) * m];
                        for ((((x0, x1), x2), x3), &kv) in s0
                            .iter_mut()
                            .zip(s1.iter_mut())
                            .zip(s2.iter_mut())
                            .zip(s3.iter_mut())
                            .zip(krow)
                        {
                            *x0 += a0 * kv;
                            *x1 += a1 * kv;
                            *x2 += a2 * kv;
                            *x3 += a3 * kv;
                        }
                    }
                }
                let ones = [1f32; 8];
                for r in 0..nr {
                    let row = &mut scores[r * m..(r + 1) * m];
                    let top = max(row);
                    row.iter_mut().for_each(|s| *s = exp_neg(*s - top));
                    let sum: f32 = row.chunks(8).map(|c| dot(c, &ones[..c.len()])).sum();
                    let inv = 1.0 / sum;
                    for e in 0..d {
                        block[(r0 + r) * d + e] = dot(row, &vt[e * m..(e + 1) * m]) * inv;
                    }
                }
            }
            (bi * n + row0, h, block)
        })
        .collect();
    for (row, h, block) in results {
        let rows = block.len() / d;
        for r in 0..rows {
            out[(row + r) * c + h * d..][..d].copy_from_slice(&block[r * d..(r + 1) * d]);
        }
    }
    Tensor::from_data(TensorData::new(out, [b, n, c]), &device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_on_the_softmax_range() {
        for i in 0..2000 {
            let x = -(i as f32) * 0.0437;
            let (got, want) = (exp_neg(x), x.exp());
            assert!(
                (got - want).abs() <= want * 3e-7 + 1e-38,
                "exp({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn matches_burn_attention() {
        use burn::tensor::module::attention as burn_attention;
        use burn::tensor::ops::AttentionModuleOptions;
        let device = Device::flex();
        let mut noise = crate::schedulers::Noise::new(&[5, 6]);
        let (b, n, m, heads, d) = (2, 37, 53, 3, 8);
        let q: Tensor<3> = noise
            .randn([b, 1, n, heads * d], &device)
            .reshape([b, n, heads * d]);
        let k: Tensor<3> = noise
            .randn([b, 1, m, heads * d], &device)
            .reshape([b, m, heads * d]);
        let v: Tensor<3> = noise
            .randn([b, 1, m, heads * d], &device)
            .reshape([b, m, heads * d]);
        let split = |t: Tensor<3>, len| t.reshape([b, len, heads, d]).swap_dims(1, 2);
        let want = burn_attention(
            split(q.clone(), n),
            split(k.clone(), m),
            split(v.clone(), m),
            None,
            None,
            AttentionModuleOptions::default(),
        )
        .swap_dims(1, 2)
        .reshape([b, n, heads * d]);
        let got = attention(q, k, v, heads);
        let (got, want) = (host(got), host(want));
        let err = got
            .iter()
            .zip(&want)
            .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
        assert!(err < 1e-5, "max |Δ| = {err}");
    }
}
