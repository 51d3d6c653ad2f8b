//! Carrying out what the views asked for after each frame, and what an engine failure or
//! crash means for the studio: every [`Action`], every [`UiCommand`] (buttons, menus,
//! shortcuts), the first-run choice of model, drops, and the engine's failures routed by
//! operation.

use std::path::{Path, PathBuf};

use kiln_engine::device::DeviceSpec;
use kiln_engine::error::ErrorKind;
use kiln_engine::job::Precision;
use kiln_engine::metadata::{ImageInfo, Source};
use kiln_engine::protocol::{Command, Failure, JobId, Operation};
use kiln_engine::resolve::GenerationSpec;
use kiln_engine::weights::CheckpointInfo;

use super::actions::{Action, Notification, Offer, Tab};
use super::api_host::ApiHost;
use super::app::KilnApp;
use super::commands::UiCommand;
use super::dialogs::{Asked, Pick};
use super::io::{AfterCheck, Dropped, IoRequest};
use super::state::{EmbeddingSetting, LoraSetting};
use super::studio::{Job, JobKind, ModelStatus};
use super::views::embeddings::EmbeddingStatus;
use super::views::train::{dataset_options, training_config};

impl KilnApp {
    /// Starts or stops the HTTP API ([`ApiHost`]); a port that is taken is said, and the
    /// switch goes back off.
    pub(crate) fn serve_api(&mut self, on: bool) {
        if let Some(api) = self.api.take() {
            api.stop();
            self.studio.api = None;
        }
        self.settings.serve_api = on;
        if !on {
            return;
        }
        let repaint = super::engine_client::repaint_for(&self.ctx);
        match ApiHost::start(&self.settings, self.settings.api_port, repaint) {
            Ok(api) => {
                api.model_changed(self.studio.info().map(|i| i.path.as_path()));
                self.studio.api = Some(api.addr());
                self.notify(
                    "Serving the API",
                    format!(
                        "AUTOMATIC1111-compatible clients can use http://{}/ (this machine only); \
                         their images appear here.",
                        api.addr()
                    ),
                    false,
                );
                self.api = Some(api);
            }
            Err(e) => {
                self.settings.serve_api = false;
                self.notify("Could not serve the API", e.to_string(), true);
            }
        }
    }

    /// Sends the commands the API's requests need to the engine; a model load goes through
    /// the window's own (so the window shows the model the API switched to).
    pub(crate) fn serve_api_commands(&mut self) {
        let Some(api) = &mut self.api else {
            return;
        };
        for command in api.commands() {
            match command {
                Command::LoadModel { path, .. } => match self.studio.training {
                    Some(training) => {
                        if let Some(api) = &mut self.api {
                            api.offer(&kiln_engine::protocol::Event::Busy {
                                job: None,
                                op: Operation::LoadModel,
                                training,
                            });
                        }
                    }
                    None => self.load_model(path),
                },
                other => self.engine.send(other),
            }
        }
    }

    /// An event of one of the API's jobs: its preview and images show as the window's do
    /// (canvas, gallery), but it is no job of the window's (no progress bar, no notice).
    pub(crate) fn on_api_event(&mut self, event: kiln_engine::protocol::Event) {
        use kiln_engine::protocol::Event;
        match event {
            Event::Progress {
                preview: Some(p), ..
            } if self.settings.live_preview => self.views.canvas.show(&self.ctx, p, None, None),
            Event::Generated { images, .. } => self.show_finished(images),
            // A crash: the window loads its model again, as after any crash.
            Event::Crashed {
                op,
                job,
                message,
                kind,
            } => self.crashed(op, job, message, kind),
            _ => {}
        }
    }

    /// Carries out every queued action (those an action queues too).
    pub(crate) fn run_actions(&mut self) {
        loop {
            let actions = self.actions.take();
            if actions.is_empty() {
                return;
            }
            // What they change is drawn in the next frame (a view drawn earlier in this one
            // showed the state before them).
            self.ctx.request_repaint();
            for a in actions {
                self.run_action(a);
            }
        }
    }

