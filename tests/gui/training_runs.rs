//! A training run owns its name (issue 26, defect 1): a second run under a used name asks
//! first (overwrite / keep both / cancel), and Resume continues exactly the run and step it
//! names — never an earlier run's later checkpoint.

use egui_kittest::kittest::{NodeT, Queryable};
use kiln_engine::training::trainer::checkpoint_summary;

use super::{fixture, loaded, settings, training_folder, wait};

/// Steps the UI until the button `label` can be pressed (the Train tab's Start waits for
/// the name lookup).
fn wait_enabled(h: &mut egui_kittest::Harness<'static, kiln::gui::KilnApp>, label: &str) {
    let start = std::time::Instant::now();
    while h
        .query_by_label(label)
        .is_none_or(|n| n.accesskit_node().is_disabled())
    {
        assert!(start.elapsed().as_secs() < 60, "{label} stayed disabled");
        h.step();
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Whether the run shown has ended.
fn run_over(app: &kiln::gui::KilnApp) -> bool {
    app.views.train.run.as_ref().is_some_and(|r| !r.running)
}

#[test]
fn a_reused_name_asks_first_and_resume_continues_the_right_run() {
    let out = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    training_folder(data.path());
    let mut s = settings(out.path());
    s.model_path = Some(fixture("tiny-a"));
    s.train.follow_suggestion = false;
    s.train.resolution = 32;
    s.train.output_folder = Some(out.path().join("training"));
    s.train.name = "striped".into();
    s.train.trigger = "zzstripe".into();
    s.train.steps = 6;
    s.train.checkpoint_every = 2;
    s.train.learning_rate = 1e-3;
    let mut h = super::harness_sized(s, egui::vec2(1280.0, 1200.0));
    wait(&mut h, "the model", loaded);
    super::drop_dataset(&mut h, data.path());
    // The first run: nothing uses the name, so it starts at once.
    wait_enabled(&mut h, "Start training");
    super::click_in_view(&mut h, "Start training");
    h.step();
    assert!(h.query_by_label("Overwrite").is_none(), "no question yet");
    wait(&mut h, "the first run", run_over);
    let first = out.path().join("training/striped.safetensors");
    assert!(first.is_file());
    // It is finished: Resume says so and is off until Steps grows.
    wait_enabled(&mut h, "Start training");
    let done = h.get_by_label_contains("finished at step 6");
    assert!(done.accesskit_node().is_disabled());
    super::click_in_view(&mut h, "Add to LoRA stack");
    wait(&mut h, "the trained LoRA in the stack", |a| {
        a.views.loras.rows().iter().any(|r| {
            matches!(
                r.status,
                kiln::gui::views::lora_stack::LoraStatus::Loaded(_)
            )
        })
    });
    // Its chip is the trigger word set for it (defect 5), not the file's name.
    let chips: Vec<String> = h
        .state()
        .views
        .loras
        .chips()
        .into_iter()
        .map(|c| c.word)
        .collect();
    assert_eq!(chips, ["zzstripe"]);
    // A second, longer run under the same name asks first; Cancel starts nothing.
    // Long enough that it is still going when Pause is pressed, on a slow machine too.
    h.state_mut().settings.train.steps = 60;
    h.step();
    wait_enabled(&mut h, "Start training");
    super::click_in_view(&mut h, "Start training");
    h.step();
    assert!(
        h.query_by_label_contains("A run named \"striped\" exists")
            .is_some()
    );
    assert!(
        h.query_by_label_contains("Its result and 3 checkpoints (newest at step 6)")
            .is_some()
    );
    assert!(
        h.query_by_label_contains("is in the LoRA stack").is_some(),
        "the stack uses that file"
    );
    // The dialog's Cancel (the generation's Cancel beside Generate is off: no job runs).
    h.get_all_by_label("Cancel")
        .find(|n| !n.accesskit_node().is_disabled())
        .expect("the dialog's Cancel")
        .click();
    h.step();
    h.step();
    assert!(h.query_by_label("Overwrite").is_none());
    assert!(run_over(h.state()), "nothing started");
    // Overwrite, then stop it after its first checkpoint.
    super::click_in_view(&mut h, "Start training");
    h.step();
    h.get_by_label("Overwrite").click();
    h.step();
    h.step();
    wait(&mut h, "the second run's first checkpoint", |a| {
        a.views
            .train
            .run
            .as_ref()
            .is_some_and(|r| r.running && !r.checkpoints.is_empty())
    });
    // Paused, the monitor says so and where (defect 6), and no step is made.
    super::click_in_view(&mut h, "Pause");
    super::idle(&mut h, std::time::Duration::from_millis(400));
    let last = |h: &egui_kittest::Harness<'static, kiln::gui::KilnApp>| {
        h.state()
            .views
            .train
            .run
            .as_ref()
            .and_then(|r| r.last)
            .map(|l| l.step)
    };
    let at = last(&h).unwrap();
    super::idle(&mut h, std::time::Duration::from_millis(600));
    assert_eq!(last(&h), Some(at), "no step while paused");
    assert!(
        h.query_by_label_contains(&format!("Paused at step {at}"))
            .is_some()
    );
    assert!(
        h.query_by_label_contains("it/s").is_none(),
        "no rate while paused"
    );
    super::click_in_view(&mut h, "Continue");
    super::click_in_view(&mut h, "Stop");
    wait(&mut h, "the stop", run_over);
    // Resume names this run's newest checkpoint, not the first run's step 6.
    wait_enabled(&mut h, "Start training");
    let label = h
        .get_by_label_contains("Resume striped from step")
        .accesskit_node()
        .label()
        .unwrap_or_default();
    let step: usize = label
        .trim_start_matches("Resume striped from step ")
        .trim_end_matches(" of 60")
        .parse()
        .unwrap_or_else(|_| panic!("{label}"));
    let second_latest = out.path().join(format!(
        "training/checkpoints/striped-step{step:06}.safetensors"
    ));
    let summary = checkpoint_summary(&second_latest).unwrap();
    assert_eq!(summary.config.max_steps, Some(60), "the second run's own");
    assert!(step < 60, "{label}");
    super::click_in_view(&mut h, &label);
    wait(&mut h, "the resumed run", run_over);
    let run = h.state().views.train.run.as_ref().unwrap();
    assert!(
        run.outcome.as_ref().is_some_and(|o| o.is_ok()),
        "{:?}",
        run.outcome
    );
    assert_eq!(run.from_step, step);
    assert_eq!(run.loss.first().map(|p| p[0] as usize), Some(step + 1));
    assert_eq!(run.loss.len(), 60 - step, "only the steps left");
    assert!(
        h.query_by_label_contains(&format!("Resumed from step {step}"))
            .is_some()
    );
    // Keep both: the new run takes the first free name.
    wait_enabled(&mut h, "Start training");
    super::click_in_view(&mut h, "Start training");
    h.step();
    h.get_by_label("Keep both (name it striped-2)").click();
    h.step();
    h.step();
    assert_eq!(h.state().settings.train.name, "striped-2");
    wait(&mut h, "the kept-both run", run_over);
    assert!(out.path().join("training/striped-2.safetensors").is_file());
    assert!(first.is_file());
}

/// Training defaults come from the loaded model and the dataset (defect 5): the resolution is
/// the model's native size, steps and rate follow the images with the reasoning shown, the
/// verdicts follow the resolution, and a value the user sets stays. The trained file lands in
/// the models folder, where the Models tab lists it.
#[test]
fn training_settings_follow_the_model_until_set_and_the_result_is_listed() {
    use kiln_engine::training::suggest::{SuggestFor, suggest};
    let out = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    training_folder(data.path());
    let mut s = settings(out.path());
    s.model_path = Some(fixture("tiny-a"));
    std::fs::create_dir_all(out.path().join("models")).unwrap();
    let mut h = super::harness_sized(s, egui::vec2(1280.0, 1200.0));
    wait(&mut h, "the model", loaded);
    let native = h.state().settings.native_size;
    h.state_mut().tab = kiln::gui::actions::Tab::Train;
    super::drop_dataset(&mut h, data.path());
    h.step();
    let want = suggest(SuggestFor::Lora, native, 2, 1);
    let t = &h.state().settings.train;
    assert_eq!(
        (t.resolution, t.steps, t.rank, t.learning_rate),
        (native, want.steps, want.rank, want.learning_rate)
    );
    assert!(
        h.query_by_label(&want.why).is_some(),
        "the reasoning is shown"
    );
    // The verdicts follow the resolution: 32-px images are small at 64, fine at 32.
    let small = "too small 32×32 (upscaled)";
    for (resolution, flagged) in [(64usize, true), (32, false)] {
        h.get_all_by_label("Resolution")
            .find(|n| n.accesskit_node().role() == egui::accesskit::Role::SpinButton)
            .expect("the Resolution field")
            .set_value_accesskit(resolution as f64);
        h.step();
        wait(&mut h, "the verdicts", |a| {
            a.views
                .train
                .report
                .as_ref()
                .is_some_and(|r| r.options.resolution == resolution)
        });
        h.step();
        assert_eq!(
            h.query_all_by_label(small).count() > 0,
            flagged,
            "at {resolution}"
        );
    }
    assert!(
        !h.state().settings.train.follow_suggestion,
        "a value set stays"
    );
    assert_eq!(h.state().settings.train.resolution, 32);
    // A short run; its LoRA is written to the models folder and listed there.
    h.state_mut().settings.train.steps = 2;
    h.state_mut().settings.train.name = "listed".into();
    h.step();
    wait_enabled(&mut h, "Start training");
    super::click_in_view(&mut h, "Start training");
    wait(&mut h, "the run", run_over);
    let file = out.path().join("models/listed.safetensors");
    assert!(file.is_file());
    wait(&mut h, "the Models tab's rescan", |a| {
        a.views.models.rows().iter().any(|r| r.entry.path == file)
    });
}
