//! The engine thread: owns the loaded [`Session`], runs [`Command`]s one at a time and sends
//! [`Event`]s, calling a repaint callback after each.
//!
//! - A training run goes on a thread of its own (it loads its own copy of the model), so the
//!   engine keeps answering: commands that need its compute meanwhile — generating,
//!   comparing, loading a model, estimating or starting another run — are answered
//!   [`Event::Busy`]; the stack, embeddings and dataset validation still work.
//! - A run of [`Command::SetLoraWeight`]s waiting in the queue (a slider being dragged) is
//!   applied as one: the latest weight of each LoRA, one re-merge each.
//! - A panic inside a command is caught: the engine drops its state (a fresh engine), reports
//!   [`Event::Crashed`] with the operation, and goes on.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, unbounded};

use crate::adapters::AdapterId;
use crate::error::Error;
use crate::job::CancelToken;
use crate::protocol::{Command, Event, Failure, JobId, Operation};
use crate::resolve::{ModelChoice, resolve};
use crate::session::Session;

/// Called after every event (the app passes its `egui::Context::request_repaint`).
pub type Repaint = Arc<dyn Fn() + Send + Sync>;

/// The front end's side of the engine: a command sender, an event receiver and the thread.
pub struct EngineHandle {
    /// Commands to the engine.
    pub commands: Sender<Command>,
    /// Events from the engine.
    pub events: Receiver<Event>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle").finish_non_exhaustive()
    }
}

impl EngineHandle {
    /// Starts an engine thread. `cache_dir` holds the model-hash cache.
    pub fn spawn(repaint: Repaint, cache_dir: Option<PathBuf>) -> Self {
        let (commands, rx) = unbounded();
        let (tx, events) = unbounded();
        let thread = std::thread::Builder::new()
            .name("kiln-engine".into())
            .spawn(move || {
                Worker {
                    session: None,
                    commands: rx,
                    queue: VecDeque::new(),
                    events: Events { tx, repaint },
                    cache_dir,
                    training: None,
                    #[cfg(feature = "fault-injection")]
                    faults: Vec::new(),
                }
                .run()
            })
            .ok();
        EngineHandle {
            commands,
            events,
            thread,
        }
    }

    /// Sends a command; false when the engine thread is gone.
    pub fn send(&self, command: Command) -> bool {
        self.commands.send(command).is_ok()
    }

    /// Whether the engine thread is still running.
    pub fn is_alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        // Jobs check their cancel token every UNet call; the app cancels before dropping.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The event channel and the repaint that follows every send.
#[derive(Clone)]
struct Events {
    tx: Sender<Event>,
    repaint: Repaint,
}

impl Events {
    fn send(&self, event: Event) {
        let _ = self.tx.send(event);
        (self.repaint)();
    }

    fn failed(&self, failure: Failure) {
        self.send(Event::Failed(failure));
    }
}

/// A training run on its own thread.
struct TrainingRun {
    job: JobId,
    cancel: CancelToken,
    /// Set by the run just before it sends its last event: from then on it holds no
    /// compute, though its thread may not have exited yet.
    ended: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

struct Worker {
    session: Option<Session>,
    commands: Receiver<Command>,
    /// Commands taken from the channel ahead of time (to coalesce weight changes).
    queue: VecDeque<Command>,
    events: Events,
    cache_dir: Option<PathBuf>,
    training: Option<TrainingRun>,
    /// Armed faults: (operation, panics left, panic message).
    #[cfg(feature = "fault-injection")]
    faults: Vec<(Operation, usize, String)>,
}

/// The panic payload as text.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    crate::error::panic_text(panic).unwrap_or_else(|| "unknown panic".into())
}

impl Command {
    /// What the command does (None for the engine's own control commands).
    pub fn operation(&self) -> Option<Operation> {
        Some(match self {
            Command::LoadModel { .. } => Operation::LoadModel,
            Command::Generate { .. } => Operation::Generate,
            Command::CompareWithBaseline { .. } => Operation::Compare,
            Command::AddLora { .. } => Operation::AddLora,
            Command::SetLoraWeight { .. }
            | Command::SetLoraEnabled { .. }
            | Command::ReorderLoras { .. }
            | Command::RemoveLora { .. } => Operation::ChangeLoras,
            Command::LoadEmbedding { .. } => Operation::LoadEmbedding,
            Command::RemoveEmbedding { .. } => Operation::RemoveEmbedding,
            Command::ValidateDataset { .. } => Operation::ValidateDataset,
            Command::StartTraining { .. } => Operation::Train,
            Command::EstimateTraining { .. } => Operation::EstimateTraining,
            #[cfg(feature = "fault-injection")]
            Command::Crash { .. } | Command::DeviceFault { .. } => return None,
            Command::Shutdown => return None,
        })
    }

