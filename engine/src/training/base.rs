//! Training a whole model (`kiln train base`): every weight of the VAE, the UNet and the text
//! encoder, from random weights built from an architecture file or from an existing model.
//! This is how `kiln-tiny`, the model Kiln ships, is made.
//!
//! A run has up to two phases, one optimiser each:
//!
//! 1. **VAE** (when it trains): an autoencoder on the images — the posterior is sampled
//!    (`z = μ + σ·ε`), decoded, and the loss is the mean absolute pixel error plus
//!    `kl_weight` × the mean KL divergence to N(0, 1) per latent element (Stable Diffusion's
//!    autoencoder recipe without its perceptual and adversarial terms) plus `edge_weight` ×
//!    the error of neighbouring-pixel differences (a cheap stand-in for the perceptual term:
//!    it keeps outlines sharp where a pixel loss alone blurs them). When it ends the EMA
//!    weights replace the trained ones and the VAE's `scaling_factor` becomes 1 / std of the
//!    training latents (how SD's 0.18215 was chosen).
//! 2. **Diffusion** (when the UNet and/or the text encoder train): DDPM ε-prediction on the
//!    latents (posterior means, computed once and cached) with min-SNR-γ weighting (optionally
//!    floored, `snr_floor`, see [`SnrWeighting`]) and an
//!    optional noise offset (`noise_offset`; without it a model of flat-coloured images learns
//!    their colours from the noise instead of the caption) and multi-resolution noise
//!    (`multires_noise_iterations`, see [`training_noise`], meant to do the same for the
//!    layout); each caption is replaced by the empty caption with probability
//!    `caption_dropout` so the model learns the unconditional prediction classifier-free
//!    guidance needs. Text embeddings are cached too when the text
//!    encoder is frozen.
//!
//! A component can start from fresh random weights while the others come from `init`
//! (`fresh`), and a random text encoder's embeddings can be drawn wider than CLIP's 0.02
//! (`text_embedding_std`): in a small encoder trained from scratch, or not trained at all,
//! they keep each word apart in its outputs. `fresh_words` redraws just the token embeddings
//! of chosen words that way, keeping the rest of an `init` model's encoder.
//!
//! Both use AdamW (torch-exact), the learning-rate schedules and global-norm clipping of the
//! adapter trainer, and an EMA of the weights (diffusers' `EMAModel` warm-up); the EMA weights
//! are what is saved. The result is a diffusers folder at `output` (f16 or f32), written at
//! every checkpoint too, so the model can be tried while it trains.
//!
//! Checkpoints (`output/checkpoints/base-step000500.safetensors`) hold every weight, the AdamW
//! moments, the EMA and the state (step, whether the VAE phase is done, the scaling factor, the
//! full configuration); they are written atomically, the oldest beyond `keep_checkpoints` are
//! removed, and every random choice derives from the seed and the step, so a resumed run ends
//! with the same weights as one that never stopped.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::{RngExt, SeedableRng};
use rand_distr::Distribution;
use serde::{Deserialize, Serialize};

use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::job::{CancelToken, PauseToken};
use crate::loader::Loader;
use crate::models::clip_text::ClipTextModel;
use crate::models::config::StableDiffusionConfig;
use crate::models::paths::{map_params, named_params};
use crate::models::unet_2d_condition::UNet2DConditionModel;
use crate::models::vae::AutoencoderKL;
use crate::pipeline::StableDiffusion;
use crate::schedulers::{PredictionType, SchedulerConfig};
use crate::tensors::host;
use crate::tokenizer::ClipTokenizer;
use crate::training::adamw::{AdamWConfig, Moments};
use crate::training::dataset::{DatasetOptions, Plan, image_files, prepare, rng_for, validate};
use crate::training::full::{FullOptimizer, Grads, StepSettings, gradients, track};
use crate::training::lora::{Batch, StepStats, Text};
use crate::training::lr_schedule::LrSchedule;
use crate::training::noise::{NoiseOptions, randn, training_noise};
use crate::training::run::{RunControl, TrainingEvent};
use crate::training::trainer::sample_images;
use crate::training::{SnrWeighting, denoising_loss};
use crate::weights::safetensors::{Dtype, SafeTensors, WriteTensor, write_f32};
use crate::weights::{CheckpointInfo, Layout};

/// A model component `kiln train base` can train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// The autoencoder.
    Vae,
    /// The denoiser.
    Unet,
    /// The CLIP text encoder.
    TextEncoder,
}

impl Part {
    /// The name used on the command line and in checkpoints (`vae`, `unet`, `text_encoder`).
    pub fn name(self) -> &'static str {
        match self {
            Part::Vae => "vae",
            Part::Unet => "unet",
            Part::TextEncoder => "text_encoder",
        }
    }

    /// Parses [`Part::name`].
    pub fn parse(s: &str) -> Result<Part> {
        match s.trim() {
            "vae" => Ok(Part::Vae),
            "unet" => Ok(Part::Unet),
            "text_encoder" | "text-encoder" | "te" => Ok(Part::TextEncoder),
            other => Err(Error::InvalidRequest(format!(
                "unknown component '{other}' (vae, unet, text_encoder)"
            ))),
        }
    }
}

/// An architecture file: the three diffusers configs (`{"unet": …, "vae": …,
/// "text_encoder": …}`) and optionally the noise schedule (`"scheduler"`, SD 1.5's when absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Architecture {
    /// The model configs.
    #[serde(flatten)]
    pub config: StableDiffusionConfig,
    /// The noise schedule.
    #[serde(default)]
    pub scheduler: Option<SchedulerConfig>,
}

impl Architecture {
    /// Reads an architecture file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::format(path, format!("not a Kiln architecture file: {e}")))
    }
}

/// The VAE phase's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VaePhase {
    /// Optimiser steps.
    pub steps: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Base learning rate.
    pub learning_rate: f64,
    /// Weight of the KL term against the per-pixel reconstruction error.
    pub kl_weight: f64,
    /// Weight of the edge term: the mean absolute error of the horizontal and vertical pixel
    /// differences, which a plain pixel loss lets blur (shapes' outlines are few pixels).
    pub edge_weight: f64,
    /// Extra weight of the pixel error near detail (see [`detail_weights`]): flat backgrounds
    /// are most of the pixels but the least of what matters.
    #[serde(default)]
    pub detail_weight: f64,
}

impl Default for VaePhase {
    fn default() -> Self {
        VaePhase {
            steps: 2000,
            batch_size: 16,
            learning_rate: 1e-3,
            kl_weight: 1e-6,
            edge_weight: 1.0,
            detail_weight: 0.0,
        }
    }
}

