//! The messages between the desktop app and the engine thread ([`crate::worker`]): plain
//! data, `Send`, documented variant by variant. The app sends [`Command`]s and drains
//! [`Event`]s each frame; the engine requests a repaint after every event it sends.

use std::path::PathBuf;

use crate::adapters::lora::LoraReport;
use crate::image::RgbImage;
use crate::metadata::Recipe;
use crate::pipeline::{CancelToken, GenerationRequest, Precision};
use crate::training::dataset::{DatasetOptions, DatasetReport};
use crate::training::trainer::{PauseToken, TrainingConfig, TrainingEvent};
use crate::weights::CheckpointInfo;

/// Identifies one job (a generation), chosen by the app.
pub type JobId = u64;

/// What the app asks the engine to do. Commands run one at a time, in order.
#[derive(Debug, Clone)]
pub enum Command {
    /// Load a checkpoint (file or diffusers folder), replacing the current model. The LoRA
    /// stack and embeddings of the previous model are dropped (the app re-sends them).
    LoadModel {
        /// File or folder.
        path: PathBuf,
        /// Device name (see [`crate::device::device`]).
        device: String,
        /// Precision; None = [`Precision::default_for`] the device.
        precision: Option<Precision>,
    },
    /// Generate images; answered by [`Event::Progress`]… then [`Event::Generated`] (or
    /// [`Event::Cancelled`] / [`Event::Error`]).
    Generate {
        /// The job's id.
        job: JobId,
        /// What to generate (set `preview` for live previews).
        request: GenerationRequest,
        /// Set by the app to stop the job within one UNet call.
        cancel: CancelToken,
    },
    /// Run `request` twice at the same seed — every LoRA off, then the stack as it is — for
    /// the compare view ([`Event::Compared`]).
    CompareWithBaseline {
        /// The job's id.
        job: JobId,
        /// What to generate (its first image is compared).
        request: GenerationRequest,
        /// Stops the job.
        cancel: CancelToken,
    },
    /// Open a LoRA and add it at the end of the stack ([`Event::LoraAdded`] or
    /// [`Event::LoraRefused`]).
    AddLora {
        /// File or PEFT folder.
        path: PathBuf,
        /// Initial weight.
        weight: f32,
        /// Whether it starts enabled.
        enabled: bool,
    },
    /// Change a LoRA's weight (only the layers it covers are recomputed).
    SetLoraWeight {
        /// Stack index.
        index: usize,
        /// New weight.
        weight: f32,
    },
    /// Turn a LoRA on or off.
    SetLoraEnabled {
        /// Stack index.
        index: usize,
        /// On or off.
        enabled: bool,
    },
    /// Move a LoRA within the stack.
    MoveLora {
        /// From index.
        from: usize,
        /// To index.
        to: usize,
    },
    /// Remove a LoRA from the stack.
    RemoveLora {
        /// Stack index.
        index: usize,
    },
    /// Load a textual-inversion embedding ([`Event::EmbeddingLoaded`] or [`Event::Error`]).
    LoadEmbedding {
        /// The file.
        path: PathBuf,
        /// Token; None = the file stem.
        token: Option<String>,
    },
    /// Unload embedding `index` (load order).
    RemoveEmbedding {
        /// Index among the loaded embeddings.
        index: usize,
    },
    /// Validate a training dataset ([`Event::DatasetValidated`]).
    ValidateDataset {
        /// Image files (a dropped folder's [`crate::training::dataset::image_files`]).
        files: Vec<PathBuf>,
        /// Resolution and the other options that decide what trains.
        options: DatasetOptions,
    },
    /// Train a LoRA ([`Event::Training`]… then [`Event::TrainingFinished`], or
    /// [`Event::Cancelled`] / [`Event::Error`]). The engine runs nothing else meanwhile.
    StartTraining {
        /// The job's id.
        job: JobId,
        /// The run.
        config: Box<TrainingConfig>,
        /// Continue from this checkpoint.
        resume: Option<PathBuf>,
        /// Stops the run between steps (the last checkpoint stays).
        cancel: CancelToken,
        /// Pauses the run between steps while set.
        pause: PauseToken,
    },
    /// Measure seconds per step of a training configuration with a short warm-up
    /// ([`Event::TrainingEstimate`]).
    EstimateTraining {
        /// The run to estimate.
        config: Box<TrainingConfig>,
    },
    /// A deliberate panic inside the engine, to exercise the app's recovery (tests, and the
    /// app's Help ▸ Diagnostics).
    Crash,
    /// Stop the engine thread.
    Shutdown,
}

