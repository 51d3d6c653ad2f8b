//! The Train tab: the dataset dropped on the window as a table (thumbnail, file, editable
//! caption saved to its `.txt`, size, the engine's validation status, a summary line), the
//! method and its options with tooltips, the plan, Start / Pause / Resume / Cancel, and the
//! monitor — loss (raw and smoothed) and learning rate against step, step/epoch, it/s, ETA,
//! gradient norm, sample images with their step, the checkpoint log — and, when it ends, what
//! happened and one-click use of the result.

use egui_plot::{Legend, Line, Plot, PlotPoints};
use kiln_engine::training::dataset::{Issue, Plan};

use crate::gui::app::{KilnApp, Thumb};
use crate::gui::state::TrainMethod;

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

/// "42 s", "3 min", "1 h 20 min".
fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s.div_ceil(60)),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// Draws the Train tab.
pub fn ui(ui: &mut egui::Ui, app: &mut KilnApp) {
    egui::ScrollArea::vertical()
        .id_salt("train-scroll")
        .show(ui, |ui| {
            dataset(ui, app);
            ui.separator();
            options(ui, app);
            ui.separator();
            monitor(ui, app);
        });
}

fn dataset(ui: &mut egui::Ui, app: &mut KilnApp) {
    ui.heading("Dataset");
    let Some(report) = app.train.report.clone() else {
        ui.weak("Drop a folder of images (png, jpg, webp; optional same-name .txt captions) on the window.");
        return;
    };
    ui.label(report.summary());
    let mut save = None;
    egui::Grid::new("dataset-table")
        .striped(true)
        .num_columns(6)
        .show(ui, |ui| {
            for (i, e) in report.entries.iter().enumerate() {
                if matches!(app.train.thumbs[i], Thumb::NotLoaded) {
                    let texture = kiln_engine::image::read_image(&e.path).ok().map(|img| {
                        let small = kiln_engine::image::fit(&img, 48, 48);
                        ui.ctx().load_texture(
                            format!("ds-{i}"),
                            crate::gui::app::to_color_image(&small),
                            egui::TextureOptions::LINEAR,
                        )
                    });
                    app.train.thumbs[i] = Thumb::from_load(texture);
                }
                match app.train.thumbs[i].texture() {
                    Some(t) => {
                        ui.add(egui::Image::new((t.id(), egui::vec2(48.0, 48.0))));
                    }
                    None => {
                        ui.label("");
                    }
                }
                let name = e
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                ui.label(&name);
                let r = ui.add_sized(
                    [280.0, 20.0],
                    egui::TextEdit::singleline(&mut app.train.captions[i]).hint_text("caption"),
                );
                r.widget_info(|| {
                    egui::WidgetInfo::labeled(
                        egui::Role::TextInput,
                        true,
                        format!("caption of {name}"),
                    )
                });
                if r.lost_focus() || (r.changed() && !r.has_focus()) {
                    save = Some(i);
                }
                ui.label(e.size.map(|(w, h)| format!("{w}×{h}")).unwrap_or_default());
                let t = &mut app.settings.train;
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
                let skipped = e.issues.iter().any(|x| x.skips(true));
                if skipped {
                    ui.colored_label(ui.visuals().error_fg_color, text);
                } else if e.issues.is_empty() {
                    ui.label(text);
                } else {
                    ui.colored_label(ui.visuals().warn_fg_color, text);
                }
                ui.end_row();
            }
        });
    if let Some(i) = save {
        app.save_caption(i);
    }
}

fn options(ui: &mut egui::Ui, app: &mut KilnApp) {
    ui.heading("Training");
    let t = &mut app.settings.train;
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
    ui.weak(format!(
        "Output: {}",
        t.output_dir
            .join(format!("{}.safetensors", t.name))
            .display()
    ));
    let images = app
        .train
        .report
        .as_ref()
        .map(|r| r.usable().count())
        .unwrap_or(0);
    let t = &app.settings.train;
    if images > 0 {
        let plan = Plan::new(images, t.repeats, 1, t.batch).with_steps(t.steps);
        ui.label(format!("Plan: {}", plan.describe()));
    }
    let running = app.train.run.as_ref().is_some_and(|r| r.running);
    ui.horizontal(|ui| {
        let can =
            images > 0 && app.settings.model_path.is_some() && !running && !app.train.estimating;
        if ui
            .add_enabled(can, egui::Button::new("Estimate time"))
            .on_hover_text("Run three warm-up steps to measure the speed on this machine")
            .clicked()
        {
            app.estimate_training();
        }
        if app.train.estimating {
            ui.spinner();
        } else if let Some(sps) = app.train.estimate {
            let total = sps * app.settings.train.steps as f64;
            ui.label(format!(
                "≈ {sps:.2} s/step, about {} for {} steps",
                duration(total),
                app.settings.train.steps
            ));
        }
    });
    ui.horizontal(|ui| {
        let ready = images > 0 && app.settings.model_path.is_some() && !running;
        if ui
            .add_enabled(ready, egui::Button::new("Start training"))
            .on_hover_text("Train with these settings on the loaded model")
            .clicked()
        {
            app.start_training(None);
        }
        let last = app
            .training_config()
            .and_then(|c| kiln_engine::training::trainer::latest_checkpoint(&c));
        if ui
            .add_enabled(ready && last.is_some(), egui::Button::new("Resume"))
            .on_hover_text("Continue from the newest checkpoint of this name")
            .clicked()
        {
            app.start_training(last);
        }
        if let Some(run) = app.train.run.as_ref().filter(|r| r.running) {
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

fn monitor(ui: &mut egui::Ui, app: &mut KilnApp) {
    let Some(run) = &app.train.run else { return };
    ui.heading("Monitor");
    if let Some((step, total, epoch, grad, rate, eta)) = run.last {
        ui.label(format!("step {step}/{total} · epoch {epoch} · {rate:.2} it/s · ETA {eta:.0} s · grad norm {grad:.4}"));
        ui.add(egui::ProgressBar::new(step as f32 / total.max(1) as f32));
    } else if run.running {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label("preparing (loading the model, encoding the images)…");
        });
    }
    let (loss, smoothed, lr) = (run.loss.clone(), run.smoothed.clone(), run.lr.clone());
    // A constant rate would otherwise get a degenerate ±100 axis.
    let max_lr = lr.iter().map(|p| p[1]).fold(1e-12, f64::max);
    ui.columns(2, |cols| {
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
    match run.outcome.clone() {
        Some(Ok(path)) => {
            ui.label(format!("Done: {}", path.display()));
            ui.horizontal(|ui| {
                let label = match app.settings.train.method {
                    TrainMethod::Lora => "Add to LoRA stack",
                    TrainMethod::TextualInversion => "Load the embedding",
                };
                if ui.button(label).clicked() {
                    app.use_trained_output();
                }
                if ui
                    .button("Compare with baseline")
                    .on_hover_text(
                        "Add it to the stack first; then the same seed with and without it",
                    )
                    .clicked()
                {
                    app.view = crate::gui::app::View::Compare;
                    app.compare_with_baseline();
                }
                if ui.button("Open output folder").clicked()
                    && let Some(dir) = path.parent()
                {
                    ui.ctx()
                        .open_url(egui::OpenUrl::new_tab(format!("file://{}", dir.display())));
                }
            });
        }
        Some(Err(message)) => {
            ui.colored_label(ui.visuals().error_fg_color, message);
        }
        None => {}
    }
}
