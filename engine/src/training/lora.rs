//! LoRA training (PEFT's LoRA layer): a low-rank branch beside each targeted layer — `Linear`s
//! of the UNet's transformer blocks, its 1×1 `proj_in`/`proj_out` and resnet 3×3 convolutions
//! (kohya's LoCon), and the text encoder's attention and MLP — with frozen base weights,
//! epsilon-prediction MSE (optionally min-SNR-γ weighted), gradient clipping by global norm
//! and [`AdamWConfig`] updates.
//!
//! The LoRA matrices live on the plain device between steps, stored 2-D (a convolution's
//! `[r, in, k, k]` down as `[r, in·k·k]`, its `[out, r, 1, 1]` up as `[out, r]`); each step
//! installs them as gradient-tracked tensors, runs forward and backward, and updates them.
//! Saved files use kohya's keys (`lora_unet_…`, `lora_te_…` with `lora_down/lora_up/alpha`),
//! which AUTOMATIC1111, ComfyUI, diffusers and Kiln load.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Param;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::adapters::lora::targets::Component;
use crate::error::{Error, Result};
use crate::models::clip_text::ClipTextModel;
use crate::models::layers::{Conv2d, ConvLoraBranch, Linear, LoraBranch};
use crate::models::unet_2d_condition::UNet2DConditionModel;
use crate::tensors::host;
use crate::training::adamw::{AdamWConfig, Moments};
use crate::training::{clipped_update, denoising_loss};

/// UNet layers that get a LoRA by default (attention projections, as most trainers).
pub const DEFAULT_TARGETS: [&str; 4] = ["to_q", "to_k", "to_v", "to_out.0"];

/// LoRA hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank r.
    pub rank: usize,
    /// Alpha (scale = alpha / r).
    pub alpha: f64,
    /// UNet layer-name suffixes to adapt: `to_q`, `to_k`, `to_v`, `to_out.0`,
    /// `ff.net.0.proj`, `ff.net.2`, `proj_in`, `proj_out`, `conv1`, `conv2`.
    pub targets: Vec<String>,
    /// Text-encoder layer-name suffixes to adapt (`q_proj`, `k_proj`, `v_proj`, `out_proj`,
    /// `fc1`, `fc2`); empty = the text encoder stays frozen.
    #[serde(default)]
    pub text_encoder_targets: Vec<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            rank: 4,
            alpha: 4.0,
            targets: DEFAULT_TARGETS.iter().map(|s| (*s).to_owned()).collect(),
            text_encoder_targets: Vec::new(),
        }
    }
}

