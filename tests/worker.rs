//! The engine thread as a front end drives it: commands in, events out, one repaint per
//! event, ids instead of positions, typed failures, busy replies while training, coalesced
//! weight changes, cancellation, and recovery from a panic (also one while loading a model).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kiln_engine::ErrorKind;
use kiln_engine::adapters::AdapterId;
use kiln_engine::device::DeviceSpec;
use kiln_engine::job::{CancelToken, PauseToken, PrecisionChoice};
use kiln_engine::protocol::{Command, Event, Failure, Operation};
use kiln_engine::training::run::TrainingEvent;
use kiln_engine::training::trainer::TrainingConfig;
use kiln_engine::worker::EngineHandle;

use crate::common::fixture;
use crate::parity::ddim_spec;

fn engine() -> (EngineHandle, Arc<AtomicUsize>) {
    let repaints = Arc::new(AtomicUsize::new(0));
    let r = repaints.clone();
    let cache = tempfile::tempdir().unwrap().keep();
    (
        EngineHandle::spawn(
            Arc::new(move || {
                r.fetch_add(1, Ordering::SeqCst);
            }),
            Some(cache),
        ),
        repaints,
    )
}

/// The next event that is not progress.
fn next(engine: &EngineHandle) -> Event {
    loop {
        match engine
            .events
            .recv_timeout(Duration::from_secs(120))
            .expect("an event")
        {
            Event::Progress { .. } => continue,
            e => return e,
        }
    }
}

fn load_command(model: &str) -> Command {
    load_path_command(&fixture(model))
}

/// Load the model at `path` on the CPU.
fn load_path_command(path: &std::path::Path) -> Command {
    Command::LoadModel {
        path: path.to_owned(),
        config: None,
        device: DeviceSpec::Cpu,
        precision: PrecisionChoice::Auto,
    }
}

fn load(engine: &EngineHandle, model: &str) {
    engine.send(load_command(model));
    assert!(matches!(next(engine), Event::ModelLoading { .. }));
    match next(engine) {
        Event::ModelLoaded {
            info,
            precision,
            device,
            device_notice,
        } => {
            assert_eq!(device_notice, None, "the CPU asked for, the CPU given");
            assert_eq!(
                precision,
                kiln_engine::job::Precision::F32,
                "f32 on the CPU"
            );
            assert_eq!(device, DeviceSpec::Cpu);
            assert!(info.path.ends_with(model));
        }
        e => panic!("{e:?}"),
    }
}

fn generate(engine: &EngineHandle, job: u64, spec: kiln_engine::resolve::GenerationSpec) {
    engine.send(Command::Generate {
        job,
        spec: Box::new(spec),
        cancel: CancelToken::new(),
    });
}

/// The images of generation `job`, up to its `Done`.
fn images(engine: &EngineHandle, job: u64) -> Vec<kiln_engine::protocol::GeneratedImage> {
    let mut out = Vec::new();
    loop {
        match next(engine) {
            Event::Generated { job: j, images } => {
                assert_eq!(j, job);
                out.extend(images);
            }
            Event::Done { job: j, .. } => {
                assert_eq!(j, job);
                return out;
            }
            e => panic!("{e:?}"),
        }
    }
}

/// The pixels of each image of generation `job`.
fn pixels(engine: &EngineHandle, job: u64) -> Vec<Vec<u8>> {
    images(engine, job)
        .into_iter()
        .map(|g| g.image.pixels)
        .collect()
}

fn failure(engine: &EngineHandle) -> Failure {
    match next(engine) {
        Event::Failed(f) => f,
        e => panic!("expected a failure, got {e:?}"),
    }
}