/// One image of a finished job.
#[derive(Debug, Clone)]
pub struct GeneratedImage {
    /// Pixels.
    pub image: RgbImage,
    /// Its recipe (for the PNG and "reuse parameters").
    pub recipe: Recipe,
}

/// What the engine reports.
#[derive(Debug, Clone)]
pub enum Event {
    /// A model started loading.
    ModelLoading {
        /// File or folder.
        path: PathBuf,
    },
    /// A model is ready.
    ModelLoaded {
        /// What was loaded (family, layout, dtype, configs).
        info: Box<CheckpointInfo>,
        /// The device it runs on.
        device: String,
        /// Its precision.
        precision: Precision,
    },
    /// A job made progress.
    Progress {
        /// The job.
        job: JobId,
        /// UNet calls done.
        step: usize,
        /// UNet calls in all.
        total: usize,
        /// The image forming (first image of the batch), when asked for.
        preview: Option<RgbImage>,
    },
    /// A job finished.
    Generated {
        /// The job.
        job: JobId,
        /// Every image, prompt-major.
        images: Vec<GeneratedImage>,
        /// Wall time in seconds.
        seconds: f64,
    },
    /// Baseline and adapted images of a [`Command::CompareWithBaseline`].
    Compared {
        /// The job.
        job: JobId,
        /// Every adapter off.
        baseline: Box<GeneratedImage>,
        /// The stack as it is.
        adapted: Box<GeneratedImage>,
    },
    /// A job stopped because it was cancelled.
    Cancelled {
        /// The job.
        job: JobId,
    },
    /// A LoRA joined the stack.
    LoraAdded {
        /// The file.
        path: PathBuf,
        /// Its stack index.
        index: usize,
        /// The load report.
        report: Box<LoraReport>,
    },
    /// A LoRA was refused (wrong family, unmatched modules, not a LoRA, …).
    LoraRefused {
        /// The file.
        path: PathBuf,
        /// Why, for the user.
        reason: String,
    },
    /// An embedding was loaded.
    EmbeddingLoaded {
        /// The file.
        path: PathBuf,
        /// Its token.
        token: String,
        /// Vectors.
        vectors: usize,
        /// Width.
        width: usize,
    },
    /// A dataset was validated.
    DatasetValidated {
        /// The report (per image: caption, size, issues).
        report: Box<DatasetReport>,
    },
    /// A training run reported progress (plan, step, samples, checkpoint).
    Training {
        /// The job.
        job: JobId,
        /// What happened.
        event: Box<TrainingEvent>,
    },
    /// Seconds per step of a [`Command::EstimateTraining`].
    TrainingEstimate {
        /// Measured seconds per optimiser step.
        seconds_per_step: f64,
        /// Steps the configuration runs.
        steps: usize,
    },
    /// A training run finished.
    TrainingFinished {
        /// The job.
        job: JobId,
        /// The trained LoRA file.
        output: PathBuf,
    },
    /// A command failed; `job` is set for generations and training runs.
    Error {
        /// The job, if any.
        job: Option<JobId>,
        /// What was being done ("loading model", "generating", …).
        context: String,
        /// The error, for the user.
        message: String,
    },
    /// The engine panicked while running a command; its state (model, stack, embeddings) was
    /// dropped and it is ready for new commands.
    Crashed {
        /// The panic message.
        message: String,
    },
}