/// A layer a LoRA can be attached to.
pub enum Target<'a> {
    /// A linear layer.
    Linear(&'a mut Linear),
    /// A convolution.
    Conv(&'a mut Conv2d),
}

/// Every layer of the UNet a LoRA can train, with its diffusers path: transformer-block
/// linears, `proj_in`/`proj_out`, resnet `conv1`/`conv2`.
pub fn unet_targets_mut(unet: &mut UNet2DConditionModel) -> Vec<(String, Target<'_>)> {
    let mut out = Vec::new();
    let mut blocks: Vec<(
        String,
        &mut Vec<crate::models::attention::Transformer2DModel>,
        &mut Vec<crate::models::resnet::ResnetBlock2D>,
    )> = Vec::new();
    for (i, b) in unet.down_blocks.iter_mut().enumerate() {
        blocks.push((
            format!("down_blocks.{i}"),
            &mut b.attentions,
            &mut b.resnets,
        ));
    }
    blocks.push((
        "mid_block".into(),
        &mut unet.mid_block.attentions,
        &mut unet.mid_block.resnets,
    ));
    for (i, b) in unet.up_blocks.iter_mut().enumerate() {
        blocks.push((format!("up_blocks.{i}"), &mut b.attentions, &mut b.resnets));
    }
    for (prefix, attentions, resnets) in blocks {
        for (j, r) in resnets.iter_mut().enumerate() {
            out.push((
                format!("{prefix}.resnets.{j}.conv1"),
                Target::Conv(&mut r.conv1),
            ));
            out.push((
                format!("{prefix}.resnets.{j}.conv2"),
                Target::Conv(&mut r.conv2),
            ));
        }
        for (j, t) in attentions.iter_mut().enumerate() {
            let p = format!("{prefix}.attentions.{j}");
            out.push((format!("{p}.proj_in"), Target::Conv(&mut t.proj_in)));
            out.push((format!("{p}.proj_out"), Target::Conv(&mut t.proj_out)));
            for (k, block) in t.transformer_blocks.iter_mut().enumerate() {
                let p = format!("{p}.transformer_blocks.{k}");
                for (name, attn) in [("attn1", &mut block.attn1), ("attn2", &mut block.attn2)] {
                    out.push((format!("{p}.{name}.to_q"), Target::Linear(&mut attn.to_q)));
                    out.push((format!("{p}.{name}.to_k"), Target::Linear(&mut attn.to_k)));
                    out.push((format!("{p}.{name}.to_v"), Target::Linear(&mut attn.to_v)));
                    for (o, l) in attn.to_out.iter_mut().enumerate() {
                        out.push((format!("{p}.{name}.to_out.{o}"), Target::Linear(l)));
                    }
                }
                out.push((
                    format!("{p}.ff.net.0.proj"),
                    Target::Linear(&mut block.ff.net.0.proj),
                ));
                out.push((format!("{p}.ff.net.2"), Target::Linear(&mut block.ff.net.2)));
            }
        }
    }
    out
}

/// Every layer of the text encoder a LoRA can train, with its transformers path
/// (`text_model.encoder.layers.{i}.self_attn.q_proj`, `….mlp.fc1`, …).
pub fn text_encoder_targets_mut(te: &mut ClipTextModel) -> Vec<(String, Target<'_>)> {
    let mut out = Vec::new();
    for (i, layer) in te.encoder.layers.iter_mut().enumerate() {
        let p = format!("text_model.encoder.layers.{i}");
        let a = &mut layer.self_attn;
        for (name, l) in [
            ("q_proj", &mut a.q_proj),
            ("k_proj", &mut a.k_proj),
            ("v_proj", &mut a.v_proj),
            ("out_proj", &mut a.out_proj),
        ] {
            out.push((format!("{p}.self_attn.{name}"), Target::Linear(l)));
        }
        out.push((format!("{p}.mlp.fc1"), Target::Linear(&mut layer.mlp.fc1)));
        out.push((format!("{p}.mlp.fc2"), Target::Linear(&mut layer.mlp.fc2)));
    }
    out
}

/// The shape of an adapted layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// `down` `[in, r]`, `up` `[r, out]`.
    Linear,
    /// `down` `[r, in·k·k]` (a `[r, in, k, k]` conv), `up` `[out, r]` (a 1×1 conv).
    Conv {
        /// Input channels.
        c_in: usize,
        /// Kernel size.
        kernel: usize,
    },
}

/// One adapted layer: its low-rank pair and their optimiser state.
#[derive(Debug, Clone)]
pub struct LoraLayer {
    /// UNet or text encoder.
    pub component: Component,
    /// Path of the adapted layer (diffusers / transformers naming).
    pub path: String,
    /// Linear or convolution.
    pub kind: LayerKind,
    /// The down matrix (see [`LayerKind`]).
    pub down: Tensor<2>,
    /// The up matrix (see [`LayerKind`]).
    pub up: Tensor<2>,
    /// AdamW moments of `down`.
    pub down_moments: Moments<2>,
    /// AdamW moments of `up`.
    pub up_moments: Moments<2>,
}

