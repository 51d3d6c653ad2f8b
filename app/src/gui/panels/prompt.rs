//! Prompt and negative prompt with A1111's token counter per chunk (75 tokens for SD 1.x, the
//! model's tokenizer length less BOS and EOS), and chips for
//! loaded embedding tokens and LoRA trigger words that insert themselves at the cursor.

use crate::gui::app::{EmbeddingStatus, KilnApp, LoraStatus};

/// "tokens/limit" as A1111 shows it (limit = 75 × chunks for SD 1.x).
fn counter(app: &KilnApp, text: &str) -> String {
    match app
        .tokenizer
        .as_ref()
        .map(|t| kiln_engine::prompt::token_count(t, text))
    {
        Some(Ok((tokens, chunks))) => format!("{tokens}/{}", chunk_tokens(app) * chunks),
        _ => String::new(),
    }
}

/// Tokens per chunk of the counter's tokenizer.
fn chunk_tokens(app: &KilnApp) -> usize {
    app.tokenizer.as_ref().map_or(75, |t| t.max_length() - 2)
}

/// Inserts `word` at the cursor of the text edit `id` (or at the end), with a separating space.
fn insert_at_cursor(ctx: &egui::Context, id: egui::Id, text: &mut String, word: &str) {
    let at = egui::TextEdit::load_state(ctx, id)
        .and_then(|s| s.cursor.char_range())
        .map(|r| r.primary.index.0)
        .unwrap_or_else(|| text.chars().count());
    let byte = text
        .char_indices()
        .nth(at)
        .map(|(b, _)| b)
        .unwrap_or(text.len());
    let before = if byte > 0 && !text[..byte].ends_with(' ') {
        " "
    } else {
        ""
    };
    text.insert_str(byte, &format!("{before}{word} "));
}

/// Draws the prompt panel.
pub fn ui(ui: &mut egui::Ui, app: &mut KilnApp) {
    let prompt_id = egui::Id::unique("prompt-edit");
    let label = ui.horizontal(|ui| {
        let label = ui.label("Prompt");
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            ui.weak(counter(app, &app.settings.prompt)).on_hover_text(
                "Tokens / capacity: prompts longer than 75 tokens are split into 77-token chunks",
            );
        });
        label
    });
    let r = ui.add(
        egui::TextEdit::multiline(&mut app.settings.prompt)
            .id(prompt_id)
            .desired_rows(3)
            .desired_width(f32::INFINITY)
            .hint_text("a watercolor fox in a snowy forest, (detailed:1.2)"),
    );
    r.labelled_by(label.inner.id);
    let label = ui.horizontal(|ui| {
        let label = ui.label("Negative prompt");
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            ui.weak(counter(app, &app.settings.negative));
        });
        label
    });
    let r = ui.add(
        egui::TextEdit::multiline(&mut app.settings.negative)
            .id(egui::Id::unique("negative-edit"))
            .desired_rows(2)
            .desired_width(f32::INFINITY)
            .hint_text("blurry, lowres"),
    );
    r.labelled_by(label.inner.id);

    // Chips: embedding tokens and LoRA trigger words.
    let mut chips: Vec<(String, String)> = app
        .embedding_status
        .iter()
        .filter_map(|s| match s {
            EmbeddingStatus::Loaded { token, .. } => Some((token.clone(), "embedding".to_owned())),
            _ => None,
        })
        .collect();
    for (l, s) in app.settings.loras.iter().zip(&app.lora_status) {
        if let LoraStatus::Loaded(report) = s {
            let name = l
                .path
                .file_stem()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            chips.extend(
                report
                    .trigger_words
                    .iter()
                    .take(6)
                    .map(|w| (w.clone(), format!("trigger word of {name}"))),
            );
        }
    }
    if !chips.is_empty() {
        ui.horizontal_wrapped(|ui| {
            for (word, what) in chips {
                if ui
                    .small_button(&word)
                    .on_hover_text(format!("Insert {what} at the cursor"))
                    .clicked()
                {
                    insert_at_cursor(ui.ctx(), prompt_id, &mut app.settings.prompt, &word);
                }
            }
        });
    }
}