/// Everything that defines a `kiln train base` run (stored in every checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BaseTrainingConfig {
    /// Architecture file for random initial weights (exactly one of this and `init`).
    pub architecture: Option<PathBuf>,
    /// A model to start from (diffusers folder or single file).
    pub init: Option<PathBuf>,
    /// Folder of images and captions.
    pub data: PathBuf,
    /// The output: a diffusers folder, with `checkpoints/` inside.
    pub output: PathBuf,
    /// What trains; the rest comes from `init` (or stays at its random initialisation).
    pub train: Vec<Part>,
    /// Square training resolution (images are scaled to cover it and center-cropped).
    pub resolution: usize,
    /// The VAE phase.
    pub vae: VaePhase,
    /// Optimiser steps of the diffusion phase.
    pub steps: usize,
    /// Images per diffusion step.
    pub batch_size: usize,
    /// Base learning rate of the diffusion phase.
    pub learning_rate: f64,
    /// Learning-rate schedule (each phase runs its own).
    pub lr_schedule: LrSchedule,
    /// Warm-up steps (each phase).
    pub warmup_steps: usize,
    /// AdamW options.
    pub adamw: AdamWConfig,
    /// Clip the global gradient norm (None = off).
    pub max_grad_norm: Option<f64>,
    /// min-SNR-γ (None = plain MSE).
    pub snr_gamma: Option<f64>,
    /// Floor of the loss weighting in x₀ terms ([`SnrWeighting::floor`]; 0 = off).
    pub snr_floor: f64,
    /// Probability that a caption is replaced by the empty caption.
    pub caption_dropout: f64,
    /// Noise offset (0 = off): see [`training_noise`]. Needed for prompts that name a
    /// background colour.
    pub noise_offset: f64,
    /// Levels of multi-resolution noise (0 = off): see [`training_noise`].
    pub multires_noise_iterations: usize,
    /// Weight ratio between successive levels of multi-resolution noise.
    pub multires_noise_discount: f64,
    /// EMA decay (None = save the raw weights).
    pub ema_decay: Option<f64>,
    /// A noise schedule replacing the architecture's or the `init` model's (None = keep it);
    /// the saved model carries the one it was trained with. DDPM's linear schedule, for one,
    /// hides the image at its noisiest step (ᾱ = 4·10⁻⁵) where SD's leaves some (4.7·10⁻³).
    pub scheduler: Option<SchedulerConfig>,
    /// A tokenizer length replacing the architecture's or the `init` model's (None = keep it;
    /// at most the text encoder's positions). The saved tokenizer config carries it.
    pub tokenizer_max_length: Option<usize>,
    /// Components drawn at random (from `seed`, as with an architecture file) instead of
    /// taken from `init`: a new text encoder for a trained UNet, say.
    pub fresh: Vec<Part>,
    /// Standard deviation of a random text encoder's token and position embeddings. CLIP
    /// draws them at 0.02, which a small encoder's first attention layer then drowns: every
    /// token's output becomes nearly the mean of the caption so far, and the words barely
    /// differ. At 0.5 each output keeps its own word and its place in the caption (T5 draws
    /// its embeddings at 1.0 for the same reason).
    pub text_embedding_std: f64,
    /// Words whose token embeddings are drawn anew (from `seed`, at `text_embedding_std`)
    /// while the rest of the text encoder is kept: for an encoder that blurs some words
    /// together (a small one whose embeddings started at CLIP's 0.02 keeps little of a word
    /// beyond its first layer), each gets a direction of its own in every output it
    /// reaches, and the words the UNet already reads stay as they were. Every token of a
    /// word is redrawn; each token once, however many words share it.
    pub fresh_words: Vec<String>,
    /// Seed of the initial weights and every random choice.
    pub seed: u64,
    /// Save a checkpoint every N steps (0 = only at the ends of phases).
    pub checkpoint_every: usize,
    /// Checkpoints to keep (the newest; 0 = all).
    pub keep_checkpoints: usize,
    /// Make sample images every N diffusion steps (0 = never).
    pub sample_every: usize,
    /// Sample prompts (one image each, seeds 0, 1, …).
    pub sample_prompts: Vec<String>,
    /// Store the saved model in half precision.
    pub half_precision: bool,
    /// Where it trains (`auto`: the first GPU backend that works, else the CPU). Not a
    /// setting of the run: a checkpoint resumes on any device.
    pub device: DeviceSpec,
}

impl Default for BaseTrainingConfig {
    fn default() -> Self {
        BaseTrainingConfig {
            architecture: None,
            init: None,
            data: PathBuf::new(),
            output: PathBuf::from("model"),
            train: vec![Part::Vae, Part::Unet, Part::TextEncoder],
            resolution: 64,
            vae: VaePhase::default(),
            steps: 10_000,
            batch_size: 32,
            learning_rate: 5e-4,
            lr_schedule: LrSchedule::Cosine,
            warmup_steps: 100,
            adamw: AdamWConfig::default(),
            max_grad_norm: Some(1.0),
            snr_gamma: Some(5.0),
            snr_floor: 0.0,
            caption_dropout: 0.1,
            noise_offset: 0.0,
            multires_noise_iterations: 0,
            multires_noise_discount: 0.3,
            ema_decay: Some(0.999),
            scheduler: None,
            tokenizer_max_length: None,
            fresh: Vec::new(),
            text_embedding_std: 0.02,
            fresh_words: Vec::new(),
            seed: 0,
            checkpoint_every: 500,
            keep_checkpoints: 2,
            sample_every: 0,
            sample_prompts: Vec::new(),
            half_precision: false,
            device: DeviceSpec::Auto,
        }
    }
}

impl BaseTrainingConfig {
    /// Whether `part` trains in this run.
    pub fn trains(&self, part: Part) -> bool {
        self.train.contains(&part)
    }

    /// Steps of the VAE phase (0 when the VAE does not train).
    pub fn vae_steps(&self) -> usize {
        if self.trains(Part::Vae) {
            self.vae.steps
        } else {
            0
        }
    }

    /// Steps of the diffusion phase (0 when neither the UNet nor the text encoder trains).
    pub fn diffusion_steps(&self) -> usize {
        if self.trains(Part::Unet) || self.trains(Part::TextEncoder) {
            self.steps
        } else {
            0
        }
    }

    /// Steps in all.
    pub fn total_steps(&self) -> usize {
        self.vae_steps() + self.diffusion_steps()
    }
}

