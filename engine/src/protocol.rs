//! The messages between a front end (the window, the HTTP API's runner) and the engine thread
//! ([`crate::worker`]): plain data, `Send`, documented variant by variant. The front end
//! sends [`Command`]s and drains [`Event`]s; the engine requests a repaint after every event.
//!
//! Everything is addressed by ids the front end chooses — a job by its [`JobId`], an adapter
//! by its [`AdapterId`] — never by positions. A failure is an [`Event::Failed`] carrying the
//! job or adapter, the [`Operation`] and a typed [`ErrorKind`]; a command that cannot run
//! while a training run holds the engine is answered [`Event::Busy`].

use std::path::PathBuf;
use std::sync::Arc;

use crate::adapters::AdapterId;
use crate::adapters::lora::LoraReport;
use crate::device::DeviceSpec;
use crate::error::{Error, ErrorKind};
use crate::image::RgbImage;
use crate::job::{CancelToken, PauseToken, Precision, PrecisionChoice};
use crate::resolve::GenerationSpec;
use crate::training::dataset::{DatasetOptions, DatasetReport};
use crate::training::run::TrainingEvent;
use crate::training::trainer::TrainingConfig;
use crate::weights::CheckpointInfo;

pub use crate::session::GeneratedImage;

/// Identifies one job (a generation, a comparison, a training run), chosen by the front end.
pub type JobId = u64;

/// What a command does, as failures and busy replies name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// [`Command::LoadModel`].
    LoadModel,
    /// [`Command::Generate`].
    Generate,
    /// [`Command::CompareWithBaseline`].
    Compare,
    /// [`Command::AddLora`].
    AddLora,
    /// [`Command::SetLoraWeight`], [`Command::SetLoraEnabled`], [`Command::ReorderLoras`],
    /// [`Command::RemoveLora`].
    ChangeLoras,
    /// [`Command::LoadEmbedding`].
    LoadEmbedding,
    /// [`Command::RemoveEmbedding`].
    RemoveEmbedding,
    /// [`Command::ValidateDataset`].
    ValidateDataset,
    /// [`Command::StartTraining`].
    Train,
    /// [`Command::EstimateTraining`].
    EstimateTraining,
}

impl Operation {
    /// What it is doing, in words ("loading the model").
    pub fn describe(self) -> &'static str {
        match self {
            Operation::LoadModel => "loading the model",
            Operation::Generate => "generating",
            Operation::Compare => "comparing with the baseline",
            Operation::AddLora => "adding a LoRA",
            Operation::ChangeLoras => "changing the LoRA stack",
            Operation::LoadEmbedding => "loading an embedding",
            Operation::RemoveEmbedding => "removing an embedding",
            Operation::ValidateDataset => "validating the dataset",
            Operation::Train => "training",
            Operation::EstimateTraining => "estimating the training time",
        }
    }
}

