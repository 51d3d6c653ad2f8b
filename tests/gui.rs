//! The desktop studio driven like a user drives it (`egui_kittest`: find widgets by label,
//! click, type, drop files), with the real engine thread and the tiny test models on the CPU.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use kiln::gui::KilnApp;
use kiln::gui::app::{LoraStatus, ModelStatus};
use kiln::gui::state::{STORAGE_KEY, Settings};

use crate::common::fixture;

/// The Models tab: the models folder, downloading SD 1.5, the first run.
mod models;

/// Settings for a test: tiny-b on the CPU, DDIM, small size, output in `out`, models folder
/// `out/models` (empty).
pub(crate) fn settings(out: &Path) -> Settings {
    Settings {
        model_path: Some(fixture("tiny-b")),
        device: "cpu".into(),
        sampler: "ddim".into(),
        schedule: kiln_engine::schedulers::Schedule::Default,
        steps: 4,
        width: 48,
        height: 32,
        random_seed: false,
        seed: 42,
        output_dir: out.to_owned(),
        models_dir: out.join("models"),
        ..Settings::default()
    }
}

/// The studio with `settings` and no shipped model (whatever this checkout holds).
pub(crate) fn harness(settings: Settings) -> Harness<'static, KilnApp> {
    harness_with_bundled(settings, None)
}

/// The studio with `settings` and `bundled` as the shipped model.
pub(crate) fn harness_with_bundled(
    settings: Settings,
    bundled: Option<PathBuf>,
) -> Harness<'static, KilnApp> {
    Harness::builder()
        .with_size(egui::vec2(1280.0, 820.0))
        .build_eframe(move |cc| KilnApp::with_bundled(&cc.egui_ctx, settings, bundled))
}

/// Steps the UI until `done` holds (the engine works on its own thread meanwhile).
pub(crate) fn wait(h: &mut Harness<'static, KilnApp>, what: &str, done: impl Fn(&KilnApp) -> bool) {
    let start = Instant::now();
    while !done(h.state()) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}; notifications: {:?}",
            h.state().notifications
        );
        h.step();
        std::thread::sleep(Duration::from_millis(5));
    }
    h.step();
}

pub(crate) fn loaded(app: &KilnApp) -> bool {
    matches!(app.model, ModelStatus::Loaded { .. })
}

pub(crate) fn pngs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "png"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn type_a_prompt_generate_and_find_the_image_in_the_gallery() {
    let out = tempfile::tempdir().unwrap();
    let mut h = harness(settings(out.path()));
    wait(&mut h, "the model", loaded);
    h.get_by_label("Prompt").click();
    h.step();
    h.get_by_label("Prompt").type_text("a photo of a cat");
    h.step();
    assert_eq!(h.state().settings.prompt, "a photo of a cat");
    h.step();
    assert!(
        h.query_by_label("5/75").is_some(),
        "token counter shows 5/75"
    );
    h.get_by_label("Generate").click();
    h.step();
    assert!(h.state().job.is_some(), "Generate starts a job");
    wait(&mut h, "the image", |a| {
        a.job.is_none() && !a.gallery.is_empty()
    });
    let files = pngs(out.path());
    assert_eq!(files.len(), 1, "one PNG in the output folder");
    let info = kiln_engine::metadata::read_image_info(&files[0]).unwrap();
    let recipe = info.recipe.unwrap();
    assert_eq!(
        (
            recipe.prompt.as_str(),
            recipe.seed,
            recipe.steps,
            recipe.width
        ),
        ("a photo of a cat", 42, 4, 48)
    );
    let shown = h.state().shown.as_ref().unwrap();
    assert_eq!(shown.size, [48, 32]);
    assert_eq!(shown.recipe.as_ref().unwrap().seed, 42);
    // The gallery lists it again after a restart.
    drop(h);
    let mut h = harness(settings(out.path()));
    h.step();
    assert_eq!(h.state().gallery.len(), 1);
    assert_eq!(h.state().gallery[0].path, files[0]);
}