/// The models a base run trains, with their configs.
pub struct BaseModels {
    /// The text encoder.
    pub text_encoder: ClipTextModel,
    /// The denoiser.
    pub unet: UNet2DConditionModel,
    /// The autoencoder.
    pub vae: AutoencoderKL,
    /// Their configs (the VAE's scaling factor is set when the VAE phase ends).
    pub config: StableDiffusionConfig,
    /// The noise schedule.
    pub scheduler: SchedulerConfig,
}

impl BaseModels {
    /// The starting models of `config`: random from its architecture file, or its `init` model.
    pub fn build(config: &BaseTrainingConfig, device: &Device) -> Result<BaseModels> {
        let mut models = Self::starting(config, device)?;
        if let Some(s) = &config.scheduler {
            models.scheduler = s.clone();
        }
        if let Some(n) = config.tokenizer_max_length {
            models.config.tokenizer_max_length = n;
            models.config.checked_tokenizer_length()?;
        }
        let s = &models.scheduler;
        if s.prediction_type != PredictionType::Epsilon || s.rescale_betas_zero_snr {
            // ε-prediction is what this trainer learns; at zero terminal SNR it cannot
            // sample (x₀ = (x_T − ε̂)/0 at the first step).
            return Err(Error::InvalidRequest(format!(
                "kiln train base learns ε-prediction on a schedule whose last step keeps some \
                 signal; this noise schedule has prediction_type \"{}\"{}",
                s.prediction_type.name(),
                if s.rescale_betas_zero_snr {
                    " and zero terminal SNR"
                } else {
                    ""
                }
            )));
        }
        s.alphas_cumprod()?;
        if !config.fresh_words.is_empty() {
            let tokenizer = ClipTokenizer::sd15()?;
            models.text_encoder =
                with_fresh_words(models.text_encoder, &config.fresh_words, &tokenizer, config)?;
        }
        Ok(models)
    }

    /// The starting models, before the noise schedule and tokenizer length are overridden.
    fn starting(config: &BaseTrainingConfig, device: &Device) -> Result<BaseModels> {
        match (&config.architecture, &config.init) {
            (Some(arch), None) => {
                if !config.fresh.is_empty() || !config.fresh_words.is_empty() {
                    // Every component is drawn at random already: saying which to draw
                    // afresh would change nothing, which is worth telling the user.
                    return Err(Error::InvalidRequest(
                        "--fresh and --fresh-words choose what to draw anew in an --init \
                         model; with an architecture file (--config) every weight is \
                         random already"
                            .into(),
                    ));
                }
                let arch = Architecture::read(arch)?;
                for part in [Part::Vae, Part::Unet, Part::TextEncoder] {
                    if !config.trains(part) {
                        // Legitimate when training in stages (the VAE now, the rest later
                        // with --init), but worth saying.
                        tracing::warn!(
                            component = part.name(),
                            "not trained: it keeps its random initial weights"
                        );
                    }
                }
                let cfg = arch.config;
                Ok(BaseModels {
                    text_encoder: random_text_encoder(&cfg, config, device)?,
                    unet: random_unet(&cfg, config, device)?,
                    vae: random_vae(&cfg, config, device)?,
                    config: cfg,
                    scheduler: arch.scheduler.unwrap_or_else(SchedulerConfig::sd15),
                })
            }
            (None, Some(init)) => {
                let sd = StableDiffusion::load(init, None, device)?;
                let cfg = sd.info.config.clone();
                let fresh = |part: Part| config.fresh.contains(&part);
                for &part in &config.fresh {
                    if !config.trains(part) {
                        // A frozen random text encoder is a choice (its features are fixed
                        // and the UNet learns to read them), but worth saying.
                        tracing::info!(
                            component = part.name(),
                            "drawn at random and not trained: it keeps its random weights"
                        );
                    }
                }
                Ok(BaseModels {
                    text_encoder: if fresh(Part::TextEncoder) {
                        random_text_encoder(&cfg, config, device)?
                    } else {
                        sd.text_encoder
                    },
                    unet: if fresh(Part::Unet) {
                        random_unet(&cfg, config, device)?
                    } else {
                        sd.unet
                    },
                    vae: if fresh(Part::Vae) {
                        random_vae(&cfg, config, device)?
                    } else {
                        sd.vae
                    },
                    config: cfg,
                    scheduler: sd.info.scheduler.clone(),
                })
            }
            _ => Err(Error::InvalidRequest(
                "give either an architecture file (--config) or a model to start from (--init)"
                    .into(),
            )),
        }
    }

    /// The models with the EMA weights where there are any.
    fn averaged(
        &self,
        opt: &FullOptimizer,
    ) -> (ClipTextModel, UNet2DConditionModel, AutoencoderKL) {
        (
            opt.with_ema(self.text_encoder.clone(), Part::TextEncoder.name()),
            opt.with_ema(self.unet.clone(), Part::Unet.name()),
            opt.with_ema(self.vae.clone(), Part::Vae.name()),
        )
    }

    fn info(&self, output: &Path) -> CheckpointInfo {
        CheckpointInfo {
            path: output.to_owned(),
            family: crate::family::ModelFamily::Sd1,
            layout: Layout::Diffusers,
            dtype: "F32".into(),
            config: self.config.clone(),
            scheduler: self.scheduler.clone(),
            config_source: "kiln train base".into(),
        }
    }
}

fn rng_seed(seed: u64, purpose: u64) -> u64 {
    rng_for(seed, purpose, 0).random()
}

/// Header key of the checkpoint state.
const STATE_KEY: &str = "kiln_base_training_state";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct BaseState {
    step: usize,
    smoothed_loss: f64,
    vae_done: bool,
    scaling_factor: f64,
    config: BaseTrainingConfig,
}

/// The checkpoint file of `step`.
pub fn base_checkpoint_path(config: &BaseTrainingConfig, step: usize) -> PathBuf {
    config
        .output
        .join("checkpoints")
        .join(format!("base-step{step:06}.safetensors"))
}

/// The newest checkpoint of a run, if any.
pub fn latest_base_checkpoint(config: &BaseTrainingConfig) -> Option<PathBuf> {
    checkpoints(config).pop()
}

/// The run's checkpoints, oldest first.
fn checkpoints(config: &BaseTrainingConfig) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(config.output.join("checkpoints")) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("base-step") && n.ends_with(".safetensors"))
        })
        .collect();
    // By step number, not by name: the padding is six digits, a run may go further.
    found.sort_by_key(|p| checkpoint_step(p));
    found
}

/// The step in a checkpoint's file name (`base-step000100.safetensors` → 100).
fn checkpoint_step(path: &Path) -> Option<usize> {
    path.file_name()?
        .to_str()?
        .strip_prefix("base-step")?
        .strip_suffix(".safetensors")?
        .parse()
        .ok()
}

