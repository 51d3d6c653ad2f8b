//! A whole adapter training run — a LoRA ([`train_lora`]) or a textual-inversion embedding
//! ([`train_textual_inversion`]): dataset → plan → steps with events → checkpoints → the
//! adapter file. Both share one loop (the [`Trainee`] says what differs) and its control
//! ([`RunControl`]: pause, cancel, divergence, smoothing, ETA, checkpoint cadence). Every
//! random choice (epoch order, crops, flips, noise, timesteps) derives from the seed and the
//! step it serves ([`rng_for`]), so a run resumed from a checkpoint makes the same choices as
//! one that never stopped, and its weights come out identical.
//!
//! Checkpoints (`<output>/checkpoints/<name>-step000010.safetensors`) hold the trained
//! matrices, their AdamW moments, and in the header the step, smoothed loss and full
//! configuration; they are written to a temporary file and renamed, so a crash mid-save leaves
//! the previous one intact. A run owns its name in its output folder: a fresh run moves an
//! earlier run's checkpoints of that name aside ([`set_aside_checkpoints`]), so resuming never
//! continues another run ([`existing_run`], [`free_name`] and [`checkpoint_summary`] let the
//! window ask first and say exactly which run and step a resume continues). The result (`<output>/<name>.safetensors`) is a kohya-format LoRA
//! or an A1111 `emb_params` embedding.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::job::{CancelToken, PauseToken, PrecisionChoice};
use crate::pipeline::StableDiffusion;
use crate::tensors::host;
use crate::training::adamw::{AdamWConfig, Moments};
use crate::training::clipped_update;
use crate::training::dataset::{
    DatasetOptions, Plan, bucket, image_files, prepare, rng_for, validate,
};
use crate::training::lora::{Batch, LoraConfig, LoraWeights, Text, loss_and_grads};
use crate::training::lr_schedule::LrSchedule;
use crate::training::noise::{NoiseOptions, training_noise};
use crate::training::run::{RunControl, TrainingEvent};
use crate::training::textual_inversion::{TiConfig, TiWeights};
use crate::weights::safetensors::{SafeTensors, WriteTensor, write_f32};

/// What a run trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Method {
    /// A LoRA (rank, alpha, targets).
    Lora(LoraConfig),
    /// A textual-inversion embedding (token, vectors, init word).
    TextualInversion(TiConfig),
}

impl Default for Method {
    fn default() -> Self {
        Method::Lora(LoraConfig::default())
    }
}

/// Everything that defines an adapter training run (stored in every checkpoint).
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
    /// A LoRA or an embedding, and its options.
    pub method: Method,
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
    /// Also write a LoRA in diffusers/PEFT format (`<name>.peft.safetensors`).
    pub export_peft: bool,
    /// The word that calls the adapter up in a prompt, recorded in the file
    /// (`modelspec.trigger_phrase`); None: the token every caption shares
    /// ([`crate::training::dataset::common_token`]), if any.
    pub trigger: Option<String>,
    /// Where it trains (`auto`: the first GPU backend that works, else the CPU). A
    /// checkpoint resumes on any device.
    pub device: DeviceSpec,
    /// The frozen model's precision (`auto`: f32 on the CPU; bf16 on a GPU that computes in
    /// it, else f16). What trains — the LoRA matrices or embedding rows, their gradients and
    /// AdamW moments — is always f32. Like the device, not a setting of the run: a checkpoint
    /// resumes at any precision.
    pub precision: PrecisionChoice,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            model: PathBuf::new(),
            data: PathBuf::new(),
            output: PathBuf::from("lora-output"),
            name: "lora".into(),
            method: Method::default(),
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
            trigger: None,
            device: DeviceSpec::Auto,
            precision: PrecisionChoice::Auto,
        }
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
    checkpoints_of(&config.output, &config.name).pop()
}

