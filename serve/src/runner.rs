//! The job queue and the one thread that drives the engine for the HTTP API.
//!
//! Requests become [`Work`] in a FIFO queue; the runner thread takes one at a time and drives
//! the engine thread ([`kiln_engine::worker`]) over its channels, as the window does. Handlers
//! wait for their job's answer asynchronously. What `progress` reports lives in [`Status`].
//!
//! - A generation of `n_iter` iterations runs as `n_iter` engine jobs of one iteration each
//!   (seed advancing by the batch size: the same images as one job), so `skip` can drop the
//!   iteration under way and go on, and `interrupt` can stop and still answer with the images
//!   made so far, as A1111 does.
//! - A client that goes away ([`Ticket`] dropped before its answer) takes its job out of the
//!   queue, or stops it within one step when it is running.
//! - Live previews are made only while a client watches (asked `progress` for `current_image`
//!   in the last [`PREVIEW_INTEREST`]): at small sizes a preview is a VAE decode per step,
//!   as dear as the step itself.
//! - A panic inside the engine fails that request (500); the engine starts fresh and the
//!   runner loads the model again — unless the panic was in loading it.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use kiln_engine::adapters::AdapterId;
use kiln_engine::image::RgbImage;
use kiln_engine::job::{CancelToken, PrecisionChoice};
use kiln_engine::protocol::{Command, Event, GeneratedImage, JobId, Operation};
use kiln_engine::resolve::GenerationSpec;
use kiln_engine::worker::EngineHandle;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::catalog::CheckpointEntry;
use crate::config::ServeConfig;
use crate::error::ApiError;

/// What a queued job does.
#[derive(Debug)]
pub enum Work {
    /// txt2img or img2img.
    Generate(Box<GenerateWork>),
    /// Load a checkpoint (`options` with `sd_model_checkpoint`), then the embeddings.
    LoadModel(CheckpointEntry),
    /// Load the embeddings folder again (`refresh-embeddings`).
    RefreshEmbeddings,
}

/// A generation as the runner runs it.
#[derive(Debug)]
pub struct GenerateWork {
    /// What to make (the seed already drawn; `batch_count` iterations).
    pub spec: GenerationSpec,
    /// A checkpoint for this request (`override_settings.sd_model_checkpoint`).
    pub model: Option<CheckpointEntry>,
    /// Load the previous checkpoint again afterwards.
    pub restore_model: bool,
}

/// What a finished job answers.
#[derive(Debug)]
pub enum Outcome {
    /// The images a generation made (all of them, or those made before an interrupt).
    Images(Generation),
    /// The job is done (a model or embeddings loaded).
    Done,
}

/// The images of a generation.
#[derive(Debug)]
pub struct Generation {
    /// Every image, in order, with its recipe.
    pub images: Vec<GeneratedImage>,
    /// Whether `interrupt` stopped it.
    pub interrupted: bool,
    /// The checkpoint it ran on.
    pub model: Option<CheckpointEntry>,
}

/// How a running job is told to stop.
#[derive(Debug, Default)]
pub struct Control {
    interrupted: AtomicBool,
    skipped: AtomicBool,
    abandoned: AtomicBool,
    cancel: Mutex<CancelToken>,
}

/// Why a job stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// `interrupt`: stop, answer with what was made.
    Interrupt,
    /// `skip`: drop the iteration under way, go on with the next.
    Skip,
    /// The client went away.
    Abandon,
}

impl Control {
    /// Stops the job (or its iteration) within one step.
    pub fn stop(&self, why: Stop) {
        match why {
            Stop::Interrupt => &self.interrupted,
            Stop::Skip => &self.skipped,
            Stop::Abandon => &self.abandoned,
        }
        .store(true, Ordering::SeqCst);
        lock(&self.cancel).cancel();
    }

    fn ended(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst) || self.abandoned.load(Ordering::SeqCst)
    }
}

/// The job running now, as `progress` shows it.
#[derive(Debug)]
pub struct Running {
    /// Its id.
    pub job: JobId,
    /// What it is ("txt2img", "load model").
    pub what: &'static str,
    /// Stops it.
    pub control: Arc<Control>,
    /// When it started.
    pub started: Instant,
    /// A1111's `job_timestamp` (`YYYYmmddHHMMSS`, UTC).
    pub timestamp: String,
    /// UNet calls done over the whole job.
    pub done: usize,
    /// UNet calls in the whole job (0 until the first step reports).
    pub total: usize,
    /// The iteration under way (A1111's `job_no`).
    pub iteration: usize,
    /// UNet calls done in this iteration.
    pub sampling_step: usize,
    /// UNet calls in this iteration.
    pub sampling_steps: usize,
    /// The latest live preview.
    pub preview: Option<RgbImage>,
}

