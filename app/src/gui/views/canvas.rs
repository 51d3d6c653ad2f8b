//! The canvas: the image forming (live preview) and the finished image with zoom and pan
//! (Ctrl+scroll or pinch to zoom, drag or scroll to pan; Fit or a double click shows it
//! whole), enlarged pixels drawn sharp; Save as…, Copy parameters, Restore from image….

use std::path::PathBuf;

use kiln_engine::image::RgbImage;
use kiln_engine::metadata::Recipe;

use super::Ctx;
use crate::gui::actions::Action;
use crate::gui::commands::UiCommand;
use crate::gui::io::to_color_image;

/// Canvas textures: smooth when shrunk, nearest-neighbour when enlarged, so a small image
/// (kiln-tiny's 64 px) shows its real pixels, not a blur.
const PIXELS: egui::TextureOptions = egui::TextureOptions {
    magnification: egui::TextureFilter::Nearest,
    minification: egui::TextureFilter::Linear,
    wrap_mode: egui::TextureWrapMode::ClampToEdge,
    mipmap_mode: None,
};

/// The image on the canvas.
pub struct Shown {
    /// Texture.
    pub texture: egui::TextureHandle,
    /// Pixels (what Save as… writes).
    pub image: RgbImage,
    /// The file, once saved.
    pub path: Option<PathBuf>,
    /// Its recipe (None for a live preview).
    pub recipe: Option<Recipe>,
}

/// One image of the current batch, in the strip under the toolbar.
pub struct StripImage {
    /// Thumbnail texture (the image itself, drawn small).
    pub texture: egui::TextureHandle,
    /// Pixels.
    pub image: RgbImage,
    /// How it was made.
    pub recipe: Recipe,
    /// The file, once saved.
    pub path: Option<PathBuf>,
}

/// Strip thumbnails' height in points.
const STRIP_EDGE: f32 = 56.0;

/// The canvas's state.
pub struct CanvasView {
    /// What it shows.
    pub shown: Option<Shown>,
    /// Every image of the last generation, in order (a strip when there are several).
    pub strip: Vec<StripImage>,
    /// The view rectangle (zoom and pan; zero = fit).
    scene_rect: egui::Rect,
    /// The window's size last frame: a resized window fits the image again (a toast or the
    /// batch strip coming and going does not).
    last_area: egui::Vec2,
}

impl Default for CanvasView {
    fn default() -> Self {
        CanvasView {
            shown: None,
            strip: Vec::new(),
            scene_rect: egui::Rect::ZERO,
            last_area: egui::Vec2::ZERO,
        }
    }
}

impl std::fmt::Debug for CanvasView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CanvasView").finish_non_exhaustive()
    }
}

impl CanvasView {
    /// Shows `image` (a preview when `recipe` is None), reusing the texture at the same size.
    pub fn show(
        &mut self,
        ctx: &egui::Context,
        image: RgbImage,
        path: Option<PathBuf>,
        recipe: Option<Recipe>,
    ) {
        let color = to_color_image(&image);
        match &mut self.shown {
            Some(s) if [s.image.width, s.image.height] == [image.width, image.height] => {
                s.texture.set(color, PIXELS);
                s.image = image;
                s.path = path;
                s.recipe = recipe;
            }
            _ => {
                let texture = ctx.load_texture("canvas", color, PIXELS);
                self.shown = Some(Shown {
                    texture,
                    image,
                    path,
                    recipe,
                });
                self.scene_rect = egui::Rect::ZERO;
            }
        }
    }

    /// A generation starts: its images will make a new strip.
    pub fn new_batch(&mut self) {
        self.strip.clear();
    }

    /// A finished image of the current generation: shown, and added to the strip.
    pub fn finished(&mut self, ctx: &egui::Context, image: RgbImage, recipe: Recipe) {
        let texture = ctx.load_texture(
            format!("strip-{}", self.strip.len()),
            to_color_image(&image),
            egui::TextureOptions::LINEAR,
        );
        self.strip.push(StripImage {
            texture,
            image: image.clone(),
            recipe: recipe.clone(),
            path: None,
        });
        self.show(ctx, image, None, Some(recipe));
    }