#[test]
fn generates_with_progress_previews_and_recipes() {
    let (engine, repaints) = engine();
    load(&engine, "tiny-b");
    let mut spec = ddim_spec("tiny-b");
    spec.preview = true;
    let calls = spec.steps.unwrap();
    generate(&engine, 7, spec.clone());
    let mut steps = Vec::new();
    let images = loop {
        match engine
            .events
            .recv_timeout(Duration::from_secs(120))
            .unwrap()
        {
            Event::Progress {
                job,
                step,
                total,
                preview,
            } => {
                assert_eq!((job, total), (7, calls));
                assert!(preview.is_some());
                steps.push(step);
            }
            Event::Generated { job, images } => {
                assert_eq!(job, 7);
                break images;
            }
            e => panic!("{e:?}"),
        }
    };
    assert!(matches!(
        next(&engine),
        Event::Done {
            job: 7,
            random_seed: false,
            ..
        }
    ));
    assert_eq!(steps, (1..=calls).collect::<Vec<_>>());
    assert_eq!(images.len(), 2);
    assert_eq!(images[1].recipe.prompt, spec.prompts[1]);
    assert_eq!(
        images[1].recipe.model.hash.as_ref().map(String::len),
        Some(10)
    );
    // The repaint follows each send, so the last may land just after the event is read.
    let start = std::time::Instant::now();
    while repaints.load(Ordering::SeqCst) < calls + 4 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        repaints.load(Ordering::SeqCst) >= calls + 4,
        "a repaint per event"
    );
}

/// A batch count of 2 runs two iterations, the second's seed advanced by the batch size; a
/// prompt tag's LoRA is applied and recorded after the stack's.
#[test]
fn batch_counts_and_prompt_tags_are_resolved_by_the_engine() {
    let (engine, _) = engine();
    load(&engine, "tiny-a");
    let mut spec = ddim_spec("tiny-a");
    spec.latents = None;
    spec.prompts = vec!["a photo of a cat <lora:kohya_qkvo:0.8>".into()];
    spec.negatives = vec![];
    spec.batch_count = 2;
    spec.lora_dir = Some(fixture("adapters"));
    generate(&engine, 3, spec.clone());
    let out = images(&engine, 3);
    assert_eq!(out.len(), 2);
    assert_eq!((out[0].recipe.seed, out[1].recipe.seed), (0, 1));
    for g in &out {
        assert_eq!(g.recipe.prompt, spec.prompts[0], "the prompt as typed");
        assert_eq!(g.recipe.loras.len(), 1);
        assert_eq!(
            (g.recipe.loras[0].name.as_str(), g.recipe.loras[0].weight),
            ("kohya_qkvo", 0.8)
        );
    }
    // Without the LoRA folder the tag is a named error.
    spec.lora_dir = None;
    generate(&engine, 4, spec);
    let f = failure(&engine);
    assert_eq!(
        (f.job, f.op, f.kind),
        (Some(4), Operation::Generate, ErrorKind::NotFound)
    );
    assert!(
        f.message().contains("<lora:kohya_qkvo:…>"),
        "{}",
        f.message()
    );
}

/// A tag naming a LoRA the window stacked is that entry (no LoRA folder needed, applied
/// once); a tag whose file cannot be loaded fails its job and leaves no LoRA merged behind.
#[test]
fn prompt_tags_meet_the_window_stack_and_a_failed_tag_changes_nothing() {
    let (engine, _) = engine();
    load(&engine, "tiny-a");
    let plain_spec = ddim_spec("tiny-a");
    generate(&engine, 1, plain_spec.clone());
    let plain = pixels(&engine, 1);
    let tagged = |tag: &str| {
        let mut s = plain_spec.clone();
        s.prompts[0] = format!("{} {tag}", s.prompts[0]);
        s.lora_dir = Some(fixture("adapters"));
        s
    };
    generate(&engine, 2, tagged("<lora:kohya_qkvo:0.8>"));
    let with_lora = pixels(&engine, 2);
    assert_ne!(with_lora, plain, "the tag's LoRA changes the image");
    // An SDXL LoRA under a tag: refused, and the previous tag's LoRA is not left merged.
    generate(&engine, 3, tagged("<lora:sdxl_lora:1>"));
    assert_eq!(failure(&engine).kind, ErrorKind::Unsupported);
    generate(&engine, 4, plain_spec.clone());
    assert_eq!(pixels(&engine, 4), plain, "no LoRA left behind");
    // The same LoRA in the window's stack: the tag needs no folder and adds nothing.
    engine.send(Command::AddLora {
        id: AdapterId(9),
        path: fixture("adapters/kohya_qkvo.safetensors"),
        weight: 0.8,
        enabled: true,
    });
    assert!(matches!(next(&engine), Event::LoraAdded { .. }));
    let mut s = tagged("<lora:kohya_qkvo:0.8>");
    s.lora_dir = None;
    generate(&engine, 5, s);
    let out = images(&engine, 5);
    assert_eq!(out[0].recipe.loras.len(), 1, "applied once");
    let out: Vec<Vec<u8>> = out.into_iter().map(|g| g.image.pixels).collect();
    assert_eq!(out, with_lora);
}