    fn run_action(&mut self, action: Action) {
        match action {
            Action::Ui(c) => self.run_command(c),
            Action::Engine(c) => {
                self.engine.send(c);
            }
            Action::LoadModel(path) => self.load_model(path),
            Action::UseCpu => {
                self.settings.device = DeviceSpec::Cpu;
                if let Some(path) = self.settings.model_path.clone() {
                    self.load_model(path);
                }
            }
            Action::AddLora(path, weight) => self.add_lora(path, weight),
            Action::AddEmbedding(path, token) => self.add_embedding(path, token),
            Action::Reuse(info) => self.reuse(&info),
            Action::Io(request) => self.io.send(request),
            Action::ShowTab(tab) => self.tab = tab,
            Action::Notify(n) => self.views.notifications.push(n),
            Action::Dataset(dir) => {
                self.settings.train.data = Some(dir.clone());
                self.views.train.report = None;
                self.io.send(IoRequest::ListDataset { dir });
                self.tab = Tab::Train;
            }
            Action::SaveCaption { index, path, text } => {
                self.io.send(IoRequest::WriteCaption { index, path, text })
            }
            Action::OpenUrl(url) => self.ctx.open_url(egui::OpenUrl::new_tab(url)),
            Action::ServeApi(on) => self.serve_api(on),
            Action::OpenFolder(dir) => self.io.send(IoRequest::OpenFolder { dir }),
            Action::Pick(pick) => self.pick(pick),
            Action::StartTraining(resume) => self.start_training(resume),
            Action::EstimateTraining => {
                if let Some(config) = training_config(&self.settings) {
                    let job = self.engine.estimate_training(config);
                    self.views.train.estimating = Some(job);
                }
            }
        }
    }

    /// Runs a user command.
    pub fn run_command(&mut self, command: UiCommand) {
        match command {
            UiCommand::Generate => self.generate(JobKind::Generate),
            UiCommand::CompareWithBaseline => self.generate(JobKind::Compare),
            UiCommand::Cancel => self.engine.cancel(),
            UiCommand::SaveImage => self.save_as(),
            UiCommand::CopyParameters => {
                if let Some(r) = self.views.canvas.recipe() {
                    self.ctx.copy_text(r.a1111_parameters());
                    self.notify(
                        "Parameters copied",
                        "The image's parameters (AUTOMATIC1111 text) are on the clipboard.",
                        false,
                    );
                }
            }
            UiCommand::ReuseParameters => {
                if let Some(info) = self.views.gallery.selected_info().cloned() {
                    self.reuse(&info);
                }
            }
            UiCommand::OpenModel => self.pick(Pick::OpenModel),
            UiCommand::OpenModelFolder => self.pick(Pick::OpenModelFolder),
            UiCommand::AddLora => self.pick(Pick::AddLora),
            UiCommand::AddEmbedding => self.pick(Pick::AddEmbedding),
            UiCommand::PickInitImage => self.pick(Pick::InitImage),
            UiCommand::PickDataset => self.pick(Pick::Dataset),
            UiCommand::RestoreFromImage => self.pick(Pick::ReadImage),
            UiCommand::RandomSeed => {
                self.settings.seed = kiln_engine::job::random_seed();
                self.settings.random_seed = false;
            }
            UiCommand::ReuseSeed => {
                if let Some(seed) = self.studio.last_seed {
                    self.settings.seed = seed;
                    self.settings.random_seed = false;
                }
            }
            UiCommand::SwapSize => {
                std::mem::swap(&mut self.settings.width, &mut self.settings.height)
            }
        }
    }