/// What the server is doing and what is loaded.
#[derive(Debug, Default)]
pub struct Status {
    /// Jobs waiting (not counting the running one).
    pub queued: usize,
    /// The job under way.
    pub running: Option<Running>,
    /// The loaded checkpoint.
    pub model: Option<CheckpointEntry>,
    /// The device it runs on.
    pub device: Option<String>,
    /// Embeddings loaded, by token (A1111's `embeddings.loaded`).
    pub embeddings_loaded: BTreeMap<String, Value>,
    /// Embeddings that did not load, by file stem (A1111's `embeddings.skipped`).
    pub embeddings_skipped: BTreeMap<String, Value>,
}

type Answer = Result<Outcome, ApiError>;

struct Queued {
    job: JobId,
    what: &'static str,
    work: Work,
    control: Arc<Control>,
    reply: oneshot::Sender<Answer>,
}

/// The queue and status the HTTP handlers and the runner thread share.
pub struct Shared {
    queue: Mutex<VecDeque<Queued>>,
    wake: Condvar,
    next_job: AtomicU64,
    status: Mutex<Status>,
    closed: AtomicBool,
    /// When a client last asked `progress` for the live preview.
    previews_asked: Mutex<Option<Instant>>,
}

/// Previews are made for iterations that start within this long of a client asking for one.
pub const PREVIEW_INTEREST: std::time::Duration = std::time::Duration::from_secs(30);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// A1111's entry for one embedding in `embeddings` (`shape` is its width).
fn embedding_entry(shape: Option<usize>, vectors: usize) -> Value {
    json!({"step": null, "sd_checkpoint": null, "sd_checkpoint_name": null,
           "shape": shape, "vectors": vectors})
}

/// Locks `m`, also after a panic elsewhere poisoned it (the data is plain status).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A queued job's claim: dropping it before [`Ticket::finish`] (the client went away) takes
/// the job out of the queue or stops it.
#[derive(Debug)]
pub struct Ticket {
    shared: Arc<Shared>,
    job: JobId,
    control: Arc<Control>,
    finished: bool,
}

impl Ticket {
    /// The answer arrived: nothing to cancel.
    pub fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut queue = lock(&self.shared.queue);
        if let Some(i) = queue.iter().position(|q| q.job == self.job) {
            queue.remove(i);
            lock(&self.shared.status).queued = queue.len();
            tracing::info!(
                job = self.job,
                "the client went away; its queued job is dropped"
            );
        } else {
            self.control.stop(Stop::Abandon);
            tracing::info!(job = self.job, "the client went away; its job is stopped");
        }
    }
}