impl LoraLayer {
    /// `down`/`up` in PEFT's layout (`lora_A.weight` `[r, in(, k, k)]`, `lora_B.weight`
    /// `[out, r(, 1, 1)]`), as (shape, tensor).
    pub fn peft_layout(&self) -> ((Vec<usize>, Tensor<2>), (Vec<usize>, Tensor<2>)) {
        match self.kind {
            LayerKind::Linear => {
                let (d, u) = (self.down.clone().transpose(), self.up.clone().transpose());
                ((d.dims().to_vec(), d), (u.dims().to_vec(), u))
            }
            LayerKind::Conv { c_in, kernel } => {
                let [r, _] = self.down.dims();
                let [out, _] = self.up.dims();
                (
                    (vec![r, c_in, kernel, kernel], self.down.clone()),
                    (vec![out, r, 1, 1], self.up.clone()),
                )
            }
        }
    }
}

/// The adapter being trained.
#[derive(Debug, Clone)]
pub struct LoraWeights {
    /// Hyper-parameters.
    pub config: LoraConfig,
    /// One entry per adapted layer: UNet layers in UNet order, then text-encoder layers.
    pub layers: Vec<LoraLayer>,
}

fn matches(path: &str, targets: &[String]) -> bool {
    targets.iter().any(|t| path.ends_with(&format!(".{t}")))
}

impl LoraWeights {
    /// PEFT's initialisation on every targeted layer: `down` (lora_A) Kaiming-uniform with
    /// a = √5 (uniform ±1/√fan_in), `up` (lora_B) zeros — the adapter starts as a no-op.
    pub fn init(
        unet: &mut UNet2DConditionModel,
        text_encoder: &mut ClipTextModel,
        config: &LoraConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        if config.rank == 0 {
            return Err(Error::InvalidRequest("LoRA rank must be at least 1".into()));
        }
        let r = config.rank;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut layers = Vec::new();
        let candidates = unet_targets_mut(unet)
            .into_iter()
            .filter(|(p, _)| matches(p, &config.targets))
            .map(|(p, t)| (Component::Unet, p, t));
        let te = text_encoder_targets_mut(text_encoder)
            .into_iter()
            .filter(|(p, _)| matches(p, &config.text_encoder_targets))
            .map(|(p, t)| (Component::TextEncoder, p, t));
        for (component, path, target) in candidates.chain(te) {
            let (kind, fan_in, down_shape, up_shape) = match target {
                Target::Linear(l) => {
                    let [d_in, d_out] = l.weight.val().dims();
                    (LayerKind::Linear, d_in, [d_in, r], [r, d_out])
                }
                Target::Conv(c) => {
                    let [c_out, c_in, k, _] = c.weight.val().dims();
                    (
                        LayerKind::Conv { c_in, kernel: k },
                        c_in * k * k,
                        [r, c_in * k * k],
                        [c_out, r],
                    )
                }
            };
            let bound = 1.0 / (fan_in as f64).sqrt();
            let values: Vec<f32> = (0..down_shape[0] * down_shape[1])
                .map(|_| rng.random_range(-bound..bound) as f32)
                .collect();
            let down = Tensor::from_data(TensorData::new(values, down_shape), device);
            let up = Tensor::zeros(up_shape, device);
            layers.push(LoraLayer {
                component,
                path,
                kind,
                down_moments: Moments::zeros(&down),
                up_moments: Moments::zeros(&up),
                down,
                up,
            });
        }
        if layers.is_empty() {
            return Err(Error::InvalidRequest(format!(
                "no layer matches the LoRA targets {:?} / {:?}",
                config.targets, config.text_encoder_targets
            )));
        }
        Ok(LoraWeights {
            config: config.clone(),
            layers,
        })
    }

    /// Every matrix with its moments: `down` then `up` of each layer, in layer order (the
    /// order of [`loss_and_grads`]' gradients, flattened).
    pub fn params_mut(&mut self) -> Vec<(&mut Tensor<2>, &mut Moments<2>)> {
        self.layers
            .iter_mut()
            .flat_map(|l| {
                [
                    (&mut l.down, &mut l.down_moments),
                    (&mut l.up, &mut l.up_moments),
                ]
            })
            .collect()
    }