#[test]
fn failures_are_typed_cancel_works_and_a_crash_is_recovered() {
    let (engine, _) = engine();
    // No model yet: a typed failure, not a panic.
    generate(&engine, 1, ddim_spec("tiny-b"));
    let f = failure(&engine);
    assert_eq!(
        (f.job, f.op, f.kind),
        (Some(1), Operation::Generate, ErrorKind::NoModel)
    );
    assert!(
        f.message().contains("no model is loaded"),
        "{}",
        f.message()
    );
    load(&engine, "tiny-a");
    // A LoRA for SDXL is refused with the reason, under its id; a good one is added.
    engine.send(Command::AddLora {
        id: AdapterId(5),
        path: fixture("adapters/sdxl_lora.safetensors"),
        weight: 1.0,
        enabled: true,
    });
    let f = failure(&engine);
    assert_eq!(
        (f.adapter, f.op, f.kind),
        (
            Some(AdapterId(5)),
            Operation::AddLora,
            ErrorKind::Unsupported
        )
    );
    assert!(
        f.message().contains("Stable Diffusion XL"),
        "{}",
        f.message()
    );
    engine.send(Command::AddLora {
        id: AdapterId(6),
        path: fixture("adapters/kohya_qkvo.safetensors"),
        weight: 0.5,
        enabled: true,
    });
    match next(&engine) {
        Event::LoraAdded { id, report } => {
            assert_eq!(id, AdapterId(6));
            assert_eq!(report.matched, report.modules);
        }
        e => panic!("{e:?}"),
    }
    // Cancel: set before the job starts → cancelled at the first check.
    let cancel = CancelToken::new();
    cancel.cancel();
    engine.send(Command::Generate {
        job: 2,
        spec: Box::new(ddim_spec("tiny-a")),
        cancel,
    });
    assert!(matches!(next(&engine), Event::Cancelled { job: 2 }));
    // A panic inside the engine: reported with its operation, state dropped, engine serving.
    engine.send(Command::Crash {
        at: Operation::Generate,
        times: 1,
    });
    generate(&engine, 3, ddim_spec("tiny-a"));
    match next(&engine) {
        Event::Crashed {
            op,
            job,
            message,
            kind,
        } => {
            assert_eq!((op, job, kind), (Operation::Generate, Some(3), None));
            assert!(message.contains("deliberate"), "{message}");
        }
        e => panic!("{e:?}"),
    }
    assert!(engine.is_alive());
    generate(&engine, 4, ddim_spec("tiny-a"));
    assert_eq!(
        failure(&engine).kind,
        ErrorKind::NoModel,
        "the crashed engine dropped its model"
    );
    load(&engine, "tiny-b");
}

/// A GPU that runs out of memory or is lost mid-job panics inside Burn: the engine names it
/// (kind and a message saying what to try), drops its state as after any panic, and goes on
/// serving — the model loads and generates again.
#[test]
fn a_device_out_of_memory_or_lost_is_named_and_the_engine_goes_on() {
    let (engine, _) = engine();
    for (job, lost) in [(21, false), (22, true)] {
        load(&engine, "tiny-a");
        engine.send(Command::DeviceFault {
            at: Operation::Generate,
            lost,
        });
        generate(&engine, job, ddim_spec("tiny-a"));
        match next(&engine) {
            Event::Crashed {
                op,
                job: j,
                message,
                kind,
            } => {
                assert_eq!((op, j), (Operation::Generate, Some(job)));
                if lost {
                    assert_eq!(kind, Some(ErrorKind::DeviceLost));
                    assert!(
                        message.contains("device was lost") && message.contains("--device cpu"),
                        "{message}"
                    );
                } else {
                    assert_eq!(kind, Some(ErrorKind::OutOfMemory));
                    assert!(
                        message.contains("ran out of memory (asked for 2048.0 MiB more)")
                            && message.contains("smaller size"),
                        "{message}"
                    );
                }
            }
            e => panic!("{e:?}"),
        }
        assert!(engine.is_alive());
    }
    load(&engine, "tiny-a");
    generate(&engine, 23, ddim_spec("tiny-a"));
    assert!(!images(&engine, 23).is_empty());
}

