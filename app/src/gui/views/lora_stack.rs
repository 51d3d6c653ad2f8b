//! The LoRA stack: add by button or drop; each row has on/off, name, weight (slider −2…2 and
//! a number field), a "matched n/m" badge whose tooltip is the load report in words, trigger
//! words, remove, and a drag handle to reorder. A refused LoRA's row is inert — no switch, no
//! weight, its name struck through, "not applied: the reason" — and [`StackSummary`] counts what
//! a Generate will really use (the line above Generate says it).
//!
//! Every row has an [`AdapterId`] the view chooses, and every command about it names that id,
//! so a row removed while its LoRA is still loading is removed from the engine too. While the
//! weight slider is dragged, the new weight is sent at most every [`DRAG_SEND_INTERVAL`] (and
//! when the drag ends); the engine applies only the latest of those it has waiting.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kiln_engine::adapters::AdapterId;
use kiln_engine::adapters::lora::LoraReport;
use kiln_engine::protocol::Command;

use super::Ctx;
use super::prompt::Chip;
use crate::gui::actions::Action;
use crate::gui::commands::UiCommand;
use crate::gui::state::LoraSetting;

/// The least time between two weights sent while a slider is dragged.
pub const DRAG_SEND_INTERVAL: Duration = Duration::from_millis(150);

/// A row's engine state.
#[derive(Debug, Clone)]
pub enum LoraStatus {
    /// Sent to the engine, no answer yet.
    Pending,
    /// In the engine's stack.
    Loaded(Box<LoraReport>),
    /// Refused, with the reason.
    Refused(String),
}

/// One LoRA of the stack.
#[derive(Debug, Clone)]
pub struct LoraRow {
    /// The id its engine commands use.
    pub id: AdapterId,
    /// File or PEFT folder.
    pub path: PathBuf,
    /// Weight, −2…2 on the slider (any value typed).
    pub weight: f32,
    /// On or off.
    pub enabled: bool,
    /// What the engine said.
    pub status: LoraStatus,
    /// The weight the engine merged last (None: none yet).
    pub applied: Option<f32>,
    /// How many times the engine merged a new weight or switch of this LoRA.
    pub merges: usize,
    /// The weight the engine was last sent.
    sent_weight: f32,
    /// When a weight was last sent during a drag.
    sent_at: Option<Instant>,
}

impl LoraRow {
    /// The file stem, as the row shows it.
    pub fn name(&self) -> String {
        super::file_stem(&self.path)
    }
}

/// The stack's rows, in order.
#[derive(Debug, Default)]
pub struct LoraStackView {
    rows: Vec<LoraRow>,
    next_id: u64,
}

/// What the stack holds, as a Generate will use it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StackSummary {
    /// Loaded and switched on: applied.
    pub active: usize,
    /// Loaded, switched off.
    pub off: usize,
    /// Refused by the engine: never applied.
    pub refused: usize,
    /// Still loading.
    pub pending: usize,
}

impl StackSummary {
    /// Why Compare with baseline has nothing to compare (None: a LoRA is on).
    pub fn nothing_to_compare(&self) -> Option<&'static str> {
        if self.active > 0 {
            None
        } else if self.active + self.off + self.refused + self.pending == 0 {
            Some("The LoRA stack is empty")
        } else if self.pending > 0 {
            Some("The LoRAs are still loading")
        } else {
            Some("No LoRA is switched on: with and without would be the same image")
        }
    }

    /// The line shown above Generate (None for an empty stack).
    pub fn describe(&self) -> Option<String> {
        let all = self.active + self.off + self.refused + self.pending;
        if all == 0 {
            return None;
        }
        let mut text = format!(
            "{} of {all} LoRA{} active",
            self.active,
            if all == 1 { "" } else { "s" }
        );
        for (n, what) in [
            (self.off, "off"),
            (self.refused, "refused"),
            (self.pending, "loading"),
        ] {
            if n > 0 {
                text.push_str(&format!(" · {n} {what}"));
            }
        }
        Some(text)
    }
}

/// What a row asks for in a frame.
enum RowAction {
    Enabled(usize, bool),
    Remove(usize),
    Move(usize, usize),
}

