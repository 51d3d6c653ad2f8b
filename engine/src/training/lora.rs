//! LoRA training on the UNet (PEFT's LoRA layer): a [`LoraBranch`] beside each targeted
//! `Linear` of the transformer blocks, frozen base weights, epsilon-prediction MSE (optionally
//! min-SNR-γ weighted), gradient clipping by global norm, and [`AdamWConfig`] updates.
//!
//! The LoRA tensors live on the plain device between steps; each step installs them as
//! gradient-tracked tensors on the autodiff device, runs forward and backward, and updates
//! them. Saved files use kohya's keys (`lora_unet_…lora_down/lora_up/alpha`), which
//! AUTOMATIC1111, ComfyUI and diffusers load, or PEFT's (`unet.….lora_A/lora_B`).

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::models::layers::{Linear, LoraBranch};
use crate::models::unet_2d_condition::UNet2DConditionModel;
use crate::training::adamw::{AdamWConfig, Moments};
use crate::training::{add_noise, min_snr_weights};

/// Which layers get a LoRA.
pub const DEFAULT_TARGETS: [&str; 4] = ["to_q", "to_k", "to_v", "to_out.0"];

/// LoRA hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank r.
    pub rank: usize,
    /// Alpha (scale = alpha / r).
    pub alpha: f64,
    /// Layer-name suffixes to adapt (`to_q`, `to_k`, `to_v`, `to_out.0`, `ff.net.0.proj`,
    /// `ff.net.2`).
    pub targets: Vec<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            rank: 4,
            alpha: 4.0,
            targets: DEFAULT_TARGETS.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

/// Every `Linear` of the UNet's transformer blocks, with its diffusers path.
pub fn transformer_linears_mut(unet: &mut UNet2DConditionModel) -> Vec<(String, &mut Linear)> {
    let mut out = Vec::new();
    let mut containers: Vec<(
        String,
        &mut Vec<crate::models::attention::Transformer2DModel>,
    )> = Vec::new();
    for (i, b) in unet.down_blocks.iter_mut().enumerate() {
        containers.push((format!("down_blocks.{i}.attentions"), &mut b.attentions));
    }
    containers.push((
        "mid_block.attentions".into(),
        &mut unet.mid_block.attentions,
    ));
    for (i, b) in unet.up_blocks.iter_mut().enumerate() {
        containers.push((format!("up_blocks.{i}.attentions"), &mut b.attentions));
    }
    for (prefix, attentions) in containers {
        for (j, t) in attentions.iter_mut().enumerate() {
            for (k, block) in t.transformer_blocks.iter_mut().enumerate() {
                let p = format!("{prefix}.{j}.transformer_blocks.{k}");
                for (name, attn) in [("attn1", &mut block.attn1), ("attn2", &mut block.attn2)] {
                    out.push((format!("{p}.{name}.to_q"), &mut attn.to_q));
                    out.push((format!("{p}.{name}.to_k"), &mut attn.to_k));
                    out.push((format!("{p}.{name}.to_v"), &mut attn.to_v));
                    for (o, l) in attn.to_out.iter_mut().enumerate() {
                        out.push((format!("{p}.{name}.to_out.{o}"), l));
                    }
                }
                out.push((format!("{p}.ff.net.0.proj"), &mut block.ff.net.0.proj));
                out.push((format!("{p}.ff.net.2"), &mut block.ff.net.2));
            }
        }
    }
    out
}

/// One adapted layer: its low-rank pair and their optimiser state.
#[derive(Debug, Clone)]
pub struct LoraLayer {
    /// Diffusers path of the adapted `Linear` (e.g. `…attn1.to_q`).
    pub path: String,
    /// `[in, r]`.
    pub down: Tensor<2>,
    /// `[r, out]`.
    pub up: Tensor<2>,
    /// AdamW moments of `down`.
    pub down_moments: Moments<2>,
    /// AdamW moments of `up`.
    pub up_moments: Moments<2>,
}

/// The adapter being trained.
#[derive(Debug, Clone)]
pub struct LoraWeights {
    /// Hyper-parameters.
    pub config: LoraConfig,
    /// One entry per adapted layer, in UNet order.
    pub layers: Vec<LoraLayer>,
}