    /// Generates (or compares with the baseline) with the current settings: the engine
    /// resolves them, the prompt's `<lora:…>` tags included.
    fn generate(&mut self, kind: JobKind) {
        if let Some(why) = self.studio.cannot_generate() {
            if self.studio.job.is_none() {
                self.notify("Cannot generate now", why, true);
            }
            return;
        }
        if kind == JobKind::Compare
            && let Some(why) = self.views.loras.summary().nothing_to_compare()
        {
            return self.notify("Nothing to compare", why, false);
        }
        let spec = self.settings.spec();
        if kind == JobKind::Generate {
            self.views.canvas.new_batch();
        }
        let (images, per_call) = match kind {
            JobKind::Generate => (spec.batch_count * spec.batch_size, spec.batch_size),
            JobKind::Compare => (0, 1),
        };
        let id = match kind {
            JobKind::Generate => self.engine.generate(spec),
            JobKind::Compare => self.engine.compare_with_baseline(GenerationSpec {
                batch_size: 1,
                batch_count: 1,
                ..spec
            }),
        };
        self.studio.job = Some(Job {
            id,
            step: 0,
            total: 0,
            started: std::time::Instant::now(),
            images,
            per_call: per_call.max(1),
            made: 0,
        });
    }

    /// Generation `job` is over (done, cancelled or failed).
    pub(crate) fn job_ended(&mut self, job: JobId) {
        self.engine.finished(job);
        if self.studio.job.as_ref().is_some_and(|j| j.id == job) {
            self.studio.job = None;
        }
    }

    /// Loads a checkpoint; the LoRA stack and embeddings follow once it is ready.
    pub fn load_model(&mut self, path: PathBuf) {
        if let Some(training) = self.studio.training {
            return self.notify(
                "Cannot load a model now",
                format!("A training run (job {training}) is using the engine; load it when the run ends."),
                true,
            );
        }
        // Only a model that loads is remembered and listed in Recent ([`KilnApp::model_loaded`]).
        self.studio.start_loading(path.clone());
        self.engine.send(Command::LoadModel {
            path,
            config: None,
            device: self.settings.device.clone(),
            precision: self.settings.precision,
        });
    }

    /// The model is ready: the stack and embeddings are sent to it, the size follows it.
    pub(crate) fn model_loaded(
        &mut self,
        info: Box<CheckpointInfo>,
        device: DeviceSpec,
        precision: Precision,
    ) {
        self.settings.remember_model(info.path.clone());
        self.studio.model_before = None;
        let native = info.native_size();
        let previous = self
            .studio
            .info()
            .map_or(self.settings.native_size, CheckpointInfo::native_size);
        // A size still at the previous model's native square follows the new model; a chosen
        // size stays. The first run takes the shipped model's own size.
        let s = &mut self.settings;
        if std::mem::take(&mut self.take_native_size)
            || (s.width == previous && s.height == previous)
        {
            (s.width, s.height) = (native, native);
        }
        s.native_size = native;
        // The counter counts against this model's tokenizer length.
        self.studio.tokenizer = self
            .studio
            .tokenizer
            .take()
            .and_then(|t| t.with_max_length(info.config.tokenizer_max_length).ok());
        self.views.prompt.recount();
        self.studio.model = ModelStatus::Loaded {
            info,
            device,
            precision,
        };
        for c in self.views.loras.commands_for_new_model() {
            self.engine.send(c);
        }
        for c in self.views.embeddings.commands_for_new_model() {
            self.engine.send(c);
        }
    }

    /// Adds a LoRA row (sent to the engine once a model is ready).
    pub fn add_lora(&mut self, path: PathBuf, weight: f32) {
        match self.views.loras.add(path.clone(), weight) {
            Some(command) if self.studio.model_ready() => {
                self.engine.send(command);
            }
            Some(_) => {}
            None => self.notify(
                "This LoRA is already in the stack",
                path.display().to_string(),
                false,
            ),
        }
    }

    /// Loads an embedding row (sent to the engine once a model is ready).
    pub fn add_embedding(&mut self, path: PathBuf, token: Option<String>) {
        match self.views.embeddings.add(path.clone(), token) {
            Some(command) if self.studio.model_ready() => {
                self.engine.send(command);
            }
            Some(_) => {}
            None => self.notify(
                "This embedding is already loaded",
                path.display().to_string(),
                false,
            ),
        }
    }