/// The checkpoints of the run named `name` in `output` (`checkpoints/<name>-stepNNNNNN`),
/// oldest step first.
fn checkpoints_of(output: &Path, name: &str) -> Vec<PathBuf> {
    let prefix = format!("{name}-step");
    let Ok(entries) = std::fs::read_dir(output.join("checkpoints")) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix(&prefix))
                .and_then(|n| n.strip_suffix(".safetensors"))
                .is_some_and(|digits| {
                    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
                })
        })
        .collect();
    found.sort();
    found
}

/// What a run of one name has left in an output folder: the run owns its result
/// (`<output>/<name>.safetensors`) and its checkpoints (`<output>/checkpoints/<name>-step…`),
/// so a second run under the same name would mix with it — the window asks first
/// (overwrite / keep both / cancel), and a fresh run sets the old checkpoints aside
/// ([`set_aside_checkpoints`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExistingRun {
    /// The finished adapter, if there is one.
    pub result: Option<PathBuf>,
    /// Its checkpoints, oldest step first.
    pub checkpoints: Vec<PathBuf>,
}

impl ExistingRun {
    /// Whether nothing of a run of that name is there.
    pub fn is_empty(&self) -> bool {
        self.result.is_none() && self.checkpoints.is_empty()
    }
}

/// What a run named `name` has left in `output`.
pub fn existing_run(output: &Path, name: &str) -> ExistingRun {
    let result = output.join(format!("{name}.safetensors"));
    ExistingRun {
        result: result.is_file().then_some(result),
        checkpoints: checkpoints_of(output, name),
    }
}

/// `name` if no run of that name is in `output`, else the first free `name-2`, `name-3`, …
/// ("keep both").
pub fn free_name(output: &Path, name: &str) -> String {
    if existing_run(output, name).is_empty() {
        return name.to_owned();
    }
    (2..)
        .map(|k| format!("{name}-{k}"))
        .find(|n| existing_run(output, n).is_empty())
        .unwrap_or_else(|| name.to_owned())
}

/// What a checkpoint's header says about the run that wrote it (read without its tensors).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointSummary {
    /// The file.
    pub path: PathBuf,
    /// Optimiser steps done when it was written.
    pub step: usize,
    /// The configuration of the run that wrote it.
    pub config: TrainingConfig,
}

/// Reads what `path` says about its run; [`Error::BadCheckpoint`] when it is not a Kiln
/// adapter-training checkpoint.
pub fn checkpoint_summary(path: &Path) -> Result<CheckpointSummary> {
    let state: CheckpointState = SafeTensors::open(path)?
        .metadata()
        .get(STATE_KEY)
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| Error::BadCheckpoint {
            path: path.to_owned(),
            reason: "it is not a Kiln training checkpoint".into(),
        })?;
    Ok(CheckpointSummary {
        path: path.to_owned(),
        step: state.step,
        config: state.config,
    })
}