// Random initial weights: one seed stream per component, so changing one component's size
// (or drawing only one afresh) leaves the others' initial weights as they were.

fn random_text_encoder(
    cfg: &StableDiffusionConfig,
    config: &BaseTrainingConfig,
    device: &Device,
) -> Result<ClipTextModel> {
    let mut ld = Loader::random(rng_seed(config.seed, 10), device)
        .with_embedding_std(config.text_embedding_std as f32);
    ClipTextModel::load(&cfg.text_encoder, &mut ld)
}

/// `text_encoder` with the token embeddings of `words` drawn anew at
/// `config.text_embedding_std`, from their own seed stream (see
/// [`BaseTrainingConfig::fresh_words`]).
fn with_fresh_words(
    mut text_encoder: ClipTextModel,
    words: &[String],
    tokenizer: &ClipTokenizer,
    config: &BaseTrainingConfig,
) -> Result<ClipTextModel> {
    let mut ids: Vec<u32> = Vec::new();
    for word in words {
        let tokens = tokenizer.tokens(word)?;
        if tokens.is_empty() {
            return Err(Error::InvalidRequest(format!(
                "--fresh-words: {word:?} has no tokens to draw anew"
            )));
        }
        for t in tokens {
            if !ids.contains(&t) {
                ids.push(t);
            }
        }
    }
    let weight = text_encoder.embeddings.token_embedding.weight.val();
    let [vocab, dim] = weight.dims();
    let device = weight.device();
    let mut values = host(weight)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(rng_seed(config.seed, 13));
    let std = config.text_embedding_std as f32;
    for &id in &ids {
        let row = id as usize;
        if row >= vocab {
            return Err(Error::InvalidRequest(format!(
                "--fresh-words: token {id} is outside the text encoder's {vocab}-token table"
            )));
        }
        for v in &mut values[row * dim..(row + 1) * dim] {
            let z: f32 = rand_distr::StandardNormal.sample(&mut rng);
            *v = std * z;
        }
    }
    tracing::info!(words = ?words, tokens = ids.len(), std, "token embeddings drawn anew");
    text_encoder.embeddings.token_embedding.weight = burn::module::Param::from_tensor(
        Tensor::<2>::from_data(TensorData::new(values, [vocab, dim]), &device),
    );
    Ok(text_encoder)
}

fn random_unet(
    cfg: &StableDiffusionConfig,
    config: &BaseTrainingConfig,
    device: &Device,
) -> Result<UNet2DConditionModel> {
    let mut ld = Loader::random(rng_seed(config.seed, 11), device);
    UNet2DConditionModel::load(&cfg.unet, &mut ld)
}

fn random_vae(
    cfg: &StableDiffusionConfig,
    config: &BaseTrainingConfig,
    device: &Device,
) -> Result<AutoencoderKL> {
    let mut ld = Loader::random(rng_seed(config.seed, 12), device);
    AutoencoderKL::load(&cfg.vae, &mut ld)
}

/// The settings a resumed run must share with the run that wrote its checkpoint (everything
/// that changes the weights): `config` without its paths, checkpoint and sample options, and
/// without the diffusion phase's length — a run may be resumed to train longer (with a
/// decaying schedule the learning rate then follows the new total).
fn run_settings(config: &BaseTrainingConfig) -> serde_json::Value {
    let mut c = config.clone();
    c.steps = 0;
    c.architecture = None;
    c.init = None;
    c.data = PathBuf::new();
    c.output = PathBuf::new();
    c.train.sort();
    c.train.dedup();
    c.fresh.sort();
    c.fresh.dedup();
    c.checkpoint_every = 0;
    c.keep_checkpoints = 0;
    c.sample_every = 0;
    c.sample_prompts.clear();
    c.half_precision = false;
    c.device = DeviceSpec::Auto;
    serde_json::to_value(c).unwrap_or_default()
}

/// The settings (top-level option names) in which `a` and `b` differ.
fn differing_settings(a: &BaseTrainingConfig, b: &BaseTrainingConfig) -> Vec<String> {
    let (a, b) = (run_settings(a), run_settings(b));
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return Vec::new();
    };
    a.iter()
        .filter(|(k, v)| b.get(k.as_str()) != Some(v))
        .map(|(k, _)| k.clone())
        .collect()
}

