//! [`KilnApp`]: the frame loop and event routing. Each frame it routes what the engine and the
//! I/O thread sent to the views they concern, lets every view draw (they queue
//! [`Action`]s), and carries the actions out after the frame ([`super::controller`]).

use std::path::{Path, PathBuf};

use kiln_engine::protocol::{Event, Operation};

use super::actions::Notification;
use super::actions::{Actions, Tab};
use super::api_host::ApiHost;
use super::dialogs::{Dialogs, Pick};
use super::engine_client::{EngineClient, repaint_for};
use super::file_picker::{FilePicker, PickerOutcome};
use super::io::{AfterCheck, Dropped, ImagePurpose, IoRequest, IoResult, IoWorker, ThumbKey};
use super::state::{STORAGE_KEY, Settings, WIDE_WINDOW};
use super::studio::{ModelStatus, Studio};
use super::views::embeddings::EmbeddingStatus;
use super::views::gallery::THUMB;
use super::views::models::InUse;
use super::views::{Ctx, Views, file_name};

/// The studio.
pub struct KilnApp {
    /// Persisted settings.
    pub settings: Settings,
    /// What the views share.
    pub studio: Studio,
    /// The views.
    pub views: Views,
    /// The middle of the window.
    pub tab: Tab,
    /// The engine.
    pub engine: EngineClient,
    pub(crate) io: IoWorker,
    pub(crate) actions: Actions,
    pub(crate) ctx: egui::Context,
    /// The first-run model is loading: take its native size once it is ready.
    pub(crate) take_native_size: bool,
    /// Which file dialogs this desktop has.
    pub dialogs: Dialogs,
    /// The built-in file picker, while it is open.
    pub picker: Option<Box<FilePicker<Pick>>>,
    /// The image and recipe a Save as… asked for, until the dialog answers.
    pub(crate) pending_save: Option<(kiln_engine::image::RgbImage, kiln_engine::metadata::Recipe)>,
    /// The HTTP API, while the window serves it.
    pub api: Option<ApiHost>,
    /// Where the settings are saved ([`super::state::settings_path`] for the real window);
    /// None keeps them in eframe's storage only (tests, a system without a home folder).
    pub settings_file: Option<PathBuf>,
}

