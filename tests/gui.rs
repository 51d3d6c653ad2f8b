//! The desktop studio driven like a user drives it (`egui_kittest`: find widgets by label,
//! click, type, drag, drop files), with the real engine thread and the tiny test models on the
//! CPU.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use kiln::gui::KilnApp;
use kiln::gui::actions::Tab;
use kiln::gui::state::{STORAGE_KEY, Settings};
use kiln::gui::studio::ModelStatus;
use kiln::gui::views::embeddings::EmbeddingStatus;
use kiln::gui::views::lora_stack::LoraStatus;
use kiln_engine::protocol::{Command, Operation};
use kiln_engine::schedulers::{SamplerKind, Schedule};

use crate::common::fixture;

/// The "Serve API" switch: the HTTP API on the window's engine.
mod api;
/// The window at its smallest size.
mod layout;
/// The Models tab: the models folder, downloading SD 1.5, the first run.
mod models;
/// Every action with a button and the built-in file picker: no drop, no system dialog.
mod no_dialogs;
/// Training runs that own their name: the question before a name is reused, Resume.
mod training_runs;

/// Settings for a test: tiny-b on the CPU, DDIM, small size, output in `out`, models folder
/// `out/models` (empty).
pub(crate) fn settings(out: &Path) -> Settings {
    Settings {
        model_path: Some(fixture("tiny-b")),
        device: kiln_engine::device::DeviceSpec::Cpu,
        sampler: SamplerKind::Ddim,
        schedule: Schedule::Default,
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

/// The studio with `settings` in a window of `size` points.
pub(crate) fn harness_sized(settings: Settings, size: egui::Vec2) -> Harness<'static, KilnApp> {
    Harness::builder()
        .with_size(size)
        .build_eframe(move |cc| KilnApp::with_bundled(&cc.egui_ctx, settings, None))
}

/// Steps the UI until `done` holds (the engine works on its own thread meanwhile).
pub(crate) fn wait(h: &mut Harness<'static, KilnApp>, what: &str, done: impl Fn(&KilnApp) -> bool) {
    let start = Instant::now();
    while !done(h.state()) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}; notifications: {:?}",
            h.state().views.notifications.items
        );
        h.step();
        std::thread::sleep(Duration::from_millis(5));
    }
    h.step();
}

/// Scrolls the widget labelled `label` into view, as a user would, and clicks it.
pub(crate) fn click_in_view(h: &mut Harness<'static, KilnApp>, label: &str) {
    h.get_by_label(label).scroll_to_me();
    // The scroll is animated: wait until the widget stops moving.
    let mut rect = h.get_by_label(label).rect();
    for _ in 0..120 {
        h.step();
        let now = h.get_by_label(label).rect();
        if now == rect {
            break;
        }
        rect = now;
    }
    h.get_by_label(label).click();
    // The frame that handles the click, and the one it asks for.
    h.step();
    h.step();
}

/// Drops the folder `dir` on the window, as a user would, and waits for its dataset report.
pub(crate) fn drop_dataset(h: &mut Harness<'static, KilnApp>, dir: &Path) {
    h.input_mut().dropped_files.push(dropped(dir.to_owned()));
    h.step();
    wait(h, "the dataset report", |a| a.views.train.report.is_some());
}

