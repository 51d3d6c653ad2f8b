//! Textual-inversion embeddings: load by button or drop; each row shows the token, vector
//! count and width, inserts the token into the prompt, or removes the embedding. Conflicts
//! (token already in the vocabulary, wrong width) show the engine's explanation.

use crate::gui::app::{EmbeddingStatus, KilnApp};
use crate::gui::commands::UiCommand;

/// Draws the embeddings panel.
pub fn ui(ui: &mut egui::Ui, app: &mut KilnApp) {
    ui.horizontal(|ui| {
        ui.heading("Embeddings");
        if UiCommand::AddEmbedding.button(ui, true) {
            app.run_command(UiCommand::AddEmbedding);
        }
    });
    if app.settings.embeddings.is_empty() {
        ui.weak("No embeddings — add one or drop a .pt/.safetensors/.bin on the window");
        return;
    }
    let (mut remove, mut insert) = (None, None);
    for (i, (e, status)) in app
        .settings
        .embeddings
        .iter()
        .zip(&app.embedding_status)
        .enumerate()
    {
        ui.horizontal(|ui| {
            match status {
                EmbeddingStatus::Pending => {
                    ui.spinner();
                    ui.label(e.path.display().to_string());
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
        let p = &mut app.settings.prompt;
        if !p.is_empty() && !p.ends_with(' ') {
            p.push(' ');
        }
        p.push_str(&token);
    }
    if let Some(i) = remove {
        app.remove_embedding(i);
    }
}
