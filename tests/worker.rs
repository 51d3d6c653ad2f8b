//! The engine thread as the app drives it: commands in, events out, one repaint per event,
//! cancellation, refusals, and recovery from a panic.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kiln_engine::pipeline::CancelToken;
use kiln_engine::protocol::{Command, Event};
use kiln_engine::worker::EngineHandle;

use crate::common::fixture;
use crate::parity::ddim_request;

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

fn load(engine: &EngineHandle, model: &str) {
    engine.send(Command::LoadModel {
        path: fixture(model),
        device: "cpu".into(),
        precision: None,
    });
    assert!(matches!(next(engine), Event::ModelLoading { .. }));
    match next(engine) {
        Event::ModelLoaded {
            info, precision, ..
        } => {
            assert_eq!(
                precision,
                kiln_engine::pipeline::Precision::F32,
                "f32 on the CPU"
            );
            assert!(info.path.ends_with(model));
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn generates_with_progress_previews_and_recipes() {
    let (engine, repaints) = engine();
    load(&engine, "tiny-b");
    let mut req = ddim_request("tiny-b");
    req.preview = true;
    engine.send(Command::Generate {
        job: 7,
        request: req.clone(),
        cancel: CancelToken::new(),
    });
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
                assert_eq!((job, total), (7, req.steps));
                assert!(preview.is_some());
                steps.push(step);
            }
            Event::Generated { job, images, .. } => {
                assert_eq!(job, 7);
                break images;
            }
            e => panic!("{e:?}"),
        }
    };
    assert_eq!(steps, (1..=req.steps).collect::<Vec<_>>());
    assert_eq!(images.len(), 2);
    assert_eq!(images[1].recipe.prompt, req.prompts[1]);
    assert_eq!(
        images[1].recipe.model.hash.as_ref().map(String::len),
        Some(10)
    );
    // The repaint follows each send, so the last may land just after the event is read.
    let start = std::time::Instant::now();
    while repaints.load(Ordering::SeqCst) < req.steps + 3
        && start.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        repaints.load(Ordering::SeqCst) >= req.steps + 3,
        "a repaint per event"
    );
}

#[test]
fn cancel_refusals_and_crash_recovery() {
    let (engine, _) = engine();
    // No model yet: a named error, not a panic.
    engine.send(Command::Generate {
        job: 1,
        request: ddim_request("tiny-b"),
        cancel: CancelToken::new(),
    });
    match next(&engine) {
        Event::Error {
            job: Some(1),
            message,
            ..
        } => assert!(message.contains("no model is loaded"), "{message}"),
        e => panic!("{e:?}"),
    }
    load(&engine, "tiny-a");
    // A LoRA for SDXL is refused with the reason; a good one is added with its report.
    engine.send(Command::AddLora {
        path: fixture("adapters/sdxl_lora.safetensors"),
        weight: 1.0,
        enabled: true,
    });
    match next(&engine) {
        Event::LoraRefused { reason, .. } => {
            assert!(reason.contains("Stable Diffusion XL"), "{reason}")
        }
        e => panic!("{e:?}"),
    }
    engine.send(Command::AddLora {
        path: fixture("adapters/kohya_qkvo.safetensors"),
        weight: 0.5,
        enabled: true,
    });
    match next(&engine) {
        Event::LoraAdded { index, report, .. } => {
            assert_eq!(index, 0);
            assert_eq!(report.matched, report.modules);
        }
        e => panic!("{e:?}"),
    }
    // Cancel: set before the job starts → cancelled at the first check.
    let cancel = CancelToken::new();
    cancel.cancel();
    engine.send(Command::Generate {
        job: 2,
        request: ddim_request("tiny-a"),
        cancel,
    });
    assert!(matches!(next(&engine), Event::Cancelled { job: 2 }));
    // A panic inside the engine: reported, state dropped, engine still serving.
    engine.send(Command::Crash);
    match next(&engine) {
        Event::Crashed { message } => assert!(message.contains("deliberate"), "{message}"),
        e => panic!("{e:?}"),
    }
    assert!(engine.is_alive());
    engine.send(Command::Generate {
        job: 3,
        request: ddim_request("tiny-a"),
        cancel: CancelToken::new(),
    });
    assert!(
        matches!(next(&engine), Event::Error { job: Some(3), .. }),
        "the crashed engine dropped its model"
    );
    load(&engine, "tiny-b");
}

#[test]
fn embeddings_load_and_unload() {
    let (engine, _) = engine();
    load(&engine, "tiny-a");
    for (file, token) in [
        ("ti_cat.safetensors", "<cat>"),
        ("ti_style.safetensors", "<style>"),
    ] {
        engine.send(Command::LoadEmbedding {
            path: fixture(&format!("adapters/{file}")),
            token: Some(token.into()),
        });
        match next(&engine) {
            Event::EmbeddingLoaded {
                token: t, width, ..
            } => assert_eq!((t.as_str(), width), (token, 32)),
            e => panic!("{e:?}"),
        }
    }
    engine.send(Command::RemoveEmbedding { index: 0 });
    let mut req = ddim_request("tiny-a");
    req.prompts = vec!["a <style> painting".into()];
    req.negatives = vec![String::new()];
    req.latents = None;
    engine.send(Command::Generate {
        job: 4,
        request: req,
        cancel: CancelToken::new(),
    });
    match next(&engine) {
        Event::Generated { images, .. } => {
            let tokens: Vec<&str> = images[0]
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
        e => panic!("{e:?}"),
    }
}

#[test]
fn training_through_the_engine_reports_plan_steps_checkpoints_and_pauses() {
    use kiln_engine::training::trainer::{PauseToken, TrainingConfig, TrainingEvent};
    let (engine, _) = engine();
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
        config: Box::new(config),
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
}
