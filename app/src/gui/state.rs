//! What the studio remembers between runs ([`settings_path`], written atomically; eframe's
//! storage under [`STORAGE_KEY`] is read once for settings from before): the model,
//! device, prompt, sampler settings, LoRA stack and embeddings, output folder, models folder
//! and download source. Runtime state (the engine, textures, jobs) lives in the views and
//! [`super::studio::Studio`], never here.

use std::path::{Path, PathBuf};

use kiln_engine::device::DeviceSpec;
use kiln_engine::job::PrecisionChoice;
use kiln_engine::resolve::{GenerationSpec, InitImageChoice};
use kiln_engine::schedulers::{SamplerKind, Schedule};
use serde::{Deserialize, Serialize};

pub use crate::paths::{default_models_dir, default_output_dir};

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

/// Windows at least this wide (points) show the gallery unless the user hid it; narrower ones
/// hide it unless the user showed it, so the canvas keeps its room.
pub const WIDE_WINDOW: f32 = 1000.0;

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
    /// Where the trained file and its checkpoints go; None: the models folder, where the
    /// Models tab and the LoRA picker look ([`Settings::training_output`]). Settings saved
    /// before had `output_dir`: that folder stays (its runs can still be resumed).
    #[serde(alias = "output_dir")]
    pub output_folder: Option<PathBuf>,
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
    /// Resolution, steps, rank, learning rate and checkpoint cadence follow the loaded model
    /// and the dataset ([`kiln_engine::training::suggest`]) until the user sets one of them.
    /// On for a new install; settings saved before it existed keep their values (off).
    #[serde(default)]
    pub follow_suggestion: bool,
    /// The trigger word recorded in a trained LoRA (empty: the word every caption shares).
    pub trigger: String,
}

impl Default for TrainSettings {
    fn default() -> Self {
        TrainSettings {
            data: None,
            method: TrainMethod::Lora,
            name: "my-lora".into(),
            output_folder: None,
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
            follow_suggestion: true,
            trigger: String::new(),
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
    /// The compute device (`auto`, `cpu`, `wgpu`, …).
    pub device: DeviceSpec,
    /// UNet/text-encoder precision.
    pub precision: PrecisionChoice,
    /// Prompt.
    pub prompt: String,
    /// Negative prompt.
    pub negative: String,
    /// The sampler (stored by its CLI name).
    pub sampler: SamplerKind,
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
    /// The SHA-256 the init image must still have (set when it came from a recipe).
    pub init_image_sha256: Option<String>,
    /// CLIP skip (1 = the text encoder's last layer).
    pub clip_skip: usize,
    /// Where `<lora:NAME:…>` prompt tags look for `NAME.safetensors` (None: the models
    /// folder).
    pub lora_dir: Option<PathBuf>,
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
    /// Show the gallery panel (None: when the window is at least [`WIDE_WINDOW`] wide).
    pub show_gallery: Option<bool>,
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
    /// Serve the AUTOMATIC1111-compatible HTTP API from the window (on loopback).
    pub serve_api: bool,
    /// The API's port.
    pub api_port: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            model_path: None,
            recent_models: Vec::new(),
            device: DeviceSpec::Auto,
            precision: PrecisionChoice::Auto,
            prompt: String::new(),
            negative: String::new(),
            // The engine's defaults, as `kiln generate` and the README have them.
            sampler: SamplerKind::Ddim,
            schedule: Schedule::Default,
            steps: kiln_engine::resolve::DEFAULT_STEPS,
            cfg: kiln_engine::resolve::DEFAULT_CFG,
            eta: 0.0,
            random_seed: true,
            seed: 0,
            width: 512,
            height: 512,
            batch_count: 1,
            batch_size: 1,
            init_image: None,
            init_image_sha256: None,
            clip_skip: 1,
            lora_dir: None,
            strength: kiln_engine::resolve::DEFAULT_STRENGTH,
            loras: Vec::new(),
            embeddings: Vec::new(),
            output_dir: default_output_dir(),
            live_preview: true,
            show_gallery: None,
            native_size: 512,
            train: TrainSettings::default(),
            models_dir: default_models_dir(),
            hub_endpoint: default_hub_endpoint(),
            download_fp16: false,
            serve_api: false,
            api_port: 7860,
        }
    }
}

