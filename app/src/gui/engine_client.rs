//! The app's end of the engine: job ids, cancel tokens, and a fresh engine when the thread
//! is gone.

use std::sync::Arc;

use kiln_engine::job::{CancelToken, PauseToken};
use kiln_engine::protocol::{Command, Event, JobId, Operation};
use kiln_engine::resolve::GenerationSpec;
use kiln_engine::worker::{EngineHandle, Repaint};

/// Owns the engine thread.
pub struct EngineClient {
    handle: EngineHandle,
    repaint: Repaint,
    next_job: JobId,
    /// The running job's cancel token.
    running: Option<(JobId, CancelToken)>,
    /// Events of the app's own making, delivered before the engine's (a restart).
    pending: Vec<Event>,
}

impl std::fmt::Debug for EngineClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineClient")
            .field("next_job", &self.next_job)
            .finish_non_exhaustive()
    }
}

impl EngineClient {
    /// Starts the engine; `repaint` is called after every event.
    pub fn new(repaint: Repaint) -> Self {
        EngineClient {
            handle: EngineHandle::spawn(repaint.clone(), crate::paths::cache_dir()),
            repaint,
            next_job: 1,
            running: None,
            pending: Vec::new(),
        }
    }

    /// Sends a command, starting a fresh engine first if the thread died. The new engine
    /// has no model: unless `command` loads one, the studio hears of it as an
    /// [`Event::Crashed`] of the command (and loads its model again, as after any crash).
    pub fn send(&mut self, command: Command) {
        if !self.handle.is_alive() {
            tracing::error!("the engine thread is gone; starting a new one");
            self.handle = EngineHandle::spawn(self.repaint.clone(), crate::paths::cache_dir());
            if let Some(op) = command.operation()
                && op != Operation::LoadModel
            {
                self.pending.push(Event::Crashed {
                    op,
                    job: command.job(),
                    message: "the engine thread had stopped; a new one was started".into(),
                    kind: None,
                });
            }
        }
        self.handle.send(command);
    }

    /// A new job id and its cancel token, remembered as the running job (the one
    /// [`EngineClient::cancel`] stops) unless it is a training run.
    fn new_job(&mut self, running: bool) -> (JobId, CancelToken) {
        let job = self.next_job;
        self.next_job += 1;
        let cancel = CancelToken::new();
        if running {
            self.running = Some((job, cancel.clone()));
        }
        (job, cancel)
    }

    /// Starts a generation job; returns its id.
    pub fn generate(&mut self, spec: GenerationSpec) -> JobId {
        let (job, cancel) = self.new_job(true);
        self.send(Command::Generate {
            job,
            spec: Box::new(spec),
            cancel,
        });
        job
    }

    /// Starts a baseline-vs-adapted comparison; returns its id.
    pub fn compare_with_baseline(&mut self, spec: GenerationSpec) -> JobId {
        let (job, cancel) = self.new_job(true);
        self.send(Command::CompareWithBaseline {
            job,
            spec: Box::new(spec),
            cancel,
        });
        job
    }

    /// Starts a training run; returns its id and its cancel and pause tokens.
    pub fn start_training(
        &mut self,
        config: kiln_engine::training::trainer::TrainingConfig,
        resume: Option<std::path::PathBuf>,
    ) -> (JobId, CancelToken, PauseToken) {
        let (job, cancel) = self.new_job(false);
        let pause = PauseToken::default();
        self.send(Command::StartTraining {
            job,
            config: Box::new(config),
            resume,
            cancel: cancel.clone(),
            pause: pause.clone(),
        });
        (job, cancel, pause)
    }

    /// Starts measuring a training configuration's speed; returns the job's id.
    pub fn estimate_training(
        &mut self,
        config: kiln_engine::training::trainer::TrainingConfig,
    ) -> JobId {
        let (job, _) = self.new_job(false);
        self.send(Command::EstimateTraining {
            job,
            config: Box::new(config),
        });
        job
    }

    /// Cancels the running job (it stops within one UNet call).
    pub fn cancel(&mut self) {
        if let Some((_, c)) = &self.running {
            c.cancel();
        }
    }

    /// Forgets the running job once it has finished.
    pub fn finished(&mut self, job: JobId) {
        if self.running.as_ref().is_some_and(|(j, _)| *j == job) {
            self.running = None;
        }
    }

    /// Every event waiting, in order.
    pub fn drain(&mut self) -> Vec<Event> {
        let mut events = std::mem::take(&mut self.pending);
        events.extend(self.handle.events.try_iter());
        events
    }
}

impl Drop for EngineClient {
    fn drop(&mut self) {
        // Closing the window during a job cancels it cleanly before the thread is joined.
        self.cancel();
    }
}

/// A repaint callback for an egui context.
pub fn repaint_for(ctx: &egui::Context) -> Repaint {
    let ctx = ctx.clone();
    Arc::new(move || ctx.request_repaint())
}
