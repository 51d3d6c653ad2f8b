//! The Train tab: the dataset dropped on the window as a table (thumbnail, file, editable
//! caption saved to its `.txt`, size, the engine's validation status, a summary line), the
//! method and its options with tooltips, the plan, Start / Pause / Resume / Stop, and the
//! monitor — loss (raw and smoothed) and learning rate against step, step/epoch, it/s, ETA,
//! gradient norm, sample images with their step, the checkpoint log — and, when it ends, what
//! happened and one-click use of the result. Thumbnails, captions and the newest checkpoint
//! are read and written on the I/O thread.

use std::path::PathBuf;

use egui_plot::{Legend, Line, Plot, PlotPoints};
use kiln_engine::job::{CancelToken, PauseToken};
use kiln_engine::protocol::Command;
use kiln_engine::protocol::JobId;
use kiln_engine::training::dataset::{DatasetOptions, DatasetReport, Issue, Plan, common_token};
use kiln_engine::training::lora::LoraConfig;
use kiln_engine::training::run::TrainingEvent;
use kiln_engine::training::suggest::{SuggestFor, Suggestion, suggest};
use kiln_engine::training::textual_inversion::TiConfig;
use kiln_engine::training::trainer::{Method, TrainingConfig};

use super::{Ctx, Thumb};
use crate::gui::actions::{Action, Tab};
use crate::gui::commands::UiCommand;
use crate::gui::io::{IoRequest, RunOnDisk, ThumbKey, to_color_image};
use crate::gui::state::{Settings, TrainMethod, TrainSettings};

/// Dataset thumbnail edge in pixels.
const THUMB: u32 = 48;
/// Dataset thumbnails asked of the I/O thread at once.
const THUMBS_IN_FLIGHT: usize = 8;

/// Last step, epoch, grad norm, it/s and ETA of a run.
#[derive(Debug, Clone, Copy)]
pub struct LastStep {
    /// Steps done.
    pub step: usize,
    /// Steps in all.
    pub total: usize,
    /// Epoch.
    pub epoch: usize,
    /// Gradient norm.
    pub grad_norm: f64,
    /// Steps per second.
    pub rate: f64,
    /// Seconds left.
    pub eta: f64,
}

/// A training run shown in the monitor.
pub struct TrainRun {
    /// Its job id.
    pub job: JobId,
    /// Stops it.
    pub cancel: CancelToken,
    /// Pauses it.
    pub pause: PauseToken,
    /// What it trains.
    pub method: TrainMethod,
    /// The plan, once validated.
    pub plan: Option<Plan>,
    /// (step, loss).
    pub loss: Vec<[f64; 2]>,
    /// (step, smoothed loss).
    pub smoothed: Vec<[f64; 2]>,
    /// (step, learning rate).
    pub lr: Vec<[f64; 2]>,
    /// The last step.
    pub last: Option<LastStep>,
    /// Sample images: (step, texture).
    pub samples: Vec<(usize, egui::TextureHandle)>,
    /// Checkpoints written: (step, file).
    pub checkpoints: Vec<(usize, PathBuf)>,
    /// The checkpoint it continues (None: a fresh run).
    pub resumed_from: Option<PathBuf>,
    /// The step it started from (0, or the checkpoint's).
    pub from_step: usize,
    /// Still running.
    pub running: bool,
    /// How it ended, if it did.
    pub outcome: Option<Result<PathBuf, String>>,
}

/// The Train tab's state.
#[derive(Default)]
pub struct TrainView {
    /// The validated dataset.
    pub report: Option<DatasetReport>,
    /// Editable captions, one per report entry.
    pub captions: Vec<String>,
    /// Thumbnails, one per report entry.
    pub thumbs: Vec<Thumb>,
    /// The current or last run.
    pub run: Option<TrainRun>,
    /// Measured seconds per step (from "Estimate time").
    pub estimate: Option<f64>,
    /// The running measurement's job.
    pub estimating: Option<JobId>,
    /// What the run the options name already left on disk (the output folder and name it
    /// was looked up for, and what was found).
    on_disk: Option<((PathBuf, String), RunOnDisk)>,
    /// What the last lookup was for.
    asked: Option<(PathBuf, String)>,
    /// "A run of this name exists": the question asked before a new run takes the name.
    pub confirm: Option<RunOnDisk>,
    /// A validation with these changed options (resolution, …) is on its way.
    revalidating: Option<DatasetOptions>,
    /// The options the last validation failed for (not asked again until they change).
    failed_for: Option<DatasetOptions>,
}

