//! [`KilnApp`]: runtime state, engine events, generation jobs, drops and shortcuts.

use std::path::{Path, PathBuf};
use std::time::Instant;

use kiln_engine::adapters::lora::LoraReport;
use kiln_engine::image::RgbImage;
use kiln_engine::metadata::{ImageInfo, Recipe, read_image_info, write_png_with_recipe};
use kiln_engine::pipeline::{GenerationRequest, InitImage, Precision, Sampler};
use kiln_engine::protocol::{Command, Event, JobId};
use kiln_engine::tokenizer::ClipTokenizer;
use kiln_engine::weights::inspect::{Inspection, inspect};

use super::commands::UiCommand;
use super::engine_client::{EngineClient, repaint_for};
use super::panels;
use super::state::{EmbeddingSetting, LoraSetting, STORAGE_KEY, Settings};

/// Where the model stands.
#[derive(Debug, Clone)]
pub enum ModelStatus {
    /// Nothing loaded.
    None,
    /// Loading this path.
    Loading(PathBuf),
    /// Ready.
    Loaded {
        /// Family, layout, dtype, configs.
        info: Box<kiln_engine::weights::CheckpointInfo>,
        /// Device it runs on.
        device: String,
        /// Precision.
        precision: Precision,
    },
    /// The last load failed.
    Failed(String),
}

/// A LoRA row's engine state.
#[derive(Debug, Clone)]
pub enum LoraStatus {
    /// Sent to the engine, no answer yet.
    Pending,
    /// In the engine's stack.
    Loaded(Box<LoraReport>),
    /// Refused, with the reason.
    Refused(String),
}

/// An embedding row's engine state.
#[derive(Debug, Clone)]
pub enum EmbeddingStatus {
    /// Sent, no answer yet.
    Pending,
    /// Loaded under `token`.
    Loaded {
        /// Token.
        token: String,
        /// Vectors.
        vectors: usize,
        /// Width.
        width: usize,
    },
    /// Failed, with the reason.
    Failed(String),
}

/// The running generation.
#[derive(Debug)]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// UNet calls done / in all.
    pub step: usize,
    /// UNet calls in all.
    pub total: usize,
    /// When it started.
    pub started: Instant,
    /// Jobs still to run after this one (batch count).
    pub remaining: usize,
    /// Seed of the next job.
    pub next_seed: u64,
}

/// A dismissible message.
#[derive(Debug, Clone)]
pub struct Notification {
    /// Headline.
    pub title: String,
    /// Details.
    pub details: String,
    /// Error (red) or information.
    pub error: bool,
}

/// A thumbnail, decoded at most once: a file that cannot be decoded is not read again every
/// frame.
#[derive(Clone, Default)]
pub enum Thumb {
    /// Not tried yet.
    #[default]
    NotLoaded,
    /// Decoded.
    Ready(egui::TextureHandle),
    /// Could not be decoded.
    Failed,
}

impl Thumb {
    /// The outcome of a load.
    pub fn from_load(texture: Option<egui::TextureHandle>) -> Self {
        texture.map_or(Thumb::Failed, Thumb::Ready)
    }

    /// The texture, if decoded.
    pub fn texture(&self) -> Option<&egui::TextureHandle> {
        match self {
            Thumb::Ready(t) => Some(t),
            _ => None,
        }
    }
}

/// One gallery image.
#[derive(Clone)]
pub struct GalleryItem {
    /// The PNG.
    pub path: PathBuf,
    /// Its metadata, if any.
    pub info: Option<ImageInfo>,
    /// Thumbnail, loaded lazily.
    pub thumb: Thumb,
}

/// The image on the canvas.
#[derive(Clone)]
pub struct Shown {
    /// Texture.
    pub texture: egui::TextureHandle,
    /// Pixel size.
    pub size: [usize; 2],
    /// The file, once saved.
    pub path: Option<PathBuf>,
    /// Its recipe (None for a live preview).
    pub recipe: Option<Recipe>,
}

/// One side of the compare view.
#[derive(Clone)]
pub struct CompareSide {
    /// Pixels.
    pub image: RgbImage,
    /// Texture.
    pub texture: egui::TextureHandle,
    /// What it is ("baseline", a file name).
    pub label: String,
}

/// How the compare view shows the two images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareMode {
    /// A and B next to each other.
    SideBySide,
    /// B over A, revealed up to a slider.
    Swipe,
    /// The difference heatmap.
    Heatmap,
}

/// The compare view's state.
pub struct Compare {
    /// Left / before.
    pub a: Option<CompareSide>,
    /// Right / after.
    pub b: Option<CompareSide>,
    /// Display mode.
    pub mode: CompareMode,
    /// Swipe position, 0–1.
    pub swipe: f32,
    /// Heatmap gain.
    pub gain: f32,
    /// Changed-pixel threshold (0–255).
    pub threshold: u8,
    /// Statistics of B − A.
    pub stats: Option<kiln_engine::diff::DiffStats>,
    /// The heatmap texture (for `gain`).
    pub heatmap: Option<(f32, egui::TextureHandle)>,
}

impl Default for Compare {
    fn default() -> Self {
        Compare {
            a: None,
            b: None,
            mode: CompareMode::SideBySide,
            swipe: 0.5,
            gain: 4.0,
            threshold: 8,
            stats: None,
            heatmap: None,
        }
    }
}