/// What the front end asks the engine to do. Commands run one at a time, in order (a training
/// run goes on beside them; see [`Event::Busy`]).
#[derive(Debug, Clone)]
pub enum Command {
    /// Load a checkpoint (file or diffusers folder), replacing the current model. The LoRA
    /// stack and embeddings of the previous model are dropped (the front end re-sends them
    /// after [`Event::ModelLoaded`]). A load that fails keeps the current model: a file that
    /// is no model leaves it as it was, stack included ([`Event::ModelKept`]); one that fails
    /// while its weights are read has the previous model loaded again ([`Event::ModelLoaded`]);
    /// the [`Event::Failed`] comes after either.
    LoadModel {
        /// File or folder.
        path: PathBuf,
        /// Configs for a single-file checkpoint (like `--config`).
        config: Option<PathBuf>,
        /// The device.
        device: DeviceSpec,
        /// Precision.
        precision: PrecisionChoice,
    },
    /// Generate images: `spec` is resolved against the loaded model
    /// ([`crate::resolve::resolve`]) and run by the session with its stack; answered by
    /// [`Event::Progress`]…, one [`Event::Generated`] per iteration, then [`Event::Done`] (or
    /// [`Event::Cancelled`] / [`Event::Failed`]).
    Generate {
        /// The job's id.
        job: JobId,
        /// What the user asked for (set `preview` for live previews).
        spec: Box<GenerationSpec>,
        /// Set by the front end to stop the job within one UNet call.
        cancel: CancelToken,
    },
    /// Run `spec`'s first image twice at the same seed — every LoRA off, then the stack as it
    /// is — for the compare view ([`Event::Compared`]).
    CompareWithBaseline {
        /// The job's id.
        job: JobId,
        /// What to generate.
        spec: Box<GenerationSpec>,
        /// Stops the job.
        cancel: CancelToken,
    },
    /// Open a LoRA and add it to the stack under `id`, after the others ([`Event::LoraAdded`]
    /// or a failure of [`Operation::AddLora`] for `id`).
    AddLora {
        /// The front end's name for it.
        id: AdapterId,
        /// File or PEFT folder.
        path: PathBuf,
        /// Initial weight.
        weight: f32,
        /// Whether it starts enabled.
        enabled: bool,
    },
    /// Change a LoRA's weight (only the layers it covers are recomputed). A run of these
    /// waiting in the queue is applied as one: the latest weight of each LoRA.
    SetLoraWeight {
        /// Which LoRA.
        id: AdapterId,
        /// New weight.
        weight: f32,
    },
    /// Turn a LoRA on or off.
    SetLoraEnabled {
        /// Which LoRA.
        id: AdapterId,
        /// On or off.
        enabled: bool,
    },
    /// Put the stack in this order (ids the engine does not have are ignored).
    ReorderLoras {
        /// Every LoRA, first to last.
        order: Vec<AdapterId>,
    },
    /// Remove a LoRA from the stack (also one whose [`Command::AddLora`] is still queued:
    /// commands run in order).
    RemoveLora {
        /// Which LoRA.
        id: AdapterId,
    },
    /// Load a textual-inversion embedding under `id` ([`Event::EmbeddingLoaded`] or a failure
    /// of [`Operation::LoadEmbedding`]).
    LoadEmbedding {
        /// The front end's name for it.
        id: AdapterId,
        /// The file.
        path: PathBuf,
        /// Token; None = the file stem.
        token: Option<String>,
    },
    /// Unload an embedding.
    RemoveEmbedding {
        /// Which embedding.
        id: AdapterId,
    },
    /// Validate a training dataset ([`Event::DatasetValidated`]).
    ValidateDataset {
        /// Image files (a dropped folder's [`crate::training::dataset::image_files`]).
        files: Vec<PathBuf>,
        /// Resolution and the other options that decide what trains.
        options: DatasetOptions,
    },
    /// Train a LoRA or an embedding on a thread of its own ([`Event::Training`]… then
    /// [`Event::TrainingFinished`], or [`Event::Cancelled`] / [`Event::Failed`]). While it
    /// runs, commands that need the engine's compute are answered [`Event::Busy`].
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
        /// The job's id.
        job: JobId,
        /// The run to estimate.
        config: Box<TrainingConfig>,
    },
    /// Tests only (feature `fault-injection`): a deliberate panic inside the engine at the
    /// start of the next `times` commands of operation `at` (`usize::MAX`: every one, like a
    /// file that always makes the loader panic), to exercise a front end's recovery.
    #[cfg(feature = "fault-injection")]
    Crash {
        /// The operation to panic in.
        at: Operation,
        /// How many of its commands panic.
        times: usize,
    },
    /// Tests only (feature `fault-injection`): the next command of operation `at` panics as
    /// a GPU backend does when the device runs out of memory (`lost: false`, CubeCL's "out of
    /// device memory allocating … bytes") or is lost (`lost: true`, "The device is poisoned").
    #[cfg(feature = "fault-injection")]
    DeviceFault {
        /// The operation to fail in.
        at: Operation,
        /// A lost device rather than an exhausted one.
        lost: bool,
    },
    /// Stop the engine thread (a running training run is cancelled first).
    Shutdown,
}