    /// The image shown with `recipe` was saved at `path`.
    pub fn saved(&mut self, recipe: &Recipe, path: &std::path::Path) {
        if let Some(s) = self
            .strip
            .iter_mut()
            .find(|s| s.path.is_none() && &s.recipe == recipe)
        {
            s.path = Some(path.to_owned());
        }
        if let Some(s) = &mut self.shown
            && s.path.is_none()
            && s.recipe.as_ref() == Some(recipe)
        {
            s.path = Some(path.to_owned());
        }
    }

    /// The shown image's recipe.
    pub fn recipe(&self) -> Option<&Recipe> {
        self.shown.as_ref().and_then(|s| s.recipe.as_ref())
    }

    /// The strip of a batch's images (when there are several): the one shown is marked; a
    /// click shows another.
    fn strip_ui(&mut self, ui: &mut egui::Ui) {
        if self.strip.len() < 2 {
            return;
        }
        let shown = self.recipe().cloned();
        let mut pick = None;
        egui::ScrollArea::horizontal()
            .id_salt("batch-strip")
            .show(ui, |ui| {
                ui.horizontal(|ui| {
                    let n = self.strip.len();
                    for (i, s) in self.strip.iter().enumerate() {
                        let size = egui::vec2(
                            STRIP_EDGE * s.image.width as f32 / s.image.height.max(1) as f32,
                            STRIP_EDGE,
                        );
                        let r = ui.add(
                            egui::Button::image(egui::Image::new((s.texture.id(), size)))
                                .selected(shown.as_ref() == Some(&s.recipe)),
                        );
                        let name = format!("image {} of {n}", i + 1);
                        r.widget_info(|| {
                            egui::WidgetInfo::labeled(egui::Role::Button, true, name.clone())
                        });
                        if r.on_hover_text(format!("{name} · seed {}", s.recipe.seed))
                            .clicked()
                        {
                            pick = Some(i);
                        }
                    }
                });
            });
        if let Some(i) = pick {
            let s = &self.strip[i];
            let (image, recipe, path) = (s.image.clone(), s.recipe.clone(), s.path.clone());
            self.show(ui.ctx(), image, path, Some(recipe));
        }
    }

    /// Draws the canvas.
    pub fn ui(&mut self, ui: &mut egui::Ui, ctx: &mut Ctx<'_>) {
        ui.horizontal_wrapped(|ui| {
            let has_recipe = self.recipe().is_some();
            for c in [UiCommand::SaveImage, UiCommand::CopyParameters] {
                if c.button(ui, has_recipe) {
                    ctx.actions.push(Action::Ui(c));
                }
            }
            if UiCommand::RestoreFromImage.button(ui, true) {
                ctx.actions.push(Action::Ui(UiCommand::RestoreFromImage));
            }
            if ui
                .add_enabled(self.shown.is_some(), egui::Button::new("Fit"))
                .on_hover_text("Show the whole image (or double-click it)")
                .clicked()
            {
                self.scene_rect = egui::Rect::ZERO;
            }
            if let Some(r) = self.recipe() {
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
        self.strip_ui(ui);
        let area = ui.ctx().content_rect().size();
        if area != self.last_area {
            self.last_area = area;
            self.scene_rect = egui::Rect::ZERO;
        }
        match &self.shown {
            Some(shown) => {
                let size = egui::vec2(shown.image.width as f32, shown.image.height as f32);
                let texture = shown.texture.clone();
                let response = egui::Scene::new().zoom_range(0.1..=16.0).show(
                    ui,
                    &mut self.scene_rect,
                    |ui| {
                        ui.add(egui::Image::new((texture.id(), size)).alt_text("Generated image"));
                    },
                );
                if response.response.double_clicked() {
                    self.scene_rect = egui::Rect::ZERO;
                }
            }
            None => {
                ui.centered_and_justified(|ui| {
                    ui.weak(
                        "Your image appears here. Write a prompt and press Generate (Ctrl+Enter).",
                    );
                });
            }
        }
    }
}