/// Before a fresh run (not resumed) of `config`: moves the checkpoints an earlier run of the
/// same name left into `<output>/checkpoints/<name>-replaced-<unix seconds>/`, so that
/// "resume latest" can only ever find this run's, and nothing is deleted. Returns that
/// folder, if anything was moved.
pub fn set_aside_checkpoints(config: &TrainingConfig) -> Result<Option<PathBuf>> {
    let old = checkpoints_of(&config.output, &config.name);
    if old.is_empty() {
        return Ok(None);
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let base = config.output.join("checkpoints");
    let mut dir = base.join(format!("{}-replaced-{secs}", config.name));
    let mut k = 1;
    while dir.exists() {
        k += 1;
        dir = base.join(format!("{}-replaced-{secs}-{k}", config.name));
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    for path in old {
        if let Some(file) = path.file_name() {
            std::fs::rename(&path, dir.join(file)).map_err(|e| Error::io(&path, e))?;
        }
    }
    tracing::warn!(
        "an earlier run named {} left checkpoints in {}: moved to {} (this run starts afresh)",
        config.name,
        base.display(),
        dir.display()
    );
    Ok(Some(dir))
}

/// One micro-batch, as [`Trainee::loss_and_grads`] takes it.
struct MicroBatch<'a> {
    /// Token ids `[B, L]` of the captions.
    ids: Tensor<2, Int>,
    /// The captions (with a textual-inversion token where it belongs).
    captions: &'a [String],
    /// Text embeddings of captions seen before (a frozen text encoder's are cached).
    cache: &'a mut HashMap<String, Tensor<3>>,
    /// Clean latents `[B, C, h, w]`.
    latents: Tensor<4>,
    /// ε `[B, C, h, w]`.
    noise: Tensor<4>,
    /// One training timestep per item.
    timesteps: Vec<usize>,
}

/// What differs between training a LoRA and an embedding.
trait Trainee {
    /// Every trained matrix with its moments, by a stable name.
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor<2>, &mut Moments<2>)>;
    /// Whether a checkpoint's configuration fits this adapter.
    fn fits(&self, method: &Method) -> bool;
    /// The caption the model is trained on for an image's `caption`.
    fn caption(&self, caption: &str) -> String {
        caption.to_owned()
    }
    /// Loss value and gradients (in [`Trainee::params_mut`] order) on one micro-batch.
    fn loss_and_grads(
        &self,
        sd: &StableDiffusion,
        batch: MicroBatch<'_>,
        alphas: &[f64],
        snr_gamma: Option<f64>,
    ) -> Result<(f64, Vec<Tensor<2>>)>;
    /// `sd` with the adapter as trained so far in place (for sample images).
    fn install(&self, sd: &mut StableDiffusion);
    /// Writes the result.
    fn save(
        &self,
        config: &TrainingConfig,
        out: &Path,
        meta: &BTreeMap<String, String>,
    ) -> Result<()>;
}

impl Trainee for LoraWeights {
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor<2>, &mut Moments<2>)> {
        self.layers
            .iter_mut()
            .flat_map(|l| {
                [
                    (format!("{}.down", l.path), &mut l.down, &mut l.down_moments),
                    (format!("{}.up", l.path), &mut l.up, &mut l.up_moments),
                ]
            })
            .collect()
    }

    fn fits(&self, method: &Method) -> bool {
        matches!(method, Method::Lora(c) if *c == self.config)
    }

    fn loss_and_grads(
        &self,
        sd: &StableDiffusion,
        batch: MicroBatch<'_>,
        alphas: &[f64],
        snr_gamma: Option<f64>,
    ) -> Result<(f64, Vec<Tensor<2>>)> {
        // Without a text-encoder LoRA the embeddings are fixed: cache them.
        let MicroBatch {
            ids,
            captions,
            cache,
            latents,
            noise,
            timesteps,
        } = batch;
        let text = if self.trains_text_encoder() {
            Text::Ids(ids)
        } else {
            let len = ids.dims()[1];
            let mut contexts = Vec::with_capacity(captions.len());
            for (k, c) in captions.iter().enumerate() {
                if !cache.contains_key(c) {
                    let row = ids.clone().slice([k..k + 1, 0..len]);
                    cache.insert(c.clone(), sd.text_encoder.forward(row, 1));
                }
                contexts.push(cache[c].clone());
            }
            Text::Context(Tensor::cat(contexts, 0))
        };
        let batch = Batch {
            latents,
            noise,
            timesteps,
            text,
        };
        let (loss, g) =
            loss_and_grads(&sd.unet, &sd.text_encoder, self, &batch, alphas, snr_gamma)?;
        Ok((loss, g.into_iter().flat_map(|(d, u)| [d, u]).collect()))
    }

    fn install(&self, sd: &mut StableDiffusion) {
        crate::training::lora::install(&mut sd.unet, &mut sd.text_encoder, self, false);
    }

    fn save(
        &self,
        config: &TrainingConfig,
        out: &Path,
        meta: &BTreeMap<String, String>,
    ) -> Result<()> {
        self.save_kohya(out, meta)?;
        if config.export_peft {
            self.save_peft(
                &config
                    .output
                    .join(format!("{}.peft.safetensors", config.name)),
            )?;
        }
        Ok(())
    }
}