    /// `alpha / r`.
    pub fn scale(&self) -> f64 {
        self.config.alpha / self.config.rank as f64
    }

    /// Whether any text-encoder layer is adapted.
    pub fn trains_text_encoder(&self) -> bool {
        self.layers
            .iter()
            .any(|l| l.component == Component::TextEncoder)
    }

    /// The adapter as kohya/A1111 tensors (`lora_unet_<path with _>` / `lora_te_<path with _>`,
    /// `.lora_down.weight`, `.lora_up.weight`, `.alpha`), as (name, shape, values).
    pub fn kohya_tensors(&self) -> Result<Vec<NamedTensor>> {
        let mut out = Vec::new();
        for l in &self.layers {
            let prefix = match l.component {
                Component::Unet => "lora_unet",
                Component::TextEncoder => "lora_te",
            };
            let key = format!("{prefix}_{}", l.path.replace('.', "_"));
            let ((ds, d), (us, u)) = l.peft_layout();
            out.push((format!("{key}.lora_down.weight"), ds, host(d)?));
            out.push((format!("{key}.lora_up.weight"), us, host(u)?));
            out.push((
                format!("{key}.alpha"),
                vec![],
                vec![self.config.alpha as f32],
            ));
        }
        Ok(out)
    }

    /// Writes the adapter in diffusers/PEFT format (`unet.<path>.lora_A.weight`,
    /// `text_encoder.<path>.lora_B.weight`), atomically. diffusers takes alpha = rank for a file
    /// without a full PEFT config in its header, so the scale alpha/rank is folded into
    /// `lora_B` — the same ΔW in every loader.
    pub fn save_peft(&self, path: &Path) -> Result<()> {
        let mut data = Vec::new();
        for l in &self.layers {
            let prefix = match l.component {
                Component::Unet => "unet",
                Component::TextEncoder => "text_encoder",
            };
            let ((ds, d), (us, u)) = l.peft_layout();
            data.push((format!("{prefix}.{}.lora_A.weight", l.path), ds, host(d)?));
            data.push((
                format!("{prefix}.{}.lora_B.weight", l.path),
                us,
                host(u * self.scale())?,
            ));
        }
        let mut meta = BTreeMap::new();
        meta.insert("format".to_owned(), "pt".to_owned());
        let writes: Vec<crate::weights::safetensors::WriteTensor> = data
            .iter()
            .map(
                |(name, shape, d)| crate::weights::safetensors::WriteTensor {
                    name,
                    shape: shape.clone(),
                    data: d,
                },
            )
            .collect();
        crate::weights::safetensors::write_f32(path, &writes, &meta)
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

/// Puts the LoRA branches into `unet` and `text_encoder`; with `track`, the matrices become
/// gradient-tracked leaves, returned in layer order as (down, up).
pub fn install(
    unet: &mut UNet2DConditionModel,
    text_encoder: &mut ClipTextModel,
    weights: &LoraWeights,
    track: bool,
) -> Vec<(Tensor<2>, Tensor<2>)> {
    let scale = weights.scale();
    let mut leaves = Vec::with_capacity(weights.layers.len());
    let mut targets: BTreeMap<(Component, String), Target<'_>> = BTreeMap::new();
    targets.extend(
        unet_targets_mut(unet)
            .into_iter()
            .map(|(p, t)| ((Component::Unet, p), t)),
    );
    targets.extend(
        text_encoder_targets_mut(text_encoder)
            .into_iter()
            .map(|(p, t)| ((Component::TextEncoder, p), t)),
    );
    for l in &weights.layers {
        let (mut down, mut up) = (l.down.clone(), l.up.clone());
        if track {
            down = down.autodiff().require_grad();
            up = up.autodiff().require_grad();
            leaves.push((down.clone(), up.clone()));
        }
        match (targets.remove(&(l.component, l.path.clone())), l.kind) {
            (Some(Target::Linear(linear)), LayerKind::Linear) => {
                linear.lora = Some(LoraBranch {
                    down: Param::from_tensor(down),
                    up: Param::from_tensor(up),
                    scale,
                });
            }
            (Some(Target::Conv(conv)), LayerKind::Conv { kernel, .. }) => {
                conv.lora = Some(ConvLoraBranch {
                    down: Param::from_tensor(down),
                    up: Param::from_tensor(up),
                    kernel,
                    scale,
                });
            }
            _ => tracing::warn!(path = %l.path, "LoRA layer not found in the model"),
        }
    }
    leaves
}

/// The text side of a batch.
#[derive(Debug, Clone)]
pub enum Text {
    /// Precomputed text embeddings `[B, 77, D]` (the text encoder is not trained).
    Context(Tensor<3>),
    /// Token ids `[B, 77]`, encoded inside the step (needed when the text encoder trains).
    Ids(Tensor<2, Int>),
}

/// One training batch (on the plain device): latents, the noise to add, one timestep per
/// item, and the text.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Clean latents `[B, C, h, w]` (VAE-encoded × scaling factor).
    pub latents: Tensor<4>,
    /// ε `[B, C, h, w]`.
    pub noise: Tensor<4>,
    /// Training timesteps, one per item.
    pub timesteps: Vec<usize>,
    /// Captions.
    pub text: Text,
}

/// A tensor to write: (name, shape, values).
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

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

/// Loss and gradients of `weights` on `batch` (no update). The models are frozen on a plain
/// device: only the LoRA matrices enter autodiff (the frozen weights are constants of the
/// graph, so no gradient or graph memory is spent on them). Returns the loss value and the
/// per-layer (∂down, ∂up) on the plain device.
pub fn loss_and_grads(
    unet: &UNet2DConditionModel,
    text_encoder: &ClipTextModel,
    weights: &LoraWeights,
    batch: &Batch,
    alphas_cumprod: &[f64],
    snr_gamma: Option<f64>,
) -> Result<(f64, Vec<(Tensor<2>, Tensor<2>)>)> {
    let (mut unet, mut te) = (unet.clone(), text_encoder.clone());
    let tracked = install(&mut unet, &mut te, weights, true);
    let context = match &batch.text {
        Text::Ids(ids) => te.forward(ids.clone(), 1),
        Text::Context(_) if weights.trains_text_encoder() => {
            return Err(Error::InvalidRequest(
                "a text-encoder LoRA needs token ids, not text embeddings".into(),
            ));
        }
        Text::Context(c) => c.clone(),
    };
    let (loss, value) = denoising_loss(
        &unet,
        &context,
        batch.latents.clone(),
        batch.noise.clone(),
        &batch.timesteps,
        alphas_cumprod,
        snr_gamma.into(),
    )?;
    let grads = loss.backward();
    // A layer the loss does not reach (a text-encoder layer past the one clip-skip uses) has a
    // zero gradient.
    let grad = |t: &Tensor<2>| {
        t.grad(&grads)
            .map(|g| g.inner())
            .unwrap_or_else(|| t.clone().inner().zeros_like())
    };
    Ok((
        value,
        tracked
            .iter()
            .map(|(down, up)| (grad(down), grad(up)))
            .collect(),
    ))
}

/// One optimiser step of `weights` on `batch`.
pub fn train_step(
    unet: &UNet2DConditionModel,
    text_encoder: &ClipTextModel,
    weights: &mut LoraWeights,
    batch: &Batch,
    alphas_cumprod: &[f64],
    adamw: &AdamWConfig,
    options: StepOptions,
) -> Result<StepStats> {
    let (loss, grads) = loss_and_grads(
        unet,
        text_encoder,
        weights,
        batch,
        alphas_cumprod,
        options.snr_gamma,
    )?;
    let grads = grads.into_iter().flat_map(|(d, u)| [d, u]).collect();
    let grad_norm = clipped_update(
        weights.params_mut(),
        grads,
        adamw,
        options.max_grad_norm,
        options.t,
        options.lr,
    )?;
    Ok(StepStats { loss, grad_norm })
}