fn save_checkpoint(
    path: &Path,
    models: &BaseModels,
    opt: &FullOptimizer,
    state: &BaseState,
) -> Result<()> {
    let mut data: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut add_module =
        |prefix: &str, params: Vec<crate::models::paths::NamedParam>| -> Result<()> {
            for p in params {
                data.push((
                    format!("model.{prefix}.{}", p.path),
                    p.shape,
                    host(p.value)?,
                ));
            }
            Ok(())
        };
    add_module(Part::TextEncoder.name(), named_params(&models.text_encoder))?;
    add_module(Part::Unet.name(), named_params(&models.unet))?;
    add_module(Part::Vae.name(), named_params(&models.vae))?;
    for (name, m) in &opt.moments {
        for (kind, t) in [("adam_m", &m.m), ("adam_v", &m.v)] {
            data.push((
                format!("{kind}.{name}"),
                t.dims().to_vec(),
                host(t.clone())?,
            ));
        }
    }
    for (name, t) in &opt.ema {
        data.push((format!("ema.{name}"), t.dims().to_vec(), host(t.clone())?));
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

fn load_checkpoint(
    path: &Path,
    models: &mut BaseModels,
    opt: &mut FullOptimizer,
    device: &Device,
) -> Result<BaseState> {
    let bad = |reason: String| Error::BadCheckpoint {
        path: path.to_owned(),
        reason,
    };
    let file = SafeTensors::open(path)?;
    let state: BaseState = file
        .metadata()
        .get(STATE_KEY)
        .ok_or_else(|| bad("it is not a Kiln base-training checkpoint".into()))
        .and_then(|s| {
            serde_json::from_str(s)
                .map_err(|e| bad(format!("its training state cannot be read ({e})")))
        })?;
    let read = |key: &str, numel: usize| -> Result<Tensor<1>> {
        let v = file
            .f32(key)
            .map_err(|_| bad(format!("it has no tensor {key}")))?;
        if v.len() != numel {
            return Err(bad(format!(
                "{key} has {} values where the model has {numel}: another architecture",
                v.len()
            )));
        }
        Ok(Tensor::from_data(TensorData::new(v, [numel]), device))
    };
    let mut first_error = None;
    let mut restore = |prefix: &str, path: &str, value: Tensor<1>| -> Tensor<1> {
        let [n] = value.dims();
        match read(&format!("model.{prefix}.{path}"), n) {
            Ok(t) => t,
            Err(e) => {
                first_error.get_or_insert(e);
                value
            }
        }
    };
    let all = |_: &str| true;
    models.text_encoder = map_params(models.text_encoder.clone(), &all, &mut |p, v| {
        restore(Part::TextEncoder.name(), p, v)
    });
    models.unet = map_params(models.unet.clone(), &all, &mut |p, v| {
        restore(Part::Unet.name(), p, v)
    });
    models.vae = map_params(models.vae.clone(), &all, &mut |p, v| {
        restore(Part::Vae.name(), p, v)
    });
    if let Some(e) = first_error {
        return Err(e);
    }
    *opt = FullOptimizer::default();
    for (key, info) in file.tensors() {
        let n = info.numel();
        if let Some(name) = key.strip_prefix("adam_m.") {
            let v = read(&format!("adam_v.{name}"), n)?;
            opt.moments.insert(
                name.to_owned(),
                Moments {
                    m: read(key, n)?,
                    v,
                },
            );
        } else if let Some(name) = key.strip_prefix("ema.") {
            opt.ema.insert(name.to_owned(), read(key, n)?);
        }
    }
    models.vae.scaling_factor = state.scaling_factor;
    models.config.vae.scaling_factor = state.scaling_factor;
    Ok(state)
}

/// The items of step `k` of a phase: epochs are seeded shuffles of all `n` images (the last
/// partial batch of an epoch is dropped, so every step has `batch` images).
fn batch_items(n: usize, batch: usize, seed: u64, purpose: u64, k: usize) -> Vec<usize> {
    let batch = batch.clamp(1, n.max(1));
    let per_epoch = (n / batch).max(1);
    let (epoch, j) = (k / per_epoch, k % per_epoch);
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = rng_for(seed, purpose, epoch as u64);
    for i in (1..order.len()).rev() {
        let r = rng.random_range(0..=i);
        order.swap(i, r);
    }
    order[j * batch..(j + 1) * batch].to_vec()
}

/// Batches of `chunk` items, for encoding the whole dataset without autodiff.
const ENCODE_CHUNK: usize = 64;

/// Trains a model as `config` says; returns the diffusers folder written. `resume` continues
/// from a checkpoint of the same run.
pub fn train_base(
    config: &BaseTrainingConfig,
    resume: Option<&Path>,
    cancel: &CancelToken,
    pause: &PauseToken,
    on_event: &mut dyn FnMut(TrainingEvent),
) -> Result<PathBuf> {
    let opened = config.device.open()?;
    let device = opened.device;
    if config.train.is_empty() {
        return Err(Error::InvalidRequest("nothing to train".into()));
    }
    if !(0.0..=1.0).contains(&config.caption_dropout) {
        return Err(Error::InvalidRequest(format!(
            "caption dropout must be between 0 and 1, not {}",
            config.caption_dropout
        )));
    }
    if config.trains(Part::Vae) && (config.vae.steps == 0 || config.vae.batch_size == 0) {
        return Err(Error::InvalidRequest(
            "the VAE trains: give it at least one step and a batch of at least one image".into(),
        ));
    }
    if config.diffusion_steps() > 0 && config.batch_size == 0 {
        return Err(Error::InvalidRequest(
            "the batch must hold at least one image".into(),
        ));
    }
    let mut models = BaseModels::build(config, &device)?;
    // Latents are the VAE's factor smaller; the UNet halves them once per block but the last.
    let levels = models.config.unet.block_out_channels.len().max(1) - 1;
    let multiple = models.config.vae.scale_factor() << levels;
    if config.resolution == 0 || !config.resolution.is_multiple_of(multiple) {
        return Err(Error::InvalidRequest(format!(
            "the resolution must be a multiple of {multiple} for this VAE and UNet"
        )));
    }
    let tokenizer = ClipTokenizer::sd15()?.with_max_length(models.config.tokenizer_max_length)?;
    let options = DatasetOptions {
        resolution: config.resolution,
        upscale_small: true,
        ..DatasetOptions::default()
    };
    let report = validate(&image_files(&config.data)?, &options, &tokenizer)?;
    let usable: Vec<(PathBuf, String)> = report
        .usable()
        .map(|e| (e.path.clone(), report.caption_of(e).to_owned()))
        .collect();
    if usable.is_empty() {
        return Err(Error::InvalidRequest(format!(
            "no usable training images in {}: {}",
            config.data.display(),
            report.summary()
        )));
    }
    let n = usable.len();
    let mut images: Vec<RgbImage> = Vec::with_capacity(n);
    for (k, (path, _)) in usable.iter().enumerate() {
        let img = crate::image::read_image(path)?;
        let r = config.resolution;
        images.push(prepare(
            &img,
            r,
            r,
            false,
            false,
            &mut rng_for(config.seed, 2, k as u64),
        ));
    }

    let mut opt = FullOptimizer::default();
    let (mut step, mut smoothed, mut vae_done) = (0usize, f64::NAN, !config.trains(Part::Vae));
    let mut last_checkpoint = None;
    if let Some(path) = resume {
        let state = load_checkpoint(path, &mut models, &mut opt, &device)?;
        let differ = differing_settings(&state.config, config);
        if !differ.is_empty() {
            return Err(Error::BadCheckpoint {
                path: path.to_owned(),
                reason: format!(
                    "it was made with other settings ({}): resume with the options it was \
                     started with",
                    differ.join(", ")
                ),
            });
        }
        if state.step > config.total_steps()
            || (!state.vae_done && state.step >= config.vae_steps())
        {
            return Err(Error::BadCheckpoint {
                path: path.to_owned(),
                reason: format!("its step {} is past this run's end", state.step),
            });
        }
        (step, smoothed, vae_done) = (state.step, state.smoothed_loss, state.vae_done);
        last_checkpoint = Some(path.to_owned());
    }
    let total = config.total_steps();
    // The plan of the diffusion phase (of the VAE's when it trains alone), with a VAE phase
    // before it named as such. Batches are drawn whole, so an epoch is ⌊images ÷ batch⌋.
    let diffusion = config.diffusion_steps() > 0;
    let (batch, steps) = if diffusion {
        (config.batch_size, config.diffusion_steps())
    } else {
        (config.vae.batch_size, config.vae_steps())
    };
    let mut plan = Plan {
        steps_per_epoch: (n / batch.clamp(1, n)).max(1),
        ..Plan::new(n, 1, 1, batch)
    }
    .with_steps(steps);
    if diffusion && config.vae_steps() > 0 {
        plan.vae_phase = Some((config.vae_steps(), config.vae.batch_size));
    }
    on_event(TrainingEvent::Started {
        report: Box::new(report.clone()),
        plan,
        from_step: step,
        device: opened.spec,
        precision: crate::job::Precision::F32,
    });

    let mut run = RunControl::new(
        cancel,
        pause,
        on_event,
        step,
        total,
        smoothed,
        last_checkpoint,
    );
    let epochs = Epochs { config, images: n };

    // Phase 1: the VAE.
    let vae_steps = config.vae_steps();
    while step < vae_steps {
        run.wait()?;
        let items = batch_items(n, config.vae.batch_size, config.seed, 20, step);
        let batch: Vec<&RgbImage> = items.iter().map(|&i| &images[i]).collect();
        let x = crate::image::from_rgb8(&batch, &device);
        let [b, _, h, w] = x.dims();
        let f = models.config.vae.scale_factor();
        let shape = [b, models.vae.latent_channels, h / f, w / f];
        let mut rng = rng_for(config.seed, 21, step as u64);
        let eps = Tensor::<4>::from_data(
            TensorData::new(randn(&mut rng, shape.iter().product()), shape),
            &device,
        );
        let lr = config.lr_schedule.lr(
            config.vae.learning_rate,
            step,
            config.warmup_steps,
            vae_steps,
        );
        let settings = StepSettings {
            t: step + 1,
            lr,
            max_grad_norm: config.max_grad_norm,
            ema_decay: config.ema_decay,
        };
        let stats = vae_step(
            &mut models,
            &mut opt,
            x,
            eps,
            VaeLossWeights {
                kl: config.vae.kl_weight,
                edge: config.vae.edge_weight,
                detail: config.vae.detail_weight,
            },
            &config.adamw,
            settings,
        )
        .map_err(|e| run.diverged(e, step))?;
        let (value, norm) = (stats.loss, stats.grad_norm);
        step += 1;
        run.step_done(step, epochs.of(step), value, lr, norm);
        if step == vae_steps {
            // The VAE is final: its EMA weights, and the scaling factor of its latents.
            models.vae = opt.with_ema(models.vae.clone(), Part::Vae.name());
            opt.forget(Part::Vae.name());
            let scaling = latent_scaling(&models.vae, &images, &device)
                .map_err(|e| run.diverged(e, step - 1))?;
            models.vae.scaling_factor = scaling;
            models.config.vae.scaling_factor = scaling;
            vae_done = true;
            tracing::info!(scaling, "VAE trained");
        }
        maybe_checkpoint(
            &mut run,
            config,
            step,
            step == vae_steps,
            &models,
            &opt,
            vae_done,
        )?;
    }
    if !vae_done && config.trains(Part::Vae) {
        return Err(Error::InvalidRequest("the VAE phase did not finish".into()));
    }

    // Phase 2: the UNet and/or the text encoder on cached latents.
    let diffusion_steps = config.diffusion_steps();
    if step < total && diffusion_steps > 0 {
        let latents = encode_latents(&models.vae, &images, &device)?;
        let alphas = models.scheduler.alphas_cumprod()?;
        let n_train = alphas.len();
        let (train_unet, train_te) = (config.trains(Part::Unet), config.trains(Part::TextEncoder));
        let noise_options = NoiseOptions {
            offset: config.noise_offset,
            multires_iterations: config.multires_noise_iterations,
            multires_discount: config.multires_noise_discount,
        };
        let mut ids_cache: HashMap<String, Vec<i64>> = HashMap::new();
        let mut context_cache: HashMap<String, Tensor<3>> = HashMap::new();
        while step < total {
            run.wait()?;
            let k = step - vae_steps;
            let items = batch_items(n, config.batch_size, config.seed, 30, k);
            let b = items.len();
            let mut rng = rng_for(config.seed, 31, k as u64);
            let captions: Vec<String> = items
                .iter()
                .map(|&i| {
                    if rng.random_bool(config.caption_dropout) {
                        String::new()
                    } else {
                        usable[i].1.clone()
                    }
                })
                .collect();
            let len = tokenizer.max_length();
            let mut ids: Vec<i64> = Vec::with_capacity(b * len);
            for c in &captions {
                if !ids_cache.contains_key(c) {
                    let row = tokenizer.encode(c)?.into_iter().map(i64::from).collect();
                    ids_cache.insert(c.clone(), row);
                }
                ids.extend_from_slice(&ids_cache[c]);
            }
            let ids: Tensor<2, Int> = Tensor::from_data(TensorData::new(ids, [b, len]), &device);
            let lat = Tensor::cat(items.iter().map(|&i| latents[i].clone()).collect(), 0);
            let shape = lat.dims();
            let noise = training_noise(&mut rng, shape, &noise_options, &device);
            let timesteps: Vec<usize> = (0..b).map(|_| rng.random_range(0..n_train)).collect();
            let text = if train_te {
                Text::Ids(ids)
            } else {
                let mut rows = Vec::with_capacity(b);
                for (j, c) in captions.iter().enumerate() {
                    if !context_cache.contains_key(c) {
                        let row = ids.clone().slice([j..j + 1, 0..len]);
                        context_cache.insert(c.clone(), models.text_encoder.forward(row, 1));
                    }
                    rows.push(context_cache[c].clone());
                }
                Text::Context(Tensor::cat(rows, 0))
            };
            let batch = Batch {
                latents: lat,
                noise,
                timesteps,
                text,
            };
            let lr = config.lr_schedule.lr(
                config.learning_rate,
                k,
                config.warmup_steps,
                diffusion_steps,
            );
            let settings = StepSettings {
                t: k + 1,
                lr,
                max_grad_norm: config.max_grad_norm,
                ema_decay: config.ema_decay,
            };
            let stats = diffusion_step(
                &mut models,
                &mut opt,
                &batch,
                Trained {
                    unet: train_unet,
                    text_encoder: train_te,
                },
                &alphas,
                SnrWeighting {
                    gamma: config.snr_gamma,
                    floor: config.snr_floor,
                },
                &config.adamw,
                settings,
            )
            .map_err(|e| run.diverged(e, step))?;
            let (value, norm) = (stats.loss, stats.grad_norm);
            step += 1;
            run.step_done(step, epochs.of(step), value, lr, norm);
            maybe_checkpoint(&mut run, config, step, false, &models, &opt, vae_done)?;
            if config.sample_every > 0
                && !config.sample_prompts.is_empty()
                && (k + 1).is_multiple_of(config.sample_every)
            {
                let (te, unet, vae) = models.averaged(&opt);
                let sd = StableDiffusion::from_models(
                    te,
                    unet,
                    vae,
                    models.info(&config.output),
                    &device,
                )?;
                let images = sample_images(&sd, &config.sample_prompts, config.resolution)?;
                run.report(TrainingEvent::Samples { step, images });
            }
        }
    }

    save_model(config, &models, &opt)?;
    Ok(config.output.clone())
}

/// The VAE's training loss: `images` `[B, 3, H, W]` in \[-1, 1\] are encoded, the posterior
/// sampled with `eps` `[B, L, H/f, W/f]` (`z = μ + σ·ε`) and decoded; the loss is the mean
/// absolute pixel error (each pixel weighted by [`detail_weights`] with `weights.detail`),
/// plus `weights.kl` × the mean over latent elements of `½(μ² + σ² − 1 − log σ²)`, plus
/// `weights.edge` × the mean absolute error of the neighbouring-pixel differences in x and in
/// y. Returns the loss to differentiate and its value.
pub fn vae_loss(
    vae: &AutoencoderKL,
    images: Tensor<4>,
    eps: Tensor<4>,
    weights: VaeLossWeights,
) -> Result<(Tensor<1>, f64)> {
    let pixel_weights = if weights.detail != 0.0 {
        Some(detail_weights(&images, weights.detail)?)
    } else {
        None
    };
    let (mean, logvar) = vae.encode(images.clone());
    let z = mean.clone() + (logvar.clone() * 0.5).exp() * eps;
    let reconstruction = vae.decode(z);
    let [_, _, h, w] = images.dims();
    let diff = |t: Tensor<4>, dim: usize, n: usize| {
        t.clone().narrow(dim, 1, n - 1) - t.narrow(dim, 0, n - 1)
    };
    let edge = (diff(reconstruction.clone(), 3, w) - diff(images.clone(), 3, w))
        .abs()
        .mean()
        + (diff(reconstruction.clone(), 2, h) - diff(images.clone(), 2, h))
            .abs()
            .mean();
    let err = (reconstruction - images).abs();
    let rec = match pixel_weights {
        Some(pw) => (err * pw).mean(),
        None => err.mean(),
    };
    let kl = ((mean.square() + logvar.clone().exp() - logvar - 1.0) * 0.5).mean();
    let loss = rec + kl * weights.kl + edge * weights.edge;
    let value = host(loss.clone().inner())?
        .first()
        .map(|v| f64::from(*v))
        .unwrap_or(f64::NAN);
    if !value.is_finite() {
        return Err(Error::NonFinite("the loss".into()));
    }
    Ok((loss, value))
}

/// Per-pixel weights `[B, 1, H, W]` of the VAE's pixel error: `1 + detail` within two pixels
/// (a 5×5 window) of a pixel whose difference to its right or lower neighbour exceeds 0.1 in
/// some channel (on the \[-1, 1\] scale), 1 elsewhere.
pub fn detail_weights(images: &Tensor<4>, detail: f64) -> Result<Tensor<4>> {
    let [b, c, h, w] = images.dims();
    let x = host(images.clone())?;
    let at = |n: usize, ch: usize, y: usize, xx: usize| x[((n * c + ch) * h + y) * w + xx];
    let mut out = vec![1.0f32; b * h * w];
    for n in 0..b {
        let mut edge = vec![false; h * w];
        for y in 0..h {
            for xx in 0..w {
                edge[y * w + xx] = (0..c).any(|ch| {
                    let v = at(n, ch, y, xx);
                    (xx + 1 < w && (v - at(n, ch, y, xx + 1)).abs() > 0.1)
                        || (y + 1 < h && (v - at(n, ch, y + 1, xx)).abs() > 0.1)
                });
            }
        }
        for y in 0..h {
            for xx in 0..w {
                let near = (y.saturating_sub(2)..(y + 3).min(h))
                    .any(|yy| (xx.saturating_sub(2)..(xx + 3).min(w)).any(|q| edge[yy * w + q]));
                if near {
                    out[(n * h + y) * w + xx] = 1.0 + detail as f32;
                }
            }
        }
    }
    Ok(Tensor::from_data(
        TensorData::new(out, [b, 1, h, w]),
        &images.device(),
    ))
}

/// The weights of the VAE loss's terms besides the pixel error (see [`vae_loss`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VaeLossWeights {
    /// The KL term.
    pub kl: f64,
    /// The edge term.
    pub edge: f64,
    /// The extra weight of pixels near detail.
    pub detail: f64,
}

/// One optimiser step of the VAE on `images` with posterior noise `eps` (see [`vae_loss`]):
/// gradients of every VAE weight, global-norm clipping, AdamW, EMA.
pub fn vae_step(
    models: &mut BaseModels,
    opt: &mut FullOptimizer,
    images: Tensor<4>,
    eps: Tensor<4>,
    weights: VaeLossWeights,
    adamw: &AdamWConfig,
    settings: StepSettings,
) -> Result<StepStats> {
    let tracked = track(&models.vae);
    let (loss, value) = vae_loss(&tracked, images, eps, weights)?;
    let mut grads = Grads::new();
    gradients(&tracked, Part::Vae.name(), &loss.backward(), &mut grads);
    let (norm, clip) = FullOptimizer::clip(&grads, settings.max_grad_norm)?;
    models.vae = opt.step(
        models.vae.clone(),
        Part::Vae.name(),
        &grads,
        clip,
        adamw,
        settings,
    );
    Ok(StepStats {
        loss: value,
        grad_norm: norm,
    })
}

/// Which of the UNet and the text encoder a diffusion step trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trained {
    /// The UNet.
    pub unet: bool,
    /// The text encoder (the batch's text must then be token ids).
    pub text_encoder: bool,
}