impl Trainee for TiWeights {
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor<2>, &mut Moments<2>)> {
        vec![("embedding".to_owned(), &mut self.rows, &mut self.moments)]
    }

    fn fits(&self, method: &Method) -> bool {
        matches!(method, Method::TextualInversion(c) if *c == self.config)
    }

    /// A caption without the token gets it in front.
    fn caption(&self, caption: &str) -> String {
        let token = &self.config.token;
        if caption.contains(token.as_str()) {
            caption.to_owned()
        } else if caption.is_empty() {
            token.clone()
        } else {
            format!("{token}, {caption}")
        }
    }

    fn loss_and_grads(
        &self,
        sd: &StableDiffusion,
        batch: MicroBatch<'_>,
        alphas: &[f64],
        snr_gamma: Option<f64>,
    ) -> Result<(f64, Vec<Tensor<2>>)> {
        let (loss, g) = crate::training::textual_inversion::loss_and_grad(
            &sd.unet,
            &sd.text_encoder,
            self,
            batch.ids,
            batch.latents,
            batch.noise,
            &batch.timesteps,
            alphas,
            snr_gamma,
        )?;
        Ok((loss, vec![g]))
    }

    fn install(&self, sd: &mut StableDiffusion) {
        sd.text_encoder = TiWeights::install(self, &sd.text_encoder);
    }

    fn save(
        &self,
        _config: &TrainingConfig,
        out: &Path,
        meta: &BTreeMap<String, String>,
    ) -> Result<()> {
        TiWeights::save(self, out, meta)
    }
}

