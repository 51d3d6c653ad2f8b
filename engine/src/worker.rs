//! The engine thread: owns the loaded model, runs [`Command`]s one at a time and sends
//! [`Event`]s, calling a repaint callback after each. A panic inside a command is caught: the
//! engine drops its state (a fresh engine), reports [`Event::Crashed`] and goes on.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, unbounded};

use crate::pipeline::{Precision, StableDiffusion};
use crate::protocol::{Command, Event, GeneratedImage};

/// Called after every event (the app passes its `egui::Context::request_repaint`).
pub type Repaint = Arc<dyn Fn() + Send + Sync>;

/// The app's side of the engine: a command sender, an event receiver and the thread.
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
                    sd: None,
                    tx,
                    repaint,
                    cache_dir,
                }
                .run(rx)
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

/// A step callback that reports `job`'s progress (with the first image's preview) as events.
fn progress_reporter(
    tx: Sender<Event>,
    repaint: Repaint,
    job: u64,
) -> impl FnMut(crate::pipeline::StepProgress) {
    move |p| {
        let preview = p.preview.and_then(|v| v.into_iter().next());
        let _ = tx.send(Event::Progress {
            job,
            step: p.step,
            total: p.total,
            preview,
        });
        repaint();
    }
}

struct Worker {
    sd: Option<StableDiffusion>,
    tx: Sender<Event>,
    repaint: Repaint,
    cache_dir: Option<PathBuf>,
}

impl Worker {
    fn send(&self, event: Event) {
        let _ = self.tx.send(event);
        (self.repaint)();
    }