/// One optimiser step of the UNet and/or the text encoder on `batch`: the ε-prediction loss
/// ([`denoising_loss`], weighted per timestep by `weighting`), gradients of every
/// weight of the trained models, global-norm clipping over all of them, AdamW, EMA.
#[allow(clippy::too_many_arguments)]
pub fn diffusion_step(
    models: &mut BaseModels,
    opt: &mut FullOptimizer,
    batch: &Batch,
    trained: Trained,
    alphas_cumprod: &[f64],
    weighting: SnrWeighting,
    adamw: &AdamWConfig,
    settings: StepSettings,
) -> Result<StepStats> {
    let unet = if trained.unet {
        track(&models.unet)
    } else {
        models.unet.clone()
    };
    let te = trained.text_encoder.then(|| track(&models.text_encoder));
    let context = match (&te, &batch.text) {
        (Some(te), Text::Ids(ids)) => te.forward(ids.clone(), 1),
        (None, Text::Context(c)) => c.clone(),
        (None, Text::Ids(ids)) => models.text_encoder.forward(ids.clone(), 1),
        (Some(_), Text::Context(_)) => {
            return Err(Error::InvalidRequest(
                "training the text encoder needs token ids, not text embeddings".into(),
            ));
        }
    };
    let (loss, value) = denoising_loss(
        &unet,
        &context,
        batch.latents.clone(),
        batch.noise.clone(),
        &batch.timesteps,
        alphas_cumprod,
        weighting,
    )?;
    let backward = loss.backward();
    let mut grads = Grads::new();
    if trained.unet {
        gradients(&unet, Part::Unet.name(), &backward, &mut grads);
    }
    if let Some(te) = &te {
        gradients(te, Part::TextEncoder.name(), &backward, &mut grads);
    }
    drop(backward);
    let (norm, clip) = FullOptimizer::clip(&grads, settings.max_grad_norm)?;
    if trained.unet {
        models.unet = opt.step(
            models.unet.clone(),
            Part::Unet.name(),
            &grads,
            clip,
            adamw,
            settings,
        );
    }
    if trained.text_encoder {
        models.text_encoder = opt.step(
            models.text_encoder.clone(),
            Part::TextEncoder.name(),
            &grads,
            clip,
            adamw,
            settings,
        );
    }
    Ok(StepStats {
        loss: value,
        grad_norm: norm,
    })
}