impl LoraStackView {
    /// The stack remembered in `settings` (every row pending until a model loads).
    pub fn new(settings: &[LoraSetting]) -> Self {
        let mut view = LoraStackView::default();
        for l in settings {
            view.push_row(l.path.clone(), l.weight, l.enabled);
        }
        view
    }

    fn push_row(&mut self, path: PathBuf, weight: f32, enabled: bool) -> &LoraRow {
        let id = AdapterId(self.next_id);
        self.next_id += 1;
        self.rows.push(LoraRow {
            id,
            path,
            weight,
            enabled,
            status: LoraStatus::Pending,
            applied: None,
            merges: 0,
            sent_weight: weight,
            sent_at: None,
        });
        &self.rows[self.rows.len() - 1]
    }

    /// The rows, in stack order.
    pub fn rows(&self) -> &[LoraRow] {
        &self.rows
    }

    /// Whether the stack is empty.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// How many rows a Generate applies, and why the others are not.
    pub fn summary(&self) -> StackSummary {
        let mut s = StackSummary::default();
        for r in &self.rows {
            match (&r.status, r.enabled) {
                (LoraStatus::Refused(_), _) => s.refused += 1,
                (LoraStatus::Pending, _) => s.pending += 1,
                (LoraStatus::Loaded(_), true) => s.active += 1,
                (LoraStatus::Loaded(_), false) => s.off += 1,
            }
        }
        s
    }

    /// The stack as it is remembered.
    pub fn settings(&self) -> Vec<LoraSetting> {
        self.rows
            .iter()
            .map(|r| LoraSetting {
                path: r.path.clone(),
                weight: r.weight,
                enabled: r.enabled,
            })
            .collect()
    }

    /// Adds a row for `path` (None when it is in the stack already); returns the command that
    /// loads it into the engine.
    pub fn add(&mut self, path: PathBuf, weight: f32) -> Option<Command> {
        if self.rows.iter().any(|r| r.path == path) {
            return None;
        }
        let row = self.push_row(path, weight, true);
        Some(add_command(row))
    }

    /// Replaces the whole stack (a recipe's); returns the commands that make the engine's
    /// stack the same: the old rows removed, the new ones (with new ids) added.
    pub fn replace(&mut self, stack: Vec<LoraSetting>) -> Vec<Command> {
        let mut commands: Vec<Command> = self
            .rows
            .drain(..)
            .map(|r| Command::RemoveLora { id: r.id })
            .collect();
        for l in stack {
            let row = self.push_row(l.path, l.weight, l.enabled);
            commands.push(add_command(row));
        }
        commands
    }

    /// The commands that load every row into a freshly loaded model (in stack order); every
    /// row waits for its answer again.
    pub fn commands_for_new_model(&mut self) -> Vec<Command> {
        self.rows
            .iter_mut()
            .map(|r| {
                r.status = LoraStatus::Pending;
                r.sent_weight = r.weight;
                r.applied = None;
                add_command(r)
            })
            .collect()
    }

    /// The engine added LoRA `id`.
    pub fn on_added(&mut self, id: AdapterId, report: Box<LoraReport>) {
        if let Some(r) = self.rows.iter_mut().find(|r| r.id == id) {
            r.status = LoraStatus::Loaded(report);
        }
    }

    /// The engine merged LoRA `id` at `weight`.
    pub fn on_applied(&mut self, id: AdapterId, weight: f32) {
        if let Some(r) = self.rows.iter_mut().find(|r| r.id == id) {
            r.applied = Some(weight);
            r.merges += 1;
        }
    }

    /// The engine refused LoRA `id`.
    pub fn on_refused(&mut self, id: AdapterId, reason: String) {
        if let Some(r) = self.rows.iter_mut().find(|r| r.id == id) {
            r.status = LoraStatus::Refused(reason);
        }
    }

    /// The trigger words of the loaded LoRAs, for the prompt's chips.
    pub fn chips(&self) -> Vec<Chip> {
        self.rows
            .iter()
            .filter_map(|r| match &r.status {
                LoraStatus::Loaded(report) => Some((r.name(), report)),
                _ => None,
            })
            .flat_map(|(name, report)| {
                report.trigger_words.iter().take(6).map(move |w| Chip {
                    word: w.clone(),
                    what: format!("trigger word of {name}"),
                })
            })
            .collect()
    }