    /// Restores the settings an image records (Kiln: everything, LoRAs, embeddings and model
    /// included; other tools: what Kiln understands) — the engine's reading of it
    /// ([`GenerationSpec::from_image`]).
    pub fn reuse(&mut self, info: &ImageInfo) {
        let spec = GenerationSpec::from_image(info);
        let exact = info.source == Source::Kiln && info.recipe.is_some();
        self.settings.reuse(&spec, exact);
        if !exact {
            return;
        }
        match spec.model.clone() {
            // A recipe of another model: open it only if it is still there (asked off the UI
            // thread; the stack follows the answer).
            Some(path) if self.settings.model_path.as_ref() != Some(&path) => {
                self.io.send(IoRequest::ModelExists {
                    path,
                    then: AfterCheck::Reuse(Box::new(spec)),
                })
            }
            _ => self.reuse_stack(&spec, None),
        }
    }

    /// The LoRA stack and embeddings of a reused Kiln recipe; `model` is its model when that
    /// is another one that exists (it is opened, and the stack applied once it is loaded),
    /// None to apply them to the current model.
    pub(crate) fn reuse_stack(&mut self, spec: &GenerationSpec, model: Option<PathBuf>) {
        let loras: Vec<LoraSetting> = spec
            .loras
            .iter()
            .map(|l| LoraSetting {
                path: l.path.clone(),
                weight: l.weight,
                enabled: true,
            })
            .collect();
        let embeddings: Vec<EmbeddingSetting> = spec
            .embeddings
            .iter()
            .map(|e| EmbeddingSetting {
                path: e.path.clone(),
                token: e.token.clone(),
            })
            .collect();
        if model.is_some()
            && let Some(training) = self.studio.training
        {
            // Its model cannot load now; the stack stays as it is rather than half-applied.
            return self.notify(
                "Cannot reuse this recipe's model now",
                format!(
                    "A training run (job {training}) is using the engine; the prompt and settings were reused, the model and its LoRA stack were not. Reuse it again when the run ends."
                ),
                true,
            );
        }
        let ready = self.studio.model_ready() && model.is_none();
        if loras != self.views.loras.settings() {
            for c in self.views.loras.replace(loras) {
                if ready {
                    self.engine.send(c);
                }
            }
        }
        if embeddings != self.views.embeddings.settings() {
            for c in self.views.embeddings.replace(embeddings) {
                if ready {
                    self.engine.send(c);
                }
            }
        }
        if let Some(model) = model {
            self.load_model(model);
        }
    }

    /// What to do with a dropped file or folder, once the I/O thread said what it is.
    pub(crate) fn dropped(&mut self, path: PathBuf, what: Dropped) {
        match what {
            Dropped::DatasetFolder => self.actions.push(Action::Dataset(path)),
            Dropped::Checkpoint => self.load_model(path),
            Dropped::Lora => self.add_lora(path, 1.0),
            Dropped::Embedding => self.add_embedding(path, None),
            Dropped::Parameters(info) => {
                self.reuse(&info);
                self.notify(
                    "Parameters restored",
                    format!("from {}", path.display()),
                    false,
                );
            }
            Dropped::Image => self.settings.set_init_image(Some(path)),
            Dropped::Unsupported(family) => self.notify(
                "Kiln cannot run this checkpoint",
                format!("{}: {family}", path.display()),
                true,
            ),
            Dropped::Unknown => self.notify(
                "Not a checkpoint, LoRA or embedding",
                path.display().to_string(),
                true,
            ),
            Dropped::Unreadable(e) => self.notify("Cannot open the dropped file", e, true),
        }
    }

    /// Asks the engine to validate the dataset's `files`.
    pub(crate) fn validate_dataset(&mut self, files: Vec<PathBuf>) {
        self.engine.send(Command::ValidateDataset {
            files,
            options: dataset_options(&self.settings.train),
        });
    }

    /// Scans the models folder again.
    pub fn rescan_models(&mut self) {
        if let Some(n) = self.views.models.rescan(&self.settings.models_dir) {
            self.views.notifications.push(n);
        }
    }

    /// Starts training (from `resume` when given) on a thread of the engine's.
    fn start_training(&mut self, resume: Option<PathBuf>) {
        if self.studio.training.is_some() || self.studio.job.is_some() {
            return;
        }
        let Some(config) = training_config(&self.settings) else {
            return self.notify(
                "Cannot train yet",
                "Load a model and drop a folder of images first.",
                true,
            );
        };
        let (job, cancel, pause) = self.engine.start_training(config, resume.clone());
        self.studio.training = Some(job);
        self.views
            .train
            .started(job, cancel, pause, self.settings.train.method, resume);
    }

