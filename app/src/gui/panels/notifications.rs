//! Dismissible notifications (errors from the engine, confirmations); never blocking dialogs.

use crate::gui::app::KilnApp;

/// Draws the notification bar (only when there is something to say).
pub fn ui(ui: &mut egui::Ui, app: &mut KilnApp) {
    if app.notifications.is_empty() {
        return;
    }
    egui::Panel::bottom("notifications").show(ui, |ui| {
        let mut dismiss = None;
        for (i, n) in app.notifications.iter().enumerate().rev().take(4) {
            ui.horizontal(|ui| {
                if ui.small_button("x").on_hover_text("Dismiss").clicked() {
                    dismiss = Some(i);
                }
                let color = if n.error {
                    ui.visuals().error_fg_color
                } else {
                    ui.visuals().text_color()
                };
                ui.colored_label(color, &n.title);
                ui.collapsing("details", |ui| {
                    ui.label(&n.details);
                });
            });
        }
        if app.notifications.len() > 4
            && ui
                .small_button(format!("Dismiss all {}", app.notifications.len()))
                .clicked()
        {
            app.notifications.clear();
        }
        if let Some(i) = dismiss {
            app.notifications.remove(i);
        }
    });
}