impl std::fmt::Debug for KilnApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KilnApp")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl KilnApp {
    /// Builds the app from eframe's creation context (restoring settings from storage),
    /// with what the command line asked for (`start`).
    pub fn new(cc: &eframe::CreationContext<'_>, start: &super::start::StartArgs) -> Self {
        let settings_file = super::state::settings_path();
        let mut settings: Settings = settings_file
            .as_deref()
            .and_then(Settings::load)
            .or_else(|| cc.storage.and_then(|s| eframe::get_value(s, STORAGE_KEY)))
            .unwrap_or_default();
        start.apply(&mut settings);
        let mut app = Self::with_settings(&cc.egui_ctx, settings);
        app.settings_file = settings_file;
        if start.dataset.is_some() {
            app.tab = Tab::Train;
        }
        app
    }

    /// Builds the app with `settings`, loading the remembered model (or, on a first run, the
    /// shipped one: [`kiln_hub::install::bundled_model`]).
    pub fn with_settings(ctx: &egui::Context, settings: Settings) -> Self {
        Self::with_bundled(ctx, settings, kiln_hub::install::bundled_model())
    }

    /// Builds the app with `settings` and `bundled` as the shipped model (tests start here).
    pub fn with_bundled(ctx: &egui::Context, settings: Settings, bundled: Option<PathBuf>) -> Self {
        let repaint = repaint_for(ctx);
        let views = Views::new(&settings, bundled, repaint.clone());
        let mut app = KilnApp {
            engine: EngineClient::new(repaint.clone()),
            io: IoWorker::spawn(repaint),
            settings,
            studio: Studio::default(),
            views,
            tab: Tab::Canvas,
            actions: Actions::default(),
            ctx: ctx.clone(),
            take_native_size: false,
            dialogs: Dialogs::detect(),
            picker: None,
            pending_save: None,
            api: None,
            settings_file: None,
        };
        if app.settings.serve_api {
            app.actions.push(super::actions::Action::ServeApi(true));
        }
        // The model first: the I/O thread answers in order, and a big gallery takes a while.
        app.open_start_model();
        app.io.send(IoRequest::ScanGallery {
            dir: app.settings.output_dir.clone(),
        });
        app.rescan_models();
        if let Some(dir) = app.settings.train.data.clone() {
            app.io.send(IoRequest::ListDataset { dir });
        }
        app
    }

    /// Notifies the user (bottom bar).
    pub fn notify(&mut self, title: impl Into<String>, details: impl Into<String>, error: bool) {
        self.views
            .notifications
            .push(Notification::new(title, details, error));
    }

    /// Handles every waiting engine event and I/O answer, and carries out queued actions.
    pub fn drain_events(&mut self) {
        self.serve_api_commands();
        for event in self.engine.drain() {
            self.on_event(event);
        }
        if let Some(api) = &mut self.api {
            api.embeddings_changed(
                self.views
                    .embeddings
                    .rows()
                    .iter()
                    .filter_map(|r| match &r.status {
                        EmbeddingStatus::Loaded {
                            token,
                            vectors,
                            width,
                        } => Some((token.clone(), *vectors, *width)),
                        _ => None,
                    })
                    .collect(),
            );
        }
        for result in self.io.drain() {
            self.on_io(result);
        }
        let (notice, rescan) = self.views.models.poll();
        if let Some(n) = notice {
            self.views.notifications.push(n);
        }
        if rescan {
            self.rescan_models();
        }
        self.run_actions();
    }

    fn on_event(&mut self, event: Event) {
        if let Some(api) = &mut self.api
            && api.offer(&event)
        {
            return self.on_api_event(event);
        }
        let ctx = self.ctx.clone();
        let v = &mut self.views;
        match event {
            Event::ModelLoading { path } => self.studio.start_loading(path),
            // The new model failed (its failure follows); the one before is still there.
            Event::ModelKept {
                info,
                device,
                precision,
            } => {
                self.studio.model_before = None;
                self.studio.model = ModelStatus::Loaded {
                    info,
                    device,
                    precision,
                };
            }
            Event::ModelLoaded {
                info,
                device,
                precision,
                device_notice,
            } => {
                if let Some(n) = device_notice {
                    self.notify("Running on the CPU", n, false);
                }
                if let Some(api) = &self.api {
                    api.model_changed(Some(&info.path));
                }
                self.model_loaded(info, device, precision)
            }
            Event::Progress {
                job,
                step,
                total,
                preview,
            } => {
                if let Some(j) = self.studio.job.as_mut().filter(|j| j.id == job) {
                    (j.step, j.total) = (step, total);
                }
                if let Some(p) = preview {
                    v.canvas.show(&ctx, p, None, None);
                }
            }
            Event::Generated { job, images } => {
                if let Some(j) = self.studio.job.as_mut().filter(|j| j.id == job) {
                    j.made += images.len();
                }
                if let Some(g) = images.last() {
                    self.studio.last_seed = Some(g.recipe.seed);
                }
                self.show_finished(images);
            }
            Event::Done {
                job, random_seed, ..
            } => {
                self.job_ended(job);
                // Generating works: earlier failures of it are fixed.
                self.views.notifications.resolve(&[
                    &format!("Error while {}", Operation::Generate.describe()),
                    "Cannot generate now",
                    "Nothing to compare",
                ]);
                if random_seed && let Some(seed) = self.studio.last_seed {
                    self.settings.seed = seed;
                }
            }
            Event::Compared {
                job,
                baseline,
                adapted,
            } => {
                self.job_ended(job);
                // The pair stays in the comparison until "Save both".
                for (side, g, label) in [
                    (0, baseline, "baseline (adapters off)"),
                    (1, adapted, "adapted (current stack)"),
                ] {
                    self.views.compare.set_side(
                        &ctx,
                        side,
                        g.image,
                        label.to_owned(),
                        Some(g.recipe),
                    );
                }
                self.tab = Tab::Compare;
            }
            Event::Cancelled { job } if v.train.is_running(job) => {
                self.engine.finished(job);
                self.views.train.cancelled(job);
                self.training_over();
            }
            Event::Cancelled { job } => {
                self.job_ended(job);
                self.notify(
                    "Cancelled",
                    "The generation was stopped; nothing was saved.",
                    false,
                );
            }
            Event::LoraAdded { id, report } => v.loras.on_added(id, report),
            Event::LoraApplied { id, weight, .. } => v.loras.on_applied(id, weight),
            Event::EmbeddingLoaded {
                id,
                token,
                vectors,
                width,
            } => v.embeddings.on_loaded(
                id,
                EmbeddingStatus::Loaded {
                    token,
                    vectors,
                    width,
                },
            ),
            Event::DatasetValidated { report } => v.train.validated(*report),
            Event::Training { job, event } => v.train.on_event(&ctx, job, *event),
            Event::TrainingEstimate {
                job,
                seconds_per_step,
            } => v.train.estimated(job, Some(seconds_per_step)),
            Event::TrainingFinished { job, output } => {
                self.engine.finished(job);
                self.views.train.ended(job, Ok(output));
                self.training_over();
                // The new adapter is listed where the Models tab and the LoRA picker look.
                self.rescan_models();
            }
            Event::Failed(f) => self.failed(f),
            Event::Busy { op, job, training } => self.busy(op, job, training),
            Event::Crashed {
                op,
                job,
                message,
                kind,
            } => self.crashed(op, job, message, kind),
        }
    }

    /// Finished images (the window's jobs' and the API's): each on the canvas, and saved to
    /// the output folder, where the gallery lists it.
    pub(crate) fn show_finished(&mut self, images: Vec<kiln_engine::protocol::GeneratedImage>) {
        for g in images {
            self.io.send(IoRequest::SaveOutput {
                image: g.image.clone(),
                recipe: Box::new(g.recipe.clone()),
                dir: self.settings.output_dir.clone(),
                thumb: THUMB,
            });
            self.views.canvas.finished(&self.ctx, g.image, g.recipe);
        }
    }

    fn on_io(&mut self, result: IoResult) {
        let ctx = self.ctx.clone();
        let v = &mut self.views;
        match result {
            IoResult::Saved {
                path,
                recipe,
                thumb,
            } => {
                v.canvas.saved(&recipe, &path);
                v.gallery.insert(&ctx, path, *recipe, thumb);
            }
            IoResult::SaveFailed(e) => self.notify("Cannot save the image", e, true),
            IoResult::Gallery(result) => v.gallery.listed(result),
            IoResult::Thumbnail {
                key: ThumbKey::Gallery(path),
                image,
            } => v.gallery.thumbnail(&ctx, &path, image),
            IoResult::Thumbnail {
                key: ThumbKey::Dataset(i),
                image,
            } => v.train.thumbnail(&ctx, i, image),
            IoResult::Image {
                purpose,
                path,
                result: Ok((image, recipe)),
            } => match purpose {
                ImagePurpose::Show => v.canvas.show(&ctx, image, Some(path), recipe.map(|r| *r)),
                ImagePurpose::Compare(side) => {
                    v.compare
                        .set_side(&ctx, side, image, file_name(&path), None)
                }
            },
            IoResult::Image { result: Err(e), .. } => self.notify("Cannot open the image", e, true),
            IoResult::Classified {
                path,
                what: Dropped::Parameters(info),
                ..
            } => self.dropped(path, Dropped::Parameters(info)),
            // Restore from image… wants parameters only: anything else is said, not used.
            IoResult::Classified {
                path,
                restore: true,
                ..
            } => self.notify(
                "No parameters in this image",
                format!(
                    "{} holds no Kiln or AUTOMATIC1111 parameters to restore.",
                    path.display()
                ),
                true,
            ),
            IoResult::Classified { path, what, .. } => self.dropped(path, what),
            IoResult::Dataset { dir, result } => match result {
                Ok(files) => self.validate_dataset(files),
                Err(e) => self.notify(
                    "Cannot read the dataset folder",
                    format!("{}: {e}", dir.display()),
                    true,
                ),
            },
            IoResult::CaptionWritten {
                index,
                text,
                result,
            } => match result {
                Ok(()) => v.train.caption_saved(index, text),
                Err(e) => self.notify("Cannot save the caption", e, true),
            },
            IoResult::SavedAs(Err(e)) => self.notify("Cannot save the image", e, true),
            IoResult::SavedAs(Ok(path)) => {
                self.views.notifications.resolve(&["Cannot save the image"]);
                self.notify("Image saved", path.display().to_string(), false)
            }
            IoResult::FolderOpened => {}
            IoResult::FolderNotOpened { dir, why } => {
                self.ctx.copy_text(dir.display().to_string());
                self.notify(
                    "Cannot open a file manager",
                    format!(
                        "{why}. The folder is {} (its path is on the clipboard).",
                        dir.display()
                    ),
                    true,
                );
            }
            IoResult::RunOnDisk { config, run } => v.train.run_on_disk(&config, *run),
            IoResult::ModelExists { path, exists, then } => match then {
                AfterCheck::Reuse(spec) => self.reuse_stack(&spec, exists.then_some(path)),
                AfterCheck::Start => self.open_start_model_checked(path, exists),
            },
        }
    }
}

