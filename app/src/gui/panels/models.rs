//! The Models tab: the models folder's checkpoints, LoRAs and embeddings (the shipped model
//! first, marked built in) with family, details and size, each with its action (Load, Add to
//! stack); Rescan; "Get Stable Diffusion 1.5" with progress and Cancel; the folder, Hub endpoint
//! and precision settings. The work happens in [`crate::gui::models`].

use crate::gui::app::KilnApp;
use crate::gui::models::{format_bytes, sd15_dest};

/// A button whose accessible name (and tooltip) is `name`, e.g. "Load tiny-a" for a "Load"
/// button in tiny-a's row.
fn row_button(ui: &mut egui::Ui, text: &str, name: &str) -> bool {
    let r = ui.button(text).on_hover_text(name);
    r.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, true, name));
    r.clicked()
}

/// "40 s", "12 min", "2 h 5 min".
fn duration(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s.div_ceil(60)),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// Draws the Models tab.
pub fn ui(ui: &mut egui::Ui, app: &mut KilnApp) {
    egui::ScrollArea::vertical().show(ui, |ui| {
        ui.horizontal(|ui| {
            ui.heading("Models");
            if ui
                .button("Rescan")
                .on_hover_text("List the models folder again")
                .clicked()
            {
                app.rescan_models();
            }
            if app.models.scanning {
                ui.spinner();
            }
        });
        ui.horizontal(|ui| {
            ui.weak(format!("Folder: {}", app.settings.models_dir.display()));
            if app.settings.models_dir.is_dir()
                && ui
                    .small_button("Open folder")
                    .on_hover_text("Show the models folder in the file manager")
                    .clicked()
            {
                ui.ctx().open_url(egui::OpenUrl::new_tab(format!(
                    "file://{}",
                    app.settings.models_dir.display()
                )));
            }
        });
        if let Some(e) = &app.models.scan_error {
            ui.colored_label(
                ui.visuals().error_fg_color,
                format!("Cannot read the models folder: {e}"),
            );
        }
        ui.add_space(4.0);
        list(ui, app);
        ui.add_space(8.0);
        ui.separator();
        download(ui, app);
        ui.add_space(8.0);
        ui.separator();
        settings(ui, app);
    });
}

fn list(ui: &mut egui::Ui, app: &mut KilnApp) {
    if app.models.rows.is_empty() {
        if !app.models.scanning {
            ui.weak(
                "No models here yet. Get Stable Diffusion 1.5 below, or copy checkpoints \
                 (.safetensors or diffusers folders), LoRAs and embeddings into the folder and \
                 press Rescan.",
            );
        }
        return;
    }
    let mut pick = None;
    egui::Grid::new("models-table")
        .striped(true)
        .num_columns(6)
        .spacing([16.0, 6.0])
        .show(ui, |ui| {
            for title in ["Name", "Kind", "Family", "Details", "Size", ""] {
                ui.strong(title);
            }
            ui.end_row();
            for (i, row) in app.models.rows.iter().enumerate() {
                let name = row.name();
                ui.horizontal(|ui| {
                    ui.label(&name)
                        .on_hover_text(row.entry.path.display().to_string());
                    if row.built_in {
                        let v = ui.visuals();
                        let badge = egui::RichText::new(" built in ")
                            .small()
                            .color(v.selection.stroke.color)
                            .background_color(v.selection.bg_fill);
                        ui.label(badge).on_hover_text(
                            "The model that ships with Kiln: small, fast, and made for \
                                 simple shapes and colours",
                        );
                    }
                });
                ui.label(row.kind());
                ui.label(row.family());
                ui.weak(row.details());
                ui.label(format_bytes(row.entry.bytes));
                if let Some(reason) = row.refusal() {
                    ui.colored_label(ui.visuals().error_fg_color, "cannot use")
                        .on_hover_text(reason);
                } else if app.model_row_in_use(row) {
                    ui.weak(match row.kind() {
                        "LoRA" => "in the stack",
                        _ => "loaded",
                    });
                } else {
                    let (text, label) = match row.kind() {
                        "checkpoint" => ("Load", format!("Load {name}")),
                        "LoRA" => ("Add to stack", format!("Add {name} to the LoRA stack")),
                        _ => ("Load", format!("Load embedding {name}")),
                    };
                    if row_button(ui, text, &label) {
                        pick = Some(i);
                    }
                }
                ui.end_row();
            }
        });
    if let Some(i) = pick {
        app.use_model_row(i);
    }
}