/// Writes the model as it stands (EMA weights where there are any) to the output folder, as a
/// diffusers folder in the configured precision.
fn save_model(config: &BaseTrainingConfig, models: &BaseModels, opt: &FullOptimizer) -> Result<()> {
    let (te, unet, vae) = models.averaged(opt);
    crate::weights::save::save_diffusers(
        &config.output,
        crate::weights::save::Components {
            text_encoder: &te,
            unet: &unet,
            vae: &vae,
        },
        &models.config,
        &models.scheduler,
        if config.half_precision {
            Dtype::F16
        } else {
            Dtype::F32
        },
    )
}

/// The epoch (1-based) of a step within its phase: the VAE's batches, then the diffusion's.
struct Epochs<'a> {
    config: &'a BaseTrainingConfig,
    images: usize,
}

impl Epochs<'_> {
    fn of(&self, step: usize) -> usize {
        let vae_steps = self.config.vae_steps();
        let (k, batch) = if step <= vae_steps {
            (step - 1, self.config.vae.batch_size)
        } else {
            (step - vae_steps - 1, self.config.batch_size)
        };
        let per_epoch = (self.images / batch.clamp(1, self.images.max(1))).max(1);
        k / per_epoch + 1
    }
}

/// Writes a checkpoint when one is due (every `checkpoint_every` steps, at the end, or
/// `force`d), with the model in the output folder as of it, then removes the oldest beyond
/// `keep_checkpoints`.
fn maybe_checkpoint(
    run: &mut RunControl<'_>,
    config: &BaseTrainingConfig,
    step: usize,
    force: bool,
    models: &BaseModels,
    opt: &FullOptimizer,
    vae_done: bool,
) -> Result<()> {
    if !run.checkpoint_due(step, config.checkpoint_every, force) {
        return Ok(());
    }
    let path = base_checkpoint_path(config, step);
    save_checkpoint(
        &path,
        models,
        opt,
        &BaseState {
            step,
            smoothed_loss: run.smoothed_loss(),
            vae_done,
            scaling_factor: models.vae.scaling_factor,
            config: config.clone(),
        },
    )?;
    // The output folder always holds the model as of the newest checkpoint, so it can be
    // tried while the run goes on.
    save_model(config, models, opt)?;
    run.checkpoint_written(step, path);
    let keep = config.keep_checkpoints;
    if keep > 0 {
        let all = checkpoints(config);
        for old in &all[..all.len().saturating_sub(keep)] {
            if let Err(e) = std::fs::remove_file(old) {
                tracing::warn!(path = %old.display(), error = %e, "could not remove an old checkpoint");
            }
        }
    }
    Ok(())
}