/// Steps the UI for `time` (to see that nothing more happens).
pub(crate) fn idle(h: &mut Harness<'static, KilnApp>, time: Duration) {
    let start = Instant::now();
    while start.elapsed() < time {
        h.step();
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub(crate) fn loaded(app: &KilnApp) -> bool {
    matches!(app.studio.model, ModelStatus::Loaded { .. })
}

/// No job runs and the gallery holds `n` images.
pub(crate) fn gallery_holds(n: usize) -> impl Fn(&KilnApp) -> bool {
    move |a| a.studio.job.is_none() && a.views.gallery.items.len() == n
}

pub(crate) fn lora_statuses(app: &KilnApp) -> Vec<&LoraStatus> {
    app.views.loras.rows().iter().map(|r| &r.status).collect()
}

pub(crate) fn notified(app: &KilnApp, title: &str) -> usize {
    app.views
        .notifications
        .items
        .iter()
        .filter(|n| n.title.contains(title))
        .count()
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

/// The recipe of the image on the canvas.
fn shown_recipe(h: &Harness<'static, KilnApp>) -> kiln_engine::metadata::Recipe {
    h.state()
        .views
        .canvas
        .recipe()
        .cloned()
        .expect("an image with its recipe on the canvas")
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
    assert!(h.state().studio.job.is_some(), "Generate starts a job");
    wait(&mut h, "the image", gallery_holds(1));
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
    // The gallery's entry is the recipe it was made with, not read back from the file.
    let item = &h.state().views.gallery.items[0];
    assert_eq!(item.path, files[0]);
    assert_eq!(item.info.as_ref().unwrap().recipe.as_ref(), Some(&recipe));
    let shown = h.state().views.canvas.shown.as_ref().unwrap();
    assert_eq!([shown.image.width, shown.image.height], [48, 32]);
    assert_eq!(shown.recipe.as_ref().unwrap().seed, 42);
    assert_eq!(shown.path.as_deref(), Some(files[0].as_path()));
    // The gallery lists it again after a restart (read on the I/O thread).
    drop(h);
    let mut h = harness(settings(out.path()));
    wait(&mut h, "the gallery", |a| a.views.gallery.items.len() == 1);
    assert_eq!(h.state().views.gallery.items[0].path, files[0]);
}

/// The window turns a prompt into a job exactly as the command line does (the engine's one
/// resolver): a `<lora:NAME:WEIGHT>` tag loads NAME from the LoRA folder and the CLIP skip
/// setting is used; `kiln generate --from` the window's PNG gives the same pixels and recipe.
#[test]
fn the_window_and_the_cli_make_the_same_image_from_a_prompt_with_a_lora_tag() {
    let out = tempfile::tempdir().unwrap();
    let mut s = settings(out.path());
    s.model_path = Some(fixture("tiny-a"));
    s.prompt = "a red circle on a blue background <lora:kohya_qkvo:0.8>".into();
    s.negative = "blurry".into();
    (s.width, s.height) = (40, 32);
    s.clip_skip = 2;
    s.lora_dir = Some(fixture("adapters"));
    let mut h = harness(s);
    wait(&mut h, "the model", loaded);
    h.get_by_label("Generate").click();
    wait(&mut h, "the image", gallery_holds(1));
    let recipe = shown_recipe(&h);
    assert_eq!(
        recipe.prompt,
        h.state().settings.prompt,
        "the prompt as typed"
    );
    assert_eq!(recipe.clip_skip, 2);
    let loras: Vec<(&str, f32)> = recipe
        .loras
        .iter()
        .map(|l| (l.name.as_str(), l.weight))
        .collect();
    assert_eq!(loras, [("kohya_qkvo", 0.8)], "the tag's LoRA was applied");
    let window_png = pngs(out.path()).remove(0);
    let cli_png = out.path().join("cli/from-window.png");
    std::fs::create_dir_all(cli_png.parent().unwrap()).unwrap();
    let o = crate::cli::kiln(&[
        "generate",
        "--from",
        window_png.to_str().unwrap(),
        "--out",
        cli_png.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", crate::cli::stderr(&o));
    let read = |p: &Path| kiln_engine::image::read_png(p).unwrap().pixels;
    assert_eq!(read(&cli_png), read(&window_png), "bit-identical pixels");
    let cli_recipe = kiln_engine::metadata::read_image_info(&cli_png)
        .unwrap()
        .recipe
        .unwrap();
    assert_eq!(cli_recipe, recipe);
    // And the LoRA matters: the same prompt without the tag draws something else.
    let plain = out.path().join("cli/plain.png");
    let o = crate::cli::kiln(&[
        "generate",
        "--model",
        fixture("tiny-a").to_str().unwrap(),
        "--prompt",
        "a red circle on a blue background",
        "--negative",
        "blurry",
        "--sampler",
        "ddim",
        "--steps",
        "4",
        "--seed",
        "42",
        "--width",
        "40",
        "--height",
        "32",
        "--cfg",
        "7",
        "--clip-skip",
        "2",
        "--out",
        plain.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", crate::cli::stderr(&o));
    assert_ne!(read(&plain), read(&window_png));
    // Reusing the window's image restores its CLIP skip.
    h.state_mut().settings.clip_skip = 1;
    h.state_mut()
        .run_command(kiln::gui::commands::UiCommand::ReuseParameters);
    h.step();
    assert_eq!(h.state().settings.clip_skip, 2);
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
        let s = lora_statuses(a);
        s.len() == 2 && s.iter().all(|s| !matches!(s, LoraStatus::Pending))
    });
    assert!(matches!(lora_statuses(h.state())[0], LoraStatus::Loaded(_)));
    assert!(
        h.query_by_label_contains("matched").is_some(),
        "the badge says matched n/m"
    );
    let refused = h.get_by_label_contains("not applied: ");
    let text = format!("{refused:?}");
    assert!(
        text.contains("made for Stable Diffusion XL"),
        "the refused row says why: {text}"
    );
    // A refused row is inert (issue 26, defect 4): no switch, no weight; the line above
    // Generate counts what a Generate uses.
    assert!(h.query_by_label("Apply sdxl_lora").is_none());
    assert!(h.query_by_label("sdxl_lora weight").is_none());
    assert!(h.query_by_label("sdxl_lora weight value").is_none());
    assert!(h.query_by_label("Apply kohya_qkvo").is_some());
    wait(&mut h, "the embedding", |a| {
        a.views
            .embeddings
            .rows()
            .iter()
            .any(|r| matches!(r.status, EmbeddingStatus::Loaded { .. }))
    });
    assert!(
        h.query_by_label("1 of 2 LoRAs active · 1 refused · 1 embedding")
            .is_some()
    );
    // The load report reads as text, not JSON.
    let LoraStatus::Loaded(report) = &lora_statuses(h.state())[0] else {
        unreachable!()
    };
    let text = kiln::gui::views::lora_stack::report_text(report);
    assert!(
        text.contains("Matched ") && text.contains("Format: kohya"),
        "{text}"
    );
    assert!(!text.contains('{') && !text.contains("null"), "{text}");
    // With every LoRA off, Compare has nothing to compare (defect 7): the button says so,
    // and the shortcut starts nothing.
    click_in_view(&mut h, "Apply kohya_qkvo");
    assert!(
        h.query_by_label("0 of 2 LoRAs active · 1 off · 1 refused · 1 embedding")
            .is_some()
    );
    let compare = h.get_by_label("Compare with baseline");
    assert!(compare.accesskit_node().is_disabled());
    h.state_mut()
        .run_command(kiln::gui::commands::UiCommand::CompareWithBaseline);
    h.step();
    assert!(h.state().studio.job.is_none());
    assert_eq!(notified(h.state(), "Nothing to compare"), 1);
    click_in_view(&mut h, "Apply kohya_qkvo");
    assert_eq!(
        h.query_all_by_label("ti_cat").count(),
        2,
        "the token is listed and offered as a prompt chip"
    );
    // Removing the refused row keeps the loaded one.
    click_in_view(&mut h, "Remove sdxl_lora");
    let names: Vec<String> = h
        .state()
        .views
        .loras
        .rows()
        .iter()
        .map(|r| r.name())
        .collect();
    assert_eq!(names, ["kohya_qkvo"]);
}

/// A row removed while its LoRA is still loading is removed from the engine too: the next
/// image records no LoRA.
#[test]
fn a_lora_removed_before_the_engine_answers_is_not_applied() {
    let out = tempfile::tempdir().unwrap();
    let mut s = settings(out.path());
    s.model_path = Some(fixture("tiny-a"));
    s.steps = 2;
    let mut h = harness(s);
    wait(&mut h, "the model", loaded);
    h.state_mut()
        .add_lora(fixture("adapters/kohya_qkvo.safetensors"), 1.0);
    h.step();
    assert!(matches!(
        lora_statuses(h.state())[..],
        [LoraStatus::Pending]
    ));
    h.get_by_label("Remove kohya_qkvo").click();
    h.step();
    assert!(h.state().views.loras.rows().is_empty());
    h.get_by_label("Generate").click();
    wait(&mut h, "the image", gallery_holds(1));
    assert!(
        shown_recipe(&h).loras.is_empty(),
        "no LoRA the window no longer shows"
    );
}

/// "Reuse parameters" of a Kiln recipe: a model that is gone keeps the current one (the
/// recipe's stack goes to it); one that is there is opened, its stack applied once loaded.
#[test]
fn reusing_a_recipe_opens_its_model_only_if_it_is_still_there() {
    use kiln_engine::metadata::{ImageInfo, LoraRef, ModelRef, RECIPE_VERSION, Recipe, Source};
    let out = tempfile::tempdir().unwrap();
    let mut h = harness(settings(out.path()));
    wait(&mut h, "the model", loaded);
    let info = |model: PathBuf| {
        let recipe = Recipe {
            version: RECIPE_VERSION,
            prompt: "a lighthouse".into(),
            negative_prompt: String::new(),
            sampler: kiln_engine::schedulers::Sampler::Ddim { eta: 0.0 },
            steps: 3,
            cfg: 7.0,
            seed: 5,
            width: 40,
            height: 32,
            clip_skip: 1,
            model: ModelRef {
                name: "m".into(),
                path: model.to_string_lossy().into_owned(),
                hash: None,
            },
            loras: vec![LoraRef {
                name: "kohya_qkvo".into(),
                path: fixture("adapters/kohya_qkvo.safetensors")
                    .to_string_lossy()
                    .into_owned(),
                hash: String::new(),
                weight: 0.7,
            }],
            embeddings: Vec::new(),
            init_image: None,
            precision: Default::default(),
            device: None,
        };
        ImageInfo {
            source: Source::Kiln,
            parameters: recipe.parameters(),
            recipe: Some(recipe),
        }
    };
    let stack_loaded = |a: &KilnApp| matches!(lora_statuses(a)[..], [LoraStatus::Loaded(_)]);
    h.state_mut()
        .reuse(&info(out.path().join("gone.safetensors")));
    // The LoRA was made for tiny-a: tiny-b, still the model, refuses it.
    wait(&mut h, "the stack on the current model", |a| {
        matches!(lora_statuses(a)[..], [LoraStatus::Refused(_)])
    });
    assert_eq!(h.state().settings.model_path, Some(fixture("tiny-b")));
    assert!(loaded(h.state()));
    assert_eq!(h.state().settings.prompt, "a lighthouse");

    h.state_mut().reuse(&info(fixture("tiny-a")));
    wait(&mut h, "the recipe's model and its stack", |a| {
        loaded(a) && a.settings.model_path == Some(fixture("tiny-a")) && stack_loaded(a)
    });
    assert_eq!(h.state().views.loras.rows()[0].weight, 0.7);
}

#[test]
fn cancel_stops_the_job_and_saves_nothing() {
    let out = tempfile::tempdir().unwrap();
    let mut s = settings(out.path());
    s.steps = 400;
    s.sampler = SamplerKind::Euler;
    let mut h = harness(s);
    wait(&mut h, "the model", loaded);
    h.get_by_label("Generate").click();
    h.step();
    wait(&mut h, "progress", |a| {
        a.studio.job.as_ref().is_some_and(|j| j.step >= 1)
    });
    h.key_press(egui::Key::Escape);
    wait(&mut h, "the cancellation", |a| a.studio.job.is_none());
    assert_eq!(notified(h.state(), "Cancelled"), 1);
    idle(&mut h, Duration::from_millis(100));
    assert!(pngs(out.path()).is_empty(), "nothing saved");
    assert!(h.state().views.gallery.items.is_empty());
    // The engine is free again.
    h.state_mut().settings.steps = 2;
    h.get_by_label("Generate").click();
    wait(&mut h, "the next image", gallery_holds(1));
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
        loaded(a) && matches!(lora_statuses(a)[..], [LoraStatus::Loaded(_)])
    });
    // What eframe stores on exit is what the next start reads.
    let mut storage = MemoryStorage::default();
    eframe::App::save(h.state_mut(), &mut storage);
    let restored: Settings = eframe::get_value(&storage, STORAGE_KEY).unwrap();
    assert_eq!(restored, h.state().settings);
    assert_eq!(restored.prompt, "a lighthouse");
    assert_eq!(restored.recent_models, vec![fixture("tiny-a")]);
    assert_eq!(restored.loras[0].weight, 0.6);
    // The real window keeps them in a file of its own, written atomically.
    let file = out.path().join("config").join("settings.json");
    h.state_mut().settings_file = Some(file.clone());
    eframe::App::save(h.state_mut(), &mut MemoryStorage::default());
    assert_eq!(Settings::load(&file).as_ref(), Some(&h.state().settings));
    drop(h);
    let mut h = harness(restored);
    wait(&mut h, "the restored stack", |a| {
        loaded(a) && matches!(lora_statuses(a)[..], [LoraStatus::Loaded(_)])
    });
    assert_eq!(h.state().views.loras.rows()[0].weight, 0.6);
}

#[test]
fn an_engine_crash_is_reported_and_the_engine_comes_back() {
    let out = tempfile::tempdir().unwrap();
    let mut h = harness(settings(out.path()));
    wait(&mut h, "the model", loaded);
    h.state_mut().engine.send(Command::Crash {
        at: Operation::Generate,
        times: 1,
    });
    h.get_by_label("Generate").click();
    wait(&mut h, "the crash report", |a| notified(a, "crashed") > 0);
    wait(&mut h, "the model again", loaded);
    h.get_by_label("Generate").click();
    wait(&mut h, "an image after the crash", gallery_holds(1));
}

/// A GPU that runs out of memory mid-generation is named (not "crashed") and the model comes
/// back; one that is lost is offered the CPU instead, and pressing the offer switches the
/// device to the CPU and loads the model there.
#[test]
fn a_gpu_out_of_memory_reloads_and_a_lost_gpu_offers_the_cpu() {
    let out = tempfile::tempdir().unwrap();
    let mut h = harness(settings(out.path()));
    wait(&mut h, "the model", loaded);
    h.state_mut().engine.send(Command::DeviceFault {
        at: Operation::Generate,
        lost: false,
    });
    h.get_by_label("Generate").click();
    wait(&mut h, "the out-of-memory report", |a| {
        notified(a, "ran out of memory") > 0
    });
    wait(&mut h, "the model again", loaded);
    h.state_mut().settings.device = kiln_engine::device::DeviceSpec::Auto;
    h.state_mut().engine.send(Command::DeviceFault {
        at: Operation::Generate,
        lost: true,
    });
    h.get_by_label("Generate").click();
    wait(&mut h, "the lost-device report", |a| {
        notified(a, "GPU stopped working") > 0
    });
    idle(&mut h, Duration::from_millis(300));
    assert!(!loaded(h.state()), "no reload on the lost device by itself");
    h.get_by_label("Continue on the CPU").click();
    wait(&mut h, "the model on the CPU", loaded);
    assert_eq!(
        h.state().settings.device,
        kiln_engine::device::DeviceSpec::Cpu
    );
    assert_eq!(
        notified(h.state(), "GPU stopped working"),
        0,
        "the offer went"
    );
    h.get_by_label("Generate").click();
    wait(&mut h, "an image on the CPU", gallery_holds(1));
}

/// A model whose load makes the engine panic is reported once and not loaded again by
/// itself (it would crash every time); the window stays usable.
#[test]
fn a_crash_while_loading_a_model_is_not_retried_in_a_loop() {
    let out = tempfile::tempdir().unwrap();
    let mut h = harness(settings(out.path()));
    wait(&mut h, "the model", loaded);
    h.state_mut().engine.send(Command::Crash {
        at: Operation::LoadModel,
        times: usize::MAX,
    });
    h.state_mut().load_model(fixture("tiny-a"));
    wait(&mut h, "the crash report", |a| notified(a, "crashed") > 0);
    idle(&mut h, Duration::from_millis(500));
    assert_eq!(
        notified(h.state(), "crashed"),
        1,
        "{:?}",
        h.state().views.notifications.items
    );
    assert!(matches!(h.state().studio.model, ModelStatus::Failed(_)));
    assert!(
        h.get_by_label("Generate").accesskit_node().is_disabled(),
        "no model, no Generate"
    );
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
    kiln_engine::image::write_png(&png, &pixels, &[("parameters", "a red fox\nNegative prompt: blurry\nSteps: 30, Sampler: Euler a, Schedule type: Karras, CFG scale: 6, Seed: 77, Size: 512x768, Clip skip: 2")]).unwrap();
    let mut s = settings(out.path());
    s.model_path = None;
    let mut h = harness(s);
    h.input_mut().dropped_files.push(dropped(png));
    h.step();
    wait(&mut h, "the parameters", |a| {
        a.settings.prompt == "a red fox"
    });
    let s = &h.state().settings;
    assert_eq!(
        (
            s.prompt.as_str(),
            s.negative.as_str(),
            s.steps,
            s.cfg,
            s.seed,
            s.clip_skip
        ),
        ("a red fox", "blurry", 30, 6.0, 77, 2)
    );
    assert_eq!(
        (s.sampler, s.schedule, s.width, s.height, s.random_seed),
        (SamplerKind::EulerA, Schedule::Karras, 512, 768, false)
    );
    // Without a model Generate is disabled, saying why; asking anyway says so too.
    let generate = h.get_by_label("Generate");
    assert!(generate.accesskit_node().is_disabled());
    h.state_mut()
        .run_command(kiln::gui::commands::UiCommand::Generate);
    h.step();
    assert_eq!(notified(h.state(), "Cannot generate now"), 1);
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

pub(crate) fn dropped(path: PathBuf) -> egui::DroppedFileHandle {
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
    wait(&mut h, "the other model", |a| {
        loaded(a) && a.settings.model_path == Some(fixture("tiny-a"))
    });
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
            && lora_statuses(a)
                .iter()
                .all(|s| matches!(s, LoraStatus::Loaded(_)))
    });
    h.get_by_label("Move stack_attn up").click();
    // One frame moves the row, the next draws (and labels) it in its new place.
    h.step();
    h.step();
    h.get_by_label("stack_attn weight value")
        .set_value_accesskit(-0.25);
    h.step();
    click_in_view(&mut h, "Apply kohya_qkvo");
    h.get_by_label("Generate").click();
    wait(&mut h, "the image", gallery_holds(1));
    let recipe = shown_recipe(&h);
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

/// Dragging a weight slider over a hundred frames re-merges the LoRA a few times, not a
/// hundred, and ends at the weight where the drag stopped.
#[test]
fn a_weight_drag_re_merges_a_few_times_not_every_frame() {
    let out = tempfile::tempdir().unwrap();
    let mut s = settings(out.path());
    s.model_path = Some(fixture("tiny-a"));
    s.loras = vec![kiln::gui::state::LoraSetting {
        path: fixture("adapters/kohya_qkvo.safetensors"),
        weight: -2.0,
        enabled: true,
    }];
    let mut h = harness(s);
    wait(&mut h, "the stack", |a| {
        loaded(a) && matches!(lora_statuses(a)[..], [LoraStatus::Loaded(_)])
    });
    let rect = h.get_by_label("kohya_qkvo weight").rect();
    let y = rect.center().y;
    let press = |pos, pressed| egui::Event::PointerButton {
        pos,
        button: egui::PointerButton::Primary,
        pressed,
        modifiers: egui::Modifiers::NONE,
    };
    let start = egui::pos2(rect.left() + 1.0, y);
    h.input_mut().events.push(egui::Event::PointerMoved(start));
    h.step();
    h.input_mut().events.push(press(start, true));
    h.step();
    for k in 1..=100 {
        let x = rect.left() + 1.0 + (rect.width() - 2.0) * k as f32 / 100.0;
        h.input_mut()
            .events
            .push(egui::Event::PointerMoved(egui::pos2(x, y)));
        h.step();
    }
    h.input_mut()
        .events
        .push(press(egui::pos2(rect.right() - 1.0, y), false));
    h.step();
    let weight = h.state().views.loras.rows()[0].weight;
    assert!(
        weight > 1.9,
        "the drag moved the weight to the right end: {weight}"
    );
    wait(&mut h, "the last weight merged", |a| {
        a.views.loras.rows()[0].applied == Some(weight)
    });
    let merges = h.state().views.loras.rows()[0].merges;
    assert!(
        (1..=5).contains(&merges),
        "a 100-frame drag merged {merges} times"
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
        loaded(a) && matches!(lora_statuses(a)[..], [LoraStatus::Loaded(_)])
    });
    h.get_by_label("Compare with baseline").click();
    wait(&mut h, "both images", |a| {
        a.studio.job.is_none() && a.views.compare.stats().is_some()
    });
    assert_eq!(h.state().tab, Tab::Compare);
    // The pair stays in the comparison (issue 26, defect 7) until "Save both".
    idle(&mut h, Duration::from_millis(300));
    assert!(
        h.state().views.gallery.items.is_empty(),
        "nothing saved yet"
    );
    h.get_by_label("Save both").click();
    wait(&mut h, "both images in the gallery", |a| {
        a.views.gallery.items.len() == 2
    });
    assert!(
        h.query_by_label("Both saved to the output folder")
            .is_some()
    );
    let stats = *h.state().views.compare.stats().unwrap();
    assert!(
        h.query_by_label(&format!("mean |Δ| {:.3}", stats.mean_abs))
            .is_some(),
        "the mean is shown"
    );
    // The two PNGs in the gallery (newest first: adapted, then baseline) give the same numbers
    // from the command line.
    let (adapted, baseline) = (
        h.state().views.gallery.items[0].path.clone(),
        h.state().views.gallery.items[1].path.clone(),
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
        kiln::gui::views::compare::CompareMode::Heatmap,
        kiln::gui::views::compare::CompareMode::Swipe,
    ] {
        h.state_mut().views.compare.mode = mode;
        h.step();
    }
    assert!(
        h.query_by_label("difference heatmap").is_none(),
        "swipe shows no heatmap"
    );
    h.state_mut().views.compare.mode = kiln::gui::views::compare::CompareMode::Heatmap;
    h.step();
    assert!(h.query_by_label("difference heatmap").is_some());
}

/// Three images: a captioned one, an uncaptioned one, a corrupt one.
pub(crate) fn training_folder(dir: &Path) {
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
    s.train.follow_suggestion = false;
    s.train.resolution = 32;
    s.train.output_folder = Some(out.path().join("training"));
    s.train.steps = 400;
    s.train.learning_rate = 1e-3;
    s.train.sample_prompt = "a red half".into();
    s.train.sample_every = 2;
    s.train.checkpoint_every = 2;
    let mut h = harness(s);
    wait(&mut h, "the model", loaded);
    drop_dataset(&mut h, data.path());
    assert_eq!(h.state().tab, Tab::Train);
    let report = h.state().views.train.report.clone().unwrap();
    assert_eq!(report.entries.len(), 3, "three rows");
    assert!(h.query_by_label("corrupt (skipped)").is_some());
    // The corrupt file's thumbnail failed once and is not decoded again every frame.
    let broken = report
        .entries
        .iter()
        .position(|e| e.path.ends_with("broken.png"))
        .unwrap();
    wait(&mut h, "the thumbnails", |a| {
        a.views.train.thumbs.iter().all(|t| {
            !matches!(
                t,
                kiln::gui::views::Thumb::NotLoaded | kiln::gui::views::Thumb::Loading
            )
        })
    });
    assert!(matches!(
        h.state().views.train.thumbs[broken],
        kiln::gui::views::Thumb::Failed
    ));
    assert!(h.query_by_label("no caption").is_some());
    assert!(
        h.query_by_label_contains("3 images: 2 usable, 1 unreadable")
            .is_some()
    );
    // Edit the uncaptioned image's caption: it is saved to its .txt (by the I/O thread).
    h.get_by_label("caption of img1.png").click();
    h.step();
    h.get_by_label("caption of img1.png")
        .type_text("a blue half");
    h.step();
    h.key_press(egui::Key::Enter);
    let caption = data.path().join("img1.txt");
    wait(&mut h, "the caption file", |_| {
        std::fs::read_to_string(&caption).is_ok_and(|c| c == "a blue half")
    });
    // Per-image repeats from the table reach the training configuration.
    h.get_by_label("repeats of img0.png")
        .set_value_accesskit(3.0);
    h.step();
    h.step();
    h.state_mut().settings.device = kiln_engine::device::DeviceSpec::Cpu;
    let config = kiln::gui::views::train::training_config(&h.state().settings).unwrap();
    assert_eq!(config.dataset.image_repeats.get("img0.png"), Some(&3));
    assert_eq!(
        config.device,
        kiln_engine::device::DeviceSpec::Cpu,
        "the window's device picker is for training too"
    );
    // The plan's time estimate comes from a measured warm-up.
    h.get_by_label("Estimate time").click();
    wait(&mut h, "the estimate", |a| a.views.train.estimate.is_some());
    assert!(h.state().views.train.estimate.unwrap() > 0.0);
    assert!(h.query_by_label_contains("s/step").is_some());
    // Train: the loss plot gains points and a sample appears.
    h.get_by_label("Start training").click();
    wait(&mut h, "a sample image", |a| {
        a.views
            .train
            .run
            .as_ref()
            .is_some_and(|r| r.loss.len() >= 2 && !r.samples.is_empty())
    });
    assert!(
        h.query_by_label_contains("it/s").is_some(),
        "the monitor shows the rate"
    );
    // While the run holds the engine, Generate is disabled and says why; asking anyway
    // (the shortcut) starts nothing and says so.
    assert!(h.get_by_label("Generate").accesskit_node().is_disabled());
    h.get_by_label("Canvas").click();
    h.step();
    assert!(
        h.query_by_label_contains("A training run is using the engine")
            .is_some()
    );
    h.state_mut()
        .run_command(kiln::gui::commands::UiCommand::Generate);
    h.step();
    assert!(
        h.state().studio.job.is_none(),
        "nothing was queued behind the run"
    );
    assert_eq!(notified(h.state(), "Cannot generate now"), 1);
    // An engine crash meanwhile (in a stack change, which a run allows) loses the model;
    // it cannot load while the run holds the engine, so it loads again once the run ends.
    h.state_mut().engine.send(Command::Crash {
        at: Operation::ChangeLoras,
        times: 1,
    });
    h.state_mut().engine.send(Command::RemoveLora {
        id: kiln_engine::adapters::AdapterId(999),
    });
    wait(&mut h, "the crash report", |a| notified(a, "crashed") > 0);
    assert!(matches!(h.state().studio.model, ModelStatus::None));
    assert!(h.state().studio.reload_after_training.is_some());
    h.get_by_label("Train").click();
    h.step();
    // Cancel: the run stops, says where the last checkpoint is, and the engine is free again.
    h.get_by_label("Stop").click();
    wait(&mut h, "the run to stop", |a| {
        a.views.train.run.as_ref().is_some_and(|r| !r.running)
    });
    let outcome = h
        .state()
        .views
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
    wait(&mut h, "the model, loaded again after the run", loaded);
    assert!(!h.get_by_label("Generate").accesskit_node().is_disabled());
    h.state_mut().settings.steps = 2;
    h.get_by_label("Generate").click();
    wait(&mut h, "an image after training", |a| {
        a.studio.job.is_none() && !a.views.gallery.items.is_empty()
    });
}
