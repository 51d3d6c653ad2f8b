//! The compare view (pixel-diff viewer): two images side by side, as a swipe over one frame,
//! or as a difference heatmap with adjustable gain and a colour-scale legend; with the mean
//! and max |Δ| on 0–255, the share of pixels changed beyond a threshold, and PSNR. The mean
//! turns a warning colour below 0.5 ("this adapter barely changes the image"). A Compare with
//! baseline's two images stay here, with their recipes, until "Save both" puts them in the
//! output folder and the gallery (a comparison is a question, not a result to keep).

use kiln_engine::diff::{BARELY_CHANGES, DiffStats, colormap, diff_stats, heatmap};
use kiln_engine::image::RgbImage;

use super::Ctx;
use crate::gui::actions::Action;
use crate::gui::commands::UiCommand;
use crate::gui::io::{IoRequest, to_color_image};

/// One side of the compare view.
#[derive(Clone)]
pub struct CompareSide {
    /// Pixels.
    pub image: RgbImage,
    /// Texture.
    pub texture: egui::TextureHandle,
    /// What it is ("baseline", a file name).
    pub label: String,
    /// How it was made, when it is a Compare with baseline's image not saved yet.
    pub recipe: Option<kiln_engine::metadata::Recipe>,
}

/// How the compare view shows the two images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareMode {
    /// A and B next to each other.
    SideBySide,
    /// B over A, revealed up to a slider.
    Swipe,
    /// The difference heatmap.
    Heatmap,
}

/// The compare view's state.
pub struct CompareView {
    /// Left / before, right / after.
    pub sides: [Option<CompareSide>; 2],
    /// Display mode.
    pub mode: CompareMode,
    /// Swipe position, 0–1.
    pub swipe: f32,
    /// Heatmap gain.
    pub gain: f32,
    /// Changed-pixel threshold (0–255).
    pub threshold: u8,
    /// Statistics of B − A, or why there are none.
    pub stats: Option<Result<DiffStats, String>>,
    /// The heatmap texture (for `gain`).
    heatmap: Option<(f32, egui::TextureHandle)>,
    /// Whether the pair was saved with "Save both".
    pub saved: bool,
}

impl Default for CompareView {
    fn default() -> Self {
        CompareView {
            sides: [None, None],
            mode: CompareMode::SideBySide,
            swipe: 0.5,
            gain: 4.0,
            threshold: 8,
            stats: None,
            heatmap: None,
            saved: false,
        }
    }
}

impl CompareView {
    /// Puts `image` on side 0 (A) or 1 (B) and refreshes the numbers; `recipe` when it is an
    /// unsaved image of a Compare with baseline.
    pub fn set_side(
        &mut self,
        ctx: &egui::Context,
        side: usize,
        image: RgbImage,
        label: String,
        recipe: Option<kiln_engine::metadata::Recipe>,
    ) {
        self.saved = false;
        let texture = ctx.load_texture(
            format!("compare-{side}"),
            to_color_image(&image),
            egui::TextureOptions::LINEAR,
        );
        self.sides[side.min(1)] = Some(CompareSide {
            image,
            texture,
            label,
            recipe,
        });
        self.refresh();
    }

    /// The statistics of B − A, when both sides are there and of one size.
    pub fn stats(&self) -> Option<&DiffStats> {
        self.stats.as_ref().and_then(|s| s.as_ref().ok())
    }

    /// Recomputes the statistics (and drops the heatmap) after a change of images or threshold.
    fn refresh(&mut self) {
        self.heatmap = None;
        self.stats = match &self.sides {
            [Some(a), Some(b)] => {
                Some(diff_stats(&a.image, &b.image, self.threshold).map_err(|e| e.to_string()))
            }
            _ => None,
        };
    }

