//! Prompt and negative prompt with A1111's token counter per chunk (75 tokens for SD 1.x, the
//! model's tokenizer length less BOS and EOS), and chips for loaded embedding tokens and LoRA
//! trigger words that insert themselves at the cursor.

use super::Ctx;

/// A word the prompt panel offers to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct Chip {
    /// The word (an embedding's token, a LoRA's trigger word).
    pub word: String,
    /// What it is, for the tooltip ("embedding", "trigger word of x").
    pub what: String,
}

/// The prompt panel's state: the counters, recomputed only when the text changes.
#[derive(Debug, Default)]
pub struct PromptView {
    counters: [(String, String); 2],
}

/// "tokens/limit" as A1111 shows it (limit = 75 × chunks for SD 1.x).
fn count(ctx: &Ctx<'_>, text: &str) -> String {
    match ctx.studio.tokenizer.as_ref() {
        Some(t) => match kiln_engine::prompt::token_count(t, text) {
            Ok((tokens, chunks)) => format!("{tokens}/{}", (t.max_length() - 2) * chunks),
            Err(_) => String::new(),
        },
        None => String::new(),
    }
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

impl PromptView {
    /// The counter for prompt `which` (0: prompt, 1: negative), from the cache.
    fn counter(&mut self, ctx: &Ctx<'_>, which: usize, text: &str) -> String {
        let (cached, counter) = &mut self.counters[which];
        if cached != text || counter.is_empty() {
            *cached = text.to_owned();
            *counter = count(ctx, text);
        }
        counter.clone()
    }

    /// Forgets the counters (the model's tokenizer length changed).
    pub fn recount(&mut self) {
        self.counters = Default::default();
    }

    /// Draws the prompt panel with `chips` to insert.
    pub fn ui(&mut self, ui: &mut egui::Ui, ctx: &mut Ctx<'_>, chips: &[Chip]) {
        let prompt_id = egui::Id::unique("prompt-edit");
        let counter = self.counter(ctx, 0, &ctx.settings.prompt.clone());
        let label = ui.horizontal(|ui| {
            let label = ui.label("Prompt");
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                ui.weak(counter).on_hover_text(
                    "Tokens / capacity: prompts longer than 75 tokens are split into 77-token chunks",
                );
            });
            label
        });
        let r = ui.add(
            egui::TextEdit::multiline(&mut ctx.settings.prompt)
                .id(prompt_id)
                .desired_rows(3)
                .desired_width(f32::INFINITY)
                .hint_text("a watercolor fox in a snowy forest, (detailed:1.2)"),
        );
        r.labelled_by(label.inner.id);
        let counter = self.counter(ctx, 1, &ctx.settings.negative.clone());
        let label = ui.horizontal(|ui| {
            let label = ui.label("Negative prompt");
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                ui.weak(counter);
            });
            label
        });
        let r = ui.add(
            egui::TextEdit::multiline(&mut ctx.settings.negative)
                .id(egui::Id::unique("negative-edit"))
                .desired_rows(2)
                .desired_width(f32::INFINITY)
                .hint_text("blurry, lowres"),
        );
        r.labelled_by(label.inner.id);
        if !chips.is_empty() {
            ui.horizontal_wrapped(|ui| {
                for chip in chips {
                    if ui
                        .small_button(&chip.word)
                        .on_hover_text(format!("Insert {} at the cursor", chip.what))
                        .clicked()
                    {
                        insert_at_cursor(ui.ctx(), prompt_id, &mut ctx.settings.prompt, &chip.word);
                    }
                }
            });
        }
    }
}