impl eframe::App for KilnApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.drops(ctx);
        self.shortcuts(ctx);
        self.drain_events();
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let Views {
            top_bar,
            prompt,
            sampler,
            loras,
            embeddings,
            canvas,
            compare,
            gallery,
            train,
            models,
            notifications,
        } = &mut self.views;
        let mut chips: Vec<_> = embeddings
            .chips()
            .into_iter()
            .chain(loras.chips())
            .collect();
        // One chip per word, however many adapters answer to it.
        let mut seen = std::collections::HashSet::new();
        chips.retain(|c| seen.insert(c.word.clone()));
        let mut cx = Ctx {
            settings: &mut self.settings,
            studio: &self.studio,
            actions: &mut self.actions,
        };
        top_bar.ui(ui, &mut cx);
        notifications.ui(ui, cx.actions);
        let (stack, embedded) = (loras.summary(), embeddings.loaded());
        let wide = ui.ctx().content_rect().width() >= WIDE_WINDOW;
        let mut gallery_open = cx.settings.show_gallery.unwrap_or(wide);
        // Side panels have minimums that leave the middle at least ~300 points at the
        // smallest window (800 × 500); the gallery folds away.
        egui::Panel::left("settings")
            .resizable(true)
            .default_size(if wide { 360.0 } else { 300.0 })
            .size_range(240.0..=560.0)
            .show(ui, |ui| {
                // Generate and Cancel stay in sight whatever the window's height: the action
                // bar is pinned below the scrolling settings.
                egui::Panel::bottom("actions")
                    .resizable(false)
                    .show(ui, |ui| {
                        sampler.action_bar(ui, &mut cx, stack, embedded);
                    });
                egui::ScrollArea::vertical().show(ui, |ui| {
                    prompt.ui(ui, &mut cx, &chips);
                    ui.separator();
                    sampler.ui(ui, &mut cx);
                    ui.separator();
                    loras.ui(ui, &mut cx);
                    ui.separator();
                    embeddings.ui(ui, &mut cx);
                });
            });
        let was_open = gallery_open;
        egui::Panel::right("gallery")
            .resizable(true)
            .default_size(240.0)
            .size_range(150.0..=480.0)
            .show_collapsible(ui, &mut gallery_open, |ui| gallery.ui(ui, &mut cx));
        let tab = &mut self.tab;
        egui::CentralPanel::default().show(ui, |ui| {
            ui.horizontal_wrapped(|ui| {
                ui.selectable_value(tab, Tab::Canvas, "Canvas");
                ui.selectable_value(tab, Tab::Compare, "Compare");
                ui.selectable_value(tab, Tab::Train, "Train");
                ui.selectable_value(tab, Tab::Models, "Models");
                ui.separator();
                ui.toggle_value(&mut gallery_open, "Gallery")
                    .on_hover_text("Show or hide the gallery panel");
            });
            if gallery_open != was_open {
                cx.settings.show_gallery = Some(gallery_open);
                ui.ctx().request_repaint();
            }
            match tab {
                Tab::Canvas => canvas.ui(ui, &mut cx),
                Tab::Compare => compare.ui(ui, &mut cx, stack.nothing_to_compare()),
                Tab::Train => {
                    let stack: Vec<&Path> = loras.rows().iter().map(|r| r.path.as_path()).collect();
                    train.ui(ui, &mut cx, &stack);
                }
                Tab::Models => {
                    let in_use = InUse {
                        model: match &cx.studio.model {
                            ModelStatus::Loading(p) => Some(p.as_path()),
                            ModelStatus::Loaded { info, .. } => Some(info.path.as_path()),
                            _ => None,
                        },
                        loras: loras.rows().iter().map(|r| r.path.as_path()).collect(),
                        embeddings: embeddings
                            .rows()
                            .iter()
                            .filter(|r| embeddings.uses(&r.path))
                            .map(|r| r.path.as_path())
                            .collect(),
                    };
                    models.ui(ui, &mut cx, &in_use);
                }
            }
        });
        if let Some(picker) = &mut self.picker {
            match picker.show(ui.ctx()) {
                PickerOutcome::Open => {}
                PickerOutcome::Cancelled => self.picker = None,
                PickerOutcome::Picked(pick, path) => {
                    self.picker = None;
                    self.picked(pick, path);
                }
            }
        }
        self.run_actions();
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        self.settings.loras = self.views.loras.settings();
        self.settings.embeddings = self.views.embeddings.settings();
        match &self.settings_file {
            Some(path) => {
                if let Err(e) = self.settings.save(path) {
                    tracing::warn!("settings not saved: {e}");
                }
            }
            None => eframe::set_value(storage, STORAGE_KEY, &self.settings),
        }
    }

    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        if let Some(api) = self.api.take() {
            api.stop();
        }
        self.engine.cancel();
        self.views.models.cancel_download();
        if let Some(run) = &self.views.train.run {
            run.cancel.cancel();
        }
    }
}