/// `$HF_ENDPOINT` when set (the variable Hugging Face's own tools read for a mirror), else the
/// public Hub.
pub fn default_hub_endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| kiln_hub::download::HUB.into())
}

impl Settings {
    /// The folder `<lora:NAME:…>` tags look in.
    pub fn lora_folder(&self) -> &Path {
        self.lora_dir.as_deref().unwrap_or(&self.models_dir)
    }

    /// What Generate asks the engine for (the stack and embeddings are the engine's already;
    /// a random seed is drawn by the engine's resolver).
    pub fn spec(&self) -> GenerationSpec {
        GenerationSpec {
            prompts: vec![self.prompt.clone()],
            negatives: vec![self.negative.clone()],
            sampler: Some(self.sampler),
            schedule: Some(if self.sampler.fixed_schedule() {
                Schedule::Default
            } else {
                self.schedule
            }),
            eta: Some(self.eta),
            steps: Some(self.steps),
            cfg: Some(self.cfg),
            seed: (!self.random_seed).then_some(self.seed),
            width: Some(self.width),
            height: Some(self.height),
            batch_size: self.batch_size,
            batch_count: self.batch_count,
            clip_skip: Some(self.clip_skip),
            lora_dir: Some(self.lora_folder().to_owned()),
            init_image: self.init_image.clone().map(|path| InitImageChoice {
                path,
                expected_sha256: self.init_image_sha256.clone(),
            }),
            strength: self.init_image.is_some().then_some(self.strength),
            preview: self.live_preview,
            ..GenerationSpec::default()
        }
    }

    /// Puts the settings `spec` gives in place ("Reuse parameters"): prompt, negative
    /// prompt, sampler, steps, CFG, seed (fixed), size, CLIP skip, init image (with the hash
    /// it must still have) and strength. `exact` (a Kiln recipe, which records everything):
    /// an init image it does not name is cleared. The stack, embeddings and model are the
    /// caller's.
    pub fn reuse(&mut self, spec: &GenerationSpec, exact: bool) {
        if let Some(p) = spec.prompts.first() {
            self.prompt = p.clone();
        }
        self.negative = spec.negatives.first().cloned().unwrap_or_default();
        if let Some(kind) = spec.sampler {
            self.sampler = kind;
            self.schedule = spec.schedule.unwrap_or_default();
            self.eta = spec.eta.unwrap_or(0.0);
        }
        if let Some(v) = spec.steps {
            self.steps = v;
        }
        if let Some(v) = spec.cfg {
            self.cfg = v;
        }
        if let Some(v) = spec.seed {
            self.seed = v;
            self.random_seed = false;
        }
        if let (Some(w), Some(h)) = (spec.width, spec.height) {
            self.width = w;
            self.height = h;
        }
        self.clip_skip = spec.clip_skip.unwrap_or(1);
        if let Some(v) = spec.strength {
            self.strength = v;
        }
        if spec.init_image.is_some() || exact {
            self.init_image = spec.init_image.as_ref().map(|i| i.path.clone());
            self.init_image_sha256 = spec
                .init_image
                .as_ref()
                .and_then(|i| i.expected_sha256.clone());
        }
    }

    /// Uses `path` as the img2img source (a file the user chose: no hash to check).
    pub fn set_init_image(&mut self, path: Option<PathBuf>) {
        self.init_image = path;
        self.init_image_sha256 = None;
    }

    /// Where training writes: the Train tab's folder, else the models folder.
    pub fn training_output(&self) -> PathBuf {
        self.train
            .output_folder
            .clone()
            .unwrap_or_else(|| self.models_dir.clone())
    }