#[test]
fn loras_dropped_on_the_window_join_the_stack_or_say_why_not() {
    let out = tempfile::tempdir().unwrap();
    let mut s = settings(out.path());
    s.model_path = Some(fixture("tiny-a"));
    let mut h = harness(s);
    wait(&mut h, "the model", loaded);
    for f in [
        "adapters/kohya_qkvo.safetensors",
        "adapters/sdxl_lora.safetensors",
        "adapters/ti_cat.safetensors",
    ] {
        h.input_mut().dropped_files.push(dropped(fixture(f)));
    }
    h.step();
    wait(&mut h, "the LoRA answers", |a| {
        a.lora_status.len() == 2
            && a.lora_status
                .iter()
                .all(|s| !matches!(s, LoraStatus::Pending))
    });
    assert!(matches!(h.state().lora_status[0], LoraStatus::Loaded(_)));
    assert!(
        h.query_by_label_contains("matched").is_some(),
        "the badge says matched n/m"
    );
    assert!(
        h.query_by_label_contains("made for Stable Diffusion XL")
            .is_some(),
        "the refused row says why"
    );
    wait(&mut h, "the embedding", |a| {
        a.embedding_status
            .iter()
            .any(|s| matches!(s, kiln::gui::app::EmbeddingStatus::Loaded { .. }))
    });
    assert_eq!(
        h.query_all_by_label("ti_cat").count(),
        2,
        "the token is listed and offered as a prompt chip"
    );
    // Removing the refused row keeps the loaded one.
    h.state_mut().remove_lora(1);
    h.step();
    assert_eq!(h.state().settings.loras.len(), 1);
}

#[test]
fn cancel_stops_the_job_and_saves_nothing() {
    let out = tempfile::tempdir().unwrap();
    let mut s = settings(out.path());
    s.steps = 400;
    s.sampler = "euler".into();
    let mut h = harness(s);
    wait(&mut h, "the model", loaded);
    h.get_by_label("Generate").click();
    h.step();
    wait(&mut h, "progress", |a| {
        a.job.as_ref().is_some_and(|j| j.step >= 1)
    });
    h.key_press(egui::Key::Escape);
    wait(&mut h, "the cancellation", |a| a.job.is_none());
    assert!(
        h.state()
            .notifications
            .iter()
            .any(|n| n.title == "Cancelled")
    );
    assert!(pngs(out.path()).is_empty(), "nothing saved");
    assert!(h.state().gallery.is_empty());
    // The engine is free again.
    h.state_mut().settings.steps = 2;
    h.get_by_label("Generate").click();
    wait(&mut h, "the next image", |a| {
        a.job.is_none() && a.gallery.len() == 1
    });
}

#[test]
fn settings_and_stack_survive_a_restart() {
    let out = tempfile::tempdir().unwrap();
    let mut s = settings(out.path());
    s.model_path = Some(fixture("tiny-a"));
    s.prompt = "a lighthouse".into();
    s.loras = vec![kiln::gui::state::LoraSetting {
        path: fixture("adapters/kohya_qkvo.safetensors"),
        weight: 0.6,
        enabled: true,
    }];
    let mut h = harness(s.clone());
    wait(&mut h, "the stack", |a| {
        loaded(a) && matches!(a.lora_status.first(), Some(LoraStatus::Loaded(_)))
    });
    // What eframe stores on exit is what the next start reads.
    let mut storage = MemoryStorage::default();
    eframe::App::save(h.state_mut(), &mut storage);
    let restored: Settings = eframe::get_value(&storage, STORAGE_KEY).unwrap();
    assert_eq!(restored, h.state().settings);
    assert_eq!(restored.prompt, "a lighthouse");
    assert_eq!(restored.recent_models, vec![fixture("tiny-a")]);
    drop(h);
    let mut h = harness(restored);
    wait(&mut h, "the restored stack", |a| {
        loaded(a) && matches!(a.lora_status.first(), Some(LoraStatus::Loaded(_)))
    });
    assert_eq!(h.state().settings.loras[0].weight, 0.6);
}

