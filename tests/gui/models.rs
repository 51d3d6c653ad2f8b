//! The Models tab driven like a user drives it: a models folder listed and classified, picking a
//! checkpoint, LoRA or embedding, "Get Stable Diffusion 1.5" from a local Hub-like server (a
//! stalled transfer the test releases, Cancel, resume), an unreachable Hub, and the first run
//! with the shipped model.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use egui_kittest::kittest::{NodeT, Queryable};
use kiln::gui::state::Settings;
use kiln::gui::studio::ModelStatus;
use kiln::gui::views::embeddings::EmbeddingStatus;
use kiln::gui::views::lora_stack::LoraStatus;
use kiln::gui::views::models::format_bytes;
use kiln_hub::catalog::{SD15_REPO, sd15_files};

use super::{
    gallery_holds, harness, harness_with_bundled, loaded, lora_statuses, notified, settings, wait,
};
use crate::common::{HubOptions, closed_port, copy_dir, fixture};

/// A models folder: a diffusers checkpoint, a single-file one, a LoRA, an SDXL LoRA, an
/// embedding and a file that is none of them.
fn models_folder(dir: &Path) {
    copy_dir(&fixture("tiny-a"), &dir.join("tiny-a"));
    for (from, to) in [
        ("tiny-b.safetensors", "tiny-b.safetensors"),
        ("adapters/kohya_qkvo.safetensors", "style.safetensors"),
        ("adapters/sdxl_lora.safetensors", "xl-style.safetensors"),
        ("adapters/ti_cat.pt", "ti-cat.pt"),
    ] {
        std::fs::copy(fixture(from), dir.join(to)).unwrap();
    }
    std::fs::write(dir.join("notes.txt"), "hello").unwrap();
    std::fs::write(dir.join("broken.safetensors"), "a text file renamed").unwrap();
}

fn loaded_path(app: &kiln::gui::KilnApp) -> Option<PathBuf> {
    match &app.studio.model {
        ModelStatus::Loaded { info, .. } => Some(info.path.clone()),
        _ => None,
    }
}

fn scanned(app: &kiln::gui::KilnApp) -> bool {
    !app.views.models.scanning
}

#[test]
fn the_manager_lists_the_models_folder_and_picking_a_row_uses_it() {
    let out = tempfile::tempdir().unwrap();
    let models = out.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    models_folder(&models);
    let mut h = harness(settings(out.path()));
    wait(&mut h, "the model and the scan", |a| {
        loaded(a) && scanned(a)
    });
    h.get_by_label("Models").click();
    h.step();
    let rows: Vec<(String, &str)> = h
        .state()
        .views
        .models
        .rows()
        .iter()
        .map(|r| (r.name(), r.kind_label()))
        .collect();
    assert_eq!(
        rows,
        [
            ("broken.safetensors".to_owned(), "unknown"),
            ("style.safetensors".to_owned(), "LoRA"),
            ("ti-cat.pt".to_owned(), "embedding"),
            ("tiny-a".to_owned(), "checkpoint"),
            ("tiny-b.safetensors".to_owned(), "checkpoint"),
            ("xl-style.safetensors".to_owned(), "LoRA"),
        ],
        "classified (a broken file too), and notes.txt left out"
    );
    // The broken file is listed as broken, saying what is wrong (issue 26, defect 4).
    assert!(h.query_by_label_contains("broken: ").is_some());
    assert!(h.query_by_label("Load broken.safetensors").is_none());
    // Each row shows its name, family and size; the SDXL LoRA says it cannot be used.
    let tiny_a = h.state().views.models.rows()[3].clone();
    assert_eq!(tiny_a.name(), "tiny-a");
    assert!(tiny_a.entry.bytes > 9_000_000);
    assert!(h.query_by_label("tiny-a").is_some());
    assert!(
        h.query_by_label(&format_bytes(tiny_a.entry.bytes))
            .is_some()
    );
    assert!(h.query_all_by_label("Stable Diffusion 1.x").count() >= 3);
    assert!(h.query_by_label("Stable Diffusion XL").is_some());
    assert!(h.query_by_label("cannot use").is_some());
    assert!(
        h.query_by_label("Add xl-style.safetensors to the LoRA stack")
            .is_none()
    );
    assert!(h.query_by_label("notes.txt").is_none());
    // A checkpoint loads as the model.
    h.get_by_label("Load tiny-a").click();
    wait(&mut h, "tiny-a from the list", |a| {
        loaded_path(a).as_deref() == Some(models.join("tiny-a").as_path())
    });
    assert_eq!(h.state().settings.model_path, Some(models.join("tiny-a")));
    assert!(
        h.query_by_label("Load tiny-a").is_none(),
        "the loaded row says loaded instead"
    );
    // A LoRA joins the stack.
    h.get_by_label("Add style.safetensors to the LoRA stack")
        .click();
    wait(&mut h, "the LoRA", |a| {
        matches!(lora_statuses(a).first(), Some(LoraStatus::Loaded(_)))
    });
    assert_eq!(
        h.state().views.loras.rows()[0].path,
        models.join("style.safetensors")
    );
    assert!(h.query_by_label("in the stack").is_some());
    // An embedding loads under its file stem.
    h.get_by_label("Load embedding ti-cat.pt").click();
    wait(
        &mut h,
        "the embedding",
        |a| matches!(a.views.embeddings.rows().first().map(|r| &r.status), Some(EmbeddingStatus::Loaded { token, .. }) if token == "ti-cat"),
    );
    // Rescan finds a file copied in meanwhile.
    std::fs::copy(
        fixture("adapters/ti_style.safetensors"),
        models.join("style-token.safetensors"),
    )
    .unwrap();
    h.get_by_label("Rescan").click();
    h.step();
    wait(&mut h, "the rescan", scanned);
    assert_eq!(h.state().views.models.rows().len(), 7);
    assert!(
        h.query_by_label("Load embedding style-token.safetensors")
            .is_some()
    );
}