fn save_checkpoint(path: &Path, trainee: &mut dyn Trainee, state: &CheckpointState) -> Result<()> {
    let mut data: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    for (name, t, m) in trainee.params_mut() {
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

fn load_checkpoint(path: &Path, trainee: &mut dyn Trainee) -> Result<CheckpointState> {
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
    if !trainee.fits(&state.config.method) {
        return Err(bad(
            "it was made for another adapter (method, rank, alpha, targets or token differ)".into(),
        ));
    }
    for (name, t, m) in trainee.params_mut() {
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

/// Trains what `config.method` says; returns the file.
pub fn train(
    config: &TrainingConfig,
    resume: Option<&Path>,
    cancel: &CancelToken,
    pause: &PauseToken,
    on_event: &mut dyn FnMut(TrainingEvent),
) -> Result<PathBuf> {
    match &config.method {
        Method::Lora(_) => train_lora(config, resume, cancel, pause, on_event),
        Method::TextualInversion(_) => {
            train_textual_inversion(config, resume, cancel, pause, on_event)
        }
    }
}

/// Trains a LoRA (`config.method` must be [`Method::Lora`]); returns the file. `resume`
/// continues from a checkpoint (its configuration must match `config` in the LoRA shape; the
/// rest is taken from `config`).
pub fn train_lora(
    config: &TrainingConfig,
    resume: Option<&Path>,
    cancel: &CancelToken,
    pause: &PauseToken,
    on_event: &mut dyn FnMut(TrainingEvent),
) -> Result<PathBuf> {
    let Method::Lora(lora) = &config.method else {
        return Err(Error::InvalidRequest(
            "train_lora needs a LoRA configuration".into(),
        ));
    };
    let opened = config.device.open()?;
    let mut sd = load_base(config, &opened.device)?;
    let weights = LoraWeights::init(
        &mut sd.unet,
        &mut sd.text_encoder,
        lora,
        config.seed,
        &opened.device,
    )?;
    run(
        config,
        sd,
        weights,
        &opened.spec,
        resume,
        cancel,
        pause,
        on_event,
    )
}

/// Trains a textual-inversion embedding (`config.method` must be
/// [`Method::TextualInversion`]); returns the file. `resume` as for [`train_lora`].
pub fn train_textual_inversion(
    config: &TrainingConfig,
    resume: Option<&Path>,
    cancel: &CancelToken,
    pause: &PauseToken,
    on_event: &mut dyn FnMut(TrainingEvent),
) -> Result<PathBuf> {
    let Method::TextualInversion(ti) = &config.method else {
        return Err(Error::InvalidRequest(
            "train_textual_inversion needs an embedding configuration".into(),
        ));
    };
    let opened = config.device.open()?;
    let mut sd = load_base(config, &opened.device)?;
    let weights = TiWeights::init(ti, &mut sd.tokenizer, &sd.text_encoder)?;
    run(
        config,
        sd,
        weights,
        &opened.spec,
        resume,
        cancel,
        pause,
        on_event,
    )
}

/// The frozen model of a run, its UNet and text encoder at the run's precision
/// ([`PrecisionChoice::for_training`]).
fn load_base(config: &TrainingConfig, device: &Device) -> Result<StableDiffusion> {
    let precision = config.precision.for_training(device)?;
    StableDiffusion::load_at(&config.model, None, device, precision)
}

/// The loop both adapters share, on `sd`'s device (`device_spec` names it).
#[allow(clippy::too_many_arguments)]
fn run<T: Trainee>(
    config: &TrainingConfig,
    mut sd: StableDiffusion,
    mut trainee: T,
    device_spec: &DeviceSpec,
    resume: Option<&Path>,
    cancel: &CancelToken,
    pause: &PauseToken,
    on_event: &mut dyn FnMut(TrainingEvent),
) -> Result<PathBuf> {
    let device: Device = sd.device().clone();
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
    let (mut step, mut smoothed, mut resumed_from) = (0usize, f64::NAN, None);
    if let Some(path) = resume {
        let state = load_checkpoint(path, &mut trainee)?;
        (step, smoothed, resumed_from) = (state.step, state.smoothed_loss, Some(path.to_owned()));
    } else {
        // A fresh run owns its name: an earlier run's checkpoints must not be resumed as
        // this one's.
        set_aside_checkpoints(config)?;
    }
    let mut control = RunControl::new(cancel, pause, on_event, step, total, smoothed, resumed_from);
    control.report(TrainingEvent::Started {
        report: Box::new(report.clone()),
        plan,
        from_step: step,
        device: device_spec.clone(),
        precision: sd.precision(),
    });
    let alphas = sd.info.scheduler.alphas_cumprod()?;
    let n_train = alphas.len();
    let scaling = sd.vae.scaling_factor;
    let accum = config.gradient_accumulation.max(1);
    let mut latent_cache: HashMap<usize, Tensor<4>> = HashMap::new();
    let mut context_cache: HashMap<String, Tensor<3>> = HashMap::new();
    let mut images: HashMap<usize, RgbImage> = HashMap::new();
    let cacheable = !config.dataset.random_crop && !config.dataset.flip;
    let mut epoch_cache: Option<(usize, Vec<Vec<usize>>)> = None;
    while step < total {
        control.wait()?;
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
                    let path = &usable[i].0;
                    v.insert(crate::image::read_image(path).map_err(|e| {
                        Error::DatasetChanged {
                            path: path.clone(),
                            cause: match e {
                                Error::Io { cause, .. } => cause.to_string(),
                                other => other.to_string(),
                            },
                        }
                    })?);
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
            let captions: Vec<String> = items
                .iter()
                .map(|&i| trainee.caption(&usable[i].1))
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
            let batch = MicroBatch {
                ids,
                captions: &captions,
                cache: &mut context_cache,
                latents,
                noise,
                timesteps,
            };
            let (loss, grads) = trainee
                .loss_and_grads(&sd, batch, &alphas, config.snr_gamma)
                .map_err(|e| control.diverged(e, step))?;
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
        let params = trainee.params_mut().into_iter().map(|(_, p, m)| (p, m));
        let grad_norm = clipped_update(
            params,
            grads,
            &config.adamw,
            config.max_grad_norm,
            step + 1,
            lr,
        )
        .map_err(|e| control.diverged(e, step))?;
        step += 1;
        let epoch = step.saturating_sub(1) / per_epoch.max(1) + 1;
        control.step_done(step, epoch, loss_sum / accum as f64, lr, grad_norm);
        if control.checkpoint_due(step, config.checkpoint_every, false) {
            let path = checkpoint_path(config, step);
            save_checkpoint(
                &path,
                &mut trainee,
                &CheckpointState {
                    step,
                    smoothed_loss: control.smoothed_loss(),
                    config: config.clone(),
                },
            )?;
            control.checkpoint_written(step, path);
        }
        if control.samples_due(step, config.sample_every) && !config.sample_prompts.is_empty() {
            let images = samples(&mut sd, &trainee, config)?;
            control.report(TrainingEvent::Samples { step, images });
        }
    }
    let out = config.output.join(format!("{}.safetensors", config.name));
    let mut meta = BTreeMap::new();
    meta.insert("ss_output_name".into(), config.name.clone());
    // A LoRA records the word that calls it up (an embedding is called by its token).
    let captions: Vec<&str> = usable.iter().map(|u| u.1.as_str()).collect();
    if let Method::Lora(_) = config.method
        && let Some(trigger) = config
            .trigger
            .clone()
            .filter(|t| !t.trim().is_empty())
            .or_else(|| crate::training::dataset::common_token(&captions))
    {
        meta.insert("modelspec.trigger_phrase".into(), trigger);
    }
    meta.insert("ss_steps".into(), total.to_string());
    meta.insert(
        "kiln_training_config".into(),
        serde_json::to_string(config).map_err(|e| Error::Config(e.to_string()))?,
    );
    std::fs::create_dir_all(&config.output).map_err(|e| Error::io(&config.output, e))?;
    trainee.save(config, &out, &meta)?;
    crate::device::log_memory(&device, "training");
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
    train(&probe, None, cancel, &PauseToken::default(), &mut |e| {
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
    trainee: &dyn Trainee,
    config: &TrainingConfig,
) -> Result<Vec<RgbImage>> {
    let (base_unet, base_te) = (sd.unet.clone(), sd.text_encoder.clone());
    trainee.install(sd);
    let size = sd
        .info
        .config
        .unet
        .sample_size
        .map_or(config.dataset.resolution, |_| sd.info.native_size());
    let result = sample_images(sd, &config.sample_prompts, size);
    sd.unet = base_unet;
    sd.text_encoder = base_te;
    result
}

/// One `size`×`size` image per prompt (seeds 0, 1, …; DPM++ 2M Karras, 20 steps, CFG 7):
/// the sample images a training run shows.
pub fn sample_images(
    sd: &StableDiffusion,
    prompts: &[String],
    size: usize,
) -> Result<Vec<RgbImage>> {
    let mut out = Vec::with_capacity(prompts.len());
    for (k, prompt) in prompts.iter().enumerate() {
        let req = crate::pipeline::GenerationRequest {
            prompts: vec![prompt.clone()],
            negatives: vec![],
            sampler: crate::schedulers::sampler::Sampler::DpmPp2m {
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
            step_noise: None,
        };
        out.extend(sd.generate(&req, &CancelToken::new(), &mut |_| {})?.images);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn each_entry_point_refuses_the_other_method() {
        let (cancel, pause) = (CancelToken::new(), PauseToken::default());
        let ti = TrainingConfig {
            method: Method::TextualInversion(TiConfig {
                token: "<t>".into(),
                vectors: 1,
                init_word: "style".into(),
            }),
            ..TrainingConfig::default()
        };
        let err = train_lora(&ti, None, &cancel, &pause, &mut |_| {}).expect_err("not a LoRA");
        assert!(
            err.to_string().contains("needs a LoRA configuration"),
            "{err}"
        );
        let lora = TrainingConfig::default();
        let err = train_textual_inversion(&lora, None, &cancel, &pause, &mut |_| {})
            .expect_err("not an embedding");
        assert!(
            err.to_string().contains("needs an embedding configuration"),
            "{err}"
        );
        // The method round-trips through a checkpoint's JSON.
        let json = serde_json::to_string(&ti).expect("serialise");
        assert!(
            json.contains(r#""method":{"kind":"textual_inversion","token":"<t>""#),
            "{json}"
        );
        assert_eq!(
            serde_json::from_str::<TrainingConfig>(&json).expect("parse"),
            ti
        );
    }
}