#[test]
fn an_engine_crash_is_reported_and_the_engine_comes_back() {
    let out = tempfile::tempdir().unwrap();
    let mut h = harness(settings(out.path()));
    wait(&mut h, "the model", loaded);
    h.state_mut()
        .engine
        .send(kiln_engine::protocol::Command::Crash);
    wait(&mut h, "the crash report", |a| {
        a.notifications.iter().any(|n| n.title.contains("crashed"))
    });
    wait(&mut h, "the model again", loaded);
    h.get_by_label("Generate").click();
    wait(&mut h, "an image after the crash", |a| {
        a.job.is_none() && a.gallery.len() == 1
    });
}

#[test]
fn dropping_an_a1111_png_restores_its_parameters() {
    let out = tempfile::tempdir().unwrap();
    let png = out.path().join("from-a1111.png");
    let pixels = kiln_engine::image::RgbImage {
        width: 2,
        height: 2,
        pixels: vec![0; 12],
    };
    kiln_engine::image::write_png(&png, &pixels, &[("parameters", "a red fox\nNegative prompt: blurry\nSteps: 30, Sampler: Euler a, Schedule type: Karras, CFG scale: 6, Seed: 77, Size: 512x768")]).unwrap();
    let mut s = settings(out.path());
    s.model_path = None;
    let mut h = harness(s);
    h.input_mut().dropped_files.push(dropped(png));
    h.step();
    h.step();
    let s = &h.state().settings;
    assert_eq!(
        (
            s.prompt.as_str(),
            s.negative.as_str(),
            s.steps,
            s.cfg,
            s.seed
        ),
        ("a red fox", "blurry", 30, 6.0, 77)
    );
    assert_eq!(
        (
            s.sampler.as_str(),
            s.schedule,
            s.width,
            s.height,
            s.random_seed
        ),
        (
            "euler-a",
            kiln_engine::schedulers::Schedule::Karras,
            512,
            768,
            false
        )
    );
    // Generating without a model says so instead of failing silently.
    h.get_by_label("Generate").click();
    h.step();
    assert!(
        h.state()
            .notifications
            .iter()
            .any(|n| n.title == "No model loaded")
    );
}

/// A file dropped on the window, as the windowing integration hands it to egui.
#[derive(Debug)]
struct Dropped(PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }
    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

fn dropped(path: PathBuf) -> egui::DroppedFileHandle {
    std::sync::Arc::new(Dropped(path))
}

/// eframe storage in memory (what the app saves on exit).
#[derive(Default)]
struct MemoryStorage(std::collections::HashMap<String, String>);