    fn save_as(&mut self) {
        let Some(shown) = self
            .views
            .canvas
            .shown
            .as_ref()
            .filter(|s| s.recipe.is_some())
        else {
            return self.notify(
                "Nothing to save yet",
                "Generate an image (or pick one in the gallery) first.",
                false,
            );
        };
        // The image and its recipe are in memory: saving needs neither the output folder's
        // copy nor its name (suggested when there is one). They are kept now: the picker
        // answers frames later, when another image may be shown.
        let name = shown
            .path
            .as_deref()
            .map_or_else(|| "kiln.png".to_owned(), super::views::file_name);
        if let Some(recipe) = &shown.recipe {
            self.pending_save = Some((shown.image.clone(), recipe.clone()));
        }
        self.pick_with_name(Pick::SaveImage, &name);
    }

    /// Asks for a path for `pick` (the system's dialog, or the built-in picker where there is
    /// none) and then carries it out.
    pub fn pick(&mut self, pick: Pick) {
        self.pick_with_name(pick, "");
    }

    fn pick_with_name(&mut self, pick: Pick, default_name: &str) {
        let s = &self.settings;
        let start = match pick {
            Pick::OpenModel | Pick::OpenModelFolder | Pick::AddLora | Pick::AddEmbedding => {
                Some(s.models_dir.clone())
            }
            Pick::InitImage | Pick::ReadImage | Pick::SaveImage => Some(s.output_dir.clone()),
            Pick::Dataset => s
                .train
                .data
                .as_deref()
                .and_then(Path::parent)
                .map(Path::to_owned),
            Pick::ModelsFolder => s.models_dir.parent().map(Path::to_owned),
        };
        match self.dialogs.ask(pick, start.as_deref(), default_name) {
            Asked::Picked(path) => self.picked(pick, path),
            Asked::Cancelled => {}
            Asked::ShowPicker(picker) => self.picker = Some(picker),
        }
    }

    /// Carries out `pick` with the path the user chose.
    pub(crate) fn picked(&mut self, pick: Pick, path: PathBuf) {
        match pick {
            Pick::OpenModel | Pick::OpenModelFolder => self.load_model(path),
            Pick::AddLora => self.add_lora(path, 1.0),
            Pick::AddEmbedding => self.add_embedding(path, None),
            Pick::InitImage => self.settings.set_init_image(Some(path)),
            Pick::ReadImage => self.io.send(IoRequest::Classify {
                path,
                restore: true,
            }),
            Pick::Dataset => self.actions.push(Action::Dataset(path)),
            Pick::ModelsFolder => {
                self.settings.models_dir = path;
                self.rescan_models();
            }
            Pick::SaveImage => {
                let Some((image, recipe)) = self.pending_save.take() else {
                    return;
                };
                let (dest, replace) = if path.extension().is_none() {
                    (path.with_extension("png"), false)
                } else {
                    (path, true)
                };
                self.io.send(IoRequest::SaveAs {
                    image,
                    recipe: Box::new(recipe),
                    dest,
                    replace,
                });
            }
        }
    }

    /// Chooses the model to open at start: the remembered one; else (first run) the shipped
    /// model with the sample prompt and its native size; when the remembered model is gone,
    /// the shipped one with a notice.
    pub(crate) fn open_start_model(&mut self) {
        match (
            self.settings.model_path.clone(),
            self.views.models.bundled.clone(),
        ) {
            (Some(path), _) => self.io.send(IoRequest::ModelExists {
                path,
                then: AfterCheck::Start,
            }),
            (None, Some(bundled)) => self.open_bundled(bundled),
            (None, None) => {}
        }
    }