    /// The heatmap texture at the current gain (made on demand).
    fn heatmap_texture(&mut self, ctx: &egui::Context) -> Option<egui::TextureHandle> {
        if let Some((g, t)) = &self.heatmap
            && *g == self.gain
        {
            return Some(t.clone());
        }
        let [Some(a), Some(b)] = &self.sides else {
            return None;
        };
        let h = heatmap(&a.image, &b.image, self.gain).ok()?;
        let t = ctx.load_texture("heatmap", to_color_image(&h), egui::TextureOptions::NEAREST);
        self.heatmap = Some((self.gain, t.clone()));
        Some(t)
    }

    /// Draws the compare view; `nothing_to_compare` says why Compare with baseline cannot
    /// run (no LoRA switched on).
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        ctx: &mut Ctx<'_>,
        nothing_to_compare: Option<&'static str>,
    ) {
        ui.horizontal_wrapped(|ui| {
            let why = ctx.studio.cannot_generate().or(nothing_to_compare);
            if UiCommand::CompareWithBaseline.button_unless(ui, why) {
                ctx.actions.push(Action::Ui(UiCommand::CompareWithBaseline));
            }
            if let [Some(a), Some(b)] = &self.sides
                && let (Some(ra), Some(rb)) = (&a.recipe, &b.recipe)
            {
                if self.saved {
                    ui.weak("Both saved to the output folder");
                } else if ui
                    .button("Save both")
                    .on_hover_text("Save the baseline and the adapted image, with their recipes, to the output folder and the gallery")
                    .clicked()
                {
                    for (side, recipe) in [(a, ra), (b, rb)] {
                        ctx.actions.push(Action::Io(IoRequest::SaveOutput {
                            image: side.image.clone(),
                            recipe: Box::new(recipe.clone()),
                            dir: ctx.settings.output_dir.clone(),
                            thumb: crate::gui::views::gallery::THUMB,
                        }));
                    }
                    self.saved = true;
                }
            }
            ui.separator();
            ui.selectable_value(&mut self.mode, CompareMode::SideBySide, "Side by side");
            ui.selectable_value(&mut self.mode, CompareMode::Swipe, "Swipe");
            ui.selectable_value(&mut self.mode, CompareMode::Heatmap, "Heatmap");
        });
        let mut threshold = self.threshold;
        match &self.stats {
            Some(Ok(s)) => {
                let s = *s;
                ui.horizontal_wrapped(|ui| numbers(ui, &s, &mut threshold));
            }
            Some(Err(e)) => {
                ui.colored_label(
                    ui.visuals().error_fg_color,
                    format!("Cannot compare these images: {e}"),
                );
            }
            None => {}
        }
        if threshold != self.threshold {
            self.threshold = threshold;
            self.refresh();
        }
        let [Some(a), Some(b)] = self.sides.clone() else {
            ui.centered_and_justified(|ui| {
                ui.weak(
                    "Press Compare with baseline, or pick two images in the gallery (A and B).",
                );
            });
            return;
        };
        let avail = ui.available_size();
        let [w, h] = [a.image.width as f32, a.image.height as f32];
        match self.mode {
            CompareMode::SideBySide => {
                let scale = ((avail.x / 2.0 - 8.0) / w)
                    .min((avail.y - 40.0) / h)
                    .max(0.05);
                ui.horizontal(|ui| {
                    for side in [&a, &b] {
                        ui.vertical(|ui| {
                            ui.label(&side.label);
                            ui.add(
                                egui::Image::new((side.texture.id(), egui::vec2(w, h) * scale))
                                    .alt_text(side.label.clone()),
                            );
                        });
                    }
                });
            }
            CompareMode::Swipe => {
                let r = ui.add(
                    egui::Slider::new(&mut self.swipe, 0.0..=1.0)
                        .show_value(false)
                        .text("swipe"),
                );
                r.on_hover_text(format!("left: {}, right: {}", a.label, b.label));
                let scale = (avail.x / w).min((avail.y - 60.0) / h).max(0.05);
                let (rect, _) =
                    ui.allocate_exact_size(egui::vec2(w, h) * scale, egui::Sense::hover());
                let uv = egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
                ui.painter()
                    .image(a.texture.id(), rect, uv, egui::Color32::WHITE);
                let t = self.swipe;
                let right = egui::Rect::from_min_max(
                    egui::pos2(rect.left() + rect.width() * t, rect.top()),
                    rect.max,
                );
                let right_uv = egui::Rect::from_min_max(egui::pos2(t, 0.0), egui::pos2(1.0, 1.0));
                ui.painter()
                    .image(b.texture.id(), right, right_uv, egui::Color32::WHITE);
                ui.painter().vline(
                    right.left(),
                    rect.y_range(),
                    egui::Stroke::new(2.0, egui::Color32::WHITE),
                );
            }
            CompareMode::Heatmap => {
                let r = ui.add(
                    egui::Slider::new(&mut self.gain, 1.0..=32.0)
                        .logarithmic(true)
                        .text("gain"),
                );
                r.on_hover_text(
                    "Multiplies the difference before colouring: small changes become visible",
                );
                if let Some(tex) = self.heatmap_texture(ui.ctx()) {
                    let scale = ((avail.x - 90.0) / w).min((avail.y - 60.0) / h).max(0.05);
                    ui.horizontal(|ui| {
                        ui.add(
                            egui::Image::new((tex.id(), egui::vec2(w, h) * scale))
                                .alt_text("difference heatmap"),
                        );
                        legend(ui, self.gain, h * scale);
                    });
                }
            }
        }
    }
}