impl Shared {
    /// Queues `work`; the answer comes on the receiver. Keep the ticket until it does.
    pub fn submit(
        self: &Arc<Self>,
        what: &'static str,
        work: Work,
    ) -> Result<(Ticket, oneshot::Receiver<Answer>), ApiError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(ApiError::Unavailable("the server is shutting down".into()));
        }
        let (reply, answer) = oneshot::channel();
        let job = self.next_job.fetch_add(1, Ordering::SeqCst);
        let control = Arc::new(Control::default());
        let mut queue = lock(&self.queue);
        queue.push_back(Queued {
            job,
            what,
            work,
            control: control.clone(),
            reply,
        });
        lock(&self.status).queued = queue.len();
        drop(queue);
        self.wake.notify_all();
        Ok((
            Ticket {
                shared: self.clone(),
                job,
                control,
                finished: false,
            },
            answer,
        ))
    }

    /// Queues `work` and waits for its answer (the job is dropped if this future is).
    pub async fn run(self: &Arc<Self>, what: &'static str, work: Work) -> Answer {
        let (ticket, answer) = self.submit(what, work)?;
        let result = answer
            .await
            .unwrap_or_else(|_| Err(ApiError::Unavailable("the engine stopped".into())));
        ticket.finish();
        result
    }

    /// A client asked `progress` for `current_image`: the next iterations (for
    /// [`PREVIEW_INTEREST`]) make live previews. Nobody watching, none are made: a preview
    /// of a small image is a VAE decode per step.
    pub fn want_previews(&self) {
        *lock(&self.previews_asked) = Some(Instant::now());
    }

    fn previews_wanted(&self) -> bool {
        lock(&self.previews_asked).is_some_and(|t| t.elapsed() < PREVIEW_INTEREST)
    }

    /// The window's model is now `path` (a hosted runner; None: no model).
    pub fn set_model(&self, path: Option<&Path>, cache_dir: Option<&Path>) {
        self.status().model = path.map(|p| {
            let mut entry = CheckpointEntry::new(p);
            // Cached by the load that just happened (a lookup, not a hash of the file).
            entry.hash = kiln_engine::weights::hash::model_hash(p, cache_dir).ok();
            entry
        });
    }

    /// The window's embeddings now: (token, vectors, width) each (a hosted runner).
    pub fn set_embeddings(&self, loaded: &[(String, usize, usize)]) {
        self.status().embeddings_loaded = loaded
            .iter()
            .map(|(token, vectors, width)| (token.clone(), embedding_entry(Some(*width), *vectors)))
            .collect();
    }

    /// Reads the status.
    pub fn status(&self) -> MutexGuard<'_, Status> {
        lock(&self.status)
    }

    /// Stops the running job (`interrupt`, `skip`); false when nothing runs.
    pub fn stop_running(&self, why: Stop) -> bool {
        match &self.status().running {
            Some(r) => {
                r.control.stop(why);
                true
            }
            None => false,
        }
    }

    /// Stops taking jobs; the runner finishes the one under way, answers the queued ones
    /// 503 and exits.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.stop_running(Stop::Interrupt);
        self.wake.notify_all();
    }

    fn next(&self) -> Option<Queued> {
        let mut queue = lock(&self.queue);
        loop {
            if self.closed.load(Ordering::SeqCst) {
                for q in queue.drain(..) {
                    let _ = q.reply.send(Err(ApiError::Unavailable(
                        "the server is shutting down".into(),
                    )));
                }
                return None;
            }
            if let Some(q) = queue.pop_front() {
                self.status().queued = queue.len();
                return Some(q);
            }
            queue = self.wake.wait(queue).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// The window's end of a hosted runner ([`EngineLink::Hosted`]): the window sends the
/// commands it receives here to its own engine and forwards the events that answer them
/// (see `app/src/gui/api_host.rs`).
pub struct HostLink {
    /// Commands for the window to send to its engine.
    pub commands: crossbeam_channel::Sender<Command>,
    /// The events the window forwards: its API jobs', and while the API loads a model, the
    /// model's.
    pub events: crossbeam_channel::Receiver<Event>,
    /// Wakes the window after a command is queued (its repaint).
    pub wake: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for HostLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostLink").finish_non_exhaustive()
    }
}

/// The engine a runner drives.
enum EngineLink {
    /// Its own engine thread (`kiln serve`): the runner loads the start-up model and the
    /// embeddings folder, and loads the model again after an engine panic.
    Own(EngineHandle),
    /// The window's engine (the studio's "Serve API" switch): the model, its LoRA stack and
    /// embeddings are the window's, which also recovers from a panic.
    Hosted(HostLink),
}

/// First job id of a hosted runner: far above the window's own ids, so the window tells
/// its jobs from the API's.
pub const HOSTED_JOB_IDS: JobId = 1 << 40;

/// Starts the runner thread on its own engine (and queues the start-up model's load), or on
/// the window's through `host`.
pub fn spawn(config: Arc<ServeConfig>, host: Option<HostLink>) -> (Arc<Shared>, JoinHandle<()>) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::new()),
        wake: Condvar::new(),
        next_job: AtomicU64::new(if host.is_some() { HOSTED_JOB_IDS } else { 1 }),
        status: Mutex::new(Status::default()),
        closed: AtomicBool::new(false),
        previews_asked: Mutex::new(None),
    });
    let engine = match host {
        Some(link) => EngineLink::Hosted(link),
        None => {
            if let Ok((ticket, _)) = shared.submit(
                "load model",
                Work::LoadModel(CheckpointEntry::new(&config.model)),
            ) {
                ticket.finish();
            }
            EngineLink::Own(EngineHandle::spawn(
                Arc::new(|| {}),
                config.cache_dir.clone(),
            ))
        }
    };
    let runner = Runner {
        shared: shared.clone(),
        engine,
        config,
    };
    let thread = std::thread::Builder::new()
        .name("kiln-serve-runner".into())
        .spawn(move || runner.run())
        .unwrap_or_else(|e| panic!("cannot start a thread: {e}"));
    (shared, thread)
}

/// A1111's `job_timestamp` for now (UTC).
fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

struct Runner {
    shared: Arc<Shared>,
    engine: EngineLink,
    config: Arc<ServeConfig>,
}

