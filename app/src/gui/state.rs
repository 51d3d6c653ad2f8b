//! What the studio remembers between runs (eframe storage, key [`STORAGE_KEY`]): the model,
//! device, prompt, sampler settings, LoRA stack and embeddings, output folder, models folder
//! and download source. Runtime handles (engine, textures, jobs) live in [`super::KilnApp`],
//! never here.

use std::path::PathBuf;

use kiln_engine::schedulers::Schedule;
use serde::{Deserialize, Serialize};

/// Storage key of [`Settings`].
pub const STORAGE_KEY: &str = "kiln-settings";
/// How many recent models the model panel lists.
pub const RECENT_MODELS: usize = 8;

/// One LoRA in the stack, as remembered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraSetting {
    /// File or PEFT folder.
    pub path: PathBuf,
    /// Weight, −2…2 on the slider (any value typed).
    pub weight: f32,
    /// On or off.
    pub enabled: bool,
}

/// One embedding, as remembered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingSetting {
    /// The file.
    pub path: PathBuf,
    /// Token; None = the file stem.
    pub token: Option<String>,
}

/// What the Train tab trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrainMethod {
    /// A LoRA on the UNet.
    Lora,
    /// A textual-inversion embedding.
    TextualInversion,
}

/// The Train tab's options (persisted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainSettings {
    /// The dataset folder.
    pub data: Option<PathBuf>,
    /// LoRA or embedding.
    pub method: TrainMethod,
    /// Output name.
    pub name: String,
    /// Where outputs go.
    pub output_dir: PathBuf,
    /// LoRA rank.
    pub rank: usize,
    /// LoRA alpha.
    pub alpha: f64,
    /// Embedding token.
    pub token: String,
    /// Embedding vectors.
    pub vectors: usize,
    /// Embedding init word.
    pub init_word: String,
    /// Learning rate.
    pub learning_rate: f64,
    /// Optimiser steps.
    pub steps: usize,
    /// Batch size.
    pub batch: usize,
    /// Training resolution.
    pub resolution: usize,
    /// Repeats per image.
    pub repeats: usize,
    /// Aspect-ratio buckets.
    pub buckets: bool,
    /// Random horizontal flips.
    pub flip: bool,
    /// min-SNR-γ (0 = off).
    pub snr_gamma: f64,
    /// Caption for images without one.
    pub default_caption: String,
    /// Sample prompt (empty = no samples).
    pub sample_prompt: String,
    /// Samples every N steps.
    pub sample_every: usize,
    /// Checkpoint every N steps.
    pub checkpoint_every: usize,
    /// Seed.
    pub seed: u64,
    /// Also export a LoRA in diffusers/PEFT format.
    pub export_peft: bool,
    /// Per-image repeats by file name (overriding `repeats`).
    pub image_repeats: std::collections::BTreeMap<String, usize>,
}

impl Default for TrainSettings {
    fn default() -> Self {
        TrainSettings {
            data: None,
            method: TrainMethod::Lora,
            name: "my-lora".into(),
            output_dir: default_output_dir().join("training"),
            rank: 4,
            alpha: 4.0,
            token: "<my-style>".into(),
            vectors: 1,
            init_word: "style".into(),
            learning_rate: 1e-4,
            steps: 500,
            batch: 1,
            resolution: 512,
            repeats: 1,
            buckets: false,
            flip: false,
            snr_gamma: 5.0,
            default_caption: String::new(),
            sample_prompt: String::new(),
            sample_every: 100,
            checkpoint_every: 100,
            seed: 0,
            export_peft: false,
            image_repeats: Default::default(),
        }
    }
}

