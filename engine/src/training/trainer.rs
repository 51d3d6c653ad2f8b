//! A whole training run (LoRA or textual inversion): dataset → plan → steps with events → checkpoints → the adapter
//! file. Every random choice (epoch order, crops, flips, noise, timesteps) derives from the
//! seed and the step it serves ([`rng_for`]), so a run resumed from a checkpoint makes the
//! same choices as one that never stopped, and its weights come out identical.
//!
//! Checkpoints (`<output>/checkpoints/<name>-step000010.safetensors`) hold the LoRA matrices,
//! their AdamW moments, and in the header the step, smoothed loss and full configuration;
//! they are written to a temporary file and renamed, so a crash mid-save leaves the previous
//! one intact. The result (`<output>/<name>.safetensors`) is a kohya-format LoRA.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::RngExt;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::pipeline::{CancelToken, StableDiffusion};
use crate::training::adamw::{AdamWConfig, Moments};
use crate::training::dataset::{
    DatasetOptions, DatasetReport, Plan, bucket, image_files, prepare, rng_for, validate,
};
use crate::training::lora::{Batch, LoraConfig, LoraWeights, StepStats, Text, loss_and_grads};
use crate::training::lr_schedule::LrSchedule;
use crate::training::textual_inversion::{TiConfig, TiWeights};
use crate::training::{clipped_update, host};
use crate::weights::safetensors::{SafeTensors, WriteTensor, write_f32};

/// Everything that defines a LoRA training run (stored in every checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainingConfig {
    /// Base checkpoint (file or diffusers folder).
    pub model: PathBuf,
    /// Folder of images and captions.
    pub data: PathBuf,
    /// Output folder.
    pub output: PathBuf,
    /// Output file stem.
    pub name: String,
    /// Rank, alpha, targets (LoRA runs).
    pub lora: LoraConfig,
    /// Train a textual-inversion embedding instead of a LoRA.
    pub textual_inversion: Option<TiConfig>,
    /// Resolution, crops, flips, buckets, repeats, default caption.
    pub dataset: DatasetOptions,
    /// Epochs (ignored when `max_steps` is set).
    pub epochs: usize,
    /// Stop after this many optimiser steps.
    pub max_steps: Option<usize>,
    /// Images per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    pub gradient_accumulation: usize,
    /// Base learning rate.
    pub learning_rate: f64,
    /// Learning-rate schedule.
    pub lr_schedule: LrSchedule,
    /// Warm-up steps.
    pub warmup_steps: usize,
    /// AdamW options.
    pub adamw: AdamWConfig,
    /// Clip the global gradient norm (None = off).
    pub max_grad_norm: Option<f64>,
    /// min-SNR-γ (None = plain MSE).
    pub snr_gamma: Option<f64>,
    /// Noise offset (0 = off).
    pub noise_offset: f64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Save a checkpoint every N steps (0 = only at the end).
    pub checkpoint_every: usize,
    /// Make sample images every N steps (0 = never).
    pub sample_every: usize,
    /// Sample prompts (one image each, fixed seeds).
    pub sample_prompts: Vec<String>,
    /// Also write the LoRA in diffusers/PEFT format (`<name>.peft.safetensors`).
    pub export_peft: bool,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            model: PathBuf::new(),
            data: PathBuf::new(),
            output: PathBuf::from("lora-output"),
            name: "lora".into(),
            lora: LoraConfig::default(),
            textual_inversion: None,
            dataset: DatasetOptions::default(),
            epochs: 10,
            max_steps: None,
            batch_size: 1,
            gradient_accumulation: 1,
            learning_rate: 1e-4,
            lr_schedule: LrSchedule::ConstantWithWarmup,
            warmup_steps: 0,
            adamw: AdamWConfig::default(),
            max_grad_norm: Some(1.0),
            snr_gamma: Some(5.0),
            noise_offset: 0.0,
            seed: 0,
            checkpoint_every: 100,
            sample_every: 0,
            sample_prompts: Vec::new(),
            export_peft: false,
        }
    }
}