    /// [`KilnApp::open_start_model`] once the I/O thread said whether the remembered model
    /// is still there.
    pub(crate) fn open_start_model_checked(&mut self, path: PathBuf, exists: bool) {
        // The user opened a model meanwhile: theirs stays.
        if self.settings.model_path.as_ref() != Some(&path)
            || !matches!(self.studio.model, ModelStatus::None)
        {
            return;
        }
        match self.views.models.bundled.clone() {
            Some(bundled) if !exists => {
                self.settings.recent_models.retain(|p| p != &path);
                self.notify(
                    "The last model is gone",
                    format!(
                        "{} no longer exists; opened the built-in model {} instead.",
                        path.display(),
                        kiln_hub::install::NAME
                    ),
                    false,
                );
                self.open_bundled(bundled);
            }
            // There, or no shipped model to fall back to (loading says what is missing).
            _ => self.load_model(path),
        }
    }

    fn open_bundled(&mut self, path: PathBuf) {
        if self.settings.prompt.trim().is_empty() {
            self.settings.prompt = kiln_hub::install::SAMPLE_PROMPT.to_owned();
            self.take_native_size = true;
        }
        self.load_model(path);
    }

    /// A failed command, routed by what it was doing.
    pub(crate) fn failed(&mut self, f: Failure) {
        let message = f.message();
        if f.kind == ErrorKind::DeviceLost {
            // The GPU is gone: offer the CPU (a training run's loss also ends the run).
            if let (Operation::Train, Some(job)) = (f.op, f.job)
                && self.views.train.is_running(job)
            {
                self.engine.finished(job);
                self.views.train.ended(job, Err(message.clone()));
                self.training_over();
            }
            return self.device_lost(message);
        }
        match (f.op, f.job, f.adapter) {
            (Operation::LoadModel, ..) => return self.load_failed(message),
            (Operation::Generate | Operation::Compare, Some(job), _) => self.job_ended(job),
            (Operation::AddLora, _, Some(id)) => return self.views.loras.on_refused(id, message),
            (Operation::LoadEmbedding, _, Some(id)) => {
                return self
                    .views
                    .embeddings
                    .on_loaded(id, EmbeddingStatus::Failed(message));
            }
            (Operation::Train, Some(job), _) if self.views.train.is_running(job) => {
                self.engine.finished(job);
                self.views.train.ended(job, Err(message));
                return self.training_over();
            }
            (Operation::EstimateTraining, Some(job), _) => self.views.train.estimated(job, None),
            // The verdicts stay as they were; the next change of options asks again.
            (Operation::ValidateDataset, ..) => self.views.train.validation_failed(),
            _ => {}
        }
        self.notify(format!("Error while {}", f.op.describe()), message, true);
    }

    /// A model did not load. The engine kept the model loaded before (its
    /// [`kiln_engine::protocol::Event::ModelKept`] or reload came first), and that stays in
    /// use; with none before (the first load, the remembered model at start-up) the shipped
    /// model is opened instead, saying so — unless it was the one that failed.
    fn load_failed(&mut self, message: String) {
        let title = "Could not load the model";
        if let Some(info) = self.studio.info() {
            let kept = info.path.display().to_string();
            return self.notify(title, format!("{message}. Still using {kept}."), true);
        }
        let failed = self.studio.loading().map(Path::to_path_buf);
        self.studio.model = ModelStatus::Failed(message.clone());
        self.studio.model_before = None;
        match (self.views.models.bundled.clone(), failed) {
            (Some(bundled), Some(failed)) if failed != bundled => {
                self.notify(
                    title,
                    format!(
                        "{message}. Opened the built-in model {} instead.",
                        kiln_hub::install::NAME
                    ),
                    true,
                );
                self.open_bundled(bundled);
            }
            _ => self.notify(title, message, true),
        }
    }

