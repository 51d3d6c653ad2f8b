//! The gallery: every image in the output folder (newest first, listed again on restart) as
//! thumbnails; selecting one shows it with its recipe, "Reuse parameters" restores it all.

use crate::gui::app::{KilnApp, Thumb};
use crate::gui::commands::UiCommand;

/// Thumbnail edge in points.
const THUMB: f32 = 96.0;

fn load_thumb(ctx: &egui::Context, path: &std::path::Path) -> Option<egui::TextureHandle> {
    let img = kiln_engine::image::read_image(path).ok()?;
    let scale = (THUMB as f64 / img.width.max(img.height) as f64).min(1.0);
    let (w, h) = (
        ((img.width as f64 * scale) as usize).max(1),
        ((img.height as f64 * scale) as usize).max(1),
    );
    let small = image::imageops::thumbnail(
        &image::RgbImage::from_raw(img.width as u32, img.height as u32, img.pixels)?,
        w as u32,
        h as u32,
    );
    let color = egui::ColorImage::from_rgb([w, h], small.as_raw());
    Some(ctx.load_texture(
        path.display().to_string(),
        color,
        egui::TextureOptions::LINEAR,
    ))
}

/// Draws the gallery.
pub fn ui(ui: &mut egui::Ui, app: &mut KilnApp) {
    ui.horizontal(|ui| {
        ui.heading("Gallery");
        ui.weak(format!("{}", app.gallery.len()));
    });
    ui.weak(app.settings.output_dir.display().to_string());
    if let Some((path, info)) = app
        .selected
        .and_then(|i| app.gallery.get(i))
        .map(|g| (g.path.clone(), g.info.clone()))
    {
        match &info {
            Some(info) => {
                let text = kiln_engine::metadata::a1111::write(&info.parameters);
                ui.label(egui::RichText::new(text).small());
                if UiCommand::ReuseParameters.button(ui, true) {
                    app.run_command(UiCommand::ReuseParameters);
                }
            }
            None => {
                ui.weak("no generation parameters in this image");
            }
        }
        let mut side = None;
        ui.horizontal(|ui| {
            if ui
                .button("Compare as A")
                .on_hover_text("Put this image on the left of the compare view")
                .clicked()
            {
                side = Some(0);
            }
            if ui
                .button("Compare as B")
                .on_hover_text("Put this image on the right of the compare view")
                .clicked()
            {
                side = Some(1);
            }
        });
        if let Some(side) = side {
            match kiln_engine::image::read_image(&path) {
                Ok(img) => {
                    let label = path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    app.set_compare_side(side, img, label);
                    app.view = crate::gui::app::View::Compare;
                }
                Err(e) => app.notify("Cannot open the image", e.to_string(), true),
            }
        }
        ui.separator();
    }
    let mut clicked = None;
    // A few thumbnails decode per frame so a big folder never stalls the UI.
    let mut budget = 4;
    egui::ScrollArea::vertical().show(ui, |ui| {
        ui.horizontal_wrapped(|ui| {
            for (i, item) in app.gallery.iter_mut().enumerate() {
                if matches!(item.thumb, Thumb::NotLoaded) && budget > 0 {
                    budget -= 1;
                    item.thumb = Thumb::from_load(load_thumb(ui.ctx(), &item.path));
                }
                let name = item
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let selected = app.selected == Some(i);
                let r = match item.thumb.texture() {
                    Some(t) => ui.add(
                        egui::Button::image(
                            egui::Image::new(t)
                                .max_size(egui::vec2(THUMB, THUMB))
                                .alt_text(&name),
                        )
                        .selected(selected),
                    ),
                    None => ui.add(
                        egui::Button::new("…")
                            .min_size(egui::vec2(THUMB, THUMB))
                            .selected(selected),
                    ),
                };
                if r.on_hover_text(&name).clicked() {
                    clicked = Some(i);
                }
            }
        });
    });
    if budget == 0 {
        ui.ctx().request_repaint();
    }
    if let Some(i) = clicked {
        app.selected = Some(i);
        let path = app.gallery[i].path.clone();
        let recipe = app.gallery[i].info.as_ref().and_then(|x| x.recipe.clone());
        if let Ok(img) = kiln_engine::image::read_image(&path) {
            app.show(&img, Some(path), recipe);
        }
    }
}