fn download(ui: &mut egui::Ui, app: &mut KilnApp) {
    ui.heading("Stable Diffusion 1.5");
    let fp16 = app.settings.download_fp16;
    let dest = sd15_dest(&app.settings.models_dir, fp16);
    ui.label(format!(
        "The diffusers weights of Stable Diffusion 1.5 ({}) from {}, into {}. About {} GB; \
         an interrupted download resumes, and every file is checked against its SHA-256.",
        kiln_engine::download::SD15_REPO,
        app.settings.hub_endpoint,
        dest.display(),
        if fp16 { 2 } else { 4 }
    ));
    let idle = app.models.download.is_none();
    ui.add_enabled(
        idle,
        egui::Checkbox::new(
            &mut app.settings.download_fp16,
            "Half precision (fp16): 2 GB instead of 4",
        ),
    )
    .on_hover_text("The same model in 16-bit weights; on the CPU Kiln computes in f32 either way");
    let mut cancel = false;
    match &app.models.download {
        Some(d) => {
            match &d.progress {
                Some(p) => {
                    let number = if p.done == p.size && p.files_done > 0 {
                        p.files_done
                    } else {
                        p.files_done + 1
                    };
                    ui.label(format!(
                        "File {} of {}: {}",
                        number.min(p.files),
                        p.files,
                        p.file
                    ));
                    let frac = if p.size == 0 {
                        1.0
                    } else {
                        p.done as f32 / p.size as f32
                    };
                    let rate = d.received as f64 / d.started.elapsed().as_secs_f64().max(1e-3);
                    ui.horizontal(|ui| {
                        ui.add(
                            egui::ProgressBar::new(frac)
                                .desired_width(360.0)
                                .text(format!(
                                    "{} of {} ({:.0}%)",
                                    format_bytes(p.done),
                                    format_bytes(p.size),
                                    frac * 100.0
                                )),
                        );
                        let mut speed = format!("{}/s", format_bytes(rate as u64));
                        if rate > 0.0 && p.done < p.size {
                            let secs = (p.size - p.done) as f64 / rate;
                            speed += &format!(" · {} left for this file", duration(secs));
                        }
                        ui.weak(speed);
                    });
                }
                None => {
                    ui.horizontal(|ui| {
                        ui.spinner();
                        ui.label(format!("Connecting to {}…", d.endpoint));
                    });
                }
            }
            cancel = ui
                .button("Cancel download")
                .on_hover_text("Stop; what arrived is kept and the next Get resumes from it")
                .clicked();
        }
        None => {
            let listed = app.models.rows.iter().any(|r| r.entry.path == dest);
            if ui
                .add_enabled(
                    app.models.can_download(),
                    egui::Button::new("Get Stable Diffusion 1.5"),
                )
                .on_hover_text("Download (or finish downloading) Stable Diffusion 1.5")
                .clicked()
            {
                app.start_sd15_download();
            }
            if listed {
                ui.weak("It is in the list above; getting it again only checks the files.");
            } else if dest.exists() {
                ui.weak(format!(
                    "A partial download is in {}; Get Stable Diffusion 1.5 resumes it.",
                    dest.display()
                ));
            }
            if let Some(end) = &app.models.download_end {
                if end.error {
                    ui.colored_label(ui.visuals().error_fg_color, &end.title);
                } else {
                    ui.strong(&end.title);
                }
                ui.label(&end.details);
            }
        }
    }
    if cancel {
        app.cancel_download();
    }
}

fn settings(ui: &mut egui::Ui, app: &mut KilnApp) {
    egui::CollapsingHeader::new("Settings")
        .default_open(true)
        .show(ui, |ui| {
            let mut rescan = false;
            ui.horizontal(|ui| {
                let l = ui.label("Models folder");
                let mut text = app.settings.models_dir.display().to_string();
                let r = ui
                    .add(egui::TextEdit::singleline(&mut text).desired_width(380.0))
                    .labelled_by(l.id)
                    .on_hover_text("Where Kiln looks for models and puts downloads");
                if r.changed() {
                    app.settings.models_dir = text.into();
                }
                rescan |= r.lost_focus();
                if ui.button("Browse…").clicked()
                    && let Some(dir) = rfd::FileDialog::new()
                        .set_title("Choose the models folder")
                        .pick_folder()
                {
                    app.settings.models_dir = dir;
                    rescan = true;
                }
                if ui
                    .button("Default")
                    .on_hover_text(
                        crate::gui::state::default_models_dir()
                            .display()
                            .to_string(),
                    )
                    .clicked()
                {
                    app.settings.models_dir = crate::gui::state::default_models_dir();
                    rescan = true;
                }
            });
            ui.horizontal(|ui| {
                let l = ui.label("Hub endpoint");
                ui.add(
                    egui::TextEdit::singleline(&mut app.settings.hub_endpoint)
                        .hint_text(kiln_engine::download::HUB)
                        .desired_width(380.0),
                )
                .labelled_by(l.id)
                .on_hover_text(
                    "The Hugging Face Hub, or a mirror with its layout, that downloads come from",
                );
                let default = crate::gui::state::default_hub_endpoint();
                if ui.button("Reset").on_hover_text(&default).clicked() {
                    app.settings.hub_endpoint = default;
                }
            });
            if rescan {
                app.rescan_models();
            }
        });
}
