//! Every action reachable with no drop and no system file dialog (issue 26, defect 3): with
//! the built-in picker standing in for the system's, a user opens a diffusers model folder,
//! adds a LoRA and an embedding, picks an init image, saves an image elsewhere, restores
//! parameters from a PNG, chooses a training dataset and the models folder — every one with a
//! button, every path typed into the picker as a user would.

use std::path::Path;

use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use kiln::gui::KilnApp;
use kiln::gui::actions::Tab;
use kiln::gui::dialogs::Dialogs;
use kiln::gui::views::embeddings::EmbeddingStatus;
use kiln::gui::views::lora_stack::LoraStatus;

use super::{fixture, gallery_holds, loaded, notified, settings, training_folder, wait};

/// Types `path` into the open picker's Path field and presses Enter.
fn type_path(h: &mut Harness<'static, KilnApp>, path: &Path) {
    assert!(h.state().picker.is_some(), "the built-in picker is open");
    h.get_by_label("Path")
        .set_text_value_accesskit(&path.display().to_string());
    h.step();
    h.get_by_label("Path").focus();
    h.step();
    h.key_press(egui::Key::Enter);
    for _ in 0..4 {
        h.step();
    }
}

/// Presses the button labelled `label` (one that exists once), and lets what it opens
/// appear (a dialog is measured in its first frame and drawn in the next).
fn press(h: &mut Harness<'static, KilnApp>, label: &str) {
    h.get_by_label(label).click();
    for _ in 0..4 {
        h.step();
    }
}

#[test]
fn every_action_works_with_buttons_and_the_built_in_picker() {
    let out = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    training_folder(data.path());
    let mut s = settings(out.path());
    s.model_path = None;
    s.steps = 2;
    let mut h = super::harness_sized(s, egui::vec2(1280.0, 1000.0));
    h.state_mut().dialogs = Dialogs::built_in("No system file dialog in this test.");
    h.step();
    // Open model…: the built-in picker says why it is shown, and takes a diffusers folder.
    press(&mut h, "Open model…");
    assert!(
        h.query_by_label_contains("No system file dialog in this test")
            .is_some()
    );
    type_path(&mut h, &fixture("tiny-a"));
    if h.state().picker.is_some() {
        // Enter went into the folder: Open picks the model folder shown.
        press(&mut h, "Open");
    }
    assert!(h.state().picker.is_none());
    wait(&mut h, "tiny-a", loaded);
    // Add LoRA… and Add embedding….
    press(&mut h, "Add LoRA…");
    type_path(&mut h, &fixture("adapters/kohya_qkvo.safetensors"));
    press(&mut h, "Add embedding…");
    type_path(&mut h, &fixture("adapters/ti_cat.safetensors"));
    wait(&mut h, "the LoRA and the embedding", |a| {
        matches!(a.views.loras.rows()[..], [ref r] if matches!(r.status, LoraStatus::Loaded(_)))
            && a.views
                .embeddings
                .rows()
                .iter()
                .any(|r| matches!(r.status, EmbeddingStatus::Loaded { .. }))
    });
    // Init image….
    press(&mut h, "Init image…");
    type_path(&mut h, &data.path().join("img0.png"));
    assert_eq!(
        h.state().settings.init_image.as_deref(),
        Some(data.path().join("img0.png").as_path())
    );
    h.state_mut().settings.set_init_image(None);
    // Generate, then Save as… under a new name (".png" added), which says so.
    h.state_mut().settings.prompt = "a red circle".into();
    h.step();
    press(&mut h, "Generate");
    wait(&mut h, "the image", gallery_holds(1));
    press(&mut h, "Save as…");
    h.get_by_label("File name")
        .set_text_value_accesskit("kept-copy");
    h.step();
    press(&mut h, "Save");
    let saved = out.path().join("kept-copy.png");
    wait(&mut h, "the saved copy", |a| {
        saved.is_file() && notified(a, "Image saved") == 1
    });
    // Restore from image…: the prompt comes back from the PNG.
    h.state_mut().settings.prompt = "something else".into();
    press(&mut h, "Restore from image…");
    type_path(&mut h, &saved);
    wait(&mut h, "the restored prompt", |a| {
        a.settings.prompt == "a red circle"
    });
    // Choose dataset folder… on the Train tab.
    h.state_mut().tab = Tab::Train;
    h.step();
    press(&mut h, "Choose dataset folder…");
    type_path(&mut h, data.path());
    if h.state().picker.is_some() {
        press(&mut h, "Choose folder");
    }
    wait(&mut h, "the dataset report", |a| {
        a.views
            .train
            .report
            .as_ref()
            .is_some_and(|r| r.entries.len() == 3)
    });
    assert_eq!(h.state().settings.train.data.as_deref(), Some(data.path()));
    // The models folder (Models tab, Browse…).
    h.state_mut().tab = Tab::Models;
    h.step();
    let models = out.path().join("elsewhere");
    std::fs::create_dir_all(&models).unwrap();
    press(&mut h, "Browse…");
    type_path(&mut h, &models);
    if h.state().picker.is_some() {
        press(&mut h, "Choose folder");
    }
    assert_eq!(h.state().settings.models_dir, models);
    // Cancel closes the picker and changes nothing.
    press(&mut h, "Open model…");
    let cancel = h
        .get_all_by_label("Cancel")
        .find(|n| !n.accesskit_node().is_disabled())
        .expect("the picker's Cancel");
    cancel.click();
    h.step();
    h.step();
    assert!(h.state().picker.is_none());
    assert!(loaded(h.state()));
}
