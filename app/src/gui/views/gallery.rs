//! The gallery: every image in the output folder (newest first, listed again on restart) as
//! thumbnails; selecting one shows it with its recipe, "Reuse parameters" restores it all.
//! The listing, the thumbnails and the images shown are read on the I/O thread; an image the
//! studio made joins with the recipe it was made with (nothing is read back).

use std::path::{Path, PathBuf};

use kiln_engine::metadata::{ImageInfo, Recipe, Source};

use super::{Ctx, Thumb};
use crate::gui::actions::{Action, Tab};
use crate::gui::commands::UiCommand;
use crate::gui::io::{GalleryEntry, ImagePurpose, IoRequest, ThumbKey};

/// Thumbnail edge in points (and pixels).
pub const THUMB: u32 = 96;

/// At most this many thumbnails are asked of the I/O thread at once, so a big folder never
/// holds up a save.
const THUMBS_IN_FLIGHT: usize = 8;

/// One gallery image.
#[derive(Clone)]
pub struct GalleryItem {
    /// The PNG.
    pub path: PathBuf,
    /// Its metadata, if any.
    pub info: Option<ImageInfo>,
    /// Thumbnail.
    pub thumb: Thumb,
}

/// The gallery's state.
#[derive(Default)]
pub struct GalleryView {
    /// Newest first.
    pub items: Vec<GalleryItem>,
    /// The selected image.
    pub selected: Option<usize>,
    /// Why the folder could not be listed.
    pub error: Option<String>,
}

impl std::fmt::Debug for GalleryView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GalleryView")
            .field("items", &self.items.len())
            .finish_non_exhaustive()
    }
}

impl GalleryView {
    /// The output folder was listed (or could not be).
    pub fn listed(&mut self, result: Result<Vec<GalleryEntry>, String>) {
        match result {
            Ok(entries) => {
                self.items = entries
                    .into_iter()
                    .map(|e| GalleryItem {
                        path: e.path,
                        info: e.info,
                        thumb: Thumb::NotLoaded,
                    })
                    .collect();
                self.selected = None;
                self.error = None;
            }
            Err(e) => self.error = Some(e),
        }
    }

    /// A new image made with `recipe` was saved at `path`: it comes first, selected.
    pub fn insert(
        &mut self,
        ctx: &egui::Context,
        path: PathBuf,
        recipe: Recipe,
        thumb: egui::ColorImage,
    ) {
        let info = ImageInfo {
            source: Source::Kiln,
            parameters: recipe.parameters(),
            recipe: Some(recipe),
        };
        let thumb = Thumb::from_image(ctx, path.display().to_string(), Some(thumb));
        self.items.insert(
            0,
            GalleryItem {
                path,
                info: Some(info),
                thumb,
            },
        );
        self.selected = Some(0);
    }

    /// The thumbnail of `path` was decoded (or not).
    pub fn thumbnail(&mut self, ctx: &egui::Context, path: &Path, image: Option<egui::ColorImage>) {
        if let Some(item) = self.items.iter_mut().find(|i| i.path == path) {
            item.thumb = Thumb::from_image(ctx, path.display().to_string(), image);
        }
    }

    /// The selected image's metadata.
    pub fn selected_info(&self) -> Option<&ImageInfo> {
        self.selected
            .and_then(|i| self.items.get(i))
            .and_then(|g| g.info.as_ref())
    }

    /// Draws the gallery.
    pub fn ui(&mut self, ui: &mut egui::Ui, ctx: &mut Ctx<'_>) {
        ui.horizontal(|ui| {
            ui.heading("Gallery");
            ui.weak(format!("{}", self.items.len()));
        });
        ui.weak(ctx.settings.output_dir.display().to_string());
        if let Some(e) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        if let Some(item) = self.selected.and_then(|i| self.items.get(i)) {
            match &item.info {
                Some(info) => {
                    let text = kiln_engine::metadata::a1111::write(&info.parameters);
                    ui.label(egui::RichText::new(text).small());
                    if UiCommand::ReuseParameters.button(ui, true) {
                        ctx.actions.push(Action::Ui(UiCommand::ReuseParameters));
                    }
                }
                None => {
                    ui.weak("no generation parameters in this image");
                }
            }
            ui.horizontal(|ui| {
                for (side, text, tip) in [
                    (
                        0,
                        "Compare as A",
                        "Put this image on the left of the compare view",
                    ),
                    (
                        1,
                        "Compare as B",
                        "Put this image on the right of the compare view",
                    ),
                ] {
                    if ui.button(text).on_hover_text(tip).clicked() {
                        ctx.actions.push(Action::Io(IoRequest::ReadImage {
                            purpose: ImagePurpose::Compare(side),
                            path: item.path.clone(),
                        }));
                        ctx.actions.push(Action::ShowTab(Tab::Compare));
                    }
                }
            });
            ui.separator();
        }
        let mut in_flight = self
            .items
            .iter()
            .filter(|i| matches!(i.thumb, Thumb::Loading))
            .count();
        let mut clicked = None;
        egui::ScrollArea::vertical().show(ui, |ui| {
            ui.horizontal_wrapped(|ui| {
                for (i, item) in self.items.iter_mut().enumerate() {
                    if matches!(item.thumb, Thumb::NotLoaded) && in_flight < THUMBS_IN_FLIGHT {
                        in_flight += 1;
                        item.thumb = Thumb::Loading;
                        ctx.actions.push(Action::Io(IoRequest::Thumbnail {
                            key: ThumbKey::Gallery(item.path.clone()),
                            path: item.path.clone(),
                            size: THUMB,
                        }));
                    }
                    let name = super::file_name(&item.path);
                    let selected = self.selected == Some(i);
                    let edge = THUMB as f32;
                    let r = match item.thumb.texture() {
                        Some(t) => ui.add(
                            egui::Button::image(
                                egui::Image::new(t)
                                    .max_size(egui::vec2(edge, edge))
                                    .alt_text(&name),
                            )
                            .selected(selected),
                        ),
                        None => ui.add(
                            egui::Button::new("…")
                                .min_size(egui::vec2(edge, edge))
                                .selected(selected),
                        ),
                    };
                    if r.on_hover_text(&name).clicked() {
                        clicked = Some(i);
                    }
                }
            });
        });
        if let Some(i) = clicked {
            self.selected = Some(i);
            ctx.actions.push(Action::Io(IoRequest::ReadImage {
                purpose: ImagePurpose::Show,
                path: self.items[i].path.clone(),
            }));
        }
    }
}