    /// The job it belongs to, if any.
    pub fn job(&self) -> Option<JobId> {
        match self {
            Command::Generate { job, .. }
            | Command::CompareWithBaseline { job, .. }
            | Command::StartTraining { job, .. }
            | Command::EstimateTraining { job, .. } => Some(*job),
            _ => None,
        }
    }

    /// Whether it needs the engine's compute, so it waits for no training run but is
    /// answered [`Event::Busy`] while one goes on.
    fn needs_compute(&self) -> bool {
        matches!(
            self,
            Command::LoadModel { .. }
                | Command::Generate { .. }
                | Command::CompareWithBaseline { .. }
                | Command::StartTraining { .. }
                | Command::EstimateTraining { .. }
        )
    }
}

impl Worker {
    fn run(mut self) {
        loop {
            let command = match self.queue.pop_front() {
                Some(c) => c,
                None => match self.commands.recv() {
                    Ok(c) => c,
                    Err(_) => break,
                },
            };
            if matches!(command, Command::Shutdown) {
                break;
            }
            let (op, job) = (command.operation(), command.job());
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| self.handle(command))) {
                let message = panic_message(panic.as_ref());
                // A GPU that ran out of memory or was lost panics inside Burn; the message
                // then names that, and the dropped state frees the device's memory.
                let device = self.session.as_ref().map(|s| s.device().to_string());
                let half = self
                    .session
                    .as_ref()
                    .is_some_and(|s| s.precision() != crate::job::Precision::F32);
                let named = crate::device::classify_failure(
                    &message,
                    device.as_deref().unwrap_or("compute"),
                    half,
                );
                tracing::error!(%message, "engine panicked; starting fresh");
                self.session = None;
                if let Some(op) = op {
                    self.events.send(Event::Crashed {
                        op,
                        job,
                        kind: named.as_ref().map(Error::kind),
                        message: named.map_or(message, |e| e.to_string()),
                    });
                }
            }
        }
        if let Some(run) = self.training.take() {
            run.cancel.cancel();
            let _ = run.thread.join();
        }
    }

    /// The training run in the way of `command`, if one is running.
    fn busy_with(&mut self, command: &Command) -> Option<JobId> {
        if self
            .training
            .as_ref()
            .is_some_and(|t| t.ended.load(Ordering::SeqCst))
            && let Some(run) = self.training.take()
        {
            // It has sent its last event; its thread is returning.
            let _ = run.thread.join();
        }
        match &self.training {
            Some(t) if command.needs_compute() => Some(t.job),
            _ => None,
        }
    }

    #[cfg(feature = "fault-injection")]
    fn inject_faults(&mut self, op: Option<Operation>) {
        if let Some(op) = op
            && let Some((_, left, message)) =
                self.faults.iter_mut().find(|(o, n, _)| *o == op && *n > 0)
        {
            *left -= 1;
            panic!("{message}");
        }
    }

    /// Replaces the model with `choice`, or keeps the one there when that fails. The cheap
    /// checks come first (device, headers, architecture: [`Session::prepare`]) with the
    /// current model still loaded — a file that is no model leaves it untouched
    /// ([`Event::ModelKept`]). Then the current model is let go (two models need twice the
    /// memory) and the new one built; if that fails (a truncated file, a missing tensor), the
    /// previous model is loaded again ([`Event::ModelLoaded`]; the front end re-sends its
    /// stack). Either way the failure follows, so a front end that hears it knows whether a
    /// model is still there.
    fn load_model(&mut self, choice: &ModelChoice, events: &Events) {
        let loaded = |events: &Events, session: &Session| {
            events.send(Event::ModelLoaded {
                info: Box::new(session.info().clone()),
                device: session.device().clone(),
                precision: session.precision(),
                device_notice: session.device_notice().map(str::to_owned),
            })
        };
        let prepared = match Session::prepare(choice) {
            Ok(p) => p,
            Err(e) => {
                if let Some(session) = &self.session {
                    events.send(Event::ModelKept {
                        info: Box::new(session.info().clone()),
                        device: session.device().clone(),
                        precision: session.precision(),
                    });
                }
                return events.failed(Failure::new(Operation::LoadModel, e));
            }
        };
        let previous = self.session.take().and_then(|s| s.choice().cloned());
        match prepared.load(self.cache_dir.as_deref()) {
            Ok(session) => {
                loaded(events, &session);
                self.session = Some(session);
            }
            Err(e) => {
                if let Some(previous) = previous {
                    match Session::load(&previous, self.cache_dir.as_deref()) {
                        Ok(session) => {
                            loaded(events, &session);
                            self.session = Some(session);
                        }
                        Err(again) => tracing::error!(
                            error = %again,
                            path = %previous.path.display(),
                            "the previous model did not load again"
                        ),
                    }
                }
                events.failed(Failure::new(Operation::LoadModel, e));
            }
        }
    }

    fn handle(&mut self, command: Command) {
        #[cfg(feature = "fault-injection")]
        self.inject_faults(command.operation());
        if let Some(training) = self.busy_with(&command)
            && let Some(op) = command.operation()
        {
            return self.events.send(Event::Busy {
                job: command.job(),
                op,
                training,
            });
        }
        let events = self.events.clone();
        match command {
            Command::LoadModel {
                path,
                config,
                device,
                precision,
            } => {
                events.send(Event::ModelLoading { path: path.clone() });
                let choice = ModelChoice {
                    path,
                    config,
                    device,
                    precision,
                };
                self.load_model(&choice, &events);
            }
            Command::Generate { job, spec, cancel } => {
                let Some(session) = self.session.as_mut() else {
                    return events
                        .failed(Failure::new(Operation::Generate, Error::NoModel).for_job(job));
                };
                let started = Instant::now();
                let mut progress = progress_reporter(&events, job);
                let native = session.info().native_size();
                let stacked = session.stacked_lora_names();
                let result = resolve(&spec, None, &stacked, || Ok(native)).and_then(|resolved| {
                    session
                        .run(&resolved, &cancel, &mut progress, &mut |g| {
                            events.send(Event::Generated {
                                job,
                                images: g.images,
                            })
                        })
                        .map(|()| resolved.random_seed)
                });
                match result {
                    Ok(random_seed) => events.send(Event::Done {
                        job,
                        random_seed,
                        seconds: started.elapsed().as_secs_f64(),
                    }),
                    Err(Error::Cancelled) => events.send(Event::Cancelled { job }),
                    Err(e) => events.failed(Failure::new(Operation::Generate, e).for_job(job)),
                }
            }
            Command::CompareWithBaseline { job, spec, cancel } => {
                let Some(session) = self.session.as_mut() else {
                    return events
                        .failed(Failure::new(Operation::Compare, Error::NoModel).for_job(job));
                };
                let mut progress = progress_reporter(&events, job);
                let native = session.info().native_size();
                let stacked = session.stacked_lora_names();
                let result = resolve(&spec, None, &stacked, || Ok(native)).and_then(|resolved| {
                    session.compare_with_baseline(&resolved, &cancel, &mut progress)
                });
                match result {
                    Ok((baseline, adapted)) => events.send(Event::Compared {
                        job,
                        baseline: Box::new(baseline),
                        adapted: Box::new(adapted),
                    }),
                    Err(Error::Cancelled) => events.send(Event::Cancelled { job }),
                    Err(e) => events.failed(Failure::new(Operation::Compare, e).for_job(job)),
                }
            }
            Command::AddLora {
                id,
                path,
                weight,
                enabled,
            } => {
                let Some(session) = self.session.as_mut() else {
                    return events
                        .failed(Failure::new(Operation::AddLora, Error::NoModel).for_adapter(id));
                };
                match session.open_lora(&path) {
                    Ok(adapter) => {
                        let report = Box::new(adapter.report.clone());
                        session.add_lora(id, adapter, weight, enabled);
                        events.send(Event::LoraAdded { id, report });
                    }
                    Err(e) => events.failed(Failure::new(Operation::AddLora, e).for_adapter(id)),
                }
            }
            Command::SetLoraWeight { id, weight } => {
                let latest = self.weight_run(id, weight);
                if let Some(session) = self.session.as_mut() {
                    for (id, weight) in latest {
                        if session.set_lora_weight(id, weight) {
                            let enabled = session.loras().iter().any(|e| {
                                e.key == crate::adapters::lora::stack::StackKey::Adapter(id)
                                    && e.enabled
                            });
                            events.send(Event::LoraApplied {
                                id,
                                weight,
                                enabled,
                            });
                        }
                    }
                }
            }
            Command::SetLoraEnabled { id, enabled } => {
                if let Some(session) = self.session.as_mut()
                    && session.set_lora_enabled(id, enabled)
                {
                    let weight = session
                        .loras()
                        .iter()
                        .find(|e| e.key == crate::adapters::lora::stack::StackKey::Adapter(id))
                        .map_or(0.0, |e| e.weight);
                    events.send(Event::LoraApplied {
                        id,
                        weight,
                        enabled,
                    });
                }
            }
            Command::ReorderLoras { order } => {
                if let Some(session) = self.session.as_mut() {
                    session.reorder_loras(&order);
                }
            }
            Command::RemoveLora { id } => {
                if let Some(session) = self.session.as_mut() {
                    session.remove_lora(id);
                }
            }
            Command::LoadEmbedding { id, path, token } => {
                let Some(session) = self.session.as_mut() else {
                    return events.failed(
                        Failure::new(Operation::LoadEmbedding, Error::NoModel).for_adapter(id),
                    );
                };
                match session.load_embedding(id, &path, token.as_deref()) {
                    Ok(e) => events.send(Event::EmbeddingLoaded {
                        id,
                        token: e.ti.token.clone(),
                        vectors: e.ti.vectors.len(),
                        width: e.ti.width,
                    }),
                    Err(e) => {
                        events.failed(Failure::new(Operation::LoadEmbedding, e).for_adapter(id))
                    }
                }
            }
            Command::RemoveEmbedding { id } => {
                if let Some(session) = self.session.as_mut()
                    && let Err(e) = session.remove_embedding(id)
                {
                    events.failed(Failure::new(Operation::RemoveEmbedding, e).for_adapter(id));
                }
            }
            Command::ValidateDataset { files, options } => {
                let tokenizer = match &self.session {
                    Some(s) => Ok(s.model().tokenizer.clone()),
                    None => crate::tokenizer::ClipTokenizer::sd15(),
                };
                match tokenizer
                    .and_then(|t| crate::training::dataset::validate(&files, &options, &t))
                {
                    Ok(report) => events.send(Event::DatasetValidated {
                        report: Box::new(report),
                    }),
                    Err(e) => events.failed(Failure::new(Operation::ValidateDataset, e)),
                }
            }
            Command::StartTraining {
                job,
                config,
                resume,
                cancel,
                pause,
            } => {
                let thread_events = events.clone();
                let thread_cancel = cancel.clone();
                let ended = Arc::new(AtomicBool::new(false));
                let thread_ended = ended.clone();
                let spawned = std::thread::Builder::new()
                    .name("kiln-training".into())
                    .spawn(move || {
                        train_on_this_thread(
                            &thread_events,
                            job,
                            &config,
                            resume,
                            &thread_cancel,
                            &pause,
                            &thread_ended,
                        )
                    });
                match spawned {
                    Ok(thread) => {
                        self.training = Some(TrainingRun {
                            job,
                            cancel,
                            ended,
                            thread,
                        })
                    }
                    Err(e) => events.failed(
                        Failure::new(Operation::Train, Error::io("(training thread)", e))
                            .for_job(job),
                    ),
                }
            }
            Command::EstimateTraining { job, config } => {
                match crate::training::trainer::measure_seconds_per_step(
                    &config,
                    &CancelToken::new(),
                ) {
                    Ok(seconds_per_step) => events.send(Event::TrainingEstimate {
                        job,
                        seconds_per_step,
                    }),
                    Err(e) => {
                        events.failed(Failure::new(Operation::EstimateTraining, e).for_job(job))
                    }
                }
            }
            #[cfg(feature = "fault-injection")]
            Command::Crash { at, times } => self.faults.push((
                at,
                times,
                format!(
                    "deliberate engine crash (fault injection) while {}",
                    at.describe()
                ),
            )),
            #[cfg(feature = "fault-injection")]
            Command::DeviceFault { at, lost } => self.faults.push((
                at,
                1,
                if lost {
                    "Error while reading data: The device is poisoned\nCaused by:\n  Lost: the driver was reset (fault injection)".into()
                } else {
                    "Error while reading data: An IO error happened\nCaused by:\n  out of device memory allocating 2147483648 bytes (fault injection)".into()
                },
            )),
            Command::Shutdown => {}
        }
    }

    /// The latest weight of every LoRA in a run of [`Command::SetLoraWeight`]s: this one and
    /// those waiting right behind it in the queue (in order of first appearance).
    fn weight_run(&mut self, id: AdapterId, weight: f32) -> Vec<(AdapterId, f32)> {
        self.queue.extend(self.commands.try_iter());
        let mut latest = vec![(id, weight)];
        while let Some(Command::SetLoraWeight { id, weight }) = self.queue.front() {
            let (id, weight) = (*id, *weight);
            self.queue.pop_front();
            match latest.iter_mut().find(|(i, _)| *i == id) {
                Some(entry) => entry.1 = weight,
                None => latest.push((id, weight)),
            }
        }
        latest
    }
}