/// A training run shown in the monitor.
pub struct TrainRun {
    /// Its job id.
    pub job: JobId,
    /// Stops it.
    pub cancel: kiln_engine::pipeline::CancelToken,
    /// Pauses it.
    pub pause: kiln_engine::training::trainer::PauseToken,
    /// The plan, once validated.
    pub plan: Option<kiln_engine::training::dataset::Plan>,
    /// (step, loss).
    pub loss: Vec<[f64; 2]>,
    /// (step, smoothed loss).
    pub smoothed: Vec<[f64; 2]>,
    /// (step, learning rate).
    pub lr: Vec<[f64; 2]>,
    /// Last step, epoch, grad norm, it/s, ETA.
    pub last: Option<(usize, usize, usize, f64, f64, f64)>,
    /// Sample images: (step, texture).
    pub samples: Vec<(usize, egui::TextureHandle)>,
    /// Checkpoints written: (step, file).
    pub checkpoints: Vec<(usize, PathBuf)>,
    /// Still running.
    pub running: bool,
    /// How it ended, if it did.
    pub outcome: Option<Result<PathBuf, String>>,
}

/// The Train tab's runtime state.
#[derive(Default)]
pub struct TrainTab {
    /// The validated dataset.
    pub report: Option<kiln_engine::training::dataset::DatasetReport>,
    /// Editable captions, one per report entry.
    pub captions: Vec<String>,
    /// Thumbnails, one per report entry (loaded lazily).
    pub thumbs: Vec<Thumb>,
    /// The current or last run.
    pub run: Option<TrainRun>,
    /// Measured seconds per step (from "Estimate time"), and whether a measurement runs.
    pub estimate: Option<f64>,
    /// A measurement is running.
    pub estimating: bool,
}

/// Which view the middle of the window shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The canvas.
    Canvas,
    /// The compare view.
    Compare,
    /// Training.
    Train,
    /// The model manager.
    Models,
}

/// The studio.
pub struct KilnApp {
    /// Persisted settings.
    pub settings: Settings,
    /// The engine.
    pub engine: EngineClient,
    /// The model.
    pub model: ModelStatus,
    /// LoRA rows' engine state, parallel to `settings.loras`.
    pub lora_status: Vec<LoraStatus>,
    /// Embedding rows' engine state, parallel to `settings.embeddings`.
    pub embedding_status: Vec<EmbeddingStatus>,
    /// The running job.
    pub job: Option<Job>,
    /// The canvas image.
    pub shown: Option<Shown>,
    /// The gallery, newest first.
    pub gallery: Vec<GalleryItem>,
    /// Selected gallery index.
    pub selected: Option<usize>,
    /// Messages at the bottom.
    pub notifications: Vec<Notification>,
    /// For the token counter.
    pub tokenizer: Option<ClipTokenizer>,
    /// Seed of the last image.
    pub last_seed: Option<u64>,
    /// it/s of the last progress.
    pub rate: f64,
    /// Canvas view rectangle (zoom and pan).
    pub scene_rect: egui::Rect,
    /// The middle view.
    pub view: View,
    /// The compare view.
    pub compare: Compare,
    /// The Train tab.
    pub train: TrainTab,
    /// The model manager.
    pub models: super::models::ModelsTab,
    ctx: egui::Context,
}