    /// Remembers `path` as the current model and first recent one.
    pub fn remember_model(&mut self, path: PathBuf) {
        self.recent_models.retain(|p| p != &path);
        self.recent_models.insert(0, path.clone());
        self.recent_models.truncate(RECENT_MODELS);
        self.model_path = Some(path);
    }

    /// Reads settings written by [`Settings::save`]; None when the file is missing or is
    /// not settings (then the caller falls back, and says so in the log).
    pub fn load(path: &Path) -> Option<Settings> {
        let text = std::fs::read_to_string(path).ok()?;
        match serde_json::from_str(&text) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring unreadable settings: {e}");
                None
            }
        }
    }

    /// Writes the settings to `path` atomically (`kiln_engine::fs::write_atomic`): a crash
    /// or a full disk while saving keeps the previous settings whole. eframe's own storage
    /// file (`app.ron`: window geometry, egui state) is rewritten in place, so Kiln keeps
    /// its settings beside it in a file of its own.
    pub fn save(&self, path: &Path) -> kiln_engine::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| {
            kiln_engine::Error::InvalidRequest(format!("settings cannot be written: {e}"))
        })?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| kiln_engine::Error::io(dir, e))?;
        }
        kiln_engine::fs::write_atomic(path, &json)
    }
}

/// Where the studio keeps [`Settings`]: `settings.json` in eframe's storage folder for the
/// app (`~/.local/share/kiln` on Linux), or in `$KILN_CONFIG_DIR` when that is set.
pub fn settings_path() -> Option<PathBuf> {
    let dir = std::env::var_os("KILN_CONFIG_DIR")
        .map(PathBuf::from)
        .or_else(|| eframe::storage_dir("Kiln"))?;
    Some(dir.join("settings.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings survive a save and a load; a damaged file is ignored (the caller falls back),
    /// a save that cannot be written keeps the previous file whole and leaves no temporary.
    #[test]
    fn settings_are_saved_atomically_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kiln").join("settings.json");
        let mut s = Settings {
            prompt: "a striped teapot".into(),
            ..Settings::default()
        };
        s.remember_model(PathBuf::from("/models/a.safetensors"));
        s.save(&path).expect("save");
        assert_eq!(Settings::load(&path), Some(s.clone()));
        std::fs::write(&path, b"{ not json").expect("damage");
        assert_eq!(Settings::load(&path), None);
        assert_eq!(Settings::load(&dir.path().join("missing.json")), None);
        s.save(&path).expect("save again");
        // A folder in the file's place: the save fails by name, nothing else changes.
        let blocked = dir.path().join("kiln").join("blocked.json");
        std::fs::create_dir_all(blocked.join("x")).expect("folder");
        let err = s.save(&blocked).expect_err("a folder is in the way");
        assert!(err.to_string().contains("blocked.json"), "{err}");
        let mut names: Vec<_> = std::fs::read_dir(dir.path().join("kiln"))
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["blocked.json", "settings.json"]);
        assert_eq!(Settings::load(&path), Some(s));
    }

    /// The window starts where `kiln generate` and the README do (issue 26, defect 9).
    #[test]
    fn the_window_defaults_are_the_documented_ones() {
        use kiln_engine::resolve::{DEFAULT_CFG, DEFAULT_STEPS, DEFAULT_STRENGTH};
        let s = Settings::default();
        assert_eq!(
            (s.sampler, s.schedule),
            (SamplerKind::Ddim, Schedule::Default)
        );
        assert_eq!(
            (s.steps, s.cfg, s.clip_skip),
            (DEFAULT_STEPS, DEFAULT_CFG, 1)
        );
        assert_eq!((s.eta, s.strength), (0.0, DEFAULT_STRENGTH));
        assert!(s.random_seed);
        assert_eq!(s.device, kiln_engine::device::DeviceSpec::Auto);
        let readme = include_str!("../../../README.md");
        assert!(
            readme.contains("DDIM, 25 steps, CFG 7.5, CLIP skip 1, the model's native size, a random seed, device `auto`"),
            "the README's defaults line changed: update this test and Settings::default together"
        );
    }
}
