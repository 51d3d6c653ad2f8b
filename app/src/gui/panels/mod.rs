//! One file per panel; each has `fn ui(ui, app)` and changes the app only through its
//! methods or settings.

pub mod canvas;
pub mod compare;
pub mod embeddings;
pub mod gallery;
pub mod lora;
pub mod models;
pub mod notifications;
pub mod prompt;
pub mod sampler;
pub mod top_bar;
pub mod train;

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