/// The numbers of B − A, with the changed-pixel threshold to edit.
fn numbers(ui: &mut egui::Ui, s: &DiffStats, threshold: &mut u8) {
    let warn = s.mean_abs < BARELY_CHANGES;
    let color = if warn {
        ui.visuals().warn_fg_color
    } else {
        ui.visuals().strong_text_color()
    };
    ui.colored_label(color, format!("mean |Δ| {:.3}", s.mean_abs))
        .on_hover_text(if warn {
            "Mean absolute difference on 0-255: this adapter barely changes the image"
        } else {
            "Mean absolute difference over every channel, on 0-255"
        });
    ui.label(format!("max |Δ| {}", s.max_abs));
    ui.label(format!("changed {:.2}%", s.changed * 100.0));
    let l = ui.label("threshold");
    ui.add(egui::DragValue::new(threshold).range(0..=254))
        .labelled_by(l.id)
        .on_hover_text("A pixel counts as changed when a channel differs by more than this");
    ui.label(if s.psnr_db.is_finite() {
        format!("PSNR {:.2} dB", s.psnr_db)
    } else {
        "PSNR infinite (identical)".to_owned()
    });
}

/// The colour scale: |Δ| on 0–255 from 0 (bottom) to 255/gain (top).
fn legend(ui: &mut egui::Ui, gain: f32, height: f32) {
    let (rect, _) =
        ui.allocate_exact_size(egui::vec2(70.0, height.max(60.0)), egui::Sense::hover());
    let bar = egui::Rect::from_min_size(rect.min, egui::vec2(16.0, rect.height()));
    let steps = 64;
    for i in 0..steps {
        let t0 = i as f32 / steps as f32;
        let y1 = bar.bottom() - bar.height() * t0;
        let y0 = bar.bottom() - bar.height() * (i + 1) as f32 / steps as f32;
        let [r, g, b] = colormap(t0);
        ui.painter().rect_filled(
            egui::Rect::from_x_y_ranges(bar.x_range(), y0..=y1),
            0.0,
            egui::Color32::from_rgb(r, g, b),
        );
    }
    let font = egui::FontId::proportional(11.0);
    let color = ui.visuals().text_color();
    ui.painter().text(
        egui::pos2(bar.right() + 4.0, bar.top()),
        egui::Align2::LEFT_TOP,
        format!("{:.0}", 255.0 / gain),
        font.clone(),
        color,
    );
    ui.painter().text(
        egui::pos2(bar.right() + 4.0, bar.bottom()),
        egui::Align2::LEFT_BOTTOM,
        "0",
        font.clone(),
        color,
    );
    ui.painter().text(
        egui::pos2(bar.right() + 4.0, bar.center().y),
        egui::Align2::LEFT_CENTER,
        "|Δ|",
        font,
        color,
    );
}