impl std::fmt::Debug for KilnApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KilnApp")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl KilnApp {
    /// Builds the app from eframe's creation context (restoring settings from storage);
    /// `model` replaces the remembered model.
    pub fn new(cc: &eframe::CreationContext<'_>, model: Option<PathBuf>) -> Self {
        let mut settings: Settings = cc
            .storage
            .and_then(|s| eframe::get_value(s, STORAGE_KEY))
            .unwrap_or_default();
        if let Some(path) = model {
            settings.remember_model(path);
        }
        Self::with_settings(&cc.egui_ctx, settings)
    }

    /// Builds the app with `settings`, loading the remembered model (or, on a first run, the
    /// shipped one: [`kiln_engine::bundled::bundled_model`]).
    pub fn with_settings(ctx: &egui::Context, settings: Settings) -> Self {
        Self::with_bundled(ctx, settings, kiln_engine::bundled::bundled_model())
    }

    /// Builds the app with `settings` and `bundled` as the shipped model (tests start here).
    pub fn with_bundled(ctx: &egui::Context, settings: Settings, bundled: Option<PathBuf>) -> Self {
        let mut app = KilnApp {
            engine: EngineClient::new(repaint_for(ctx)),
            model: ModelStatus::None,
            lora_status: vec![LoraStatus::Pending; settings.loras.len()],
            embedding_status: vec![EmbeddingStatus::Pending; settings.embeddings.len()],
            settings,
            job: None,
            shown: None,
            gallery: Vec::new(),
            selected: None,
            notifications: Vec::new(),
            tokenizer: ClipTokenizer::sd15().ok(),
            last_seed: None,
            rate: 0.0,
            scene_rect: egui::Rect::ZERO,
            view: View::Canvas,
            compare: Compare::default(),
            train: TrainTab::default(),
            models: super::models::ModelsTab::new(bundled),
            ctx: ctx.clone(),
        };
        app.scan_gallery();
        app.rescan_models();
        if let Some(dir) = app.settings.train.data.clone() {
            app.set_dataset(dir);
        }
        app.open_start_model();
        app
    }

    /// A repaint callback for threads that report to the window.
    pub(crate) fn repaint(&self) -> kiln_engine::worker::Repaint {
        repaint_for(&self.ctx)
    }

    /// Notifies the user (bottom bar).
    pub fn notify(&mut self, title: impl Into<String>, details: impl Into<String>, error: bool) {
        self.notifications.push(Notification {
            title: title.into(),
            details: details.into(),
            error,
        });
    }

    fn precision(&self) -> Option<Precision> {
        match self.settings.precision.as_str() {
            "f32" => Some(Precision::F32),
            "f16" => Some(Precision::F16),
            _ => None,
        }
    }

    /// Loads a checkpoint; the LoRA stack and embeddings follow once it is ready.
    pub fn load_model(&mut self, path: PathBuf) {
        self.settings.remember_model(path.clone());
        self.model = ModelStatus::Loading(path.clone());
        let precision = self.precision();
        self.engine.send(Command::LoadModel {
            path,
            device: self.settings.device.clone(),
            precision,
        });
    }

    fn model_ready(&self) -> bool {
        matches!(self.model, ModelStatus::Loaded { .. })
    }

    /// Index in the engine's stack of row `row` (rows the engine refused are not in it).
    pub fn engine_lora_index(&self, row: usize) -> Option<usize> {
        matches!(self.lora_status.get(row), Some(LoraStatus::Loaded(_))).then(|| {
            self.lora_status[..row]
                .iter()
                .filter(|s| matches!(s, LoraStatus::Loaded(_)))
                .count()
        })
    }

    /// Adds a LoRA row and sends it to the engine.
    pub fn add_lora(&mut self, path: PathBuf, weight: f32) {
        if self.settings.loras.iter().any(|l| l.path == path) {
            self.notify(
                "This LoRA is already in the stack",
                path.display().to_string(),
                false,
            );
            return;
        }
        self.settings.loras.push(LoraSetting {
            path: path.clone(),
            weight,
            enabled: true,
        });
        self.lora_status.push(LoraStatus::Pending);
        if self.model_ready() {
            self.engine.send(Command::AddLora {
                path,
                weight,
                enabled: true,
            });
        }
    }

    /// Changes a row's weight (the engine re-merges only that adapter).
    pub fn set_lora_weight(&mut self, row: usize, weight: f32) {
        self.settings.loras[row].weight = weight;
        if let Some(index) = self.engine_lora_index(row) {
            self.engine.send(Command::SetLoraWeight { index, weight });
        }
    }

    /// Turns a row on or off.
    pub fn set_lora_enabled(&mut self, row: usize, enabled: bool) {
        self.settings.loras[row].enabled = enabled;
        if let Some(index) = self.engine_lora_index(row) {
            self.engine.send(Command::SetLoraEnabled { index, enabled });
        }
    }

    /// Removes a row.
    pub fn remove_lora(&mut self, row: usize) {
        if let Some(index) = self.engine_lora_index(row) {
            self.engine.send(Command::RemoveLora { index });
        }
        self.settings.loras.remove(row);
        self.lora_status.remove(row);
    }

    /// Moves a row (drag and drop).
    pub fn move_lora(&mut self, from: usize, to: usize) {
        if from == to || from >= self.settings.loras.len() || to >= self.settings.loras.len() {
            return;
        }
        let ef = self.engine_lora_index(from);
        let setting = self.settings.loras.remove(from);
        let status = self.lora_status.remove(from);
        self.settings.loras.insert(to, setting);
        self.lora_status.insert(to, status);
        if let (Some(ef), Some(et)) = (ef, self.engine_lora_index(to)) {
            self.engine.send(Command::MoveLora { from: ef, to: et });
        }
    }

    /// Loads an embedding row.
    pub fn add_embedding(&mut self, path: PathBuf, token: Option<String>) {
        if self.settings.embeddings.iter().any(|e| e.path == path) {
            self.notify(
                "This embedding is already loaded",
                path.display().to_string(),
                false,
            );
            return;
        }
        self.settings.embeddings.push(EmbeddingSetting {
            path: path.clone(),
            token: token.clone(),
        });
        self.embedding_status.push(EmbeddingStatus::Pending);
        if self.model_ready() {
            self.engine.send(Command::LoadEmbedding { path, token });
        }
    }

    /// Unloads an embedding row.
    pub fn remove_embedding(&mut self, row: usize) {
        let loaded_before = self.embedding_status[..row]
            .iter()
            .filter(|s| matches!(s, EmbeddingStatus::Loaded { .. }))
            .count();
        if matches!(self.embedding_status[row], EmbeddingStatus::Loaded { .. }) {
            self.engine.send(Command::RemoveEmbedding {
                index: loaded_before,
            });
        }
        self.settings.embeddings.remove(row);
        self.embedding_status.remove(row);
    }

    /// Sends the whole stack and the embeddings again (after a model load or an engine crash).
    fn resend_adapters(&mut self) {
        for (l, status) in self.settings.loras.iter().zip(&mut self.lora_status) {
            *status = LoraStatus::Pending;
            self.engine.send(Command::AddLora {
                path: l.path.clone(),
                weight: l.weight,
                enabled: l.enabled,
            });
        }
        for (e, status) in self
            .settings
            .embeddings
            .iter()
            .zip(&mut self.embedding_status)
        {
            *status = EmbeddingStatus::Pending;
            self.engine.send(Command::LoadEmbedding {
                path: e.path.clone(),
                token: e.token.clone(),
            });
        }
    }

    /// The request for the current settings with `seed`.
    pub fn request(&self, seed: u64) -> Result<GenerationRequest, String> {
        let s = &self.settings;
        let sampler = Sampler::from_name(&s.sampler, s.schedule, s.eta)
            .or_else(|_| {
                Sampler::from_name(
                    &s.sampler,
                    kiln_engine::schedulers::Schedule::Default,
                    s.eta,
                )
            })
            .map_err(|e| e.to_string())?;
        let init_image = match &s.init_image {
            Some(path) => Some(InitImage {
                image: kiln_engine::image::read_image(path).map_err(|e| e.to_string())?,
                path: Some(path.clone()),
                strength: s.strength,
            }),
            None => None,
        };
        Ok(GenerationRequest {
            prompts: vec![s.prompt.clone()],
            negatives: vec![s.negative.clone()],
            sampler,
            steps: s.steps,
            cfg: s.cfg,
            seed,
            width: s.width,
            height: s.height,
            batch: s.batch_size.max(1),
            latents: None,
            clip_skip: 1,
            init_image,
            preview: s.live_preview,
        })
    }

    /// Starts generating (batch count jobs in a row).
    pub fn generate(&mut self) {
        if self.job.is_some() {
            return;
        }
        if !self.model_ready() {
            self.notify(
                "No model loaded",
                "Open a checkpoint first (Open model…, drop it on the window, or pick one in the Models tab).",
                true,
            );
            return;
        }
        if self.settings.random_seed {
            self.settings.seed = random_seed();
        }
        let seed = self.settings.seed;
        self.start_job(seed, self.settings.batch_count.max(1) - 1);
    }

    fn start_job(&mut self, seed: u64, remaining: usize) {
        match self.request(seed) {
            Ok(request) => {
                let total = request.steps;
                let batch = request.batch as u64;
                let id = self.engine.generate(request);
                self.job = Some(Job {
                    id,
                    step: 0,
                    total,
                    started: Instant::now(),
                    remaining,
                    next_seed: seed.wrapping_add(batch),
                });
            }
            Err(e) => self.notify("Cannot generate", e, true),
        }
    }

    /// Runs the current recipe twice at the same seed (adapters off, then on) for the
    /// compare view.
    pub fn compare_with_baseline(&mut self) {
        if self.job.is_some() {
            return;
        }
        if !self.model_ready() {
            self.notify("No model loaded", "Open a checkpoint first.", true);
            return;
        }
        if self.settings.random_seed {
            self.settings.seed = random_seed();
        }
        match self.request(self.settings.seed) {
            Ok(mut request) => {
                request.batch = 1;
                let total = request.steps * 2;
                let id = self.engine.compare_with_baseline(request);
                self.job = Some(Job {
                    id,
                    step: 0,
                    total,
                    started: Instant::now(),
                    remaining: 0,
                    next_seed: 0,
                });
            }
            Err(e) => self.notify("Cannot compare", e, true),
        }
    }

    /// Puts `image` on side 0 (A) or 1 (B) of the compare view and refreshes the numbers.
    pub fn set_compare_side(&mut self, side: usize, image: RgbImage, label: String) {
        let texture = self.ctx.load_texture(
            format!("compare-{side}"),
            to_color_image(&image),
            egui::TextureOptions::LINEAR,
        );
        let s = CompareSide {
            image,
            texture,
            label,
        };
        if side == 0 {
            self.compare.a = Some(s);
        } else {
            self.compare.b = Some(s);
        }
        self.refresh_compare();
    }

    /// Recomputes the statistics (and drops the heatmap) after a change of images or threshold.
    pub fn refresh_compare(&mut self) {
        self.compare.heatmap = None;
        self.compare.stats = match (&self.compare.a, &self.compare.b) {
            (Some(a), Some(b)) => {
                match kiln_engine::diff::diff_stats(&a.image, &b.image, self.compare.threshold) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        self.notify("Cannot compare these images", e.to_string(), true);
                        None
                    }
                }
            }
            _ => None,
        };
    }

    /// The heatmap texture at the current gain (made on demand).
    pub fn heatmap_texture(&mut self) -> Option<egui::TextureHandle> {
        let gain = self.compare.gain;
        if let Some((g, t)) = &self.compare.heatmap
            && *g == gain
        {
            return Some(t.clone());
        }
        let (a, b) = (self.compare.a.as_ref()?, self.compare.b.as_ref()?);
        let h = kiln_engine::diff::heatmap(&a.image, &b.image, gain).ok()?;
        let t = self
            .ctx
            .load_texture("heatmap", to_color_image(&h), egui::TextureOptions::NEAREST);
        self.compare.heatmap = Some((gain, t.clone()));
        Some(t)
    }

    /// Uses `dir` as the training dataset and asks the engine to validate it.
    pub fn set_dataset(&mut self, dir: PathBuf) {
        match kiln_engine::training::dataset::image_files(&dir) {
            Ok(files) => {
                self.settings.train.data = Some(dir);
                self.train.report = None;
                self.engine.send(Command::ValidateDataset {
                    files,
                    options: self.dataset_options(),
                });
            }
            Err(e) => self.notify("Cannot read the dataset folder", e.to_string(), true),
        }
    }

    fn dataset_options(&self) -> kiln_engine::training::dataset::DatasetOptions {
        let t = &self.settings.train;
        kiln_engine::training::dataset::DatasetOptions {
            resolution: t.resolution,
            upscale_small: true,
            default_caption: t.default_caption.clone(),
            random_crop: false,
            flip: t.flip,
            buckets: t.buckets,
            repeats: t.repeats,
            image_repeats: t.image_repeats.clone(),
        }
    }

    /// Saves caption `i` back to the `.txt` beside its image (atomically).
    pub fn save_caption(&mut self, i: usize) {
        let Some(entry) = self.train.report.as_ref().and_then(|r| r.entries.get(i)) else {
            return;
        };
        let path = entry.path.with_extension("txt");
        let text = self.train.captions[i].clone();
        if let Err(e) = kiln_engine::weights::safetensors::write_atomic(&path, text.as_bytes()) {
            self.notify("Cannot save the caption", e.to_string(), true);
        } else if let Some(r) = self.train.report.as_mut() {
            r.entries[i].caption = Some(text);
            r.entries[i]
                .issues
                .retain(|x| *x != kiln_engine::training::dataset::Issue::MissingCaption);
        }
    }

    /// The training configuration the Train tab describes.
    pub fn training_config(&self) -> Option<kiln_engine::training::trainer::TrainingConfig> {
        use kiln_engine::training::trainer::TrainingConfig;
        let t = &self.settings.train;
        let ti = (t.method == super::state::TrainMethod::TextualInversion).then(|| {
            kiln_engine::training::textual_inversion::TiConfig {
                token: t.token.clone(),
                vectors: t.vectors,
                init_word: t.init_word.clone(),
            }
        });
        Some(TrainingConfig {
            model: self.settings.model_path.clone()?,
            data: t.data.clone()?,
            output: t.output_dir.clone(),
            name: t.name.clone(),
            lora: kiln_engine::training::lora::LoraConfig {
                rank: t.rank,
                alpha: t.alpha,
                ..Default::default()
            },
            textual_inversion: ti,
            dataset: self.dataset_options(),
            max_steps: Some(t.steps),
            batch_size: t.batch,
            learning_rate: t.learning_rate,
            snr_gamma: (t.snr_gamma > 0.0).then_some(t.snr_gamma),
            seed: t.seed,
            checkpoint_every: t.checkpoint_every,
            sample_every: if t.sample_prompt.trim().is_empty() {
                0
            } else {
                t.sample_every
            },
            export_peft: t.export_peft,
            sample_prompts: if t.sample_prompt.trim().is_empty() {
                vec![]
            } else {
                vec![t.sample_prompt.clone()]
            },
            ..TrainingConfig::default()
        })
    }

    /// Measures seconds per step with a short warm-up run (for the plan's time estimate).
    pub fn estimate_training(&mut self) {
        if let Some(config) = self.training_config() {
            self.train.estimating = true;
            self.engine.send(Command::EstimateTraining {
                config: Box::new(config),
            });
        }
    }

    /// Starts training (from `resume` when given).
    pub fn start_training(&mut self, resume: Option<PathBuf>) {
        if self.train.run.as_ref().is_some_and(|r| r.running) || self.job.is_some() {
            return;
        }
        let Some(config) = self.training_config() else {
            self.notify(
                "Cannot train yet",
                "Load a model and drop a folder of images first.",
                true,
            );
            return;
        };
        let (job, cancel, pause) = self.engine.start_training(config, resume);
        self.train.run = Some(TrainRun {
            job,
            cancel,
            pause,
            plan: None,
            loss: vec![],
            smoothed: vec![],
            lr: vec![],
            last: None,
            samples: vec![],
            checkpoints: vec![],
            running: true,
            outcome: None,
        });
    }

    fn on_training(&mut self, job: JobId, event: kiln_engine::training::trainer::TrainingEvent) {
        use kiln_engine::training::trainer::TrainingEvent;
        let ctx = self.ctx.clone();
        let Some(run) = self.train.run.as_mut().filter(|r| r.job == job) else {
            return;
        };
        match event {
            TrainingEvent::Started { plan, .. } => run.plan = Some(plan),
            TrainingEvent::Step {
                step,
                total,
                epoch,
                loss,
                smoothed_loss,
                lr,
                grad_norm,
                it_per_s,
                eta_s,
            } => {
                let x = step as f64;
                run.loss.push([x, loss]);
                run.smoothed.push([x, smoothed_loss]);
                run.lr.push([x, lr]);
                run.last = Some((step, total, epoch, grad_norm, it_per_s, eta_s));
            }
            TrainingEvent::Samples { step, images } => {
                for (k, img) in images.iter().enumerate() {
                    let tex = ctx.load_texture(
                        format!("sample-{step}-{k}"),
                        to_color_image(img),
                        egui::TextureOptions::LINEAR,
                    );
                    run.samples.push((step, tex));
                }
            }
            TrainingEvent::Checkpoint { step, path } => run.checkpoints.push((step, path)),
        }
    }

    /// Adds a finished run's output to the LoRA stack (or loads the embedding).
    pub fn use_trained_output(&mut self) {
        let Some(Ok(path)) = self.train.run.as_ref().and_then(|r| r.outcome.clone()) else {
            return;
        };
        match self.settings.train.method {
            super::state::TrainMethod::Lora => self.add_lora(path, 1.0),
            super::state::TrainMethod::TextualInversion => {
                let token = self.settings.train.token.clone();
                self.add_embedding(path, Some(token));
            }
        }
    }

    /// Cancels the running job.
    pub fn cancel(&mut self) {
        if let Some(job) = &mut self.job {
            job.remaining = 0;
        }
        self.engine.cancel();
    }

    /// Handles every waiting engine event.
    pub fn drain_events(&mut self) {
        for event in self.engine.drain() {
            self.on_event(event);
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::ModelLoading { path } => self.model = ModelStatus::Loading(path),
            Event::ModelLoaded {
                info,
                device,
                precision,
            } => {
                self.follow_native_size(&info);
                // The counter counts against this model's tokenizer length (75 tokens for
                // SD 1.x, fewer for a model trained on short captions).
                self.tokenizer = self
                    .tokenizer
                    .take()
                    .and_then(|t| t.with_max_length(info.config.tokenizer_max_length).ok());
                if std::mem::take(&mut self.models.take_native_size) {
                    // First run: the shipped model at the size it was made for.
                    let native = Self::native_size(&info);
                    (self.settings.width, self.settings.height) = (native, native);
                }
                self.model = ModelStatus::Loaded {
                    info,
                    device,
                    precision,
                };
                self.resend_adapters();
            }
            Event::Progress {
                job,
                step,
                total,
                preview,
            } => {
                if let Some(j) = self.job.as_mut().filter(|j| j.id == job) {
                    j.step = step;
                    j.total = total;
                    self.rate = step as f64 / j.started.elapsed().as_secs_f64().max(1e-6);
                }
                if let Some(p) = preview {
                    self.show(&p, None, None);
                }
            }
            Event::Generated { job, images, .. } => {
                self.engine.finished(job);
                for g in images {
                    let path = self.save_to_output(&g.image, &g.recipe);
                    self.last_seed = Some(g.recipe.seed);
                    self.show(&g.image, path.clone(), Some(g.recipe.clone()));
                    if let Some(path) = path {
                        let info = read_image_info(&path).ok();
                        self.gallery.insert(
                            0,
                            GalleryItem {
                                path,
                                info,
                                thumb: Thumb::NotLoaded,
                            },
                        );
                        self.selected = Some(0);
                    }
                }
                self.next_job_or_idle(job);
            }
            Event::Cancelled { job }
                if self
                    .train
                    .run
                    .as_ref()
                    .is_some_and(|r| r.job == job && r.running) =>
            {
                self.engine.finished(job);
                if let Some(run) = self.train.run.as_mut() {
                    run.running = false;
                    let last = run
                        .checkpoints
                        .last()
                        .map(|(s, p)| {
                            format!(" The last checkpoint (step {s}) is {}.", p.display())
                        })
                        .unwrap_or_default();
                    run.outcome = Some(Err(format!("Cancelled.{last}")));
                }
            }
            Event::Cancelled { job } => {
                self.engine.finished(job);
                self.job = None;
                self.notify(
                    "Cancelled",
                    "The generation was stopped; nothing was saved.",
                    false,
                );
            }
            Event::LoraAdded { path, report, .. } => {
                if let Some(i) = self.pending_lora(&path) {
                    self.lora_status[i] = LoraStatus::Loaded(report);
                }
            }
            Event::LoraRefused { path, reason } => {
                if let Some(i) = self.pending_lora(&path) {
                    self.lora_status[i] = LoraStatus::Refused(reason);
                }
            }
            Event::EmbeddingLoaded {
                path,
                token,
                vectors,
                width,
            } => {
                if let Some(i) = self
                    .settings
                    .embeddings
                    .iter()
                    .zip(&self.embedding_status)
                    .position(|(e, s)| e.path == path && matches!(s, EmbeddingStatus::Pending))
                {
                    self.embedding_status[i] = EmbeddingStatus::Loaded {
                        token,
                        vectors,
                        width,
                    };
                }
            }
            Event::Error {
                job,
                context,
                message,
            } => {
                if let Some(job) = job {
                    self.engine.finished(job);
                    if self.job.as_ref().is_some_and(|j| j.id == job) {
                        self.job = None;
                    }
                }
                if context == "estimating the training time" {
                    self.train.estimating = false;
                }
                if context == "training"
                    && let Some(run) = self.train.run.as_mut().filter(|r| Some(r.job) == job)
                {
                    run.running = false;
                    run.outcome = Some(Err(message.clone()));
                }
                if context == "loading model" {
                    self.model = ModelStatus::Failed(message.clone());
                }
                if let Some(path) = context.strip_prefix("loading embedding ") {
                    let path = PathBuf::from(path);
                    if let Some(i) = self
                        .settings
                        .embeddings
                        .iter()
                        .zip(&self.embedding_status)
                        .position(|(e, s)| e.path == path && matches!(s, EmbeddingStatus::Pending))
                    {
                        self.embedding_status[i] = EmbeddingStatus::Failed(message.clone());
                        return;
                    }
                }
                self.notify(format!("Error while {context}"), message, true);
            }
            Event::Compared {
                job,
                baseline,
                adapted,
            } => {
                self.engine.finished(job);
                self.job = None;
                for (side, g) in [(0, &baseline), (1, &adapted)] {
                    let path = self.save_to_output(&g.image, &g.recipe);
                    if let Some(path) = path.clone() {
                        let info = read_image_info(&path).ok();
                        self.gallery.insert(
                            0,
                            GalleryItem {
                                path,
                                info,
                                thumb: Thumb::NotLoaded,
                            },
                        );
                    }
                    let label = if side == 0 {
                        "baseline (adapters off)"
                    } else {
                        "adapted (current stack)"
                    };
                    self.set_compare_side(side, g.image.clone(), label.to_owned());
                }
                self.view = View::Compare;
            }
            Event::DatasetValidated { report } => {
                self.train.captions = report
                    .entries
                    .iter()
                    .map(|e| e.caption.clone().unwrap_or_default())
                    .collect();
                self.train.thumbs = vec![Thumb::NotLoaded; report.entries.len()];
                self.train.report = Some(*report);
            }
            Event::Training { job, event } => self.on_training(job, *event),
            Event::TrainingEstimate {
                seconds_per_step, ..
            } => {
                self.train.estimating = false;
                self.train.estimate = Some(seconds_per_step);
            }
            Event::TrainingFinished { job, output } => {
                self.engine.finished(job);
                if let Some(run) = self.train.run.as_mut().filter(|r| r.job == job) {
                    run.running = false;
                    run.outcome = Some(Ok(output));
                }
            }
            Event::Crashed { message } => {
                self.job = None;
                self.notify(
                    "The engine crashed and was restarted",
                    format!("{message}. The model is being loaded again."),
                    true,
                );
                self.model = ModelStatus::None;
                if let Some(path) = self.settings.model_path.clone() {
                    self.load_model(path);
                }
            }
        }
    }

    /// A model's native image size (UNet sample size × VAE factor; 512 for SD 1.5).
    fn native_size(info: &kiln_engine::weights::CheckpointInfo) -> usize {
        info.config
            .unet
            .sample_size
            .map(|s| s * info.config.vae.scale_factor())
            .unwrap_or(512)
    }

    /// When the size is still the previous model's native square (or the default), switch to
    /// the new model's: a user who never touched the size gets the size the model was made
    /// for; a chosen size stays.
    fn follow_native_size(&mut self, info: &kiln_engine::weights::CheckpointInfo) {
        let previous = match &self.model {
            ModelStatus::Loaded { info, .. } => Self::native_size(info),
            _ => self.settings.native_size,
        };
        let s = &mut self.settings;
        if s.width == previous && s.height == previous {
            let native = Self::native_size(info);
            s.width = native;
            s.height = native;
        }
        self.settings.native_size = Self::native_size(info);
    }

    fn pending_lora(&self, path: &Path) -> Option<usize> {
        self.settings
            .loras
            .iter()
            .zip(&self.lora_status)
            .position(|(l, s)| l.path == path && matches!(s, LoraStatus::Pending))
    }

    fn next_job_or_idle(&mut self, finished: JobId) {
        let Some(job) = self.job.take().filter(|j| j.id == finished) else {
            return;
        };
        if job.remaining > 0 {
            self.start_job(job.next_seed, job.remaining - 1);
        }
    }

    /// Writes a finished image into the output folder (PNG with its recipe).
    fn save_to_output(&mut self, image: &RgbImage, recipe: &Recipe) -> Option<PathBuf> {
        let dir = self.settings.output_dir.clone();
        if let Err(e) = std::fs::create_dir_all(&dir) {
            self.notify(
                "Cannot create the output folder",
                format!("{}: {e}", dir.display()),
                true,
            );
            return None;
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let mut path = dir.join(format!("kiln-{stamp}-{}.png", recipe.seed));
        let mut n = 1;
        while path.exists() {
            path = dir.join(format!("kiln-{stamp}-{}-{n}.png", recipe.seed));
            n += 1;
        }
        match write_png_with_recipe(&path, image, recipe) {
            Ok(()) => Some(path),
            Err(e) => {
                self.notify("Cannot save the image", e.to_string(), true);
                None
            }
        }
    }

    /// Puts an image on the canvas.
    pub fn show(&mut self, image: &RgbImage, path: Option<PathBuf>, recipe: Option<Recipe>) {
        let color = to_color_image(image);
        match &mut self.shown {
            Some(s) if s.size == [image.width, image.height] => {
                s.texture.set(color, egui::TextureOptions::LINEAR);
                s.path = path;
                s.recipe = recipe;
            }
            _ => {
                let texture = self
                    .ctx
                    .load_texture("canvas", color, egui::TextureOptions::LINEAR);
                self.shown = Some(Shown {
                    texture,
                    size: [image.width, image.height],
                    path,
                    recipe,
                });
                self.scene_rect = egui::Rect::ZERO;
            }
        }
    }

    /// Lists the PNGs already in the output folder, newest first.
    pub fn scan_gallery(&mut self) {
        let Ok(dir) = std::fs::read_dir(&self.settings.output_dir) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = dir
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("png")))
            .map(|p| {
                (
                    std::fs::metadata(&p)
                        .and_then(|m| m.modified())
                        .unwrap_or(std::time::UNIX_EPOCH),
                    p,
                )
            })
            .collect();
        files.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
        self.gallery = files
            .into_iter()
            .map(|(_, path)| GalleryItem {
                info: read_image_info(&path).ok(),
                path,
                thumb: Thumb::NotLoaded,
            })
            .collect();
    }

    /// Restores settings from an image's metadata (Kiln: everything, LoRAs and embeddings
    /// included; other tools: what Kiln understands).
    pub fn reuse(&mut self, info: &ImageInfo) {
        let p = &info.parameters;
        let s = &mut self.settings;
        if let Some(v) = &p.prompt {
            s.prompt = v.clone();
        }
        s.negative = p.negative_prompt.clone().unwrap_or_default();
        if let Some(sampler) = info
            .recipe
            .as_ref()
            .map(|r| r.sampler)
            .or_else(|| p.kiln_sampler())
        {
            s.sampler = sampler.name().into();
            s.schedule = sampler.schedule();
            if let Sampler::Ddim { eta } = sampler {
                s.eta = eta;
            }
        }
        if let Some(v) = p.steps {
            s.steps = v;
        }
        if let Some(v) = p.cfg {
            s.cfg = v;
        }
        if let Some(v) = p.seed {
            s.seed = v;
            s.random_seed = false;
        }
        if let Some((w, h)) = p.size {
            s.width = w;
            s.height = h;
        }
        if let Some(v) = p.strength {
            s.strength = v;
        }
        if let Some(recipe) = &info.recipe {
            s.init_image = recipe.init_image.as_ref().map(|i| PathBuf::from(&i.path));
            let loras: Vec<LoraSetting> = recipe
                .loras
                .iter()
                .map(|l| LoraSetting {
                    path: l.path.clone().into(),
                    weight: l.weight,
                    enabled: true,
                })
                .collect();
            let embeddings: Vec<EmbeddingSetting> = recipe
                .embeddings
                .iter()
                .map(|e| EmbeddingSetting {
                    path: e.path.clone().into(),
                    token: Some(e.token.clone()),
                })
                .collect();
            let model = PathBuf::from(&recipe.model.path);
            let same_model = self.settings.model_path.as_deref() == Some(model.as_path());
            if loras != self.settings.loras || embeddings != self.settings.embeddings || !same_model
            {
                self.settings.loras = loras;
                self.settings.embeddings = embeddings;
                self.lora_status = vec![LoraStatus::Pending; self.settings.loras.len()];
                self.embedding_status =
                    vec![EmbeddingStatus::Pending; self.settings.embeddings.len()];
                if !same_model && model.exists() {
                    self.load_model(model);
                } else if let Some(path) = self.settings.model_path.clone() {
                    // Reload so the engine's stack is exactly the recipe's.
                    self.load_model(path);
                }
            }
        }
    }

    /// Handles files dropped on the window: a checkpoint loads, a LoRA joins the stack, an
    /// embedding loads, a PNG with parameters restores them, another image becomes the init image.
    pub fn handle_drop(&mut self, path: PathBuf) {
        // A folder that is not a diffusers model is a training dataset.
        if path.is_dir()
            && !path.join("model_index.json").exists()
            && !path.join("adapter_config.json").exists()
        {
            self.set_dataset(path);
            self.view = View::Train;
            return;
        }
        let is_image = path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
            matches!(
                e.to_ascii_lowercase().as_str(),
                "png" | "jpg" | "jpeg" | "webp"
            )
        });
        if is_image {
            if let Ok(info) = read_image_info(&path) {
                self.reuse(&info);
                self.notify(
                    "Parameters restored",
                    format!("from {}", path.display()),
                    false,
                );
            } else {
                self.settings.init_image = Some(path);
            }
            return;
        }
        match inspect(&path) {
            Ok(Inspection::Checkpoint(_)) => self.load_model(path),
            Ok(Inspection::Lora(_)) => self.add_lora(path, 1.0),
            Ok(Inspection::Embedding { .. }) => self.add_embedding(path, None),
            Ok(Inspection::UnsupportedCheckpoint { family }) => self.notify(
                "Kiln cannot run this checkpoint",
                format!("{}: {family}", path.display()),
                true,
            ),
            Ok(Inspection::Unknown { .. }) => self.notify(
                "Not a checkpoint, LoRA or embedding",
                path.display().to_string(),
                true,
            ),
            Err(e) => self.notify("Cannot open the dropped file", e.to_string(), true),
        }
    }

    /// Runs a user command.
    pub fn run_command(&mut self, command: UiCommand) {
        match command {
            UiCommand::Generate => self.generate(),
            UiCommand::Cancel => self.cancel(),
            UiCommand::SaveImage => self.save_as(),
            UiCommand::CopyParameters => {
                if let Some(r) = self.shown.as_ref().and_then(|s| s.recipe.as_ref()) {
                    self.ctx.copy_text(r.a1111_parameters());
                }
            }
            UiCommand::ReuseParameters => {
                let info = self
                    .selected
                    .and_then(|i| self.gallery.get(i))
                    .and_then(|g| g.info.clone());
                if let Some(info) = info {
                    self.reuse(&info);
                }
            }
            UiCommand::OpenModel => {
                if let Some(path) = rfd::FileDialog::new()
                    .add_filter("Checkpoint", &["safetensors"])
                    .set_title("Open an SD 1.x checkpoint")
                    .pick_file()
                {
                    self.load_model(path);
                }
            }
            UiCommand::AddLora => {
                if let Some(path) = rfd::FileDialog::new()
                    .add_filter("LoRA", &["safetensors"])
                    .pick_file()
                {
                    self.add_lora(path, 1.0);
                }
            }
            UiCommand::AddEmbedding => {
                if let Some(path) = rfd::FileDialog::new()
                    .add_filter("Embedding", &["pt", "safetensors", "bin"])
                    .pick_file()
                {
                    self.add_embedding(path, None);
                }
            }
            UiCommand::PickInitImage => {
                if let Some(path) = rfd::FileDialog::new()
                    .add_filter("Image", &["png", "jpg", "jpeg", "webp"])
                    .pick_file()
                {
                    self.settings.init_image = Some(path);
                }
            }
            UiCommand::RandomSeed => {
                self.settings.seed = random_seed();
                self.settings.random_seed = false;
            }
            UiCommand::ReuseSeed => {
                if let Some(seed) = self.last_seed {
                    self.settings.seed = seed;
                    self.settings.random_seed = false;
                }
            }
            UiCommand::CompareWithBaseline => self.compare_with_baseline(),
            UiCommand::SwapSize => {
                std::mem::swap(&mut self.settings.width, &mut self.settings.height)
            }
        }
    }

    fn save_as(&mut self) {
        let Some((Some(src), Some(recipe))) = self
            .shown
            .as_ref()
            .map(|s| (s.path.clone(), s.recipe.clone()))
        else {
            return;
        };
        let Some(dest) = rfd::FileDialog::new()
            .add_filter("PNG", &["png"])
            .set_file_name(
                src.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            )
            .save_file()
        else {
            return;
        };
        let result = kiln_engine::image::read_png(&src)
            .and_then(|img| write_png_with_recipe(&dest, &img, &recipe));
        if let Err(e) = result {
            self.notify("Cannot save the image", e.to_string(), true);
        }
    }

    fn shortcuts(&mut self, ctx: &egui::Context) {
        for command in UiCommand::ALL {
            if let Some(s) = command.info().shortcut
                && ctx.input_mut(|i| i.consume_shortcut(&s))
            {
                self.run_command(command);
            }
        }
    }

    fn drops(&mut self, ctx: &egui::Context) {
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_owned())
                .collect()
        });
        for path in dropped {
            self.handle_drop(path);
        }
    }
}