/// What the user answered when a new run's name was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameChoice {
    /// Start afresh under the name (the old checkpoints are set aside; the result is replaced).
    Overwrite,
    /// Start under the first free name.
    KeepBoth,
    /// Do not start.
    Cancel,
}

impl std::fmt::Debug for TrainView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainView").finish_non_exhaustive()
    }
}

fn status(issues: &[Issue]) -> String {
    if issues.is_empty() {
        return "ok".into();
    }
    // A skipped image shows only why it is skipped.
    let skipping: Vec<&Issue> = issues.iter().filter(|i| i.skips(true)).collect();
    let shown: Vec<&Issue> = if skipping.is_empty() {
        issues.iter().collect()
    } else {
        skipping
    };
    shown
        .into_iter()
        .map(|i| match i {
            Issue::Unreadable { .. } => "corrupt (skipped)".to_owned(),
            Issue::TooSmall { width, height } => format!("too small {width}×{height} (upscaled)"),
            Issue::MissingCaption => "no caption".to_owned(),
            Issue::Duplicate { .. } => "duplicate (skipped)".to_owned(),
            Issue::LongCaption { tokens } => format!("caption {tokens} tokens"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a run of a name left in `output`, in words.
fn describe_run(disk: &RunOnDisk, output: &std::path::Path) -> String {
    let mut parts = Vec::new();
    if disk.existing.result.is_some() {
        parts.push("its result".to_owned());
    }
    match (disk.existing.checkpoints.len(), &disk.latest) {
        (0, _) => {}
        (n, Some(c)) => parts.push(format!(
            "{n} checkpoint{} (newest at step {})",
            if n == 1 { "" } else { "s" },
            c.step
        )),
        (n, None) => parts.push(format!("{n} checkpoint{}", if n == 1 { "" } else { "s" })),
    }
    format!(
        "{} {} in {}. A new run under this name would mix with it.",
        capitalised(&parts.join(" and ")),
        if parts.len() > 1 { "are" } else { "is" },
        output.display()
    )
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// The dataset options the Train tab's settings describe.
pub fn dataset_options(t: &TrainSettings) -> DatasetOptions {
    DatasetOptions {
        resolution: t.resolution,
        upscale_small: true,
        default_caption: t.default_caption.clone(),
        random_crop: false,
        flip: t.flip,
        buckets: t.buckets,
        repeats: t.repeats,
        image_repeats: t.image_repeats.clone(),
    }
}

/// The training configuration the settings describe (None without a model or a dataset).
pub fn training_config(settings: &Settings) -> Option<TrainingConfig> {
    let t = &settings.train;
    let method = match t.method {
        TrainMethod::Lora => Method::Lora(LoraConfig {
            rank: t.rank,
            alpha: t.alpha,
            ..Default::default()
        }),
        TrainMethod::TextualInversion => Method::TextualInversion(TiConfig {
            token: t.token.clone(),
            vectors: t.vectors,
            init_word: t.init_word.clone(),
        }),
    };
    let sample_prompts = if t.sample_prompt.trim().is_empty() {
        vec![]
    } else {
        vec![t.sample_prompt.clone()]
    };
    Some(TrainingConfig {
        model: settings.model_path.clone()?,
        data: t.data.clone()?,
        output: settings.training_output(),
        name: t.name.clone(),
        method,
        dataset: dataset_options(t),
        max_steps: Some(t.steps),
        batch_size: t.batch,
        learning_rate: t.learning_rate,
        snr_gamma: (t.snr_gamma > 0.0).then_some(t.snr_gamma),
        seed: t.seed,
        checkpoint_every: t.checkpoint_every,
        sample_every: if sample_prompts.is_empty() {
            0
        } else {
            t.sample_every
        },
        export_peft: t.export_peft,
        trigger: (!t.trigger.trim().is_empty()).then(|| t.trigger.trim().to_owned()),
        sample_prompts,
        // The top bar's device and precision pickers are for training too (the precision of
        // the frozen model; what trains is f32).
        device: settings.device.clone(),
        precision: settings.precision,
        ..TrainingConfig::default()
    })
}

impl TrainView {
    /// A run started as `job` with its tokens.
    pub fn started(
        &mut self,
        job: JobId,
        cancel: CancelToken,
        pause: PauseToken,
        method: TrainMethod,
        resumed_from: Option<PathBuf>,
    ) {
        self.run = Some(TrainRun {
            resumed_from,
            from_step: 0,
            job,
            cancel,
            pause,
            method,
            plan: None,
            loss: vec![],
            smoothed: vec![],
            lr: vec![],
            last: None,
            samples: vec![],
            checkpoints: vec![],
            running: true,
            outcome: None,
        });
    }

    /// The running run, if `job` is it.
    fn running(&mut self, job: JobId) -> Option<&mut TrainRun> {
        self.run.as_mut().filter(|r| r.job == job && r.running)
    }

    /// Whether `job` is the running run.
    pub fn is_running(&self, job: JobId) -> bool {
        self.run.as_ref().is_some_and(|r| r.job == job && r.running)
    }

    /// A dataset was validated (again, when its options changed: the same files keep their
    /// thumbnails and the captions being edited).
    pub fn validated(&mut self, report: DatasetReport) {
        self.revalidating = None;
        self.failed_for = None;
        let same_files = self.report.as_ref().is_some_and(|old| {
            old.entries.len() == report.entries.len()
                && old
                    .entries
                    .iter()
                    .zip(&report.entries)
                    .all(|(a, b)| a.path == b.path)
        });
        if !same_files {
            self.captions = report
                .entries
                .iter()
                .map(|e| e.caption.clone().unwrap_or_default())
                .collect();
            self.thumbs = vec![Thumb::NotLoaded; report.entries.len()];
        }
        self.report = Some(report);
    }

    /// A validation failed (the engine says why in a notification): a later change of the
    /// options may ask again.
    pub fn validation_failed(&mut self) {
        self.failed_for = self.revalidating.take();
    }

    /// Dataset thumbnail `i` was decoded (or not).
    pub fn thumbnail(&mut self, ctx: &egui::Context, i: usize, image: Option<egui::ColorImage>) {
        if let Some(t) = self.thumbs.get_mut(i) {
            *t = Thumb::from_image(ctx, format!("ds-{i}"), image);
        }
    }

    /// Caption `i` was saved as `text`.
    pub fn caption_saved(&mut self, i: usize, text: String) {
        if let Some(e) = self.report.as_mut().and_then(|r| r.entries.get_mut(i)) {
            e.caption = Some(text);
            e.issues.retain(|x| *x != Issue::MissingCaption);
        }
    }

    /// What the run `config` names left on disk is `run`.
    pub fn run_on_disk(&mut self, config: &TrainingConfig, run: RunOnDisk) {
        self.on_disk = Some(((config.output.clone(), config.name.clone()), run));
    }

    /// The measurement `job` ended (with seconds per step, or not).
    pub fn estimated(&mut self, job: JobId, seconds_per_step: Option<f64>) {
        if self.estimating == Some(job) {
            self.estimating = None;
            if seconds_per_step.is_some() {
                self.estimate = seconds_per_step;
            }
        }
    }

    /// Run `job` reported `event`.
    pub fn on_event(&mut self, ctx: &egui::Context, job: JobId, event: TrainingEvent) {
        let Some(run) = self.running(job) else {
            return;
        };
        match event {
            TrainingEvent::Started {
                plan, from_step, ..
            } => {
                run.plan = Some(plan);
                run.from_step = from_step;
            }
            TrainingEvent::Step {
                step,
                total,
                epoch,
                loss,
                smoothed_loss,
                lr,
                grad_norm,
                it_per_s,
                eta_s,
            } => {
                let x = step as f64;
                run.loss.push([x, loss]);
                run.smoothed.push([x, smoothed_loss]);
                run.lr.push([x, lr]);
                run.last = Some(LastStep {
                    step,
                    total,
                    epoch,
                    grad_norm,
                    rate: it_per_s,
                    eta: eta_s,
                });
            }
            TrainingEvent::Samples { step, images } => {
                for (k, img) in images.iter().enumerate() {
                    let tex = ctx.load_texture(
                        format!("sample-{step}-{k}"),
                        to_color_image(img),
                        egui::TextureOptions::LINEAR,
                    );
                    run.samples.push((step, tex));
                }
            }
            TrainingEvent::Checkpoint { step, path } => run.checkpoints.push((step, path)),
        }
    }

    /// Run `job` ended: with its output, or with a message saying what happened.
    pub fn ended(&mut self, job: JobId, outcome: Result<PathBuf, String>) {
        if let Some(run) = self.running(job) {
            run.running = false;
            run.outcome = Some(outcome);
        }
        // The run's checkpoints changed: look again.
        self.asked = None;
        self.on_disk = None;
    }

    /// Run `job` was cancelled: it says where its last checkpoint is.
    pub fn cancelled(&mut self, job: JobId) {
        let last = self
            .run
            .as_ref()
            .and_then(|r| r.checkpoints.last())
            .map(|(s, p)| format!(" The last checkpoint (step {s}) is {}.", p.display()))
            .unwrap_or_default();
        self.ended(job, Err(format!("Cancelled.{last}")));
    }

    /// Draws the Train tab; `stack` is the LoRA stack's files (a new run that would replace
    /// one of them says so).
    pub fn ui(&mut self, ui: &mut egui::Ui, ctx: &mut Ctx<'_>, stack: &[&std::path::Path]) {
        egui::ScrollArea::vertical()
            .id_salt("train-scroll")
            .show(ui, |ui| {
                self.dataset(ui, ctx);
                ui.separator();
                self.options(ui, ctx);
                ui.separator();
                self.monitor(ui, ctx);
            });
        self.confirm_name(ui, ctx, stack);
    }

    /// The question asked when a new run would take a name a run already uses.
    fn confirm_name(&mut self, ui: &mut egui::Ui, ctx: &mut Ctx<'_>, stack: &[&std::path::Path]) {
        let Some(disk) = &self.confirm else { return };
        let t = &ctx.settings.train;
        let mut choice = None;
        let in_stack = disk
            .existing
            .result
            .as_ref()
            .is_some_and(|r| stack.contains(&r.as_path()));
        let modal = egui::Modal::new(egui::Id::unique("run-name-in-use")).show(ui.ctx(), |ui| {
            ui.set_max_width(460.0);
            ui.heading(format!("A run named \"{}\" exists", t.name));
            ui.label(describe_run(disk, &ctx.settings.training_output()));
            if disk.foreign_result {
                ui.colored_label(
                    ui.visuals().error_fg_color,
                    format!(
                        "{}.safetensors there was not made by a Kiln training run (a downloaded \
                         LoRA?): overwriting replaces it, and no checkpoint keeps it. Keep both \
                         is safer.",
                        t.name
                    ),
                );
            }
            if in_stack {
                ui.colored_label(
                    ui.visuals().warn_fg_color,
                    format!(
                        "{}.safetensors is in the LoRA stack: overwriting replaces it when the new run finishes.",
                        t.name
                    ),
                );
            }
            ui.add_space(6.0);
            ui.horizontal(|ui| {
                if ui
                    .button("Overwrite")
                    .on_hover_text(
                        "Start afresh under this name: the old checkpoints move to a \
                         \"-replaced-\" folder beside them (nothing is deleted) and the result \
                         is replaced when the new run finishes",
                    )
                    .clicked()
                {
                    choice = Some(NameChoice::Overwrite);
                }
                if ui
                    .button(format!("Keep both (name it {})", disk.free_name))
                    .clicked()
                {
                    choice = Some(NameChoice::KeepBoth);
                }
                if ui.button("Cancel").clicked() {
                    choice = Some(NameChoice::Cancel);
                }
            });
        });
        if modal.should_close() && choice.is_none() {
            choice = Some(NameChoice::Cancel);
        }
        let Some(choice) = choice else { return };
        let Some(disk) = self.confirm.take() else {
            return;
        };
        match choice {
            NameChoice::Overwrite => ctx.actions.push(Action::StartTraining(None)),
            NameChoice::KeepBoth => {
                ctx.settings.train.name = disk.free_name;
                ctx.actions.push(Action::StartTraining(None));
            }
            NameChoice::Cancel => {}
        }
    }

    fn dataset(&mut self, ui: &mut egui::Ui, ctx: &mut Ctx<'_>) {
        ui.heading("Dataset");
        let has_data = self.report.is_some();
        ui.horizontal_wrapped(|ui| {
            if UiCommand::PickDataset.button(ui, true) {
                ctx.actions.push(Action::Ui(UiCommand::PickDataset));
            }
            if !has_data {
                ui.weak("or drop a folder of images (png, jpg, webp; optional same-name .txt captions) on the window.");
            } else if let Some(dir) = &ctx.settings.train.data {
                ui.weak(dir.display().to_string());
            }
        });
        let Some(report) = &self.report else {
            return;
        };
        ui.label(report.summary());
        let mut in_flight = self
            .thumbs
            .iter()
            .filter(|t| matches!(t, Thumb::Loading))
            .count();
        let (captions, thumbs) = (&mut self.captions, &mut self.thumbs);
        egui::Grid::new("dataset-table")
            .striped(true)
            .num_columns(6)
            .show(ui, |ui| {
                for (i, e) in report.entries.iter().enumerate() {
                    if matches!(thumbs[i], Thumb::NotLoaded) && in_flight < THUMBS_IN_FLIGHT {
                        in_flight += 1;
                        thumbs[i] = Thumb::Loading;
                        ctx.actions.push(Action::Io(IoRequest::Thumbnail {
                            key: ThumbKey::Dataset(i),
                            path: e.path.clone(),
                            size: THUMB,
                        }));
                    }
                    match thumbs[i].texture() {
                        Some(t) => {
                            let edge = THUMB as f32;
                            ui.add(egui::Image::new((t.id(), egui::vec2(edge, edge))));
                        }
                        None => {
                            ui.label("");
                        }
                    }
                    let name = super::file_name(&e.path);
                    ui.label(&name);
                    let r = ui.add_sized(
                        [280.0, 20.0],
                        egui::TextEdit::singleline(&mut captions[i]).hint_text("caption"),
                    );
                    r.widget_info(|| {
                        egui::WidgetInfo::labeled(
                            egui::Role::TextInput,
                            true,
                            format!("caption of {name}"),
                        )
                    });
                    if (r.lost_focus() || (r.changed() && !r.has_focus()))
                        && e.caption.as_deref().unwrap_or("") != captions[i]
                    {
                        ctx.actions.push(Action::SaveCaption {
                            index: i,
                            path: e.path.with_extension("txt"),
                            text: captions[i].clone(),
                        });
                    }
                    ui.label(e.size.map(|(w, h)| format!("{w}×{h}")).unwrap_or_default());
                    let t = &mut ctx.settings.train;
                    let mut reps = t.image_repeats.get(&name).copied().unwrap_or(t.repeats);
                    let d = ui.add(egui::DragValue::new(&mut reps).range(1..=100).prefix("×"));
                    d.widget_info(|| {
                        egui::WidgetInfo::labeled(
                            egui::Role::SpinButton,
                            true,
                            format!("repeats of {name}"),
                        )
                    });
                    if d.on_hover_text("Times this image is seen per epoch")
                        .changed()
                    {
                        if reps == t.repeats {
                            t.image_repeats.remove(&name);
                        } else {
                            t.image_repeats.insert(name.clone(), reps);
                        }
                    }
                    let text = status(&e.issues);
                    if e.issues.iter().any(|x| x.skips(true)) {
                        ui.colored_label(ui.visuals().error_fg_color, text);
                    } else if e.issues.is_empty() {
                        ui.label(text);
                    } else {
                        ui.colored_label(ui.visuals().warn_fg_color, text);
                    }
                    ui.end_row();
                }
            });
    }

    fn options(&mut self, ui: &mut egui::Ui, ctx: &mut Ctx<'_>) {
        ui.heading("Training");
        let images = self
            .report
            .as_ref()
            .map(|r| r.usable().count())
            .unwrap_or(0);
        let native = ctx.settings.native_size;
        let t = &mut ctx.settings.train;
        let suggestion = suggest(
            match t.method {
                TrainMethod::Lora => SuggestFor::Lora,
                TrainMethod::TextualInversion => SuggestFor::Embedding,
            },
            native,
            images,
            t.batch,
        );
        if t.follow_suggestion {
            follow(t, &suggestion, images > 0);
        }
        let before = suggested_fields(t);
        method_options(ui, t);
        if suggested_fields(t) != before {
            // The user set one: it stays.
            t.follow_suggestion = false;
        }
        if t.method == TrainMethod::Lora {
            let shared = self.report.as_ref().and_then(|r| {
                let captions: Vec<&str> = r.usable().map(|e| r.caption_of(e)).collect();
                common_token(&captions)
            });
            ui.horizontal(|ui| {
                let l = ui.label("Trigger word");
                ui.add(
                    egui::TextEdit::singleline(&mut t.trigger)
                        .desired_width(140.0)
                        .hint_text(shared.as_deref().unwrap_or("none shared")),
                )
                .labelled_by(l.id)
                .on_hover_text(
                    "The word that calls the LoRA up in a prompt, recorded in the file and \
                     offered as a chip; empty: the word every caption shares",
                );
            });
        }
        ui.horizontal_wrapped(|ui| {
            ui.checkbox(&mut t.follow_suggestion, "Suggested settings")
                .on_hover_text(
                    "Resolution, steps, rank, learning rate and checkpoints follow the loaded \
                     model and the dataset until you change one",
                );
            if images > 0 {
                ui.weak(&suggestion.why);
            } else {
                ui.weak(format!(
                    "Resolution {native}: the loaded model's native size. Steps follow the dataset's size."
                ));
            }
        });
        // Verdicts follow the options: validate again when they change (one at a time).
        let wanted = dataset_options(t);
        if let Some(report) = &self.report
            && report.options != wanted
            && self.revalidating.is_none()
            && self.failed_for.as_ref() != Some(&wanted)
        {
            ctx.actions.engine(Command::ValidateDataset {
                files: report.entries.iter().map(|e| e.path.clone()).collect(),
                options: wanted.clone(),
            });
            self.revalidating = Some(wanted);
        }
        let t = &ctx.settings.train;
        ui.weak(format!(
            "Output: {} (the models folder lists it)",
            ctx.settings
                .training_output()
                .join(format!("{}.safetensors", t.name))
                .display()
        ))
        .on_hover_text("Checkpoints go to the checkpoints folder beside it");
        if images > 0 {
            let plan = Plan::new(images, t.repeats, 1, t.batch).with_steps(t.steps);
            ui.label(format!("Plan: {}", plan.describe()));
        }
        let running = self.run.as_ref().is_some_and(|r| r.running);
        let config = training_config(ctx.settings);
        // What the run these options name left on disk, looked up off the UI thread whenever
        // the output folder or name changes (and after every run).
        let key = config.as_ref().map(|c| (c.output.clone(), c.name.clone()));
        if let Some(c) = &config
            && self.asked != key
        {
            self.asked = key.clone();
            ctx.actions.push(Action::Io(IoRequest::RunOnDisk {
                config: Box::new(c.clone()),
            }));
        }
        let disk = self
            .on_disk
            .as_ref()
            .filter(|(k, _)| Some(k) == key.as_ref())
            .map(|(_, d)| d.clone());
        let steps = ctx.settings.train.steps;
        // Resume continues exactly the newest checkpoint of this name, and says which.
        let (resume, resume_label, resume_why) = match disk.as_ref().and_then(|d| d.latest.as_ref())
        {
            Some(c) if c.step >= steps => (
                None,
                format!("Resume ({} finished at step {})", t.name, c.step),
                format!(
                    "The newest checkpoint, {}, is at step {} — the run is done at {steps} steps. \
                     Raise Steps to train it further.",
                    c.path.display(),
                    c.step
                ),
            ),
            Some(c) => (
                Some(c.path.clone()),
                format!("Resume {} from step {} of {steps}", t.name, c.step),
                format!("Continue the run that wrote {}", c.path.display()),
            ),
            None => (
                None,
                "Resume".to_owned(),
                disk.as_ref()
                    .and_then(|d| d.latest_error.clone())
                    .unwrap_or_else(|| format!("No checkpoint of a run named {} yet", t.name)),
            ),
        };
        let ready = images > 0 && config.is_some() && !running;
        ui.horizontal(|ui| {
            let can = ready && self.estimating.is_none() && ctx.studio.training.is_none();
            if ui
                .add_enabled(can, egui::Button::new("Estimate time"))
                .on_hover_text("Run three warm-up steps to measure the speed on this machine")
                .clicked()
            {
                ctx.actions.push(Action::EstimateTraining);
            }
            if self.estimating.is_some() {
                ui.spinner();
            } else if let Some(sps) = self.estimate {
                let steps = ctx.settings.train.steps;
                ui.label(format!(
                    "≈ {sps:.2} s/step, about {} for {steps} steps",
                    super::duration(sps * steps as f64),
                ));
            }
        });
        ui.horizontal(|ui| {
            // Until the lookup answers, Start waits: it must know whether the name is taken.
            if ui
                .add_enabled(ready && disk.is_some(), egui::Button::new("Start training"))
                .on_hover_text("Train with these settings on the loaded model")
                .on_disabled_hover_text(if running {
                    "A run is going on"
                } else if images == 0 || config.is_none() {
                    "Load a model and choose a dataset first"
                } else {
                    "Looking at what this name already holds in the output folder…"
                })
                .clicked()
                && let Some(d) = &disk
            {
                if d.existing.is_empty() {
                    ctx.actions.push(Action::StartTraining(None));
                } else {
                    self.confirm = Some(d.clone());
                }
            }
            if ui
                .add_enabled(ready && resume.is_some(), egui::Button::new(resume_label))
                .on_hover_text(&resume_why)
                .on_disabled_hover_text(&resume_why)
                .clicked()
            {
                ctx.actions.push(Action::StartTraining(resume.clone()));
            }
            if let Some(run) = self.run.as_ref().filter(|r| r.running) {
                let paused = run.pause.is_paused();
                if ui
                    .button(if paused { "Continue" } else { "Pause" })
                    .clicked()
                {
                    run.pause.set(!paused);
                }
                if ui
                    .button("Stop")
                    .on_hover_text("Stop after the current step; the last checkpoint stays")
                    .clicked()
                {
                    run.cancel.cancel();
                }
            }
        });
    }

    fn monitor(&mut self, ui: &mut egui::Ui, ctx: &mut Ctx<'_>) {
        let Some(run) = &self.run else { return };
        ui.heading("Monitor");
        if let Some(path) = &run.resumed_from {
            ui.weak(format!(
                "Resumed from step {} ({})",
                run.from_step,
                path.display()
            ));
        }
        let paused = run.running && run.pause.is_paused();
        if paused {
            let at = run.last.map_or(run.from_step, |l| l.step);
            ui.colored_label(
                ui.visuals().warn_fg_color,
                format!("Paused at step {at} — Continue to go on, Stop to end the run"),
            );
        }
        if let Some(l) = run.last {
            if paused {
                ui.label(format!(
                    "step {}/{} · epoch {} · grad norm {:.4}",
                    l.step, l.total, l.epoch, l.grad_norm
                ));
            } else {
                ui.label(format!(
                    "step {}/{} · epoch {} · {:.2} it/s · ETA {:.0} s · grad norm {:.4}",
                    l.step, l.total, l.epoch, l.rate, l.eta, l.grad_norm
                ));
            }
            ui.add(egui::ProgressBar::new(
                l.step as f32 / l.total.max(1) as f32,
            ));
        } else if run.running {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("preparing (loading the model, encoding the images)…");
            });
        }
        let (loss, smoothed, lr) = (run.loss.clone(), run.smoothed.clone(), run.lr.clone());
        // A constant rate would otherwise get a degenerate ±100 axis.
        let max_lr = lr.iter().map(|p| p[1]).fold(1e-12, f64::max);
        // No plots without a step (empty axes read like values).
        if loss.is_empty() && !run.running {
            ui.weak("No steps were made in this run.");
        }
        ui.columns(2, |cols| {
            if loss.is_empty() {
                return;
            }
            Plot::new("loss-plot")
                .allow_scroll(false)
                .height(180.0)
                .legend(Legend::default())
                .x_axis_label("step")
                .show(&mut cols[0], |p| {
                    p.line(Line::new("loss", PlotPoints::from(loss)));
                    p.line(Line::new("smoothed", PlotPoints::from(smoothed)));
                });
            Plot::new("lr-plot")
                .allow_scroll(false)
                .height(180.0)
                .legend(Legend::default())
                .x_axis_label("step")
                .include_y(0.0)
                .include_y(max_lr * 1.1)
                .show(&mut cols[1], |p| {
                    p.line(Line::new("learning rate", PlotPoints::from(lr)));
                });
        });
        if !run.samples.is_empty() {
            ui.label("Samples");
            ui.horizontal_wrapped(|ui| {
                for (step, tex) in run.samples.iter().rev().take(8) {
                    ui.vertical(|ui| {
                        ui.add(
                            egui::Image::new((tex.id(), egui::vec2(128.0, 128.0)))
                                .alt_text(format!("sample at step {step}")),
                        );
                        ui.weak(format!("step {step}"));
                    });
                }
            });
        }
        for (step, path) in &run.checkpoints {
            ui.weak(format!("checkpoint at step {step}: {}", path.display()));
        }
        match &run.outcome {
            Some(Ok(path)) => {
                ui.label(format!("Done: {}", path.display()));
                ui.horizontal(|ui| {
                    let label = match run.method {
                        TrainMethod::Lora => "Add to LoRA stack",
                        TrainMethod::TextualInversion => "Load the embedding",
                    };
                    if ui.button(label).clicked() {
                        ctx.actions.push(match run.method {
                            TrainMethod::Lora => Action::AddLora(path.clone(), 1.0),
                            TrainMethod::TextualInversion => Action::AddEmbedding(
                                path.clone(),
                                Some(ctx.settings.train.token.clone()),
                            ),
                        });
                    }
                    if ui
                        .button("Compare with baseline")
                        .on_hover_text(
                            "Add it to the stack first; then the same seed with and without it",
                        )
                        .clicked()
                    {
                        ctx.actions.push(Action::ShowTab(Tab::Compare));
                        ctx.actions.push(Action::Ui(UiCommand::CompareWithBaseline));
                    }
                    if ui.button("Open output folder").clicked()
                        && let Some(dir) = path.parent()
                    {
                        ctx.actions.push(Action::OpenFolder(dir.to_owned()));
                    }
                });
            }
            Some(Err(message)) => {
                ui.colored_label(ui.visuals().error_fg_color, message);
            }
            None => {}
        }
    }
}

/// The settings a [`Suggestion`] fills in, to tell whether the user changed one.
fn suggested_fields(t: &TrainSettings) -> (usize, usize, usize, u64, u64, usize, usize) {
    (
        t.resolution,
        t.steps,
        t.rank,
        t.alpha.to_bits(),
        t.learning_rate.to_bits(),
        t.checkpoint_every,
        t.sample_every,
    )
}

/// Fills in what `s` suggests (the resolution always; the rest once there is a dataset).
fn follow(t: &mut TrainSettings, s: &Suggestion, have_data: bool) {
    t.resolution = s.resolution;
    if have_data {
        t.steps = s.steps;
        t.learning_rate = s.learning_rate;
        t.checkpoint_every = s.checkpoint_every;
        t.sample_every = s.checkpoint_every;
        if t.method == TrainMethod::Lora {
            t.rank = s.rank;
            t.alpha = s.rank as f64;
        }
    }
}

/// The method and its options, each explained in a tooltip.
fn method_options(ui: &mut egui::Ui, t: &mut TrainSettings) {
    ui.horizontal(|ui| {
        ui.selectable_value(&mut t.method, TrainMethod::Lora, "LoRA").on_hover_text("A low-rank adapter on the UNet's attention layers: learns a style or subject");
        ui.selectable_value(&mut t.method, TrainMethod::TextualInversion, "Embedding").on_hover_text("Textual inversion: a new token whose vectors learn the concept; the model is untouched");
    });
    ui.horizontal(|ui| {
        let l = ui.label("Name");
        ui.add(egui::TextEdit::singleline(&mut t.name).desired_width(140.0))
            .labelled_by(l.id)
            .on_hover_text("The output file's name");
    });
    match t.method {
        TrainMethod::Lora => {
            super::labeled_drag(
                ui,
                "Rank",
                &mut t.rank,
                1..=128,
                0.2,
                "Size of the adapter: 4–16 learns a style; higher learns more detail (and overfits sooner)",
            );
            super::labeled_drag(
                ui,
                "Alpha",
                &mut t.alpha,
                0.5..=256.0,
                0.1,
                "Scales the update: strength = weight × alpha / rank. Alpha = rank is neutral",
            );
        }
        TrainMethod::TextualInversion => {
            ui.horizontal(|ui| {
                let l = ui.label("Token");
                ui.add(egui::TextEdit::singleline(&mut t.token).desired_width(120.0))
                    .labelled_by(l.id)
                    .on_hover_text("The word you will write in prompts, e.g. <my-style>");
                let l = ui.label("Init word");
                ui.add(egui::TextEdit::singleline(&mut t.init_word).desired_width(100.0))
                    .labelled_by(l.id)
                    .on_hover_text("A word close to the concept; the vectors start from it");
            });
            super::labeled_drag(
                ui,
                "Vectors",
                &mut t.vectors,
                1..=16,
                0.1,
                "Vectors per token: more can hold more detail, fewer generalise better",
            );
        }
    }
    super::labeled_drag(
        ui,
        "Learning rate",
        &mut t.learning_rate,
        1e-6..=1e-1,
        1e-5,
        "1e-4 is typical for a LoRA, 5e-3 for an embedding",
    );
    super::labeled_drag(
        ui,
        "Steps",
        &mut t.steps,
        1..=100_000,
        1.0,
        "Optimiser steps in all",
    );
    super::labeled_drag(ui, "Batch", &mut t.batch, 1..=16, 0.1, "Images per step");
    super::labeled_drag(
        ui,
        "Resolution",
        &mut t.resolution,
        8..=2048,
        8.0,
        "Training size in pixels (the model's native size is best)",
    );
    super::labeled_drag(
        ui,
        "Repeats",
        &mut t.repeats,
        1..=100,
        0.1,
        "Times each image is seen per epoch",
    );
    super::labeled_drag(
        ui,
        "Min-SNR gamma",
        &mut t.snr_gamma,
        0.0..=20.0,
        0.1,
        "Min-SNR-γ loss weighting (5 is the paper's choice; 0 turns it off): faster, steadier convergence",
    );
    ui.horizontal(|ui| {
        ui.checkbox(&mut t.buckets, "Buckets").on_hover_text(
            "Keep each image's aspect ratio (kohya-style buckets, sides multiples of 64)",
        );
        ui.checkbox(&mut t.flip, "Flip")
            .on_hover_text("Random horizontal flips (do not use for text or asymmetric subjects)");
    });
    ui.horizontal(|ui| {
        let l = ui.label("Sample prompt");
        ui.add(egui::TextEdit::singleline(&mut t.sample_prompt).desired_width(220.0))
            .labelled_by(l.id)
            .on_hover_text("Generated every N steps with the adapter as it trains (fixed seed)");
    });
    super::labeled_drag(
        ui,
        "Sample every",
        &mut t.sample_every,
        1..=10_000,
        1.0,
        "Steps between sample images",
    );
    super::labeled_drag(
        ui,
        "Checkpoint every",
        &mut t.checkpoint_every,
        1..=10_000,
        1.0,
        "Steps between checkpoints (resumable)",
    );
}
