//! Dismissible notifications (errors from the engine, confirmations); never blocking dialogs.

use crate::gui::actions::{Actions, Notification};

/// The notification bar's state: the messages not dismissed yet.
#[derive(Debug, Default)]
pub struct Notifications {
    /// Oldest first.
    pub items: Vec<Notification>,
}

impl Notifications {
    /// Adds a message.
    pub fn push(&mut self, n: Notification) {
        self.items.push(n);
    }

    /// Draws the notification bar (only when there is something to say); a pressed offer
    /// button queues its action and dismisses the notification.
    pub fn ui(&mut self, ui: &mut egui::Ui, actions: &mut Actions) {
        if self.items.is_empty() {
            return;
        }
        egui::Panel::bottom("notifications").show(ui, |ui| {
            let mut dismiss = None;
            for (i, n) in self.items.iter().enumerate().rev().take(4) {
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
                    if let Some((label, offer)) = &n.offer
                        && ui.button(label).clicked()
                    {
                        actions.push(offer.action());
                        dismiss = Some(i);
                    }
                    ui.collapsing("details", |ui| {
                        ui.label(&n.details);
                    });
                });
            }
            if self.items.len() > 4
                && ui
                    .small_button(format!("Dismiss all {}", self.items.len()))
                    .clicked()
            {
                self.items.clear();
            }
            if let Some(i) = dismiss {
                self.items.remove(i);
            }
        });
    }
}