/// Posterior means of every image (unscaled), one `[1, L, h, w]` tensor each.
fn encode_unscaled(vae: &AutoencoderKL, images: &[RgbImage], device: &Device) -> Vec<Tensor<4>> {
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(ENCODE_CHUNK) {
        let refs: Vec<&RgbImage> = chunk.iter().collect();
        let mean = vae.encode_mean(crate::image::from_rgb8(&refs, device));
        out.extend((0..chunk.len()).map(|i| mean.clone().narrow(0, i, 1)));
    }
    out
}

/// 1 / std of the VAE's latents over the training images (SD's recipe for `scaling_factor`).
fn latent_scaling(vae: &AutoencoderKL, images: &[RgbImage], device: &Device) -> Result<f64> {
    let all = Tensor::cat(encode_unscaled(vae, images, device), 0);
    let values = host(all.reshape([-1]))?;
    let n = values.len().max(1) as f64;
    let mean = values.iter().map(|v| f64::from(*v)).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|v| (f64::from(*v) - mean).powi(2))
        .sum::<f64>()
        / n;
    if !(var.is_finite() && var > 0.0) {
        return Err(Error::NonFinite("the VAE's latents".into()));
    }
    Ok(1.0 / var.sqrt())
}

/// Scaled latents of every image, for the diffusion phase.
fn encode_latents(
    vae: &AutoencoderKL,
    images: &[RgbImage],
    device: &Device,
) -> Result<Vec<Tensor<4>>> {
    let scaling = vae.scaling_factor;
    Ok(encode_unscaled(vae, images, device)
        .into_iter()
        .map(|l| l * scaling)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_each_epoch_once_and_follow_the_seed() {
        let epoch: Vec<usize> = (0..5).flat_map(|k| batch_items(10, 2, 7, 30, k)).collect();
        let mut sorted = epoch.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_eq!(batch_items(10, 2, 7, 30, 3), batch_items(10, 2, 7, 30, 3));
        assert_ne!(
            (0..5)
                .flat_map(|k| batch_items(10, 2, 7, 30, k + 5))
                .collect::<Vec<_>>(),
            epoch,
            "the next epoch is another order"
        );
        // A partial batch at the end of an epoch is dropped: 10 images, batch 3 → 3 steps.
        assert_eq!(batch_items(10, 3, 0, 30, 3), batch_items(10, 3, 0, 30, 3));
        assert_eq!(batch_items(10, 3, 0, 30, 0).len(), 3);
        // A batch larger than the dataset is the whole dataset.
        assert_eq!(batch_items(3, 8, 0, 30, 0).len(), 3);
    }
}