impl LoraWeights {
    /// PEFT's initialisation on every targeted layer of `unet`: `down` (lora_A) Kaiming-uniform
    /// with a = √5 (uniform ±1/√in), `up` (lora_B) zeros — the adapter starts as a no-op.
    pub fn init(
        unet: &mut UNet2DConditionModel,
        config: &LoraConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        if config.rank == 0 {
            return Err(Error::InvalidRequest("LoRA rank must be at least 1".into()));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut layers = Vec::new();
        for (path, linear) in transformer_linears_mut(unet) {
            if !config
                .targets
                .iter()
                .any(|t| path.ends_with(&format!(".{t}")))
            {
                continue;
            }
            let [d_in, d_out] = linear.weight.val().dims();
            let bound = 1.0 / (d_in as f64).sqrt();
            let values: Vec<f32> = (0..d_in * config.rank)
                .map(|_| rng.random_range(-bound..bound) as f32)
                .collect();
            let down = Tensor::from_data(TensorData::new(values, [d_in, config.rank]), device);
            let up = Tensor::zeros([config.rank, d_out], device);
            layers.push(LoraLayer {
                path,
                down_moments: Moments::zeros(&down),
                up_moments: Moments::zeros(&up),
                down,
                up,
            });
        }
        if layers.is_empty() {
            return Err(Error::InvalidRequest(format!(
                "no UNet layer matches the LoRA targets {:?}",
                config.targets
            )));
        }
        Ok(LoraWeights {
            config: config.clone(),
            layers,
        })
    }

    /// `alpha / r`.
    pub fn scale(&self) -> f64 {
        self.config.alpha / self.config.rank as f64
    }

    /// The adapter as kohya/A1111 tensors (`lora_unet_<path with _>.lora_down.weight` `[r, in]`,
    /// `.lora_up.weight` `[out, r]`, `.alpha`), as (name, shape, values).
    pub fn kohya_tensors(&self) -> Result<Vec<(String, Vec<usize>, Vec<f32>)>> {
        let mut out = Vec::new();
        for l in &self.layers {
            let key = format!("lora_unet_{}", l.path.replace('.', "_"));
            let down = l.down.clone().transpose();
            let up = l.up.clone().transpose();
            out.push((
                format!("{key}.lora_down.weight"),
                down.dims().to_vec(),
                host(down)?,
            ));
            out.push((
                format!("{key}.lora_up.weight"),
                up.dims().to_vec(),
                host(up)?,
            ));
            out.push((
                format!("{key}.alpha"),
                vec![],
                vec![self.config.alpha as f32],
            ));
        }
        Ok(out)
    }

    /// Writes the adapter in kohya format (loadable by A1111, ComfyUI, diffusers and Kiln),
    /// atomically, with `metadata` in the header (`ss_network_dim`, `ss_network_alpha`, …).
    pub fn save_kohya(&self, path: &Path, metadata: &BTreeMap<String, String>) -> Result<()> {
        let tensors = self.kohya_tensors()?;
        let mut meta = metadata.clone();
        meta.insert("ss_network_dim".into(), self.config.rank.to_string());
        meta.insert("ss_network_alpha".into(), self.config.alpha.to_string());
        meta.insert("ss_network_module".into(), "networks.lora".into());
        let writes: Vec<crate::weights::safetensors::WriteTensor> = tensors
            .iter()
            .map(
                |(name, shape, data)| crate::weights::safetensors::WriteTensor {
                    name,
                    shape: shape.clone(),
                    data,
                },
            )
            .collect();
        crate::weights::safetensors::write_f32(path, &writes, &meta)
    }
}

fn host<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| Error::InvalidRequest(format!("reading a tensor: {e:?}")))
}

/// Installs `weights` as plain (untracked) LoRA branches in `unet`, for sampling with the
/// adapter being trained.
pub fn install(unet: &mut UNet2DConditionModel, weights: &LoraWeights) {
    let scale = weights.scale();
    let by_path: BTreeMap<&str, &LoraLayer> = weights
        .layers
        .iter()
        .map(|l| (l.path.as_str(), l))
        .collect();
    for (path, linear) in transformer_linears_mut(unet) {
        if let Some(l) = by_path.get(path.as_str()) {
            linear.lora = Some(LoraBranch {
                down: Param::from_tensor(l.down.clone()),
                up: Param::from_tensor(l.up.clone()),
                scale,
            });
        }
    }
}

/// One training batch (on the plain device): latents, the noise to add, one timestep per
/// item, and the text embeddings.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Clean latents `[B, C, h, w]` (VAE-encoded × scaling factor).
    pub latents: Tensor<4>,
    /// ε `[B, C, h, w]`.
    pub noise: Tensor<4>,
    /// Training timesteps, one per item.
    pub timesteps: Vec<usize>,
    /// Text embeddings `[B, 77, D]`.
    pub context: Tensor<3>,
}

/// Options of one optimiser step.
#[derive(Debug, Clone, Copy)]
pub struct StepOptions {
    /// Learning rate for this step.
    pub lr: f64,
    /// min-SNR-γ weighting (None = plain MSE).
    pub snr_gamma: Option<f64>,
    /// Clip the global gradient norm to this (None = no clipping).
    pub max_grad_norm: Option<f64>,
    /// Optimiser step number, 1-based (bias correction).
    pub t: usize,
}

