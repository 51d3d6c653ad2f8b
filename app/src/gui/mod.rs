//! The desktop studio: one eframe window whose panels drive the engine thread.
//!
//! Layout: a top bar (model, device, status), a left panel (prompt, sampler settings, LoRA
//! stack, embeddings), the middle tab (canvas, compare, train, models), the gallery on the
//! right, notifications at the bottom. Every view lives in its own file under [`views`] and
//! owns its state; views queue [`actions::Action`]s that [`controller`] carries out after the
//! frame; [`app`] is the frame loop and routes the engine's events and the [`io`] thread's
//! answers to the views. The persisted [`state::Settings`] are apart from runtime state
//! ([`studio::Studio`], the views). No file is read or written on the UI thread, with two
//! small, documented exceptions: the built-in [`file_picker`] lists the folder it shows when
//! that changes, and [`dialogs::Dialogs::detect`] looks for a desktop portal once at start-up.
//! [`start`] is what `kiln` opens with (`--model`, `--lora`, `--embedding`, `--dataset`).

pub mod actions;
pub mod api_host;
pub mod app;
pub mod commands;
pub mod controller;
pub mod dialogs;
pub mod engine_client;
pub mod file_picker;
pub mod io;
pub mod start;
pub mod state;
pub mod studio;
pub mod views;

pub use app::KilnApp;

/// Opens the window (`kiln` without a subcommand) with what `start` asks for (else the
/// remembered model and stack).
pub fn run(start: start::StartArgs) -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Kiln")
            .with_inner_size([1280.0, 820.0])
            // The layout holds down to here: Generate and Cancel stay in sight, the gallery
            // folds away, the tab row wraps.
            .with_min_inner_size([800.0, 500.0])
            .with_drag_and_drop(true),
        ..Default::default()
    };
    eframe::run_native(
        "Kiln",
        options,
        Box::new(|cc| Ok(Box::new(KilnApp::new(cc, &start)))),
    )
    .map_err(|e| anyhow::anyhow!("could not open the window: {e}"))
}