/// A Hub repository root with SD 1.5's file list, holding tiny-b (the tokenizer files, which
/// Kiln does not read, are stand-ins).
fn sd15_repo(root: &Path) {
    for f in sd15_files(false) {
        let target = root.join(&f);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        let source = fixture("tiny-b").join(&f);
        if source.exists() {
            std::fs::copy(source, target).unwrap();
        } else {
            std::fs::write(target, "{}").unwrap();
        }
    }
}

#[test]
fn get_stable_diffusion_shows_progress_cancels_resumes_and_lists_the_model() {
    let repo = tempfile::tempdir().unwrap();
    sd15_repo(repo.path());
    let go = Arc::new(AtomicBool::new(false));
    let hub = crate::common::hub(
        repo.path().to_owned(),
        SD15_REPO,
        HubOptions {
            hold: Some(go.clone()),
            ..HubOptions::default()
        },
    );
    let out = tempfile::tempdir().unwrap();
    let mut s = settings(out.path());
    s.hub_endpoint = hub.endpoint.clone();
    let dest = s.models_dir.join("stable-diffusion-v1-5");
    let mut h = harness(s);
    wait(&mut h, "the model and the scan", |a| {
        loaded(a) && scanned(a)
    });
    h.get_by_label("Models").click();
    h.step();
    h.get_by_label("Get Stable Diffusion 1.5").click();
    h.step();
    // The server stalls halfway through the UNet weights: the bar shows where it is.
    let unet = "unet/diffusion_pytorch_model.safetensors";
    wait(&mut h, "progress on the UNet weights", |a| {
        a.views
            .models
            .download
            .as_ref()
            .and_then(|d| d.progress.as_ref())
            .is_some_and(|p| p.file == unet && p.done > 0)
    });
    let size = std::fs::metadata(repo.path().join(unet)).unwrap().len();
    let index = sd15_files(false).iter().position(|f| f == unet).unwrap() + 1;
    assert!(
        h.query_by_label(&format!("File {index} of 12: {unet}"))
            .is_some()
    );
    assert!(
        h.query_by_label_contains(&format!("of {} (", format_bytes(size)))
            .is_some(),
        "the bar says bytes of the file's size and the percentage"
    );
    // The engine is not held up by the download: an image is generated meanwhile.
    h.get_by_label("Generate").click();
    wait(&mut h, "an image during the download", gallery_holds(1));
    assert!(
        h.state().views.models.download.is_some(),
        "still downloading"
    );
    // Cancel: the manager lets go at once although the connection is stalled.
    h.get_by_label("Cancel download").click();
    h.step();
    h.step();
    assert!(h.state().views.models.download.is_none());
    assert!(h.query_by_label("Download cancelled").is_some());
    assert!(
        !h.state().views.models.download_end.as_ref().unwrap().error,
        "cancelling is no failure"
    );
    // The download thread ends too, with the server still stalled, so Get works again.
    wait(&mut h, "the stopped thread", |a| {
        a.views.models.can_download()
    });
    go.store(true, Ordering::SeqCst);
    // Get again: it resumes the UNet weights where they stopped and finishes.
    h.get_by_label("Get Stable Diffusion 1.5").click();
    h.step();
    wait(&mut h, "the download and the rescan", |a| {
        a.views.models.download.is_none() && scanned(a)
    });
    assert_eq!(h.state().views.models.download_end, None);
    assert_eq!(
        hub.ranges.load(Ordering::SeqCst),
        1,
        "resumed, not restarted"
    );
    for f in sd15_files(false) {
        assert_eq!(
            std::fs::read(dest.join(&f)).unwrap(),
            std::fs::read(repo.path().join(&f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(notified(h.state(), "Stable Diffusion 1.5 is ready"), 1);
    let row = h
        .state()
        .views
        .models
        .rows()
        .iter()
        .find(|r| r.entry.path == dest);
    assert_eq!(
        row.map(|r| r.kind_label()),
        Some("checkpoint"),
        "listed after the download"
    );
    h.get_by_label("Load stable-diffusion-v1-5").click();
    wait(&mut h, "the downloaded model", |a| {
        loaded_path(a).as_deref() == Some(dest.as_path())
    });
}

#[test]
fn an_unreachable_hub_says_what_to_do() {
    let out = tempfile::tempdir().unwrap();
    let mut s = settings(out.path());
    let port = closed_port();
    s.hub_endpoint = format!("http://127.0.0.1:{port}");
    let mut h = harness(s);
    wait(&mut h, "the model", loaded);
    h.get_by_label("Models").click();
    h.step();
    h.get_by_label("Get Stable Diffusion 1.5").click();
    h.step();
    wait(&mut h, "the download to fail", |a| {
        a.views.models.download.is_none()
    });
    let end = h.state().views.models.download_end.clone().unwrap();
    assert!(end.error);
    let (title, details) = (end.title, end.details);
    assert_eq!(title, format!("Could not reach 127.0.0.1:{port}"));
    assert!(
        details.contains("check your connection, or set a mirror (Hub endpoint)"),
        "{details}"
    );
    assert!(h.query_by_label(&details).is_some(), "shown in the tab");
    assert!(
        h.state()
            .views
            .notifications
            .items
            .iter()
            .any(|n| n.title == title && n.error),
        "and as a notification"
    );
    // Nothing else is affected.
    assert!(loaded(h.state()));
    assert!(
        !h.get_by_label("Get Stable Diffusion 1.5")
            .accesskit_node()
            .is_disabled()
    );
}

/// The prompt's token counter counts against the loaded model's tokenizer length: 75 tokens
/// per chunk for SD 1.x, 22 for a model whose tokenizer config says 24 (as kiln-tiny's is
/// shorter than SD's).
#[test]
fn the_token_counter_follows_the_models_tokenizer_length() {
    let out = tempfile::tempdir().unwrap();
    let model = out.path().join("short");
    copy_dir(&fixture("tiny-a"), &model);
    let config = model.join("tokenizer/tokenizer_config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("\"model_max_length\": 77", "\"model_max_length\": 24"),
    )
    .unwrap();
    let fresh = Settings {
        output_dir: out.path().to_owned(),
        models_dir: out.path().join("models"),
        ..Settings::default()
    };
    let mut h = harness_with_bundled(fresh, Some(model));
    wait(&mut h, "the shipped model", |a| loaded(a) && scanned(a));
    h.step();
    // The counter shows a prompt's tokens out of 24 − BOS − EOS; the expected count is what
    // transformers' CLIPTokenizer made of it (the fixture's recorded ids), not Kiln's.
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer_cases.json")).unwrap())
            .unwrap();
    let case = cases
        .iter()
        .find(|c| c["text"] == "naïve Ångström")
        .expect("the case");
    let n = case["ids"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|id| !matches!(id.as_u64(), Some(49406 | 49407)))
        .count();
    assert_eq!(n, 8, "BPE splits the two words into eight pieces");
    h.state_mut().settings.prompt = "naïve Ångström".into();
    h.step();
    h.step();
    let label = format!("{n}/22");
    assert!(
        h.query_by_label(&label).is_some(),
        "the counter shows {label}"
    );
}

#[test]
fn a_first_run_opens_the_shipped_model_with_the_sample_prompt_at_its_size() {
    let out = tempfile::tempdir().unwrap();
    let fresh = Settings {
        output_dir: out.path().to_owned(),
        models_dir: out.path().join("models"),
        ..Settings::default()
    };
    let bundled = fixture("tiny-a");
    let mut h = harness_with_bundled(fresh, Some(bundled.clone()));
    wait(&mut h, "the shipped model", |a| loaded(a) && scanned(a));
    assert_eq!(loaded_path(h.state()), Some(bundled.clone()));
    let s = &h.state().settings;
    assert_eq!(s.prompt, kiln_hub::install::SAMPLE_PROMPT);
    let native = match &h.state().studio.model {
        ModelStatus::Loaded { info, .. } => {
            info.config.unet.sample_size.unwrap() * info.config.vae.scale_factor()
        }
        _ => unreachable!(),
    };
    assert_ne!(native, 512);
    assert_eq!(
        (s.width, s.height),
        (native, native),
        "the model's own size"
    );
    // The manager lists it, marked built in.
    h.get_by_label("Models").click();
    h.step();
    assert!(h.state().views.models.rows()[0].built_in);
    assert!(h.query_by_label(kiln_hub::install::NAME).is_some());
    assert!(h.query_by_label_contains("built in").is_some());
    // Generate draws an image at once.
    h.get_by_label("Generate").click();
    wait(&mut h, "the first image", gallery_holds(1));
    let shown = h.state().views.canvas.shown.as_ref().unwrap();
    assert_eq!([shown.image.width, shown.image.height], [native, native]);
    assert_eq!(
        shown.recipe.as_ref().unwrap().prompt,
        kiln_hub::install::SAMPLE_PROMPT
    );
    // Settings without a model or a prompt but with a size from before get the model's size
    // too (the sample is meant to be drawn at it).
    drop(h);
    let earlier = Settings {
        output_dir: out.path().to_owned(),
        models_dir: out.path().join("models"),
        width: 768,
        height: 512,
        ..Settings::default()
    };
    let mut h = harness_with_bundled(earlier, Some(bundled));
    wait(&mut h, "the shipped model again", loaded);
    let s = &h.state().settings;
    assert_eq!(s.prompt, kiln_hub::install::SAMPLE_PROMPT);
    assert_eq!((s.width, s.height), (native, native));
}

#[test]
fn a_remembered_model_that_is_gone_falls_back_to_the_shipped_one_with_a_notice() {
    let out = tempfile::tempdir().unwrap();
    let mut s = settings(out.path());
    let gone = out.path().join("deleted-model");
    s.model_path = Some(gone.clone());
    s.recent_models = vec![gone.clone()];
    s.prompt = "a lighthouse".into();
    let mut h = harness_with_bundled(s, Some(fixture("tiny-a")));
    wait(&mut h, "the shipped model", loaded);
    assert_eq!(loaded_path(h.state()), Some(fixture("tiny-a")));
    let notice = h
        .state()
        .views
        .notifications
        .items
        .iter()
        .find(|n| n.title == "The last model is gone")
        .expect("a notice");
    assert!(notice.details.contains(&gone.display().to_string()));
    let s = &h.state().settings;
    assert_eq!(s.prompt, "a lighthouse", "the user's prompt stays");
    assert_eq!((s.width, s.height), (48, 32), "and the chosen size");
    assert_eq!(s.recent_models, vec![fixture("tiny-a")]);
}

/// A model that fails to load leaves the working one loaded and in use, its LoRA too, and is
/// neither remembered nor listed in Recent; at the next start, a remembered model that fails
/// (as an older Kiln remembered it) gives way to the shipped one, with a notice.
#[test]
fn a_failed_load_keeps_the_working_model_and_is_not_remembered() {
    let out = tempfile::tempdir().unwrap();
    let mut s = settings(out.path());
    s.model_path = Some(fixture("tiny-a"));
    s.loras = vec![kiln::gui::state::LoraSetting {
        path: fixture("adapters/kohya_qkvo.safetensors"),
        weight: 0.8,
        enabled: true,
    }];
    let mut h = harness(s);
    wait(&mut h, "the model and its LoRA", |a| {
        loaded(a) && matches!(lora_statuses(a)[..], [LoraStatus::Loaded(_)])
    });
    let bad = out.path().join("renamed.safetensors");
    std::fs::write(&bad, "a text file with the wrong extension").unwrap();
    h.state_mut().load_model(bad.clone());
    wait(&mut h, "the refusal", |a| {
        notified(a, "Could not load the model") > 0
    });
    wait(&mut h, "the model back", loaded);
    assert_eq!(loaded_path(h.state()), Some(fixture("tiny-a")));
    let notice = &h.state().views.notifications.items;
    assert!(
        notice.iter().any(|n| n.details.contains("Still using")),
        "{notice:?}"
    );
    assert!(matches!(
        lora_statuses(h.state())[..],
        [LoraStatus::Loaded(_)]
    ));
    let s = &h.state().settings;
    assert_eq!(s.model_path, Some(fixture("tiny-a")), "not remembered");
    assert_eq!(s.recent_models, vec![fixture("tiny-a")], "not in Recent");
    assert!(
        !h.get_by_label("Generate").accesskit_node().is_disabled(),
        "the model is there to generate with"
    );
    h.get_by_label("Generate").click();
    wait(&mut h, "an image from the kept model", gallery_holds(1));

    let mut s = settings(out.path());
    s.model_path = Some(bad.clone());
    s.recent_models = vec![bad.clone(), fixture("tiny-a")];
    let mut h = harness_with_bundled(s, Some(fixture("tiny-b")));
    wait(&mut h, "the shipped model", |a| {
        loaded_path(a) == Some(fixture("tiny-b"))
    });
    let notice = &h.state().views.notifications.items;
    assert!(
        notice.iter().any(|n| n.title == "Could not load the model"
            && n.details.contains("Opened the built-in model")),
        "{notice:?}"
    );
    assert_eq!(h.state().settings.model_path, Some(fixture("tiny-b")));
}

/// The LoRA shipped beside the shipped model (`share/kiln/loras` next to
/// `share/kiln/models/kiln-tiny`) is listed in the Models tab, built in, ready to add
/// (issue 26, defect 9).
#[test]
fn the_shipped_example_lora_is_listed_built_in() {
    let out = tempfile::tempdir().unwrap();
    let share = out.path().join("share");
    copy_dir(&fixture("tiny-a"), &share.join("models/tiny-a"));
    std::fs::create_dir_all(share.join("loras")).unwrap();
    std::fs::copy(
        fixture("adapters/kohya_qkvo.safetensors"),
        share.join("loras/example-style.safetensors"),
    )
    .unwrap();
    let mut s = settings(out.path());
    s.model_path = None;
    let mut h = harness_with_bundled(s, Some(share.join("models/tiny-a")));
    wait(&mut h, "the shipped model and the scan", |a| {
        loaded(a) && scanned(a)
    });
    let rows: Vec<(String, bool)> = h
        .state()
        .views
        .models
        .rows()
        .iter()
        .map(|r| (r.name(), r.built_in))
        .collect();
    assert_eq!(
        rows,
        [
            (kiln_hub::install::NAME.to_owned(), true),
            ("example-style.safetensors".to_owned(), true)
        ]
    );
    h.get_by_label("Models").click();
    h.step();
    h.get_by_label("Add example-style.safetensors to the LoRA stack")
        .click();
    wait(&mut h, "the example LoRA in the stack", |a| {
        a.views.loras.rows().len() == 1
    });
}