    fn run(mut self, rx: Receiver<Command>) {
        while let Ok(command) = rx.recv() {
            if matches!(command, Command::Shutdown) {
                break;
            }
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| self.handle(command))) {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(%message, "engine panicked; starting fresh");
                self.sd = None;
                self.send(Event::Crashed { message });
            }
        }
    }

    fn error(&self, job: Option<u64>, context: &str, e: impl std::fmt::Display) {
        self.send(Event::Error {
            job,
            context: context.into(),
            message: e.to_string(),
        });
    }

    fn no_model(&self, job: Option<u64>, context: &str) {
        self.error(job, context, "no model is loaded; open a checkpoint first");
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::LoadModel {
                path,
                device,
                precision,
            } => {
                self.send(Event::ModelLoading { path: path.clone() });
                self.sd = None;
                let dev = match crate::device::device(&device) {
                    Ok(d) => d,
                    Err(e) => return self.error(None, "loading model", e),
                };
                match StableDiffusion::load(&path, None, &dev) {
                    Ok(mut sd) => {
                        sd.set_precision(precision.unwrap_or_else(|| Precision::default_for(&dev)));
                        sd.set_model_hash(
                            crate::weights::hash::model_hash(&path, self.cache_dir.as_deref()).ok(),
                        );
                        let info = Box::new(sd.info.clone());
                        let precision = sd.precision();
                        self.sd = Some(sd);
                        // Report the backend actually chosen, not "auto".
                        let device = if device.trim().eq_ignore_ascii_case("auto") {
                            crate::device::available()
                                .first()
                                .map(|d| (*d).to_owned())
                                .unwrap_or(device)
                        } else {
                            device
                        };
                        self.send(Event::ModelLoaded {
                            info,
                            device,
                            precision,
                        });
                    }
                    Err(e) => self.error(None, "loading model", e),
                }
            }
            Command::Generate {
                job,
                request,
                cancel,
            } => {
                let Some(sd) = &self.sd else {
                    return self.no_model(Some(job), "generating");
                };
                let started = Instant::now();
                let mut progress = progress_reporter(self.tx.clone(), self.repaint.clone(), job);
                let result = sd.generate(&request, &cancel, &mut progress);
                match result {
                    Ok(out) => {
                        let recipes = sd.recipes(&request, &out.seeds);
                        let images = out
                            .images
                            .into_iter()
                            .zip(recipes)
                            .map(|(image, recipe)| GeneratedImage { image, recipe })
                            .collect();
                        self.send(Event::Generated {
                            job,
                            images,
                            seconds: started.elapsed().as_secs_f64(),
                        });
                    }
                    Err(crate::Error::Cancelled) => self.send(Event::Cancelled { job }),
                    Err(e) => self.error(Some(job), "generating", e),
                }
            }
            Command::CompareWithBaseline {
                job,
                request,
                cancel,
            } => {
                let Some(sd) = &mut self.sd else {
                    return self.no_model(Some(job), "comparing");
                };
                let mut progress = progress_reporter(self.tx.clone(), self.repaint.clone(), job);
                // Baseline: every adapter off (re-merging only their layers), then restored.
                let enabled: Vec<bool> = sd.loras().iter().map(|e| e.enabled).collect();
                for (i, on) in enabled.iter().enumerate() {
                    if *on {
                        sd.set_lora_enabled(i, false);
                    }
                }
                let baseline = sd.generate(&request, &cancel, &mut progress).map(|o| {
                    let recipe = sd.recipes(&request, &o.seeds[..1]).remove(0);
                    (o, recipe)
                });
                for (i, on) in enabled.iter().enumerate() {
                    if *on {
                        sd.set_lora_enabled(i, true);
                    }
                }
                let result = baseline.and_then(|b| {
                    sd.generate(&request, &cancel, &mut progress)
                        .map(|a| (b, a))
                });
                match result {
                    Ok(((b, b_recipe), a)) => {
                        let a_recipe = sd.recipes(&request, &a.seeds[..1]).remove(0);
                        let first =
                            |o: crate::pipeline::GenerationOutput| o.images.into_iter().next();
                        match (first(b), first(a)) {
                            (Some(bi), Some(ai)) => self.send(Event::Compared {
                                job,
                                baseline: Box::new(GeneratedImage {
                                    image: bi,
                                    recipe: b_recipe,
                                }),
                                adapted: Box::new(GeneratedImage {
                                    image: ai,
                                    recipe: a_recipe,
                                }),
                            }),
                            _ => self.error(Some(job), "comparing", "the request made no image"),
                        }
                    }
                    Err(crate::Error::Cancelled) => self.send(Event::Cancelled { job }),
                    Err(e) => self.error(Some(job), "comparing", e),
                }
            }
            Command::AddLora {
                path,
                weight,
                enabled,
            } => {
                let Some(sd) = &mut self.sd else {
                    return self.no_model(None, "adding a LoRA");
                };
                match sd.open_lora(&path) {
                    Ok(adapter) => {
                        let report = Box::new(adapter.report.clone());
                        let index = sd.add_lora(adapter, weight);
                        if !enabled {
                            sd.set_lora_enabled(index, false);
                        }
                        self.send(Event::LoraAdded {
                            path,
                            index,
                            report,
                        });
                    }
                    Err(e) => self.send(Event::LoraRefused {
                        path,
                        reason: e.to_string(),
                    }),
                }
            }
            Command::SetLoraWeight { index, weight } => {
                if let Some(sd) = &mut self.sd {
                    sd.set_lora_weight(index, weight);
                }
            }
            Command::SetLoraEnabled { index, enabled } => {
                if let Some(sd) = &mut self.sd {
                    sd.set_lora_enabled(index, enabled);
                }
            }
            Command::MoveLora { from, to } => {
                if let Some(sd) = &mut self.sd {
                    sd.move_lora(from, to);
                }
            }
            Command::RemoveLora { index } => {
                if let Some(sd) = &mut self.sd {
                    sd.remove_lora(index);
                }
            }
            Command::LoadEmbedding { path, token } => {
                let Some(sd) = &mut self.sd else {
                    return self.no_model(None, "loading an embedding");
                };
                match sd.load_embedding(&path, token.as_deref()) {
                    Ok(_) => {
                        let Some(e) = sd.embeddings().last() else {
                            return;
                        };
                        let event = Event::EmbeddingLoaded {
                            path,
                            token: e.ti.token.clone(),
                            vectors: e.ti.vectors.len(),
                            width: e.ti.width,
                        };
                        self.send(event);
                    }
                    Err(e) => self.error(None, &format!("loading embedding {}", path.display()), e),
                }
            }
            Command::RemoveEmbedding { index } => {
                if let Some(sd) = &mut self.sd
                    && let Err(e) = sd.remove_embedding(index)
                {
                    self.error(None, "removing an embedding", e);
                }
            }
            Command::ValidateDataset { files, options } => {
                let tokenizer = match &self.sd {
                    Some(sd) => Ok(sd.tokenizer.clone()),
                    None => crate::tokenizer::ClipTokenizer::sd15(),
                };
                match tokenizer
                    .and_then(|t| crate::training::dataset::validate(&files, &options, &t))
                {
                    Ok(report) => self.send(Event::DatasetValidated {
                        report: Box::new(report),
                    }),
                    Err(e) => self.error(None, "validating the dataset", e),
                }
            }
            Command::StartTraining {
                job,
                config,
                resume,
                cancel,
                pause,
            } => {
                let tx = self.tx.clone();
                let repaint = self.repaint.clone();
                let result = crate::training::trainer::train_lora(
                    &config,
                    resume.as_deref(),
                    &cancel,
                    &pause,
                    &mut |event| {
                        let _ = tx.send(Event::Training {
                            job,
                            event: Box::new(event),
                        });
                        repaint();
                    },
                );
                match result {
                    Ok(output) => self.send(Event::TrainingFinished { job, output }),
                    Err(crate::Error::Cancelled) => self.send(Event::Cancelled { job }),
                    Err(e) => self.error(Some(job), "training", e),
                }
            }
            Command::EstimateTraining { config } => {
                match crate::training::trainer::measure_seconds_per_step(
                    &config,
                    &crate::pipeline::CancelToken::new(),
                ) {
                    Ok(seconds_per_step) => self.send(Event::TrainingEstimate {
                        seconds_per_step,
                        steps: config.max_steps.unwrap_or(0),
                    }),
                    Err(e) => self.error(None, "estimating the training time", e),
                }
            }
            Command::Crash => panic!("deliberate engine crash (Command::Crash)"),
            Command::Shutdown => {}
        }
    }
}
