//! Dismissible notifications (errors from the engine, confirmations); never blocking dialogs.
//! A confirmation (information without a button) goes by itself after [`TOAST`]; an error
//! stays until dismissed or until the problem it reports is gone ([`Notifications::resolve`]:
//! an image that generates clears a failed generation, a save that works a failed save). A
//! failed model load stays: it says which model is in use instead.

use std::time::{Duration, Instant};

use crate::gui::actions::{Actions, Notification};

/// How long a confirmation stays.
pub const TOAST: Duration = Duration::from_secs(8);

/// Whether `n`, shown since `since`, has gone by itself: a confirmation (no error, no button)
/// after [`TOAST`].
fn expired(n: &Notification, since: Instant) -> bool {
    !n.error && n.offer.is_none() && since.elapsed() >= TOAST
}

/// The notification bar's state: the messages not dismissed yet.
#[derive(Debug, Default)]
pub struct Notifications {
    /// Oldest first.
    pub items: Vec<Notification>,
    /// When each item came (same order).
    since: Vec<Instant>,
}

impl Notifications {
    /// Adds a message.
    pub fn push(&mut self, n: Notification) {
        self.items.push(n);
        self.since.push(Instant::now());
    }

    /// The problem behind every message whose title starts with one of `titles` is fixed:
    /// they go.
    pub fn resolve(&mut self, titles: &[&str]) {
        self.keep(|n, _| !titles.iter().any(|t| n.title.starts_with(t)));
    }

    fn keep(&mut self, keep: impl Fn(&Notification, Instant) -> bool) {
        self.since.resize(self.items.len(), Instant::now());
        let (mut items, mut since) = (Vec::new(), Vec::new());
        for (n, t) in self.items.drain(..).zip(self.since.drain(..)) {
            if keep(&n, t) {
                items.push(n);
                since.push(t);
            }
        }
        (self.items, self.since) = (items, since);
    }

    /// Draws the notification bar (only when there is something to say); a pressed offer
    /// button queues its action and dismisses the notification.
    pub fn ui(&mut self, ui: &mut egui::Ui, actions: &mut Actions) {
        // Confirmations go by themselves.
        self.keep(|n, t| !expired(n, t));
        if self.items.iter().any(|n| !n.error && n.offer.is_none()) {
            ui.ctx().request_repaint_after(Duration::from_millis(500));
        }
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
                self.since.clear();
            }
            if let Some(i) = dismiss {
                self.items.remove(i);
                if i < self.since.len() {
                    self.since.remove(i);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_problem_clears_its_message_and_others_stay() {
        let mut n = Notifications::default();
        n.push(Notification::new(
            "Could not load the model",
            "bad file",
            true,
        ));
        n.push(Notification::new("Error while generating", "oom", true));
        n.push(Notification::new("Image saved", "/x.png", false));
        n.resolve(&["Could not load the model"]);
        let titles: Vec<&str> = n.items.iter().map(|i| i.title.as_str()).collect();
        assert_eq!(titles, ["Error while generating", "Image saved"]);
        // A confirmation goes after TOAST; an error stays.
        n.since[1] = Instant::now() - TOAST - Duration::from_secs(1);
        n.keep(|m, t| !expired(m, t));
        assert_eq!(n.items.len(), 1);
        assert_eq!(n.items[0].title, "Error while generating");
    }
}