    /// Draws the LoRA panel.
    pub fn ui(&mut self, ui: &mut egui::Ui, ctx: &mut Ctx<'_>) {
        ui.horizontal(|ui| {
            ui.heading("LoRA stack");
            if UiCommand::AddLora.button(ui, true) {
                ctx.actions.push(Action::Ui(UiCommand::AddLora));
            }
        });
        if self.rows.is_empty() {
            ui.weak("No LoRAs — add one or drop a .safetensors LoRA on the window");
            return;
        }
        let mut actions = Vec::new();
        for (i, row) in self.rows.iter_mut().enumerate() {
            // Widget ids follow the row, not its position: a moved row keeps its widgets'
            // state (and a click meant for it never lands on its neighbour).
            if let Some(a) = ui.push_id(row.id, |ui| row_ui(ui, i, row, ctx)).inner {
                actions.push(a);
            }
        }
        // The actions name rows by their position when drawn; each is applied to the row
        // that had it, wherever an earlier action of this frame moved it.
        let drawn: Vec<AdapterId> = self.rows.iter().map(|r| r.id).collect();
        let at = |rows: &[LoraRow], i: usize| {
            let id = drawn.get(i)?;
            rows.iter().position(|r| r.id == *id)
        };
        for a in actions {
            match a {
                RowAction::Enabled(i, enabled) => {
                    if let Some(i) = at(&self.rows, i) {
                        let row = &mut self.rows[i];
                        row.enabled = enabled;
                        ctx.actions.engine(Command::SetLoraEnabled {
                            id: row.id,
                            enabled,
                        });
                    }
                }
                RowAction::Remove(i) => {
                    if let Some(i) = at(&self.rows, i) {
                        let row = self.rows.remove(i);
                        ctx.actions.engine(Command::RemoveLora { id: row.id });
                    }
                }
                RowAction::Move(from, to) => {
                    if let (Some(from), Some(to)) = (at(&self.rows, from), at(&self.rows, to))
                        && from != to
                    {
                        let row = self.rows.remove(from);
                        self.rows.insert(to, row);
                        ctx.actions.engine(Command::ReorderLoras {
                            order: self.rows.iter().map(|r| r.id).collect(),
                        });
                    }
                }
            }
        }
    }
}

fn add_command(row: &LoraRow) -> Command {
    Command::AddLora {
        id: row.id,
        path: row.path.clone(),
        weight: row.weight,
        enabled: row.enabled,
    }
}