    /// The engine panicked in `op`: it dropped its model, which is loaded again — except
    /// after a panic while loading, which would come back every time, and after the GPU was
    /// lost, where the user is offered the CPU instead. `kind` says whether the device ran
    /// out of memory or was lost (the message then says what to do).
    pub(crate) fn crashed(
        &mut self,
        op: Operation,
        job: Option<JobId>,
        message: String,
        kind: Option<ErrorKind>,
    ) {
        if let Some(job) = job {
            self.abandoned(op, job);
        }
        if kind == Some(ErrorKind::DeviceLost) {
            self.studio.job = None;
            self.studio.model = ModelStatus::None;
            return self.device_lost(message);
        }
        let oom = kind == Some(ErrorKind::OutOfMemory);
        match op {
            Operation::Train => {
                if let Some(job) = job {
                    self.views
                        .train
                        .ended(job, Err(format!("The training run crashed: {message}")));
                }
                self.notify("The training run crashed", message, true);
                self.training_over();
            }
            Operation::LoadModel => {
                let path = self
                    .studio
                    .loading()
                    .map_or_else(PathBuf::new, Path::to_path_buf);
                self.studio.model_before = None;
                self.studio.model =
                    ModelStatus::Failed(format!("the engine crashed loading it: {message}"));
                self.notify(
                    if oom {
                        "The device ran out of memory loading the model"
                    } else {
                        "The engine crashed while loading the model"
                    },
                    format!(
                        "{message}. {} was not loaded again; open it or another model when you are ready.",
                        path.display()
                    ),
                    true,
                );
            }
            _ => {
                self.studio.job = None;
                self.studio.model = ModelStatus::None;
                // While a training run keeps the compute, the model loads once it ends.
                let training = self.studio.training.is_some();
                self.notify(
                    if oom {
                        "The device ran out of memory; the engine was restarted"
                    } else {
                        "The engine crashed and was restarted"
                    },
                    if training {
                        format!(
                            "{message}. The model will be loaded again when the training run ends."
                        )
                    } else {
                        format!("{message}. The model is being loaded again.")
                    },
                    true,
                );
                let path = self.settings.model_path.clone();
                if training {
                    self.studio.reload_after_training = path;
                } else if let Some(path) = path {
                    self.load_model(path);
                }
            }
        }
    }

    /// The GPU was lost: nothing more runs on it, so the model is not loaded there again; the
    /// user is offered the CPU ([`Action::UseCpu`]).
    fn device_lost(&mut self, message: String) {
        self.views.notifications.push(
            Notification::new("The GPU stopped working", message, true)
                .offering("Continue on the CPU", Offer::UseCpu),
        );
    }

    /// Job `job` of `op` will not finish (refused or crashed): the running generation or the
    /// pending estimate it was is cleared.
    fn abandoned(&mut self, op: Operation, job: JobId) {
        self.job_ended(job);
        if op == Operation::EstimateTraining {
            self.views.train.estimated(job, None);
        }
    }

    /// The training run no longer holds the engine: a model the engine lost meanwhile is
    /// loaded again.
    pub(crate) fn training_over(&mut self) {
        self.studio.training = None;
        if let Some(path) = self.studio.reload_after_training.take() {
            self.load_model(path);
        }
    }

    /// The engine refused `op` (of `job`) because training run `training` holds its compute:
    /// what it would have started is undone, and the user told why.
    pub(crate) fn busy(&mut self, op: Operation, job: Option<JobId>, training: JobId) {
        if let Some(job) = job {
            self.abandoned(op, job);
        }
        if op == Operation::LoadModel {
            // The engine did not touch its model.
            self.studio.model = self.studio.model_before.take().unwrap_or_else(|| {
                ModelStatus::Failed("not loaded: a training run is using the engine".into())
            });
        }
        self.notify(
            format!("Cannot start {} now", op.describe()),
            format!(
                "A training run (job {training}) is using the engine; try again when it ends, or stop it in the Train tab."
            ),
            true,
        );
    }

    /// Keyboard shortcuts of the command table.
    pub(crate) fn shortcuts(&mut self, ctx: &egui::Context) {
        for command in UiCommand::ALL {
            if let Some(s) = command.info().shortcut
                && ctx.input_mut(|i| i.consume_shortcut(&s))
            {
                self.actions.push(Action::Ui(command));
            }
        }
    }

    /// Files dropped on the window: the I/O thread tells what each is.
    pub(crate) fn drops(&mut self, ctx: &egui::Context) {
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_owned())
                .collect()
        });
        for path in dropped {
            self.io.send(IoRequest::Classify {
                path,
                restore: false,
            });
        }
    }
}
