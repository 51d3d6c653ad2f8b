//! The LoRA stack: add by button or drop; each row has on/off, name, weight (slider −2…2 and
//! a number field), a "matched n/m" badge whose tooltip is the load report, trigger words,
//! remove, and a drag handle to reorder. A refused LoRA shows the reason in its row.

use crate::gui::app::{KilnApp, LoraStatus};
use crate::gui::commands::UiCommand;

/// What a row asks for.
enum RowAction {
    Weight(usize, f32),
    Enabled(usize, bool),
    Remove(usize),
    Move(usize, usize),
}

fn report_text(r: &kiln_engine::adapters::lora::LoraReport) -> String {
    serde_json::to_string_pretty(r).unwrap_or_default()
}

/// Draws the LoRA panel.
pub fn ui(ui: &mut egui::Ui, app: &mut KilnApp) {
    ui.horizontal(|ui| {
        ui.heading("LoRA stack");
        if UiCommand::AddLora.button(ui, true) {
            app.run_command(UiCommand::AddLora);
        }
    });
    if app.settings.loras.is_empty() {
        ui.weak("No LoRAs — add one or drop a .safetensors LoRA on the window");
        return;
    }
    let mut actions = Vec::new();
    for (i, (l, status)) in app.settings.loras.iter().zip(&app.lora_status).enumerate() {
        let name = l
            .path
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let row_id = egui::Id::unique(("lora-row", i));
        let frame = egui::Frame::group(ui.style()).show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.dnd_drag_source(row_id, i, |ui| {
                    ui.label("::").on_hover_text("Drag to reorder");
                });
                let mut enabled = l.enabled;
                if ui
                    .checkbox(&mut enabled, "")
                    .on_hover_text(format!("Apply {name}"))
                    .changed()
                {
                    actions.push(RowAction::Enabled(i, enabled));
                }
                ui.label(&name).on_hover_text(l.path.display().to_string());
                match status {
                    LoraStatus::Pending => {
                        ui.spinner();
                    }
                    LoraStatus::Loaded(report) => {
                        ui.label(
                            egui::RichText::new(format!(
                                "matched {}/{}",
                                report.matched, report.modules
                            ))
                            .small(),
                        )
                        .on_hover_text(report_text(report));
                    }
                    LoraStatus::Refused(_) => {
                        ui.colored_label(ui.visuals().error_fg_color, "refused");
                    }
                }
                if ui
                    .small_button("x")
                    .on_hover_text(format!("Remove {name}"))
                    .clicked()
                {
                    actions.push(RowAction::Remove(i));
                }
            });
            if let LoraStatus::Refused(reason) = status {
                ui.colored_label(ui.visuals().error_fg_color, reason);
            }
            ui.horizontal(|ui| {
                let mut w = l.weight;
                let r = ui.add(egui::Slider::new(&mut w, -2.0..=2.0).show_value(false));
                r.widget_info(|| {
                    egui::WidgetInfo::labeled(egui::Role::Slider, true, format!("{name} weight"))
                });
                let d = ui.add(egui::DragValue::new(&mut w).speed(0.01).fixed_decimals(2));
                d.widget_info(|| {
                    egui::WidgetInfo::labeled(
                        egui::Role::SpinButton,
                        true,
                        format!("{name} weight value"),
                    )
                });
                if w != l.weight {
                    actions.push(RowAction::Weight(i, w));
                }
            });
            if let LoraStatus::Loaded(report) = status
                && !report.trigger_words.is_empty()
            {
                ui.weak(format!(
                    "triggers: {}",
                    report
                        .trigger_words
                        .iter()
                        .take(6)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        });
        if let Some(from) = frame.response.dnd_release_payload::<usize>() {
            actions.push(RowAction::Move(*from, i));
        }
    }
    for a in actions {
        match a {
            RowAction::Weight(i, w) => app.set_lora_weight(i, w),
            RowAction::Enabled(i, e) => app.set_lora_enabled(i, e),
            RowAction::Remove(i) => app.remove_lora(i),
            RowAction::Move(from, to) => app.move_lora(from, to),
        }
    }
}