impl Runner {
    fn run(mut self) {
        while let Some(q) = self.shared.next() {
            self.shared.status().running = Some(Running {
                job: q.job,
                what: q.what,
                control: q.control.clone(),
                started: Instant::now(),
                timestamp: timestamp(),
                done: 0,
                total: 0,
                iteration: 0,
                sampling_step: 0,
                sampling_steps: 0,
                preview: None,
            });
            let answer = match q.work {
                Work::Generate(work) => {
                    self.generate(q.job, *work, &q.control).map(Outcome::Images)
                }
                Work::LoadModel(entry) => self.load(&entry).map(|()| Outcome::Done),
                Work::RefreshEmbeddings => {
                    self.load_embeddings();
                    Ok(Outcome::Done)
                }
            };
            if let Err(e) = &answer {
                tracing::warn!(job = q.job, error = %e, "request failed");
            }
            self.shared.status().running = None;
            let _ = q.reply.send(answer);
        }
    }

    fn event(&self) -> Result<Event, ApiError> {
        let received = match &self.engine {
            EngineLink::Own(engine) => engine.events.recv(),
            EngineLink::Hosted(host) => host.events.recv(),
        };
        match received {
            // A training run in the window holds the engine.
            Ok(Event::Busy { op, .. }) => Err(ApiError::Unavailable(format!(
                "a training run is using the engine; {} can wait until it ends",
                op.describe()
            ))),
            Ok(event) => Ok(event),
            Err(_) => Err(ApiError::Unavailable("the engine stopped".into())),
        }
    }

    fn send(&self, command: Command) -> Result<(), ApiError> {
        let sent = match &self.engine {
            EngineLink::Own(engine) => engine.send(command),
            EngineLink::Hosted(host) => {
                let sent = host.commands.send(command).is_ok();
                (host.wake)();
                sent
            }
        };
        if sent {
            Ok(())
        } else {
            Err(ApiError::Unavailable("the engine stopped".into()))
        }
    }

    fn owns_engine(&self) -> bool {
        matches!(self.engine, EngineLink::Own(_))
    }

    /// The engine panicked: its state is gone. Load the model again unless the panic was in
    /// loading it.
    fn crashed(&mut self, op: Operation, message: String) -> ApiError {
        let model = self.shared.status().model.take();
        tracing::error!(%message, "the engine panicked");
        if self.owns_engine()
            && op != Operation::LoadModel
            && let Some(model) = model
            && let Err(e) = self.load(&model)
        {
            tracing::error!(error = %e, "the model did not load again after the panic");
        }
        ApiError::Engine {
            kind: None,
            message: format!("the engine failed while {}: {message}", op.describe()),
        }
    }

    /// Loads `entry`, then the embeddings folder.
    fn load(&mut self, entry: &CheckpointEntry) -> Result<(), ApiError> {
        self.send(Command::LoadModel {
            path: entry.path.clone(),
            config: None,
            device: self.config.device.clone(),
            precision: PrecisionChoice::default(),
        })?;
        loop {
            match self.event()? {
                Event::ModelLoaded { info, device, .. } => {
                    let mut status = self.shared.status();
                    let previous = status.model.take();
                    status.device = Some(device.to_string());
                    if info.path == entry.path {
                        let mut loaded = entry.clone();
                        loaded.hash = kiln_engine::weights::hash::model_hash(
                            &entry.path,
                            self.config.cache_dir.as_deref(),
                        )
                        .ok();
                        tracing::info!(model = %loaded.title(), %device, "model loaded");
                        status.model = Some(loaded);
                        drop(status);
                        if self.owns_engine() {
                            self.load_embeddings();
                        }
                        return Ok(());
                    }
                    // The previous model is back; the failure follows.
                    status.model = previous.filter(|p| p.path == info.path);
                }
                Event::Failed(f) => {
                    if self.owns_engine() && self.shared.status().model.is_some() {
                        // Kept or reloaded: its embeddings are still (or again) needed.
                        self.load_embeddings();
                    }
                    return Err(ApiError::Engine {
                        kind: Some(f.kind),
                        message: f.message(),
                    });
                }
                Event::Crashed { op, message, .. } => return Err(self.crashed(op, message)),
                _ => {}
            }
        }
    }

