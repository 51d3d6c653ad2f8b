//! The model panel (top bar): the checkpoint, recent models, device and precision, load
//! status and report.

use crate::gui::app::{KilnApp, ModelStatus};
use crate::gui::commands::UiCommand;

/// Draws the top bar.
pub fn ui(ui: &mut egui::Ui, app: &mut KilnApp) {
    egui::Panel::top("model").show(ui, |ui| {
        ui.horizontal_wrapped(|ui| {
            ui.strong("Kiln");
            ui.separator();
            if UiCommand::OpenModel.button(ui, true) {
                app.run_command(UiCommand::OpenModel);
            }
            let recent = app.settings.recent_models.clone();
            let mut pick = None;
            crate::gui::panels::combo(ui, "Recent models", app.settings.model_path.as_ref().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "—".into()), |ui| {
                    for p in &recent {
                        if ui.selectable_label(app.settings.model_path.as_ref() == Some(p), p.display().to_string()).clicked() {
                            pick = Some(p.clone());
                        }
                    }
                });
            if let Some(p) = pick {
                app.load_model(p);
            }
            let mut device = app.settings.device.clone();
            crate::gui::panels::combo(ui, "Device", device.clone(), |ui| {
                ui.selectable_value(&mut device, "auto".to_owned(), "auto");
                for d in kiln_engine::device::available() {
                    ui.selectable_value(&mut device, d.to_owned(), d);
                }
            });
            let mut precision = app.settings.precision.clone();
            crate::gui::panels::combo(ui, "Precision", precision.clone(), |ui| {
                for p in ["auto", "f32", "f16"] {
                    ui.selectable_value(&mut precision, p.to_owned(), p);
                }
            });
            let changed = device != app.settings.device || precision != app.settings.precision;
            app.settings.device = device;
            app.settings.precision = precision;
            if changed && let Some(p) = app.settings.model_path.clone() {
                app.load_model(p);
            }
            ui.separator();
            match &app.model {
                ModelStatus::None => {
                    ui.label("No model — open a checkpoint, drop one on the window, or pick one in Models");
                }
                ModelStatus::Loading(p) => {
                    ui.spinner();
                    ui.label(format!("Loading {}…", p.display()));
                }
                ModelStatus::Loaded { info, device, precision } => {
                    let name = info.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    ui.label(format!("Model: {name}")).on_hover_text(format!(
                        "{}\nfamily: {}\nlayout: {:?}\nweights: {}\nconfig: {}\ndevice: {device}, precision: {precision:?}",
                        info.path.display(),
                        info.family,
                        info.layout,
                        info.dtype,
                        info.config_source
                    ));
                    ui.weak(format!("{} · {:?} · {} · {device} {precision:?}", info.family, info.layout, info.dtype));
                }
                ModelStatus::Failed(e) => {
                    ui.colored_label(ui.visuals().error_fg_color, format!("Could not load: {e}"));
                }
            }
        });
    });
}