/// A load that panics every time (fault injection: a panic at the start of every LoadModel,
/// as a file that crashes the loader would) is reported every time, with the operation, and
/// the engine goes on serving (it never retries by itself).
#[test]
fn a_panic_while_loading_a_model_is_reported_not_retried() {
    let (engine, _) = engine();
    engine.send(Command::Crash {
        at: Operation::LoadModel,
        times: usize::MAX,
    });
    engine.send(load_command("tiny-b"));
    match next(&engine) {
        Event::Crashed { op, job, .. } => assert_eq!((op, job), (Operation::LoadModel, None)),
        e => panic!("{e:?}"),
    }
    assert!(
        engine
            .events
            .recv_timeout(Duration::from_millis(300))
            .is_err(),
        "nothing more happens by itself"
    );
    engine.send(load_command("tiny-b"));
    assert!(matches!(
        next(&engine),
        Event::Crashed {
            op: Operation::LoadModel,
            ..
        }
    ));
    assert!(engine.is_alive());
}

/// A load that fails keeps the working model. A file that is no model (text renamed
/// `.safetensors`) is refused before the model is let go: `ModelKept`, then the failure, and
/// the next image is the same as before, LoRA included. A model that fails while its weights
/// are read (a diffusers folder whose VAE file holds the UNet's tensors) has the previous
/// model loaded again: `ModelLoaded` of it, then the failure, and the engine generates.
#[test]
fn a_failed_load_keeps_the_working_model() {
    let (engine, _) = engine();
    load(&engine, "tiny-a");
    engine.send(Command::AddLora {
        id: AdapterId(1),
        path: fixture("adapters/kohya_qkvo.safetensors"),
        weight: 0.8,
        enabled: true,
    });
    assert!(matches!(next(&engine), Event::LoraAdded { .. }));
    let spec = ddim_spec("tiny-a");
    generate(&engine, 1, spec.clone());
    let before = pixels(&engine, 1);

    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.safetensors");
    std::fs::write(&text, "shopping list: eggs, flour").unwrap();
    engine.send(load_path_command(&text));
    assert!(matches!(next(&engine), Event::ModelLoading { .. }));
    match next(&engine) {
        Event::ModelKept { info, .. } => assert!(info.path.ends_with("tiny-a")),
        e => panic!("{e:?}"),
    }
    assert_eq!(failure(&engine).op, Operation::LoadModel);
    generate(&engine, 2, spec.clone());
    assert_eq!(pixels(&engine, 2), before, "the same model and stack");

    let broken = dir.path().join("broken");
    crate::common::copy_dir(&fixture("tiny-a"), &broken);
    std::fs::copy(
        broken.join("unet/diffusion_pytorch_model.safetensors"),
        broken.join("vae/diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    engine.send(load_path_command(&broken));
    assert!(matches!(next(&engine), Event::ModelLoading { .. }));
    match next(&engine) {
        Event::ModelLoaded { info, .. } => assert!(info.path.ends_with("tiny-a"), "{info:?}"),
        e => panic!("{e:?}"),
    }
    let f = failure(&engine);
    assert_eq!(f.op, Operation::LoadModel);
    assert!(f.message().contains("VAE"), "{}", f.message());
    generate(&engine, 3, spec);
    assert_eq!(pixels(&engine, 3).len(), before.len());
}

/// Commands run in order and name adapters by id: a LoRA removed while its add is still
/// queued is removed, and the next image records no LoRA.
#[test]
fn a_lora_removed_while_its_add_is_pending_is_gone() {
    let (engine, _) = engine();
    load(&engine, "tiny-a");
    engine.send(Command::AddLora {
        id: AdapterId(1),
        path: fixture("adapters/kohya_qkvo.safetensors"),
        weight: 1.0,
        enabled: true,
    });
    engine.send(Command::RemoveLora { id: AdapterId(1) });
    generate(&engine, 8, ddim_spec("tiny-a"));
    assert!(matches!(
        next(&engine),
        Event::LoraAdded {
            id: AdapterId(1),
            ..
        }
    ));
    let out = images(&engine, 8);
    assert!(
        out.iter().all(|g| g.recipe.loras.is_empty()),
        "{:?}",
        out[0].recipe.loras
    );
}

/// A slider drag's hundred weights waiting in the queue are merged a few times at most (the
/// engine takes what has arrived each time it looks), the last time at the latest weight.
#[test]
fn a_run_of_weight_changes_is_applied_once_with_the_latest_weight() {
    let (engine, _) = engine();
    load(&engine, "tiny-a");
    // Something slow first, so the weights pile up behind it.
    generate(&engine, 1, ddim_spec("tiny-a"));
    engine.send(Command::AddLora {
        id: AdapterId(2),
        path: fixture("adapters/kohya_qkvo.safetensors"),
        weight: 0.0,
        enabled: true,
    });
    for k in 1..=100 {
        engine.send(Command::SetLoraWeight {
            id: AdapterId(2),
            weight: k as f32 / 100.0,
        });
    }
    generate(&engine, 2, ddim_spec("tiny-a"));
    let mut applied = Vec::new();
    let recipe = loop {
        match next(&engine) {
            Event::LoraApplied {
                id,
                weight,
                enabled,
            } => {
                assert_eq!((id, enabled), (AdapterId(2), true));
                applied.push(weight);
            }
            Event::Generated { job: 2, images } => break images[0].recipe.clone(),
            Event::Generated { job: 1, .. } | Event::Done { .. } | Event::LoraAdded { .. } => {}
            e => panic!("{e:?}"),
        }
    };
    assert!(
        !applied.is_empty() && applied.len() <= 3,
        "100 weights were merged {} times",
        applied.len()
    );
    assert_eq!(applied.last(), Some(&1.0), "the latest weight wins");
    assert_eq!(recipe.loras[0].weight, 1.0);
}

#[test]
fn embeddings_load_and_unload_by_id() {
    let (engine, _) = engine();
    load(&engine, "tiny-a");
    for (id, file, token) in [
        (10, "ti_cat.safetensors", "<cat>"),
        (11, "ti_style.safetensors", "<style>"),
    ] {
        engine.send(Command::LoadEmbedding {
            id: AdapterId(id),
            path: fixture(&format!("adapters/{file}")),
            token: Some(token.into()),
        });
        match next(&engine) {
            Event::EmbeddingLoaded {
                id: got,
                token: t,
                width,
                ..
            } => assert_eq!((got, t.as_str(), width), (AdapterId(id), token, 32)),
            e => panic!("{e:?}"),
        }
    }
    // A file that is no embedding, under a loaded one's id: refused, and the one it would
    // have replaced stays.
    let junk = tempfile::tempdir().unwrap();
    let junk = junk.path().join("junk.safetensors");
    std::fs::write(&junk, b"not an embedding").unwrap();
    engine.send(Command::LoadEmbedding {
        id: AdapterId(11),
        path: junk,
        token: Some("<style>".into()),
    });
    let f = failure(&engine);
    assert_eq!(
        (f.adapter, f.op),
        (Some(AdapterId(11)), Operation::LoadEmbedding)
    );
    engine.send(Command::RemoveEmbedding { id: AdapterId(10) });
    let mut spec = ddim_spec("tiny-a");
    spec.prompts = vec!["a <style> painting".into()];
    spec.negatives = vec![String::new()];
    spec.latents = None;
    generate(&engine, 4, spec);
    let out = images(&engine, 4);
    let tokens: Vec<&str> = out[0]
        .recipe
        .embeddings
        .iter()
        .map(|e| e.token.as_str())
        .collect();
    assert_eq!(
        tokens,
        ["<style>"],
        "the removed embedding is gone, the other still works"
    );
}

#[test]
fn training_reports_plan_steps_checkpoints_and_pauses_and_holds_the_engine() {
    let (engine, _) = engine();
    load(&engine, "tiny-a");
    let data = tempfile::tempdir().unwrap();
    for i in 0..2u8 {
        let pixels = (0..32 * 32)
            .flat_map(|p| [(p % 32 * 8) as u8, i * 100, 50])
            .collect();
        kiln_engine::image::write_png(
            &data.path().join(format!("{i}.png")),
            &kiln_engine::image::RgbImage {
                width: 32,
                height: 32,
                pixels,
            },
            &[],
        )
        .unwrap();
    }
    engine.send(Command::ValidateDataset {
        files: kiln_engine::training::dataset::image_files(data.path()).unwrap(),
        options: Default::default(),
    });
    match next(&engine) {
        Event::DatasetValidated { report } => assert_eq!(
            report.summary(),
            "2 images: 2 usable, 2 too small (upscaled), 2 without caption"
        ),
        e => panic!("{e:?}"),
    }
    let out = tempfile::tempdir().unwrap();
    let config = TrainingConfig {
        model: fixture("tiny-a"),
        data: data.path().to_owned(),
        output: out.path().to_owned(),
        name: "t".into(),
        dataset: kiln_engine::training::dataset::DatasetOptions {
            resolution: 32,
            ..Default::default()
        },
        max_steps: Some(4),
        checkpoint_every: 2,
        sample_every: 4,
        sample_prompts: vec!["a sample".into()],
        ..Default::default()
    };
    let pause = PauseToken::default();
    pause.set(true);
    engine.send(Command::StartTraining {
        job: 9,
        config: Box::new(config.clone()),
        resume: None,
        cancel: CancelToken::new(),
        pause: pause.clone(),
    });
    // Paused: the plan arrives, no step does.
    match next(&engine) {
        Event::Training { job: 9, event } => {
            assert!(matches!(*event, TrainingEvent::Started { plan, .. } if plan.steps == 4))
        }
        e => panic!("{e:?}"),
    }
    // While the run holds the engine, what needs its compute is refused, typed; the stack
    // still answers.
    generate(&engine, 20, ddim_spec("tiny-a"));
    match next(&engine) {
        Event::Busy { job, op, training } => {
            assert_eq!((job, op, training), (Some(20), Operation::Generate, 9))
        }
        e => panic!("{e:?}"),
    }
    engine.send(load_command("tiny-b"));
    assert!(matches!(
        next(&engine),
        Event::Busy {
            op: Operation::LoadModel,
            training: 9,
            ..
        }
    ));
    engine.send(Command::StartTraining {
        job: 21,
        config: Box::new(config),
        resume: None,
        cancel: CancelToken::new(),
        pause: PauseToken::default(),
    });
    assert!(matches!(
        next(&engine),
        Event::Busy {
            job: Some(21),
            op: Operation::Train,
            training: 9
        }
    ));
    engine.send(Command::AddLora {
        id: AdapterId(1),
        path: fixture("adapters/kohya_qkvo.safetensors"),
        weight: 1.0,
        enabled: true,
    });
    assert!(matches!(next(&engine), Event::LoraAdded { .. }));
    assert!(
        engine
            .events
            .recv_timeout(Duration::from_millis(300))
            .is_err(),
        "no step while paused"
    );
    pause.set(false);
    let (mut steps, mut checkpoints, mut samples) = (0, 0, 0);
    let output = loop {
        match next(&engine) {
            Event::Training { event, .. } => match *event {
                TrainingEvent::Step { loss, lr, .. } => {
                    assert!(loss.is_finite() && lr > 0.0);
                    steps += 1;
                }
                TrainingEvent::Checkpoint { path, .. } => {
                    assert!(path.exists());
                    checkpoints += 1;
                }
                TrainingEvent::Samples { step, images } => {
                    assert_eq!((step, images.len()), (4, 1));
                    samples += 1;
                }
                e => panic!("{e:?}"),
            },
            Event::TrainingFinished { job: 9, output } => break output,
            e => panic!("{e:?}"),
        }
    };
    assert_eq!((steps, checkpoints, samples), (4, 2, 1));
    assert!(output.exists());
    // The run is over: generating works again.
    generate(&engine, 22, ddim_spec("tiny-a"));
    assert_eq!(images(&engine, 22).len(), 2);
}