/// Every persisted setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The model to load at start.
    pub model_path: Option<PathBuf>,
    /// Recently opened models, newest first.
    pub recent_models: Vec<PathBuf>,
    /// Device name (`cpu`, `wgpu`, …, `auto`).
    pub device: String,
    /// `auto`, `f32` or `f16`.
    pub precision: String,
    /// Prompt.
    pub prompt: String,
    /// Negative prompt.
    pub negative: String,
    /// Sampler's CLI name (see `Sampler::NAMES`).
    pub sampler: String,
    /// Schedule.
    pub schedule: Schedule,
    /// Steps.
    pub steps: usize,
    /// CFG scale.
    pub cfg: f64,
    /// DDIM η.
    pub eta: f64,
    /// A new random seed for every generation.
    pub random_seed: bool,
    /// The fixed seed (or the last one used).
    pub seed: u64,
    /// Width in pixels (multiple of 8).
    pub width: usize,
    /// Height in pixels (multiple of 8).
    pub height: usize,
    /// Jobs per Generate click.
    pub batch_count: usize,
    /// Images per job.
    pub batch_size: usize,
    /// img2img source.
    pub init_image: Option<PathBuf>,
    /// img2img strength.
    pub strength: f64,
    /// The LoRA stack.
    pub loras: Vec<LoraSetting>,
    /// Embeddings.
    pub embeddings: Vec<EmbeddingSetting>,
    /// Where generated images are written (and the gallery reads).
    pub output_dir: PathBuf,
    /// Show the image forming while sampling.
    pub live_preview: bool,
    /// Native size of the last loaded model (to follow it while the size is untouched).
    pub native_size: usize,
    /// The Train tab.
    pub train: TrainSettings,
    /// The models folder the model manager lists and downloads into.
    pub models_dir: PathBuf,
    /// Where downloads come from: the Hugging Face Hub or a mirror with its layout (default
    /// [`default_hub_endpoint`]).
    pub hub_endpoint: String,
    /// Download Stable Diffusion 1.5 in half precision (2 GB instead of 4).
    pub download_fp16: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            model_path: None,
            recent_models: Vec::new(),
            device: "auto".into(),
            precision: "auto".into(),
            prompt: String::new(),
            negative: String::new(),
            sampler: "dpmpp-2m".into(),
            schedule: Schedule::Karras,
            steps: 25,
            cfg: 7.0,
            eta: 0.0,
            random_seed: true,
            seed: 0,
            width: 512,
            height: 512,
            batch_count: 1,
            batch_size: 1,
            init_image: None,
            strength: 0.75,
            loras: Vec::new(),
            embeddings: Vec::new(),
            output_dir: default_output_dir(),
            live_preview: true,
            native_size: 512,
            train: TrainSettings::default(),
            models_dir: default_models_dir(),
            hub_endpoint: default_hub_endpoint(),
            download_fp16: false,
        }
    }
}

/// `~/Pictures/Kiln` when there is a home folder, else `./kiln-output`.
pub fn default_output_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join("Pictures").join("Kiln"))
        .unwrap_or_else(|| PathBuf::from("kiln-output"))
}

/// The default models folder: `$XDG_DATA_HOME/kiln/models` (`~/.local/share/kiln/models`) on
/// Linux, `~/Library/Application Support/Kiln/models` on macOS, `%APPDATA%\Kiln\models` on
/// Windows; `./kiln-models` when there is no home folder.
pub fn default_models_dir() -> PathBuf {
    let var = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if cfg!(target_os = "windows") {
        return var("APPDATA")
            .map(|d| d.join("Kiln").join("models"))
            .unwrap_or_else(|| PathBuf::from("kiln-models"));
    }
    if cfg!(target_os = "macos") {
        return var("HOME")
            .map(|h| h.join("Library/Application Support/Kiln/models"))
            .unwrap_or_else(|| PathBuf::from("kiln-models"));
    }
    var("XDG_DATA_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".local").join("share")))
        .map(|d| d.join("kiln").join("models"))
        .unwrap_or_else(|| PathBuf::from("kiln-models"))
}

/// `$HF_ENDPOINT` when set (the variable Hugging Face's own tools read for a mirror), else the
/// public Hub.
pub fn default_hub_endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| kiln_engine::download::HUB.into())
}

impl Settings {
    /// Remembers `path` as the current model and first recent one.
    pub fn remember_model(&mut self, path: PathBuf) {
        self.recent_models.retain(|p| p != &path);
        self.recent_models.insert(0, path.clone());
        self.recent_models.truncate(RECENT_MODELS);
        self.model_path = Some(path);
    }
}
