//! Textual-inversion embeddings: load by button or drop; each row shows the token, vector
//! count and width, inserts the token into the prompt, or removes the embedding. Conflicts
//! (token already in the vocabulary, wrong width) show the engine's explanation. Every row
//! has an [`AdapterId`] its engine commands name.

use std::path::PathBuf;

use kiln_engine::adapters::AdapterId;
use kiln_engine::protocol::Command;

use super::Ctx;
use super::prompt::Chip;
use crate::gui::actions::Action;
use crate::gui::commands::UiCommand;
use crate::gui::state::EmbeddingSetting;

/// An embedding row's engine state.
#[derive(Debug, Clone, PartialEq)]
pub enum EmbeddingStatus {
    /// Sent, no answer yet.
    Pending,
    /// Loaded under `token`.
    Loaded {
        /// Token.
        token: String,
        /// Vectors.
        vectors: usize,
        /// Width.
        width: usize,
    },
    /// Failed, with the reason.
    Failed(String),
}

/// One embedding.
#[derive(Debug, Clone)]
pub struct EmbeddingRow {
    /// The id its engine commands use.
    pub id: AdapterId,
    /// The file.
    pub path: PathBuf,
    /// Token; None = the file stem.
    pub token: Option<String>,
    /// What the engine said.
    pub status: EmbeddingStatus,
}

/// The embeddings, in load order.
#[derive(Debug, Default)]
pub struct EmbeddingsView {
    rows: Vec<EmbeddingRow>,
    next_id: u64,
}

impl EmbeddingsView {
    /// The embeddings remembered in `settings` (pending until a model loads).
    pub fn new(settings: &[EmbeddingSetting]) -> Self {
        let mut view = EmbeddingsView::default();
        for e in settings {
            view.push_row(e.path.clone(), e.token.clone());
        }
        view
    }

    fn push_row(&mut self, path: PathBuf, token: Option<String>) -> &EmbeddingRow {
        let id = AdapterId(self.next_id);
        self.next_id += 1;
        self.rows.push(EmbeddingRow {
            id,
            path,
            token,
            status: EmbeddingStatus::Pending,
        });
        &self.rows[self.rows.len() - 1]
    }

    /// The rows, in load order.
    pub fn rows(&self) -> &[EmbeddingRow] {
        &self.rows
    }

    /// The embeddings as they are remembered.
    pub fn settings(&self) -> Vec<EmbeddingSetting> {
        self.rows
            .iter()
            .map(|r| EmbeddingSetting {
                path: r.path.clone(),
                token: r.token.clone(),
            })
            .collect()
    }

    /// Adds a row (None when that file is loaded already); returns the command that loads it.
    pub fn add(&mut self, path: PathBuf, token: Option<String>) -> Option<Command> {
        if self.rows.iter().any(|r| r.path == path) {
            return None;
        }
        Some(load_command(self.push_row(path, token)))
    }

    /// Replaces every embedding (a recipe's); returns the commands that make the engine's
    /// the same.
    pub fn replace(&mut self, list: Vec<EmbeddingSetting>) -> Vec<Command> {
        let mut commands: Vec<Command> = self
            .rows
            .drain(..)
            .map(|r| Command::RemoveEmbedding { id: r.id })
            .collect();
        for e in list {
            commands.push(load_command(self.push_row(e.path, e.token)));
        }
        commands
    }

    /// The commands that load every row into a freshly loaded model; every row waits again.
    pub fn commands_for_new_model(&mut self) -> Vec<Command> {
        self.rows
            .iter_mut()
            .map(|r| {
                r.status = EmbeddingStatus::Pending;
                load_command(r)
            })
            .collect()
    }

    /// The engine loaded embedding `id`.
    pub fn on_loaded(&mut self, id: AdapterId, status: EmbeddingStatus) {
        if let Some(r) = self.rows.iter_mut().find(|r| r.id == id) {
            r.status = status;
        }
    }

    /// Whether the file at `path` is loaded (or loading).
    pub fn uses(&self, path: &std::path::Path) -> bool {
        self.rows
            .iter()
            .any(|r| r.path == path && !matches!(r.status, EmbeddingStatus::Failed(_)))
    }

    /// How many embeddings are loaded (a Generate can use their tokens).
    pub fn loaded(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| matches!(r.status, EmbeddingStatus::Loaded { .. }))
            .count()
    }

    /// The loaded tokens, for the prompt's chips.
    pub fn chips(&self) -> Vec<Chip> {
        self.rows
            .iter()
            .filter_map(|r| match &r.status {
                EmbeddingStatus::Loaded { token, .. } => Some(Chip {
                    word: token.clone(),
                    what: "embedding".into(),
                }),
                _ => None,
            })
            .collect()
    }

    /// Draws the embeddings panel.
    pub fn ui(&mut self, ui: &mut egui::Ui, ctx: &mut Ctx<'_>) {
        ui.horizontal(|ui| {
            ui.heading("Embeddings");
            if UiCommand::AddEmbedding.button(ui, true) {
                ctx.actions.push(Action::Ui(UiCommand::AddEmbedding));
            }
        });
        if self.rows.is_empty() {
            ui.weak("No embeddings — add one or drop a .pt/.safetensors/.bin on the window");
            return;
        }
        let (mut remove, mut insert) = (None, None);
        for (i, row) in self.rows.iter().enumerate() {
            ui.horizontal(|ui| {
                match &row.status {
                    EmbeddingStatus::Pending => {
                        ui.spinner();
                        ui.label(row.path.display().to_string());
                    }
                    EmbeddingStatus::Loaded {
                        token,
                        vectors,
                        width,
                    } => {
                        ui.monospace(token);
                        ui.weak(format!(
                            "{vectors} vector{} × {width}",
                            if *vectors == 1 { "" } else { "s" }
                        ));
                        if ui
                            .small_button("Insert")
                            .on_hover_text(format!("Add {token} to the prompt"))
                            .clicked()
                        {
                            insert = Some(token.clone());
                        }
                    }
                    EmbeddingStatus::Failed(reason) => {
                        ui.colored_label(ui.visuals().error_fg_color, reason);
                    }
                }
                if ui.small_button("x").on_hover_text("Remove").clicked() {
                    remove = Some(i);
                }
            });
        }
        if let Some(token) = insert {
            let p = &mut ctx.settings.prompt;
            if !p.is_empty() && !p.ends_with(' ') {
                p.push(' ');
            }
            p.push_str(&token);
        }
        if let Some(i) = remove {
            let row = self.rows.remove(i);
            ctx.actions.engine(Command::RemoveEmbedding { id: row.id });
        }
    }
}

fn load_command(row: &EmbeddingRow) -> Command {
    Command::LoadEmbedding {
        id: row.id,
        path: row.path.clone(),
        token: row.token.clone(),
    }
}