/// A load report in words, for the "matched" badge's tooltip.
pub fn report_text(r: &LoraReport) -> String {
    let join = |v: Vec<String>| v.join(", ");
    let mut lines = vec![
        format!(
            "Format: {}{}",
            r.format.name(),
            if r.dialect.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.dialect)
            }
        ),
        format!(
            "Made for: {}",
            r.family.map_or("not recorded in the file", |f| f.name())
        ),
        format!(
            "Rank {} · alpha {} ({})",
            join(r.ranks.iter().map(ToString::to_string).collect()),
            if r.alphas.is_empty() {
                "= rank".to_owned()
            } else {
                join(r.alphas.iter().cloned().collect())
            },
            r.alpha_source
        ),
        format!(
            "Matched {} of {} modules: {} UNet layers, {} text-encoder layers",
            r.matched, r.modules, r.unet_layers, r.text_encoder_layers
        ),
    ];
    if !r.unmatched.is_empty() {
        let shown: Vec<String> = r.unmatched.iter().take(5).cloned().collect();
        let more = r.unmatched.len().saturating_sub(shown.len());
        lines.push(format!(
            "Not matched: {}{}",
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
    }
    if !r.trigger_words.is_empty() {
        lines.push(format!(
            "Trigger words: {}",
            join(r.trigger_words.iter().take(10).cloned().collect())
        ));
    }
    lines.push(format!("Hash: {}", r.short_hash));
    lines.join("\n")
}

/// One row; its weight changes are sent from here (throttled while dragging).
fn row_ui(ui: &mut egui::Ui, i: usize, row: &mut LoraRow, ctx: &mut Ctx<'_>) -> Option<RowAction> {
    let name = row.name();
    let row_id = egui::Id::unique(("lora-row", row.id));
    let mut action = None;
    let frame = egui::Frame::group(ui.style()).show(ui, |ui| {
        ui.horizontal(|ui| {
            ui.dnd_drag_source(row_id, i, |ui| {
                ui.label("::").on_hover_text("Drag to reorder");
            });
            let refused = matches!(row.status, LoraStatus::Refused(_));
            if refused {
                // Inert: nothing to switch, the name struck through.
                ui.label(egui::RichText::new(&name).strikethrough().weak())
                    .on_hover_text(row.path.display().to_string());
            } else {
                let mut enabled = row.enabled;
                let check = ui.checkbox(&mut enabled, "");
                check.widget_info(|| {
                    egui::WidgetInfo::selected(
                        egui::Role::CheckBox,
                        true,
                        enabled,
                        format!("Apply {name}"),
                    )
                });
                if check.on_hover_text(format!("Apply {name}")).changed() {
                    action = Some(RowAction::Enabled(i, enabled));
                }
                ui.label(&name)
                    .on_hover_text(row.path.display().to_string());
            }
            match &row.status {
                LoraStatus::Pending => {
                    ui.spinner();
                }
                LoraStatus::Loaded(report) => {
                    ui.label(
                        egui::RichText::new(format!(
                            "matched {}/{}",
                            report.matched, report.modules
                        ))
                        .small(),
                    )
                    .on_hover_text(format!(
                        "{}\nWeight merged {} times",
                        report_text(report),
                        row.merges
                    ));
                }
                LoraStatus::Refused(_) => {
                    ui.colored_label(ui.visuals().error_fg_color, "refused");
                }
            }
            for (text, what, to) in [
                ("up", "up", i.checked_sub(1)),
                ("down", "down", Some(i + 1)),
            ] {
                if let Some(to) = to
                    && super::row_button(ui, text, &format!("Move {name} {what}"))
                {
                    action = Some(RowAction::Move(i, to));
                }
            }
            if super::row_button(ui, "x", &format!("Remove {name}")) {
                action = Some(RowAction::Remove(i));
            }
        });
        if let LoraStatus::Refused(reason) = &row.status {
            ui.colored_label(
                ui.visuals().error_fg_color,
                format!("not applied: {reason}"),
            );
            return;
        }
        ui.horizontal(|ui| {
            let slider = ui.add(egui::Slider::new(&mut row.weight, -2.0..=2.0).show_value(false));
            slider.widget_info(|| {
                egui::WidgetInfo::labeled(egui::Role::Slider, true, format!("{name} weight"))
            });
            let field = ui.add(
                egui::DragValue::new(&mut row.weight)
                    .speed(0.01)
                    .fixed_decimals(2),
            );
            field.widget_info(|| {
                egui::WidgetInfo::labeled(
                    egui::Role::SpinButton,
                    true,
                    format!("{name} weight value"),
                )
            });
            let dragging = slider.dragged() || field.dragged();
            let due = !dragging
                || row
                    .sent_at
                    .is_none_or(|t| t.elapsed() >= DRAG_SEND_INTERVAL);
            if row.weight != row.sent_weight && due {
                row.sent_weight = row.weight;
                row.sent_at = dragging.then(Instant::now);
                ctx.actions.engine(Command::SetLoraWeight {
                    id: row.id,
                    weight: row.weight,
                });
            }
            if dragging && row.weight != row.sent_weight {
                // Come back when the interval is over, even if the pointer rests.
                ui.ctx().request_repaint_after(DRAG_SEND_INTERVAL);
            }
        });
        if let LoraStatus::Loaded(report) = &row.status
            && !report.trigger_words.is_empty()
        {
            ui.weak(format!(
                "triggers: {}",
                report
                    .trigger_words
                    .iter()
                    .take(6)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    });
    if let Some(from) = frame.response.dnd_release_payload::<usize>() {
        action = Some(RowAction::Move(*from, i));
    }
    action
}
