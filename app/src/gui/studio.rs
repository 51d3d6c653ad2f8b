//! The studio's shared runtime state, read by every view and changed only by the app as engine
//! events arrive: the model, the running generation, the training run holding the engine, the
//! tokenizer the prompt counter counts with. (Views keep their own state; this is what more
//! than one of them needs to know.)

use std::path::{Path, PathBuf};
use std::time::Instant;

use kiln_engine::device::DeviceSpec;
use kiln_engine::job::Precision;
use kiln_engine::protocol::JobId;
use kiln_engine::tokenizer::ClipTokenizer;
use kiln_engine::weights::CheckpointInfo;

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
        info: Box<CheckpointInfo>,
        /// Device it runs on.
        device: DeviceSpec,
        /// Precision.
        precision: Precision,
    },
    /// The last load failed.
    Failed(String),
}

/// What Generate starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Generate (batch count × batch size images).
    Generate,
    /// Compare with baseline (two images).
    Compare,
}

/// The running generation or comparison.
#[derive(Debug, Clone)]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// UNet calls done.
    pub step: usize,
    /// UNet calls in all (0 until the engine starts denoising).
    pub total: usize,
    /// When it started.
    pub started: Instant,
    /// Images the job makes (batch count × batch size; 0 for a comparison).
    pub images: usize,
    /// Images made at once (batch size).
    pub per_call: usize,
    /// Images made so far.
    pub made: usize,
}

impl Job {
    /// UNet calls per second so far.
    pub fn rate(&self) -> f64 {
        self.step as f64 / self.started.elapsed().as_secs_f64().max(1e-6)
    }
}

/// What the views share.
#[derive(Debug)]
pub struct Studio {
    /// The model.
    pub model: ModelStatus,
    /// The model that was loaded when the one in [`ModelStatus::Loading`] started loading: the
    /// engine keeps it if the new one fails, so it is what the window shows again then.
    pub model_before: Option<ModelStatus>,
    /// The running generation, if any.
    pub job: Option<Job>,
    /// The training run holding the engine's compute, if any.
    pub training: Option<JobId>,
    /// The model to load again once the training run ends (the engine lost it in a crash
    /// while the run held the compute).
    pub reload_after_training: Option<PathBuf>,
    /// The seed of the last image.
    pub last_seed: Option<u64>,
    /// The loaded model's tokenizer length, for the prompt counter.
    pub tokenizer: Option<ClipTokenizer>,
    /// Where the HTTP API listens, while the window serves it.
    pub api: Option<std::net::SocketAddr>,
}

impl Default for Studio {
    fn default() -> Self {
        Studio {
            model: ModelStatus::None,
            model_before: None,
            job: None,
            training: None,
            reload_after_training: None,
            last_seed: None,
            tokenizer: ClipTokenizer::sd15().ok(),
            api: None,
        }
    }
}

impl Studio {
    /// `path` starts loading; a model loaded until now is set aside ([`Studio::model_before`]).
    pub fn start_loading(&mut self, path: PathBuf) {
        if matches!(&self.model, ModelStatus::Loading(p) if *p == path) {
            return;
        }
        let before = std::mem::replace(&mut self.model, ModelStatus::Loading(path));
        if matches!(before, ModelStatus::Loaded { .. }) {
            self.model_before = Some(before);
        }
    }

    /// The model being loaded, if one is.
    pub fn loading(&self) -> Option<&Path> {
        match &self.model {
            ModelStatus::Loading(p) => Some(p),
            _ => None,
        }
    }

    /// Whether a model is ready.
    pub fn model_ready(&self) -> bool {
        matches!(self.model, ModelStatus::Loaded { .. })
    }

    /// The loaded model, when ready.
    pub fn info(&self) -> Option<&CheckpointInfo> {
        match &self.model {
            ModelStatus::Loaded { info, .. } => Some(info),
            _ => None,
        }
    }

    /// Why Generate (and Compare) cannot start now, if they cannot — what a disabled button
    /// says.
    pub fn cannot_generate(&self) -> Option<&'static str> {
        if self.training.is_some() {
            Some("A training run is using the engine: generate when it ends, or stop it")
        } else if self.job.is_some() {
            Some("A generation is running")
        } else if !self.model_ready() {
            Some("No model is loaded")
        } else {
            None
        }
    }
}
