//! The window at its smallest (issue 26, defect 8): at 800 × 500 points Generate and Cancel
//! stay in sight (pinned below the scrolling settings), the tab row fits (it wraps), the
//! gallery folds away leaving the canvas its room, and Generate still works.

use egui_kittest::kittest::Queryable;

use super::{gallery_holds, harness_sized, loaded, settings, wait};

#[test]
fn at_800_by_500_generate_and_the_tabs_stay_in_sight() {
    let out = tempfile::tempdir().unwrap();
    let mut s = settings(out.path());
    s.steps = 2;
    let (w, h_) = (800.0, 500.0);
    let mut h = harness_sized(s, egui::vec2(w, h_));
    wait(&mut h, "the model", loaded);
    let window = egui::Rect::from_min_size(egui::Pos2::ZERO, egui::vec2(w, h_));
    for label in [
        "Generate",
        "Cancel",
        "Compare with baseline",
        "Canvas",
        "Compare",
        "Train",
        "Models",
        "Gallery",
        "Save as…",
    ] {
        let r = h.get_by_label(label).rect();
        assert!(
            window.contains_rect(r),
            "{label} at {r:?} is outside the window"
        );
    }
    // The gallery is folded away (only its toggle says "Gallery", not its panel's heading):
    // the canvas has the middle, at least 300 points of it up to the window's edge.
    assert_eq!(h.state().settings.show_gallery, None);
    assert_eq!(h.query_all_by_label("Gallery").count(), 1);
    let canvas = h.get_by_label("Canvas").rect();
    assert!(
        w - canvas.min.x >= 300.0,
        "the middle starts at {}",
        canvas.min.x
    );
    let fit = h.get_by_label("Fit").rect();
    assert!(fit.max.x <= w, "the canvas's toolbar fits: {fit:?}");
    h.get_by_label("Generate").click();
    wait(&mut h, "the image", gallery_holds(1));
    // The gallery comes back with one click, and stays as chosen.
    h.get_by_label("Gallery").click();
    for _ in 0..4 {
        h.step();
    }
    assert_eq!(h.state().settings.show_gallery, Some(true));
    assert_eq!(
        h.query_all_by_label("Gallery").count(),
        2,
        "the toggle and the panel's heading"
    );
    assert!(window.contains_rect(h.get_by_label("Generate").rect()));
}

/// A batch shows all its images (issue 26, defect 9): a strip under the toolbar, one button
/// per image ("image i of n"), a click shows that one.
#[test]
fn a_batch_shows_every_image_in_a_strip() {
    let out = tempfile::tempdir().unwrap();
    let mut s = settings(out.path());
    s.steps = 2;
    s.batch_count = 3;
    s.random_seed = false;
    s.seed = 7;
    let mut h = super::harness(s);
    wait(&mut h, "the model", loaded);
    h.get_by_label("Generate").click();
    wait(&mut h, "three images", gallery_holds(3));
    h.step();
    assert_eq!(h.state().views.canvas.strip.len(), 3);
    let seeds: Vec<u64> = h
        .state()
        .views
        .canvas
        .strip
        .iter()
        .map(|s| s.recipe.seed)
        .collect();
    assert_eq!(seeds, [7, 8, 9]);
    assert_eq!(
        h.state().views.canvas.recipe().map(|r| r.seed),
        Some(9),
        "the last one shown"
    );
    h.get_by_label("image 1 of 3").click();
    h.step();
    h.step();
    assert_eq!(h.state().views.canvas.recipe().map(|r| r.seed), Some(7));
    // The next single image starts a new strip (and a single image needs none).
    h.state_mut().settings.batch_count = 1;
    h.get_by_label("Generate").click();
    wait(&mut h, "the fourth image", gallery_holds(4));
    assert_eq!(h.state().views.canvas.strip.len(), 1);
    assert!(h.query_by_label("image 1 of 1").is_none());
}