/// A random seed in A1111's range (32 bits).
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() % 4_294_967_296
}

/// RGB8 → egui image.
pub fn to_color_image(image: &RgbImage) -> egui::ColorImage {
    egui::ColorImage::from_rgb([image.width, image.height], &image.pixels)
}

impl eframe::App for KilnApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.drain_events();
        self.poll_models();
        self.drops(ctx);
        self.shortcuts(ctx);
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        panels::top_bar::ui(ui, self);
        panels::notifications::ui(ui, self);
        egui::Panel::left("settings")
            .resizable(true)
            .default_size(360.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| {
                    panels::prompt::ui(ui, self);
                    ui.separator();
                    panels::sampler::ui(ui, self);
                    ui.separator();
                    panels::lora::ui(ui, self);
                    ui.separator();
                    panels::embeddings::ui(ui, self);
                });
            });
        egui::Panel::right("gallery")
            .resizable(true)
            .default_size(240.0)
            .show(ui, |ui| panels::gallery::ui(ui, self));
        egui::CentralPanel::default().show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.selectable_value(&mut self.view, View::Canvas, "Canvas");
                ui.selectable_value(&mut self.view, View::Compare, "Compare");
                ui.selectable_value(&mut self.view, View::Train, "Train");
                ui.selectable_value(&mut self.view, View::Models, "Models");
            });
            match self.view {
                View::Canvas => panels::canvas::ui(ui, self),
                View::Compare => panels::compare::ui(ui, self),
                View::Train => panels::train::ui(ui, self),
                View::Models => panels::models::ui(ui, self),
            }
        });
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, STORAGE_KEY, &self.settings);
    }

    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        self.engine.cancel();
        self.cancel_download();
        if let Some(run) = &self.train.run {
            run.cancel.cancel();
        }
    }
}