/// What a run reports as it goes (the monitor's data).
#[derive(Debug, Clone)]
pub enum TrainingEvent {
    /// Validated data and the plan, before the first step.
    Started {
        /// The dataset report.
        report: Box<DatasetReport>,
        /// The plan.
        plan: Plan,
        /// The step it starts from (0, or the checkpoint's).
        from_step: usize,
    },
    /// An optimiser step finished.
    Step {
        /// Steps done (1-based).
        step: usize,
        /// Steps in all.
        total: usize,
        /// Epoch (1-based).
        epoch: usize,
        /// This step's loss.
        loss: f64,
        /// Exponential moving average of the loss (0.9).
        smoothed_loss: f64,
        /// Learning rate used.
        lr: f64,
        /// Global gradient norm before clipping.
        grad_norm: f64,
        /// Steps per second (this session).
        it_per_s: f64,
        /// Seconds left at that rate.
        eta_s: f64,
    },
    /// Sample images at fixed prompts and seeds with the current adapter.
    Samples {
        /// The step they show.
        step: usize,
        /// One per sample prompt.
        images: Vec<RgbImage>,
    },
    /// A checkpoint was written.
    Checkpoint {
        /// Its step.
        step: usize,
        /// The file.
        path: PathBuf,
    },
}

/// Pauses a run between steps while set.
#[derive(Debug, Clone, Default)]
pub struct PauseToken(Arc<AtomicBool>);