impl eframe::Storage for MemoryStorage {
    fn get_string(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
    fn set_string(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
    fn remove_string(&mut self, key: &str) {
        self.0.remove(key);
    }
    fn flush(&mut self) {}
}

#[test]
fn an_untouched_size_follows_the_model_and_a_chosen_one_stays() {
    let out = tempfile::tempdir().unwrap();
    let mut s = settings(out.path());
    (s.width, s.height) = (512, 512);
    let mut h = harness(s);
    wait(&mut h, "the model", loaded);
    assert_eq!(
        (h.state().settings.width, h.state().settings.height),
        (32, 32),
        "tiny-b is made for 32×32"
    );
    h.state_mut().settings.width = 48;
    h.state_mut().load_model(fixture("tiny-a"));
    wait(&mut h, "the other model", loaded);
    assert_eq!(
        (h.state().settings.width, h.state().settings.height),
        (48, 32),
        "a chosen size stays"
    );
}

#[test]
fn the_stack_order_weights_and_switches_reach_the_engine() {
    let out = tempfile::tempdir().unwrap();
    let mut s = settings(out.path());
    s.model_path = Some(fixture("tiny-a"));
    s.steps = 2;
    s.loras = ["kohya_qkvo", "stack_attn"]
        .iter()
        .map(|n| kiln::gui::state::LoraSetting {
            path: fixture(&format!("adapters/{n}.safetensors")),
            weight: 0.5,
            enabled: true,
        })
        .collect();
    let mut h = harness(s);
    wait(&mut h, "the stack", |a| {
        loaded(a)
            && a.lora_status
                .iter()
                .all(|s| matches!(s, LoraStatus::Loaded(_)))
    });
    h.state_mut().move_lora(1, 0);
    h.state_mut().set_lora_weight(0, -0.25);
    h.state_mut().set_lora_enabled(1, false);
    h.get_by_label("Generate").click();
    wait(&mut h, "the image", |a| {
        a.job.is_none() && a.gallery.len() == 1
    });
    let recipe = h.state().shown.as_ref().unwrap().recipe.clone().unwrap();
    let stack: Vec<(&str, f32)> = recipe
        .loras
        .iter()
        .map(|l| (l.name.as_str(), l.weight))
        .collect();
    assert_eq!(
        stack,
        [("stack_attn", -0.25)],
        "moved first, re-weighted; the disabled one is not applied"
    );
}

#[test]
fn compare_with_baseline_shows_both_images_and_the_numbers_kiln_diff_gives() {
    let out = tempfile::tempdir().unwrap();
    let mut s = settings(out.path());
    s.model_path = Some(fixture("tiny-a"));
    s.steps = 3;
    s.loras = vec![kiln::gui::state::LoraSetting {
        path: fixture("adapters/kohya_qkvo.safetensors"),
        weight: 1.0,
        enabled: true,
    }];
    let mut h = harness(s);
    wait(&mut h, "the stack", |a| {
        loaded(a) && matches!(a.lora_status.first(), Some(LoraStatus::Loaded(_)))
    });
    h.get_by_label("Compare with baseline").click();
    wait(&mut h, "both images", |a| {
        a.job.is_none() && a.compare.stats.is_some()
    });
    assert_eq!(h.state().view, kiln::gui::app::View::Compare);
    let stats = h.state().compare.stats.unwrap();
    assert!(
        h.query_by_label(&format!("mean |Δ| {:.3}", stats.mean_abs))
            .is_some(),
        "the mean is shown"
    );
    // The two PNGs in the gallery (newest first: adapted, then baseline) give the same numbers
    // from the command line.
    let (adapted, baseline) = (
        h.state().gallery[0].path.clone(),
        h.state().gallery[1].path.clone(),
    );
    let o = crate::cli::kiln(&[
        "diff",
        baseline.to_str().unwrap(),
        adapted.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", crate::cli::stderr(&o));
    let cli: kiln_engine::diff::DiffStats = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(cli, stats);
    assert!(stats.mean_abs > 0.0, "the LoRA changes the image");
    // The baseline's recipe has no LoRA; the adapted one has the stack.
    let recipe = |p: &Path| {
        kiln_engine::metadata::read_image_info(p)
            .unwrap()
            .recipe
            .unwrap()
    };
    assert!(recipe(&baseline).loras.is_empty());
    assert_eq!(recipe(&adapted).loras.len(), 1);
    // Every mode draws (heatmap with its legend, swipe).
    for mode in [
        kiln::gui::app::CompareMode::Heatmap,
        kiln::gui::app::CompareMode::Swipe,
    ] {
        h.state_mut().compare.mode = mode;
        h.step();
    }
    assert!(h.state().compare.heatmap.is_some());
}

/// Three images: a captioned one, an uncaptioned one, a corrupt one.
fn training_folder(dir: &Path) {
    for (i, rgb) in [[200u8, 40, 40], [40, 40, 200]].iter().enumerate() {
        let pixels = (0..32 * 32)
            .flat_map(|p| if (p % 32) < 16 { *rgb } else { [250, 250, 250] })
            .collect();
        kiln_engine::image::write_png(
            &dir.join(format!("img{i}.png")),
            &kiln_engine::image::RgbImage {
                width: 32,
                height: 32,
                pixels,
            },
            &[],
        )
        .unwrap();
    }
    std::fs::write(dir.join("img0.txt"), "a red half").unwrap();
    std::fs::write(dir.join("broken.png"), b"\x89PNG truncated").unwrap();
}

#[test]
fn drop_a_folder_edit_captions_train_watch_and_cancel() {
    let out = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    training_folder(data.path());
    let mut s = settings(out.path());
    s.model_path = Some(fixture("tiny-a"));
    s.train.resolution = 32;
    s.train.output_dir = out.path().join("training");
    s.train.steps = 400;
    s.train.learning_rate = 1e-3;
    s.train.sample_prompt = "a red half".into();
    s.train.sample_every = 2;
    s.train.checkpoint_every = 2;
    let mut h = harness(s);
    wait(&mut h, "the model", loaded);
    h.input_mut()
        .dropped_files
        .push(dropped(data.path().to_owned()));
    h.step();
    wait(&mut h, "the dataset report", |a| a.train.report.is_some());
    assert_eq!(h.state().view, kiln::gui::app::View::Train);
    assert_eq!(
        h.state().train.report.as_ref().unwrap().entries.len(),
        3,
        "three rows"
    );
    assert!(h.query_by_label("corrupt (skipped)").is_some());
    // The corrupt file's thumbnail failed once and is not decoded again every frame.
    let broken = h
        .state()
        .train
        .report
        .as_ref()
        .unwrap()
        .entries
        .iter()
        .position(|e| e.path.ends_with("broken.png"))
        .unwrap();
    assert!(matches!(
        h.state().train.thumbs[broken],
        kiln::gui::app::Thumb::Failed
    ));
    assert!(h.query_by_label("no caption").is_some());
    assert!(
        h.query_by_label_contains("3 images: 2 usable, 1 unreadable")
            .is_some()
    );
    // Edit the uncaptioned image's caption: it is saved to its .txt.
    h.get_by_label("caption of img1.png").click();
    h.step();
    h.get_by_label("caption of img1.png")
        .type_text("a blue half");
    h.step();
    h.key_press(egui::Key::Enter);
    h.step();
    h.step();
    assert_eq!(
        std::fs::read_to_string(data.path().join("img1.txt")).unwrap(),
        "a blue half"
    );
    // Per-image repeats from the table reach the training configuration.
    h.get_by_label("repeats of img0.png")
        .set_value_accesskit(3.0);
    h.step();
    h.step();
    let config = h.state().training_config().unwrap();
    assert_eq!(config.dataset.image_repeats.get("img0.png"), Some(&3));
    // The plan's time estimate comes from a measured warm-up.
    h.get_by_label("Estimate time").click();
    wait(&mut h, "the estimate", |a| a.train.estimate.is_some());
    assert!(h.state().train.estimate.unwrap() > 0.0);
    assert!(h.query_by_label_contains("s/step").is_some());
    // Train: the loss plot gains points and a sample appears.
    h.get_by_label("Start training").click();
    wait(&mut h, "a sample image", |a| {
        a.train
            .run
            .as_ref()
            .is_some_and(|r| r.loss.len() >= 2 && !r.samples.is_empty())
    });
    assert!(
        h.query_by_label_contains("it/s").is_some(),
        "the monitor shows the rate"
    );
    // Cancel: the run stops, says where the last checkpoint is, and the engine is free again.
    h.get_by_label("Stop").click();
    wait(&mut h, "the run to stop", |a| {
        a.train.run.as_ref().is_some_and(|r| !r.running)
    });
    let outcome = h
        .state()
        .train
        .run
        .as_ref()
        .unwrap()
        .outcome
        .clone()
        .unwrap();
    assert!(
        outcome
            .as_ref()
            .is_err_and(|m| m.contains("last checkpoint")),
        "{outcome:?}"
    );
    assert!(h.query_by_label("Start training").is_some());
    h.state_mut().settings.steps = 2;
    h.get_by_label("Generate").click();
    wait(&mut h, "an image after training", |a| {
        a.job.is_none() && !a.gallery.is_empty()
    });
}
