//! The window's views, one file each. Every view is a struct owning its state, drawn by
//! `ui(&mut self, ui, ctx)`: it reads the shared [`Ctx`], edits the persisted settings it
//! shows, and queues [`Action`](super::actions::Action)s for anything else — it never calls
//! another view, the engine or the disk.

pub mod canvas;
pub mod compare;
pub mod embeddings;
pub mod gallery;
pub mod lora_stack;
pub mod models;
pub mod notifications;
pub mod prompt;
pub mod sampler;
pub mod top_bar;
pub mod train;

use std::path::PathBuf;

use kiln_engine::worker::Repaint;

use super::actions::Actions;
use super::state::Settings;
use super::studio::Studio;

/// Every view of the window.
pub struct Views {
    /// Model, device, status.
    pub top_bar: top_bar::TopBar,
    /// Prompt and negative prompt.
    pub prompt: prompt::PromptView,
    /// Sampler settings and Generate.
    pub sampler: sampler::SamplerView,
    /// The LoRA stack.
    pub loras: lora_stack::LoraStackView,
    /// The embeddings.
    pub embeddings: embeddings::EmbeddingsView,
    /// The canvas tab.
    pub canvas: canvas::CanvasView,
    /// The compare tab.
    pub compare: compare::CompareView,
    /// The gallery.
    pub gallery: gallery::GalleryView,
    /// The Train tab.
    pub train: train::TrainView,
    /// The Models tab.
    pub models: models::ModelsView,
    /// The notification bar.
    pub notifications: notifications::Notifications,
}

impl Views {
    /// The views, with the stack and embeddings remembered in `settings` and `bundled` as
    /// the shipped model; `repaint` wakes the window when a view's thread has news.
    pub fn new(settings: &Settings, bundled: Option<PathBuf>, repaint: Repaint) -> Self {
        Views {
            top_bar: top_bar::TopBar,
            prompt: prompt::PromptView::default(),
            sampler: sampler::SamplerView,
            loras: lora_stack::LoraStackView::new(&settings.loras),
            embeddings: embeddings::EmbeddingsView::new(&settings.embeddings),
            canvas: canvas::CanvasView::default(),
            compare: compare::CompareView::default(),
            gallery: gallery::GalleryView::default(),
            train: train::TrainView::default(),
            models: models::ModelsView::new(bundled, repaint),
            notifications: notifications::Notifications::default(),
        }
    }
}

/// What a view gets to draw with.
pub struct Ctx<'a> {
    /// The persisted settings (the view edits those it shows).
    pub settings: &'a mut Settings,
    /// The shared runtime state.
    pub studio: &'a Studio,
    /// Where to queue what it asks for.
    pub actions: &'a mut Actions,
}

/// A thumbnail, decoded at most once (on the I/O thread): a file that cannot be decoded is
/// not asked for again.
#[derive(Clone, Default)]
pub enum Thumb {
    /// Not asked for yet.
    #[default]
    NotLoaded,
    /// Asked for; the I/O thread is on it.
    Loading,
    /// Decoded.
    Ready(egui::TextureHandle),
    /// Could not be decoded.
    Failed,
}

impl Thumb {
    /// The texture, if decoded.
    pub fn texture(&self) -> Option<&egui::TextureHandle> {
        match self {
            Thumb::Ready(t) => Some(t),
            _ => None,
        }
    }

    /// The answer of the I/O thread, as a texture named `name`.
    pub fn from_image(ctx: &egui::Context, name: String, image: Option<egui::ColorImage>) -> Self {
        match image {
            Some(img) => Thumb::Ready(ctx.load_texture(name, img, egui::TextureOptions::LINEAR)),
            None => Thumb::Failed,
        }
    }
}

/// A label, then a combo box named by it (labels first, as a form reads); returns what
/// `add` returned when the list was open.
pub fn combo<R>(
    ui: &mut egui::Ui,
    label: &str,
    selected: impl Into<egui::WidgetText>,
    add: impl FnOnce(&mut egui::Ui) -> R,
) -> Option<R> {
    ui.horizontal(|ui| {
        let l = ui.label(label);
        let r = egui::ComboBox::from_id_salt(label)
            .selected_text(selected)
            .show_ui(ui, add);
        r.response.labelled_by(l.id);
        r.inner
    })
    .inner
}

/// A label, then a number field named by it, both with `tip` as tooltip.
pub fn labeled_drag<T: egui::emath::Numeric>(
    ui: &mut egui::Ui,
    label: &str,
    value: &mut T,
    range: std::ops::RangeInclusive<T>,
    speed: f64,
    tip: &str,
) {
    ui.horizontal(|ui| {
        let l = ui.label(label).on_hover_text(tip);
        ui.add(egui::DragValue::new(value).range(range).speed(speed))
            .labelled_by(l.id)
            .on_hover_text(tip);
    });
}

/// A button whose accessible name (and tooltip) is `name`, e.g. "Load tiny-a" for a "Load"
/// button in tiny-a's row.
pub fn row_button(ui: &mut egui::Ui, text: &str, name: &str) -> bool {
    let r = ui.button(text).on_hover_text(name);
    r.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, true, name));
    r.clicked()
}

/// "42 s", "3 min", "1 h 20 min".
pub fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s.div_ceil(60)),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// A file's name for a label ("" when it has none).
pub fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A file's stem for a label ("" when it has none).
pub fn file_stem(path: &std::path::Path) -> String {
    path.file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