impl PauseToken {
    /// Pauses or resumes.
    pub fn set(&self, paused: bool) {
        self.0.store(paused, Ordering::SeqCst);
    }
    /// Whether paused.
    pub fn is_paused(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Header key of the checkpoint state.
const STATE_KEY: &str = "kiln_training_state";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    step: usize,
    smoothed_loss: f64,
    config: TrainingConfig,
}

/// The micro-batches of one epoch: indices into the usable images (× repeats), shuffled by
/// the epoch's RNG, grouped so a batch never mixes bucket sizes.
fn epoch_batches(
    sizes: &[(usize, usize)],
    repeats: &[usize],
    config: &TrainingConfig,
    epoch: usize,
) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..sizes.len())
        .flat_map(|i| std::iter::repeat_n(i, repeats[i]))
        .collect();
    let mut rng = rng_for(config.seed, 1, epoch as u64);
    for i in (1..order.len()).rev() {
        let j = rng.random_range(0..=i);
        order.swap(i, j);
    }
    let mut by_bucket: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
    for i in order {
        by_bucket
            .entry(bucket(sizes[i], &config.dataset))
            .or_default()
            .push(i);
    }
    let mut batches: Vec<Vec<usize>> = by_bucket
        .into_values()
        .flat_map(|v| {
            v.chunks(config.batch_size.max(1))
                .map(<[usize]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect();
    // Interleave buckets in a seeded order rather than one bucket after another.
    for i in (1..batches.len()).rev() {
        let j = rng.random_range(0..=i);
        batches.swap(i, j);
    }
    batches
}

/// A checkpoint path for `step`.
pub fn checkpoint_path(config: &TrainingConfig, step: usize) -> PathBuf {
    config
        .output
        .join("checkpoints")
        .join(format!("{}-step{step:06}.safetensors", config.name))
}

/// The newest checkpoint of a run (by step), if any.
pub fn latest_checkpoint(config: &TrainingConfig) -> Option<PathBuf> {
    let dir = config.output.join("checkpoints");
    let prefix = format!("{}-step", config.name);
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".safetensors"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// The adapter a run trains.
enum Adapter {
    Lora(LoraWeights),
    Ti(TiWeights),
}

impl Adapter {
    /// Every trained matrix with its moments, by a stable name.
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor<2>, &mut Moments<2>)> {
        match self {
            Adapter::Lora(w) => w
                .layers
                .iter_mut()
                .flat_map(|l| {
                    [
                        (format!("{}.down", l.path), &mut l.down, &mut l.down_moments),
                        (format!("{}.up", l.path), &mut l.up, &mut l.up_moments),
                    ]
                })
                .collect(),
            Adapter::Ti(t) => vec![("embedding".to_owned(), &mut t.rows, &mut t.moments)],
        }
    }

    /// Whether a checkpoint's configuration fits this adapter.
    fn fits(&self, config: &TrainingConfig) -> bool {
        match self {
            Adapter::Lora(w) => config.textual_inversion.is_none() && config.lora == w.config,
            Adapter::Ti(t) => config.textual_inversion.as_ref() == Some(&t.config),
        }
    }
}

fn save_checkpoint(path: &Path, adapter: &mut Adapter, state: &CheckpointState) -> Result<()> {
    let mut data: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    for (name, t, m) in adapter.params_mut() {
        for (suffix, x) in [("", &*t), (".m", &m.m), (".v", &m.v)] {
            data.push((
                format!("{name}{suffix}"),
                x.dims().to_vec(),
                host(x.clone())?,
            ));
        }
    }
    let writes: Vec<WriteTensor> = data
        .iter()
        .map(|(n, s, d)| WriteTensor {
            name: n,
            shape: s.clone(),
            data: d,
        })
        .collect();
    let mut meta = BTreeMap::new();
    meta.insert(
        STATE_KEY.to_owned(),
        serde_json::to_string(state).map_err(|e| Error::Config(e.to_string()))?,
    );
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    write_f32(path, &writes, &meta)
}

fn load_checkpoint(path: &Path, adapter: &mut Adapter) -> Result<CheckpointState> {
    let bad = |reason: String| Error::BadCheckpoint {
        path: path.to_owned(),
        reason,
    };
    let file = SafeTensors::open(path)?;
    let state: CheckpointState = file
        .metadata()
        .get(STATE_KEY)
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| bad("it is not a Kiln training checkpoint".into()))?;
    if !adapter.fits(&state.config) {
        return Err(bad(
            "it was made for another adapter (method, rank, alpha, targets or token differ)".into(),
        ));
    }
    for (name, t, m) in adapter.params_mut() {
        let device = t.device();
        let dims = t.dims();
        let get = |key: String| -> Result<Tensor<2>> {
            let v = file
                .f32(&key)
                .map_err(|_| bad(format!("it has no tensor {key}")))?;
            if v.len() != dims[0] * dims[1] {
                return Err(bad(format!(
                    "{key} has {} values, expected {dims:?}",
                    v.len()
                )));
            }
            Ok(Tensor::from_data(TensorData::new(v, dims), &device))
        };
        let (value, mm, mv) = (
            get(name.clone())?,
            get(format!("{name}.m"))?,
            get(format!("{name}.v"))?,
        );
        *t = value;
        *m = Moments { m: mm, v: mv };
    }
    Ok(state)
}

/// `n` standard-normal samples from `rng`.
pub(crate) fn randn(rng: &mut rand_chacha::ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

/// What a training step's noise adds to the standard normal.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NoiseOptions {
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
pub(crate) fn training_noise(
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

/// Trains a LoRA (or, with `config.textual_inversion`, an embedding); returns the file. `resume` continues from a checkpoint (its
/// configuration must match `config` in the LoRA shape; the rest is taken from `config`).
pub fn train_lora(
    config: &TrainingConfig,
    resume: Option<&Path>,
    cancel: &CancelToken,
    pause: &PauseToken,
    on_event: &mut dyn FnMut(TrainingEvent),
) -> Result<PathBuf> {
    let device = crate::device::device("cpu")?;
    let mut sd = StableDiffusion::load(&config.model, None, &device)?;
    let report = validate(&image_files(&config.data)?, &config.dataset, &sd.tokenizer)?;
    let usable: Vec<(PathBuf, String, (usize, usize))> = report
        .usable()
        .map(|e| {
            (
                e.path.clone(),
                report.caption_of(e).to_owned(),
                e.size.unwrap_or((0, 0)),
            )
        })
        .collect();
    if usable.is_empty() {
        return Err(Error::InvalidRequest(format!(
            "no usable training images in {}: {}",
            config.data.display(),
            report.summary()
        )));
    }
    let sizes: Vec<(usize, usize)> = usable.iter().map(|u| u.2).collect();
    let repeats: Vec<usize> = usable
        .iter()
        .map(|u| config.dataset.repeats_of(&u.0))
        .collect();
    let per_epoch = epoch_batches(&sizes, &repeats, config, 0)
        .len()
        .div_ceil(config.gradient_accumulation.max(1));
    let total = config.max_steps.unwrap_or(per_epoch * config.epochs);
    // Epochs follow from the steps (a `max_steps` run may end mid-epoch).
    let plan = Plan {
        steps_per_epoch: per_epoch,
        ..Plan::new(usable.len(), config.dataset.repeats, 1, config.batch_size)
    }
    .with_steps(total);
    let mut adapter = match &config.textual_inversion {
        Some(ti) => Adapter::Ti(TiWeights::init(ti, &mut sd.tokenizer, &sd.text_encoder)?),
        None => Adapter::Lora(LoraWeights::init(
            &mut sd.unet,
            &mut sd.text_encoder,
            &config.lora,
            config.seed,
            &device,
        )?),
    };
    let (mut step, mut smoothed) = (0usize, f64::NAN);
    let mut last_checkpoint = None;
    if let Some(path) = resume {
        let state = load_checkpoint(path, &mut adapter)?;
        step = state.step;
        smoothed = state.smoothed_loss;
        last_checkpoint = Some(path.to_owned());
    }
    on_event(TrainingEvent::Started {
        report: Box::new(report.clone()),
        plan,
        from_step: step,
    });
    let alphas = sd.info.scheduler.alphas_cumprod()?;
    let n_train = alphas.len();
    let scaling = sd.vae.scaling_factor;
    let accum = config.gradient_accumulation.max(1);
    let mut latent_cache: HashMap<usize, Tensor<4>> = HashMap::new();
    let mut context_cache: HashMap<String, Tensor<3>> = HashMap::new();
    let mut images: HashMap<usize, RgbImage> = HashMap::new();
    let cacheable = !config.dataset.random_crop && !config.dataset.flip;
    let started = Instant::now();
    let first_step = step;
    let mut epoch_cache: Option<(usize, Vec<Vec<usize>>)> = None;
    while step < total {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        while pause.is_paused() {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let mut sum_grads: Option<Vec<Tensor<2>>> = None;
        let mut loss_sum = 0.0;
        for micro in 0..accum {
            let global = step * accum + micro;
            let epoch = global / (per_epoch * accum).max(1);
            if epoch_cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
                epoch_cache = Some((epoch, epoch_batches(&sizes, &repeats, config, epoch)));
            }
            let batches = &epoch_cache
                .as_ref()
                .map(|(_, b)| b.clone())
                .unwrap_or_default();
            let items = batches[global % batches.len().max(1)].clone();
            // Latents (VAE posterior mean × scaling factor; cached when no augmentation).
            let mut latents = Vec::with_capacity(items.len());
            for (k, &i) in items.iter().enumerate() {
                if cacheable && let Some(l) = latent_cache.get(&i) {
                    latents.push(l.clone());
                    continue;
                }
                if let std::collections::hash_map::Entry::Vacant(v) = images.entry(i) {
                    v.insert(crate::image::read_image(&usable[i].0)?);
                }
                let (w, h) = bucket(sizes[i], &config.dataset);
                let mut rng = rng_for(config.seed, 2, (global * config.batch_size + k) as u64);
                let flip = config.dataset.flip && rng.random_bool(0.5);
                let img = prepare(
                    &images[&i],
                    w,
                    h,
                    config.dataset.random_crop,
                    flip,
                    &mut rng,
                );
                let l = sd
                    .vae
                    .encode_mean(crate::image::from_rgb8(&[&img], &device))
                    * scaling;
                if cacheable {
                    latent_cache.insert(i, l.clone());
                }
                latents.push(l);
            }
            let latents = Tensor::cat(latents, 0);
            let shape = latents.dims();
            let b = shape[0];
            // Captions → token ids; for a LoRA, text embeddings (cached: the text encoder is
            // frozen). A textual-inversion caption without the token gets it in front.
            let captions: Vec<String> = items
                .iter()
                .map(|&i| {
                    let caption = &usable[i].1;
                    match &adapter {
                        Adapter::Ti(t) if !caption.contains(&t.config.token) => {
                            if caption.is_empty() {
                                t.config.token.clone()
                            } else {
                                format!("{}, {caption}", t.config.token)
                            }
                        }
                        _ => caption.clone(),
                    }
                })
                .collect();
            let len = sd.tokenizer.max_length();
            let mut ids: Vec<i64> = Vec::with_capacity(b * len);
            for c in &captions {
                ids.extend(sd.tokenizer.encode(c)?.into_iter().map(i64::from));
            }
            let ids: Tensor<2, Int> = Tensor::from_data(TensorData::new(ids, [b, len]), &device);
            // Noise (+ offset) and timesteps.
            let mut rng = rng_for(config.seed, 3, global as u64);
            let noise = training_noise(
                &mut rng,
                shape,
                &NoiseOptions {
                    offset: config.noise_offset,
                    ..NoiseOptions::default()
                },
                &device,
            );
            let timesteps: Vec<usize> = (0..b).map(|_| rng.random_range(0..n_train)).collect();
            let diverged = |e: Error| match e {
                Error::NonFinite(_) => Error::TrainingDiverged {
                    step: step + 1,
                    what: "the loss".into(),
                    last_checkpoint: last_checkpoint.clone(),
                },
                e => e,
            };
            let (loss, grads): (f64, Vec<Tensor<2>>) = match &adapter {
                Adapter::Lora(w) => {
                    // Without a text-encoder LoRA the embeddings are fixed: cache them.
                    let text = if w.trains_text_encoder() {
                        Text::Ids(ids)
                    } else {
                        let mut contexts = Vec::with_capacity(b);
                        for (k, c) in captions.iter().enumerate() {
                            if !context_cache.contains_key(c) {
                                let row = ids.clone().slice([k..k + 1, 0..len]);
                                context_cache.insert(c.clone(), sd.text_encoder.forward(row, 1));
                            }
                            contexts.push(context_cache[c].clone());
                        }
                        Text::Context(Tensor::cat(contexts, 0))
                    };
                    let batch = Batch {
                        latents,
                        noise,
                        timesteps,
                        text,
                    };
                    let (loss, g) = loss_and_grads(
                        &sd.unet,
                        &sd.text_encoder,
                        w,
                        &batch,
                        &alphas,
                        config.snr_gamma,
                    )
                    .map_err(diverged)?;
                    (loss, g.into_iter().flat_map(|(d, u)| [d, u]).collect())
                }
                Adapter::Ti(t) => {
                    let (loss, g) = crate::training::textual_inversion::loss_and_grad(
                        &sd.unet,
                        &sd.text_encoder,
                        t,
                        ids,
                        latents,
                        noise,
                        &timesteps,
                        &alphas,
                        config.snr_gamma,
                    )
                    .map_err(diverged)?;
                    (loss, vec![g])
                }
            };
            loss_sum += loss;
            sum_grads = Some(match sum_grads {
                None => grads,
                Some(acc) => acc.into_iter().zip(grads).map(|(a, g)| a + g).collect(),
            });
        }
        let grads: Vec<Tensor<2>> = sum_grads
            .unwrap_or_default()
            .into_iter()
            .map(|g| g / accum as f64)
            .collect();
        let lr = config
            .lr_schedule
            .lr(config.learning_rate, step, config.warmup_steps, total);
        let params = adapter.params_mut().into_iter().map(|(_, p, m)| (p, m));
        let grad_norm = clipped_update(
            params,
            grads,
            &config.adamw,
            config.max_grad_norm,
            step + 1,
            lr,
        )
        .map_err(|e| match e {
            Error::NonFinite(_) => Error::TrainingDiverged {
                step: step + 1,
                what: "the gradients".into(),
                last_checkpoint: last_checkpoint.clone(),
            },
            e => e,
        })?;
        let stats = StepStats {
            loss: loss_sum / accum as f64,
            grad_norm,
        };
        step += 1;
        smoothed = if smoothed.is_nan() {
            stats.loss
        } else {
            0.9 * smoothed + 0.1 * stats.loss
        };
        let rate = (step - first_step) as f64 / started.elapsed().as_secs_f64().max(1e-9);
        on_event(TrainingEvent::Step {
            step,
            total,
            epoch: step.saturating_sub(1) / per_epoch.max(1) + 1,
            loss: stats.loss,
            smoothed_loss: smoothed,
            lr,
            grad_norm: stats.grad_norm,
            it_per_s: rate,
            eta_s: (total - step) as f64 / rate.max(1e-9),
        });
        if (config.checkpoint_every > 0 && step % config.checkpoint_every == 0) || step == total {
            let path = checkpoint_path(config, step);
            save_checkpoint(
                &path,
                &mut adapter,
                &CheckpointState {
                    step,
                    smoothed_loss: smoothed,
                    config: config.clone(),
                },
            )?;
            last_checkpoint = Some(path.clone());
            on_event(TrainingEvent::Checkpoint { step, path });
        }
        if config.sample_every > 0
            && (step % config.sample_every == 0 || step == total)
            && !config.sample_prompts.is_empty()
        {
            let images = samples(&mut sd, &adapter, config)?;
            on_event(TrainingEvent::Samples { step, images });
        }
    }
    let out = config.output.join(format!("{}.safetensors", config.name));
    let mut meta = BTreeMap::new();
    meta.insert("ss_output_name".into(), config.name.clone());
    meta.insert("ss_steps".into(), total.to_string());
    meta.insert(
        "kiln_training_config".into(),
        serde_json::to_string(config).map_err(|e| Error::Config(e.to_string()))?,
    );
    std::fs::create_dir_all(&config.output).map_err(|e| Error::io(&config.output, e))?;
    match &adapter {
        Adapter::Lora(w) => {
            w.save_kohya(&out, &meta)?;
            if config.export_peft {
                w.save_peft(
                    &config
                        .output
                        .join(format!("{}.peft.safetensors", config.name)),
                )?;
            }
        }
        Adapter::Ti(t) => t.save(&out, &meta)?,
    }
    Ok(out)
}

/// Seconds per optimiser step of `config` on this machine, from a short warm-up run (three
/// steps into a temporary folder; the first, which includes the set-up, is not counted).
pub fn measure_seconds_per_step(config: &TrainingConfig, cancel: &CancelToken) -> Result<f64> {
    let dir = tempfile::tempdir().map_err(|e| Error::io(Path::new("(temporary folder)"), e))?;
    let mut probe = config.clone();
    probe.output = dir.path().to_owned();
    probe.max_steps = Some(3);
    probe.checkpoint_every = 0;
    probe.sample_every = 0;
    let mut times = Vec::new();
    train_lora(&probe, None, cancel, &PauseToken::default(), &mut |e| {
        if let TrainingEvent::Step { .. } = e {
            times.push(Instant::now());
        }
    })?;
    match times.as_slice() {
        [first, .., last] if times.len() > 1 => {
            Ok(last.duration_since(*first).as_secs_f64() / (times.len() - 1) as f64)
        }
        _ => Err(Error::InvalidRequest("the warm-up made no steps".into())),
    }
}

/// One image per sample prompt (seed 0, 1, …) with the current adapter installed.
fn samples(
    sd: &mut StableDiffusion,
    adapter: &Adapter,
    config: &TrainingConfig,
) -> Result<Vec<RgbImage>> {
    let (base_unet, base_te) = (sd.unet.clone(), sd.text_encoder.clone());
    match adapter {
        Adapter::Lora(w) => {
            crate::training::lora::install(&mut sd.unet, &mut sd.text_encoder, w, false);
        }
        Adapter::Ti(t) => sd.text_encoder = t.install(&base_te),
    }
    let native = sd
        .info
        .config
        .unet
        .sample_size
        .map(|s| s * sd.vae_scale_factor())
        .unwrap_or(config.dataset.resolution);
    let result = sample_images(sd, &config.sample_prompts, native);
    sd.unet = base_unet;
    sd.text_encoder = base_te;
    result
}

/// One `size`×`size` image per prompt (seeds 0, 1, …; DPM++ 2M Karras, 20 steps, CFG 7):
/// the sample images a training run shows.
pub fn sample_images(
    sd: &mut StableDiffusion,
    prompts: &[String],
    size: usize,
) -> Result<Vec<RgbImage>> {
    let mut out = Vec::with_capacity(prompts.len());
    for (k, prompt) in prompts.iter().enumerate() {
        let req = crate::pipeline::GenerationRequest {
            prompts: vec![prompt.clone()],
            negatives: vec![],
            sampler: crate::pipeline::Sampler::DpmPp2m {
                schedule: crate::schedulers::Schedule::Karras,
            },
            steps: 20,
            cfg: 7.0,
            seed: k as u64,
            width: size,
            height: size,
            batch: 1,
            latents: None,
            clip_skip: 1,
            init_image: None,
            preview: false,
        };
        out.extend(sd.generate(&req, &CancelToken::new(), &mut |_| {})?.images);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn per_image_repeats_and_buckets_shape_each_epoch() {
        let mut config = TrainingConfig {
            batch_size: 2,
            ..TrainingConfig::default()
        };
        config.dataset.repeats = 2;
        let sizes = [(512, 512), (512, 512), (512, 512)];
        // 3 images × 2 repeats = 6 items → 3 batches of 2.
        let b = epoch_batches(&sizes, &[2, 2, 2], &config, 0);
        assert_eq!(b.iter().map(Vec::len).sum::<usize>(), 6);
        assert_eq!(b.len(), 3);
        // Image 0 seen 5 times, the others once: 7 items.
        let b = epoch_batches(&sizes, &[5, 1, 1], &config, 1);
        let all: Vec<usize> = b.concat();
        assert_eq!((all.len(), all.iter().filter(|i| **i == 0).count()), (7, 5));
        // Another epoch, another order; the same epoch, the same order.
        assert_eq!(epoch_batches(&sizes, &[5, 1, 1], &config, 1), b);
        assert_ne!(epoch_batches(&sizes, &[5, 1, 1], &config, 2), b);
        // With buckets, a batch never mixes sizes.
        config.dataset.buckets = true;
        let mixed = [(512, 512), (1024, 512), (512, 512), (1024, 512)];
        for batch in epoch_batches(&mixed, &[1, 1, 1, 1], &config, 0) {
            assert!(
                batch.iter().all(|i| bucket(mixed[*i], &config.dataset)
                    == bucket(mixed[batch[0]], &config.dataset))
            );
        }
        let mut o = DatasetOptions::default();
        o.image_repeats.insert("a.png".into(), 4);
        assert_eq!(
            (
                o.repeats_of(Path::new("/x/a.png")),
                o.repeats_of(Path::new("/x/b.png"))
            ),
            (4, 1)
        );
    }
}
