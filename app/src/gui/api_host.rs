//! The "Serve API" switch: `kiln serve`'s HTTP API ([`kiln_serve`]) inside the studio, on the
//! studio's own engine.
//!
//! The server's runner does not start an engine of its own: the commands it would send come
//! here, and the app sends them to its engine ([`ApiHost::commands`]); the events of the
//! API's jobs go back to it ([`ApiHost::offer`]). So an API request uses the model, LoRA
//! stack and embeddings the window shows, its images appear on the canvas and in the gallery
//! like the window's own, and a model switch through `options` loads the model in the window
//! as Open model… would. API jobs have ids from
//! [`HOSTED_JOB_IDS`](kiln_serve::runner::HOSTED_JOB_IDS) up, far from the window's.
//!
//! Decisions: the API listens on loopback only (the studio is a desktop tool; `kiln serve`
//! has the flags for more); its `save_images` writes under the output folder's `api/`; the
//! window forwards events as it draws frames (the engine asks for a frame after every event,
//! and the server after every command), so a minimised window that the system stops drawing
//! also pauses the API.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crossbeam_channel::{Receiver, Sender, unbounded};
use kiln_engine::protocol::{Command, Event, JobId, Operation};
use kiln_engine::worker::Repaint;
use kiln_serve::runner::HostLink;
use kiln_serve::{Limits, ServeConfig, ServeError, Server};

use super::state::Settings;

/// A running API on the window's engine.
#[derive(Debug)]
pub struct ApiHost {
    server: Server,
    commands: Receiver<Command>,
    events: Sender<Event>,
    /// The API's jobs the engine has not finished.
    jobs: HashSet<JobId>,
    /// A model the API asked to load, until the load ends.
    loading: Option<PathBuf>,
    /// The embeddings last told to the server.
    embeddings: Vec<(String, usize, usize)>,
}

impl ApiHost {
    /// Starts the API on `127.0.0.1:port` with the window's folders and device; `repaint`
    /// wakes the window when the server has a command for the engine.
    pub fn start(settings: &Settings, port: u16, repaint: Repaint) -> Result<Self, ServeError> {
        let (command_tx, commands) = unbounded();
        let (events, event_rx) = unbounded();
        let config = ServeConfig {
            model: settings.model_path.clone().unwrap_or_default(),
            models_dir: Some(settings.models_dir.clone()),
            host: std::net::Ipv4Addr::LOCALHOST.into(),
            port,
            auth: Vec::new(),
            insecure_listen: false,
            lora_dir: Some(settings.lora_folder().to_owned()),
            embeddings_dir: None,
            outputs: settings.output_dir.join("api"),
            device: settings.device.clone(),
            cors_allow_origins: Vec::new(),
            cache_dir: crate::paths::cache_dir(),
            limits: Limits::default(),
        };
        let server = Server::start(
            config,
            Some(HostLink {
                commands: command_tx,
                events: event_rx,
                wake: repaint,
            }),
        )?;
        Ok(ApiHost {
            server,
            commands,
            events,
            jobs: HashSet::new(),
            loading: None,
            embeddings: Vec::new(),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The commands the server wants sent, oldest first. A model load is the window's to do
    /// (it returns here as [`Command::LoadModel`]; its events are offered back until it ends).
    pub fn commands(&mut self) -> Vec<Command> {
        let commands: Vec<Command> = self.commands.try_iter().collect();
        for c in &commands {
            match c {
                Command::LoadModel { path, .. } => self.loading = Some(path.clone()),
                other => self.jobs.extend(other.job()),
            }
        }
        commands
    }

    /// Gives `event` to the server when it answers one of its commands. True when it is an
    /// API job's event: the window shows its images but it is not a job of the window's.
    pub fn offer(&mut self, event: &Event) -> bool {
        let job = match event {
            Event::Progress { job, .. }
            | Event::Generated { job, .. }
            | Event::Done { job, .. }
            | Event::Cancelled { job } => Some(*job),
            Event::Failed(f) => f.job,
            Event::Busy { job, .. } | Event::Crashed { job, .. } => *job,
            _ => None,
        };
        if let Some(job) = job.filter(|j| self.jobs.contains(j)) {
            if matches!(
                event,
                Event::Done { .. }
                    | Event::Cancelled { .. }
                    | Event::Failed(_)
                    | Event::Busy { .. }
                    | Event::Crashed { .. }
            ) {
                self.jobs.remove(&job);
            }
            let _ = self.events.send(event.clone());
            return true;
        }
        // The model load the API asked for: its events go to the server too.
        if let Some(path) = &self.loading {
            let ended = match event {
                Event::ModelLoaded { info, .. } => info.path == *path,
                Event::Failed(f) => f.op == Operation::LoadModel,
                Event::Busy { op, .. } | Event::Crashed { op, .. } => *op == Operation::LoadModel,
                Event::ModelKept { .. } => false,
                _ => return false,
            };
            let _ = self.events.send(event.clone());
            if ended {
                self.loading = None;
            }
        }
        false
    }

    /// The window's model changed (None: none loaded).
    pub fn model_changed(&self, path: Option<&Path>) {
        self.server
            .shared()
            .set_model(path, crate::paths::cache_dir().as_deref());
    }

    /// The window's loaded embeddings: (token, vectors, width) each; told to the server when
    /// they changed.
    pub fn embeddings_changed(&mut self, loaded: Vec<(String, usize, usize)>) {
        if loaded != self.embeddings {
            self.server.shared().set_embeddings(&loaded);
            self.embeddings = loaded;
        }
    }

    /// Stops the server: its running job is interrupted, queued ones are answered 503.
    pub fn stop(self) {
        if let Err(e) = self.server.stop() {
            tracing::warn!(error = %e, "the API server did not stop cleanly");
        }
    }
}
