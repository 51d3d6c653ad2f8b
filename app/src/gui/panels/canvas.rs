//! The canvas: the image forming (live preview) and the finished image with zoom and pan
//! (scroll to zoom, drag to pan, double-click to fit), Save as… and Copy parameters.

use crate::gui::app::KilnApp;
use crate::gui::commands::UiCommand;

/// Draws the canvas.
pub fn ui(ui: &mut egui::Ui, app: &mut KilnApp) {
    let mut command = None;
    ui.horizontal(|ui| {
        let has_recipe = app.shown.as_ref().is_some_and(|s| s.recipe.is_some());
        for c in [UiCommand::SaveImage, UiCommand::CopyParameters] {
            if c.button(ui, has_recipe) {
                command = Some(c);
            }
        }
        if let Some(r) = app.shown.as_ref().and_then(|s| s.recipe.as_ref()) {
            ui.weak(format!(
                "seed {} · {}×{} · {} · {} steps",
                r.seed,
                r.width,
                r.height,
                r.sampler.a1111_name(),
                r.steps
            ));
        }
    });
    match &app.shown {
        Some(shown) => {
            let size = egui::vec2(shown.size[0] as f32, shown.size[1] as f32);
            let texture = shown.texture.clone();
            let response =
                egui::Scene::new()
                    .zoom_range(0.1..=16.0)
                    .show(ui, &mut app.scene_rect, |ui| {
                        ui.add(egui::Image::new((texture.id(), size)).alt_text("Generated image"));
                    });
            if response.response.double_clicked() {
                app.scene_rect = egui::Rect::ZERO;
            }
        }
        None => {
            ui.centered_and_justified(|ui| {
                ui.weak("Your image appears here. Write a prompt and press Generate (Ctrl+Enter).");
            });
        }
    }
    if let Some(c) = command {
        app.run_command(c);
    }
}