/// A step callback that reports `job`'s progress (with the first image's preview) as events.
fn progress_reporter(
    events: &Events,
    job: JobId,
) -> impl FnMut(crate::pipeline::StepProgress) + use<> {
    let events = events.clone();
    move |p| {
        let preview = p.preview.and_then(|v| v.into_iter().next());
        events.send(Event::Progress {
            job,
            step: p.step,
            total: p.total,
            preview,
        });
    }
}

/// Runs a training run on the calling thread, reporting everything as events (a panic is
/// reported as [`Event::Crashed`] and ends only this run); sets `ended` just before the
/// last event.
fn train_on_this_thread(
    events: &Events,
    job: JobId,
    config: &crate::training::trainer::TrainingConfig,
    resume: Option<PathBuf>,
    cancel: &CancelToken,
    pause: &crate::job::PauseToken,
    ended: &AtomicBool,
) {
    let run = catch_unwind(AssertUnwindSafe(|| {
        crate::training::trainer::train(config, resume.as_deref(), cancel, pause, &mut |event| {
            events.send(Event::Training {
                job,
                event: Box::new(event),
            })
        })
    }));
    let last = match run {
        Ok(Ok(output)) => Event::TrainingFinished { job, output },
        Ok(Err(Error::Cancelled)) => Event::Cancelled { job },
        Ok(Err(e)) => Event::Failed(Failure::new(Operation::Train, e).for_job(job)),
        Err(panic) => {
            let message = panic_message(panic.as_ref());
            tracing::error!(%message, "a training run panicked");
            // The run owns its model: a device that ran out of memory or was lost ends only
            // the run, as a named failure.
            match crate::device::classify_failure(
                &message,
                &config.device.to_string(),
                config.precision != crate::job::PrecisionChoice::F32,
            ) {
                Some(named) => Event::Failed(Failure::new(Operation::Train, named).for_job(job)),
                None => Event::Crashed {
                    op: Operation::Train,
                    job: Some(job),
                    message,
                    kind: None,
                },
            }
        }
    };
    ended.store(true, Ordering::SeqCst);
    events.send(last);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::resolve::GenerationSpec;
    use std::time::Duration;

    /// A worker with no model and the sender of its command channel and its event receiver.
    fn worker() -> (Worker, Sender<Command>, Receiver<Event>) {
        let (commands, rx) = unbounded();
        let (tx, events) = unbounded();
        let worker = Worker {
            session: None,
            commands: rx,
            queue: VecDeque::new(),
            events: Events {
                tx,
                repaint: Arc::new(|| {}),
            },
            cache_dir: None,
            training: None,
            #[cfg(feature = "fault-injection")]
            faults: Vec::new(),
        };
        (worker, commands, events)
    }

    fn generate(job: JobId) -> Command {
        Command::Generate {
            job,
            spec: Box::new(GenerationSpec::default()),
            cancel: CancelToken::new(),
        }
    }

    fn weight(id: u64, weight: f32) -> Command {
        Command::SetLoraWeight {
            id: AdapterId(id),
            weight,
        }
    }

    #[test]
    fn commands_name_their_operation_job_and_whether_they_need_compute() {
        let cases = [
            (generate(4), Some(Operation::Generate), Some(4), true),
            (
                Command::LoadModel {
                    path: "m".into(),
                    config: None,
                    device: Default::default(),
                    precision: Default::default(),
                },
                Some(Operation::LoadModel),
                None,
                true,
            ),
            (weight(1, 0.5), Some(Operation::ChangeLoras), None, false),
            (
                Command::RemoveLora { id: AdapterId(1) },
                Some(Operation::ChangeLoras),
                None,
                false,
            ),
            (
                Command::RemoveEmbedding { id: AdapterId(1) },
                Some(Operation::RemoveEmbedding),
                None,
                false,
            ),
            (Command::Shutdown, None, None, false),
        ];
        for (command, op, job, compute) in cases {
            assert_eq!(command.operation(), op, "{command:?}");
            assert_eq!(command.job(), job, "{command:?}");
            assert_eq!(command.needs_compute(), compute, "{command:?}");
        }
    }

    #[test]
    fn a_run_of_weight_changes_is_one_change_per_lora_with_its_latest_weight() {
        let (mut worker, commands, _events) = worker();
        for c in [
            weight(2, 0.2),
            weight(1, 0.3),
            weight(2, 0.4),
            Command::RemoveLora { id: AdapterId(2) },
            weight(1, 0.9),
        ] {
            commands.send(c).unwrap();
        }
        assert_eq!(
            worker.weight_run(AdapterId(1), 0.1),
            [(AdapterId(1), 0.3), (AdapterId(2), 0.4)]
        );
        // The run stops at the first other command; what follows waits its turn, in order.
        assert!(matches!(
            worker.queue.pop_front(),
            Some(Command::RemoveLora { id: AdapterId(2) })
        ));
        assert!(matches!(
            worker.queue.pop_front(),
            Some(Command::SetLoraWeight { weight, .. }) if weight == 0.9
        ));
        assert!(worker.queue.is_empty());
    }

    #[test]
    fn without_a_model_commands_fail_with_their_job_or_adapter() {
        let (mut worker, _commands, events) = worker();
        worker.handle(generate(7));
        match events.try_recv() {
            Ok(Event::Failed(f)) => {
                assert_eq!(
                    (f.job, f.op, f.kind),
                    (Some(7), Operation::Generate, ErrorKind::NoModel)
                );
            }
            other => panic!("{other:?}"),
        }
        worker.handle(Command::AddLora {
            id: AdapterId(3),
            path: "x.safetensors".into(),
            weight: 1.0,
            enabled: true,
        });
        match events.try_recv() {
            Ok(Event::Failed(f)) => {
                assert_eq!((f.adapter, f.op), (Some(AdapterId(3)), Operation::AddLora));
            }
            other => panic!("{other:?}"),
        }
        // Changes to a stack that is not there are nothing to report.
        worker.handle(Command::RemoveLora { id: AdapterId(3) });
        worker.handle(weight(3, 0.5));
        assert!(events.try_recv().is_err());
    }

    #[test]
    fn while_training_runs_compute_is_busy_and_the_rest_goes_on() {
        let (mut worker, _commands, events) = worker();
        let (stop, stopped) = unbounded::<()>();
        let ended = Arc::new(AtomicBool::new(false));
        let run_ended = ended.clone();
        worker.training = Some(TrainingRun {
            job: 11,
            cancel: CancelToken::new(),
            ended: ended.clone(),
            thread: std::thread::spawn(move || {
                let _ = stopped.recv();
                // As a run ends: the flag, then its last event, then the thread returns.
                run_ended.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(300));
            }),
        });
        worker.handle(generate(12));
        assert!(matches!(
            events.try_recv(),
            Ok(Event::Busy {
                job: Some(12),
                op: Operation::Generate,
                training: 11
            })
        ));
        worker.handle(Command::RemoveLora { id: AdapterId(1) });
        assert!(events.try_recv().is_err(), "stack changes are not refused");
        // Once the run has said its last word, compute is free again (even before its
        // thread returns).
        drop(stop);
        while !ended.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        assert!(!worker.training.as_ref().unwrap().thread.is_finished());
        worker.handle(generate(13));
        assert!(matches!(
            events.try_recv(),
            Ok(Event::Failed(f)) if f.kind == ErrorKind::NoModel && f.job == Some(13)
        ));
        assert!(worker.training.is_none());
    }
}