/// What a step measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Loss before the update.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// Loss and gradients of `weights` on `batch` (no update). `unet` is the frozen model on a
/// plain device: only the LoRA matrices enter autodiff (the frozen weights are constants of
/// the graph, so no gradient or graph memory is spent on them). Returns (stats, per-layer
/// (∂down, ∂up)) on the plain device.
pub fn loss_and_grads(
    unet: &UNet2DConditionModel,
    weights: &LoraWeights,
    batch: &Batch,
    alphas_cumprod: &[f64],
    snr_gamma: Option<f64>,
) -> Result<(StepStats, Vec<(Tensor<2>, Tensor<2>)>)> {
    let mut unet = unet.clone();
    let scale = weights.scale();
    let mut tracked = Vec::with_capacity(weights.layers.len());
    {
        let mut by_path: BTreeMap<&str, &LoraLayer> = weights
            .layers
            .iter()
            .map(|l| (l.path.as_str(), l))
            .collect();
        for (path, linear) in transformer_linears_mut(&mut unet) {
            if let Some(l) = by_path.remove(path.as_str()) {
                let down = l.down.clone().autodiff().require_grad();
                let up = l.up.clone().autodiff().require_grad();
                tracked.push((down.clone(), up.clone()));
                linear.lora = Some(LoraBranch {
                    down: Param::from_tensor(down),
                    up: Param::from_tensor(up),
                    scale,
                });
            }
        }
    }
    let b = batch.timesteps.len();
    let noisy = add_noise(
        batch.latents.clone(),
        batch.noise.clone(),
        alphas_cumprod,
        &batch.timesteps,
    );
    let ts: Vec<f32> = batch.timesteps.iter().map(|t| *t as f32).collect();
    let pred = unet.forward(noisy, &ts, &batch.context);
    let noise = batch.noise.clone();
    let per_item = (pred - noise)
        .square()
        .reshape([b as i32, -1])
        .mean_dim(1)
        .reshape([b]);
    let per_item = match snr_gamma {
        Some(g) => {
            let w: Vec<f32> = min_snr_weights(alphas_cumprod, &batch.timesteps, g)
                .iter()
                .map(|v| *v as f32)
                .collect();
            per_item * Tensor::<1>::from_data(TensorData::new(w, [b]), &batch.noise.device())
        }
        None => per_item,
    };
    let loss = per_item.mean();
    let loss_value = f64::from(
        host(loss.clone().inner())?
            .first()
            .copied()
            .unwrap_or(f32::NAN),
    );
    if !loss_value.is_finite() {
        return Err(Error::NonFinite("the training loss".into()));
    }
    let grads = loss.backward();
    let mut out = Vec::with_capacity(tracked.len());
    let mut sq = 0.0f64;
    for (down, up) in &tracked {
        let gd = down
            .grad(&grads)
            .ok_or_else(|| Error::InvalidRequest("a LoRA matrix got no gradient".into()))?;
        let gu = up
            .grad(&grads)
            .ok_or_else(|| Error::InvalidRequest("a LoRA matrix got no gradient".into()))?;
        for g in [&gd, &gu] {
            sq += host(g.clone().square().sum())?
                .iter()
                .map(|v| f64::from(*v))
                .sum::<f64>();
        }
        out.push((gd.inner(), gu.inner()));
    }
    Ok((
        StepStats {
            loss: loss_value,
            grad_norm: sq.sqrt(),
        },
        out,
    ))
}

/// One optimiser step of `weights` on `batch`.
pub fn train_step(
    unet: &UNet2DConditionModel,
    weights: &mut LoraWeights,
    batch: &Batch,
    alphas_cumprod: &[f64],
    adamw: &AdamWConfig,
    options: StepOptions,
) -> Result<StepStats> {
    let (stats, grads) = loss_and_grads(unet, weights, batch, alphas_cumprod, options.snr_gamma)?;
    if !stats.grad_norm.is_finite() {
        return Err(Error::NonFinite("the gradients".into()));
    }
    // torch.nn.utils.clip_grad_norm_: scale all gradients by max/(norm + 1e-6) when above.
    let clip = match options.max_grad_norm {
        Some(max) if stats.grad_norm > max => max / (stats.grad_norm + 1e-6),
        _ => 1.0,
    };
    for (layer, (gd, gu)) in weights.layers.iter_mut().zip(grads) {
        let (gd, gu) = (gd * clip, gu * clip);
        layer.down = adamw.update(
            layer.down.clone(),
            gd,
            &mut layer.down_moments,
            options.t,
            options.lr,
        );
        layer.up = adamw.update(
            layer.up.clone(),
            gu,
            &mut layer.up_moments,
            options.t,
            options.lr,
        );
    }
    Ok(stats)
}