    /// Loads every embedding of the embeddings folder into the loaded model (token = file
    /// stem), recording which loaded and which were skipped.
    fn load_embeddings(&mut self) {
        let mut loaded = BTreeMap::new();
        let mut skipped = BTreeMap::new();
        let files: Vec<PathBuf> = match &self.config.embeddings_dir {
            Some(dir) => embedding_files(dir),
            None => Vec::new(),
        };
        for (k, path) in files.iter().enumerate() {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            if self
                .send(Command::LoadEmbedding {
                    id: AdapterId(k as u64),
                    path: path.clone(),
                    token: None,
                })
                .is_err()
            {
                break;
            }
            loop {
                match self.event() {
                    Ok(Event::EmbeddingLoaded {
                        token,
                        vectors,
                        width,
                        ..
                    }) => {
                        loaded.insert(token, embedding_entry(Some(width), vectors));
                        break;
                    }
                    Ok(Event::Failed(f)) => {
                        tracing::info!(file = %path.display(), error = %f.message(), "embedding skipped");
                        let mut entry = embedding_entry(None, 0);
                        if let Some(map) = entry.as_object_mut() {
                            map.insert("error".into(), json!(f.message()));
                        }
                        skipped.insert(stem.clone(), entry);
                        break;
                    }
                    Ok(Event::Crashed { op, message, .. }) => {
                        let _ = self.crashed(op, message);
                        return;
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        }
        let mut status = self.shared.status();
        status.embeddings_loaded = loaded;
        status.embeddings_skipped = skipped;
    }

    fn generate(
        &mut self,
        job: JobId,
        work: GenerateWork,
        control: &Control,
    ) -> Result<Generation, ApiError> {
        let previous = self.shared.status().model.clone();
        let switch = work
            .model
            .as_ref()
            .filter(|m| previous.as_ref().is_none_or(|p| p.path != m.path));
        if let Some(model) = switch {
            self.load(model)?;
        }
        let result = self.iterations(job, &work.spec, control);
        if switch.is_some()
            && work.restore_model
            && let Some(previous) = previous
            && let Err(e) = self.load(&previous)
        {
            tracing::warn!(error = %e, "the model before the request's override did not load again");
        }
        result
    }

    fn iterations(
        &mut self,
        job: JobId,
        spec: &GenerationSpec,
        control: &Control,
    ) -> Result<Generation, ApiError> {
        if self.shared.status().model.is_none() {
            return Err(ApiError::Engine {
                kind: None,
                message: "no model is loaded: choose one with POST /sdapi/v1/options {\"sd_model_checkpoint\": …}".into(),
            });
        }
        let count = spec.batch_count.max(1);
        let seed = spec.seed.unwrap_or_else(kiln_engine::job::random_seed);
        let mut images = Vec::new();
        for iteration in 0..count {
            let cancel = CancelToken::new();
            *lock(&control.cancel) = cancel.clone();
            if control.ended() {
                break;
            }
            control.skipped.store(false, Ordering::SeqCst);
            let mut one = spec.clone();
            one.batch_count = 1;
            one.seed = Some(seed.wrapping_add((iteration * spec.batch_size) as u64));
            one.preview = self.shared.previews_wanted();
            self.send(Command::Generate {
                job,
                spec: Box::new(one),
                cancel,
            })?;
            loop {
                match self.event()? {
                    Event::Progress {
                        step,
                        total,
                        preview,
                        ..
                    } => {
                        if let Some(r) = self.shared.status().running.as_mut() {
                            r.iteration = iteration;
                            r.sampling_step = step;
                            r.sampling_steps = total;
                            r.done = iteration * total + step;
                            r.total = count * total;
                            if preview.is_some() {
                                r.preview = preview;
                            }
                        }
                    }
                    Event::Generated { images: made, .. } => images.extend(made),
                    Event::Done { .. } | Event::Cancelled { .. } => break,
                    Event::Failed(f) => {
                        return Err(ApiError::Engine {
                            kind: Some(f.kind),
                            message: f.message(),
                        });
                    }
                    Event::Crashed { op, message, .. } => return Err(self.crashed(op, message)),
                    _ => {}
                }
            }
        }
        if control.abandoned.load(Ordering::SeqCst) {
            return Err(ApiError::Unavailable("the client went away".into()));
        }
        Ok(Generation {
            images,
            interrupted: control.interrupted.load(Ordering::SeqCst),
            model: self.shared.status().model.clone(),
        })
    }
}

/// The embedding files of `dir` (`.pt`, `.safetensors`, `.bin`), sorted.
fn embedding_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|e| matches!(e.to_str(), Some("pt" | "safetensors" | "bin")))
        })
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timestamp_is_a1111s_fourteen_digits() {
        let t = timestamp();
        assert_eq!(t.len(), 14, "{t}");
        assert!(t.starts_with("20"), "{t}");
        assert!(t.chars().all(|c| c.is_ascii_digit()));
    }
}