/// A command that failed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The job, for generations, comparisons and training runs.
    pub job: Option<JobId>,
    /// The adapter, for adapter commands.
    pub adapter: Option<AdapterId>,
    /// What was being done.
    pub op: Operation,
    /// What kind of failure it is.
    pub kind: ErrorKind,
    /// The error itself (its message is for the user).
    pub error: Arc<Error>,
}

impl Failure {
    /// A failure of `op` with `error`.
    pub fn new(op: Operation, error: Error) -> Self {
        Failure {
            job: None,
            adapter: None,
            op,
            kind: error.kind(),
            error: Arc::new(error),
        }
    }

    /// The same, about `job`.
    pub fn for_job(mut self, job: JobId) -> Self {
        self.job = Some(job);
        self
    }

    /// The same, about adapter `id`.
    pub fn for_adapter(mut self, id: AdapterId) -> Self {
        self.adapter = Some(id);
        self
    }

    /// The error's message, for the user.
    pub fn message(&self) -> String {
        self.error.to_string()
    }
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
        /// The device it runs on (never `auto`).
        device: DeviceSpec,
        /// Its precision.
        precision: Precision,
        /// What the user should hear about the device (`auto` fell back to the CPU, and why).
        device_notice: Option<String>,
    },
    /// A model failed to load (its [`Event::Failed`] follows) and the one loaded before is
    /// still there, untouched: its stack and embeddings too.
    ModelKept {
        /// What is loaded.
        info: Box<CheckpointInfo>,
        /// The device it runs on.
        device: DeviceSpec,
        /// Its precision.
        precision: Precision,
    },
    /// A job made progress.
    Progress {
        /// The job.
        job: JobId,
        /// UNet calls done (over every iteration of the job).
        step: usize,
        /// UNet calls in all.
        total: usize,
        /// The image forming (first image of the batch), when asked for.
        preview: Option<RgbImage>,
    },
    /// An iteration of a generation finished (a job of batch count n sends n of these).
    Generated {
        /// The job.
        job: JobId,
        /// Every image of the iteration, prompt-major.
        images: Vec<GeneratedImage>,
    },
    /// A generation finished (after its last [`Event::Generated`]).
    Done {
        /// The job.
        job: JobId,
        /// Whether its seed was drawn at random.
        random_seed: bool,
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
        /// Its id.
        id: AdapterId,
        /// The load report.
        report: Box<LoraReport>,
    },
    /// A LoRA's weight or switch is in the model now ([`Command::SetLoraWeight`] /
    /// [`Command::SetLoraEnabled`], after coalescing).
    LoraApplied {
        /// Its id.
        id: AdapterId,
        /// The weight merged.
        weight: f32,
        /// Whether it is on.
        enabled: bool,
    },
    /// An embedding was loaded.
    EmbeddingLoaded {
        /// Its id.
        id: AdapterId,
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
        /// The job.
        job: JobId,
        /// Measured seconds per optimiser step (the front end knows the plan's steps).
        seconds_per_step: f64,
    },
    /// A training run finished.
    TrainingFinished {
        /// The job.
        job: JobId,
        /// The trained adapter file.
        output: PathBuf,
    },
    /// A command failed.
    Failed(Failure),
    /// A command that cannot run while a training run holds the engine; nothing was done.
    Busy {
        /// The refused command's job, if it had one.
        job: Option<JobId>,
        /// What it would have done.
        op: Operation,
        /// The training run in the way.
        training: JobId,
    },
    /// The engine panicked while running a command of `op`; its state (model, stack,
    /// embeddings) was dropped and it is ready for new commands. After a panic while loading
    /// a model, a front end must not load the same model again by itself.
    Crashed {
        /// What it was doing.
        op: Operation,
        /// The job, if the command had one.
        job: Option<JobId>,
        /// The panic message; for a device's failure, the named error's message.
        message: String,
        /// [`ErrorKind::OutOfMemory`] or [`ErrorKind::DeviceLost`] when the panic was the
        /// device's (see [`crate::device::classify_failure`]); `None` for a bug.
        kind: Option<ErrorKind>,
    },
}
