//! Sampler settings: sampler, schedule, steps, CFG, seed (random/fixed, dice, reuse last),
//! size (multiples of 8, presets, swap), batch count and size, img2img init image and
//! strength, and the Generate / Cancel buttons with their progress.

use kiln_engine::pipeline::Sampler;
use kiln_engine::schedulers::Schedule;

use crate::gui::app::KilnApp;
use crate::gui::commands::UiCommand;

/// Size presets (SD 1.5 is trained at 512).
const PRESETS: [(usize, usize); 5] = [(512, 512), (512, 768), (768, 512), (640, 640), (384, 384)];

/// Draws the sampler panel.
pub fn ui(ui: &mut egui::Ui, app: &mut KilnApp) {
    ui.heading("Sampler");
    let s = &mut app.settings;
    let current = Sampler::from_name(&s.sampler, Schedule::Default, 0.0)
        .map(|x| x.a1111_name())
        .unwrap_or("?");
    crate::gui::panels::combo(ui, "Sampler", current, |ui| {
        for name in Sampler::NAMES {
            let label = Sampler::from_name(name, Schedule::Default, 0.0)
                .map(|x| x.a1111_name())
                .unwrap_or(name);
            ui.selectable_value(&mut s.sampler, name.to_owned(), label);
        }
    });
    let fixed_spacing = matches!(s.sampler.as_str(), "ddim" | "ddpm" | "lcm");
    ui.add_enabled_ui(!fixed_spacing, |ui| {
        crate::gui::panels::combo(
            ui,
            "Schedule",
            format!(
                "{:?}",
                if fixed_spacing {
                    Schedule::Default
                } else {
                    s.schedule
                }
            ),
            |ui| {
                ui.selectable_value(&mut s.schedule, Schedule::Default, "Default")
                    .on_hover_text("The model's timestep spacing");
                ui.selectable_value(&mut s.schedule, Schedule::Karras, "Karras");
                ui.selectable_value(&mut s.schedule, Schedule::Exponential, "Exponential");
            },
        );
    });
    if s.sampler == "ddim" {
        super::labeled_drag(
            ui,
            "Eta",
            &mut s.eta,
            0.0..=1.0,
            0.01,
            "DDIM η: 0 is deterministic, 1 adds DDPM-like noise",
        );
    }
    super::labeled_drag(ui, "Steps", &mut s.steps, 1..=150, 0.2, "Denoising steps");
    super::labeled_drag(
        ui,
        "CFG scale",
        &mut s.cfg,
        1.0..=30.0,
        0.05,
        "How strongly to follow the prompt (classifier-free guidance)",
    );

    ui.horizontal(|ui| {
        ui.checkbox(&mut s.random_seed, "Random seed")
            .on_hover_text("Draw a new seed for every Generate");
        ui.add_enabled_ui(!s.random_seed, |ui| {
            let r = ui.add(egui::DragValue::new(&mut s.seed).range(0..=u64::from(u32::MAX)));
            r.widget_info(|| egui::WidgetInfo::labeled(egui::Role::SpinButton, true, "Seed"));
        });
    });
    let mut command = None;
    ui.horizontal(|ui| {
        for c in [UiCommand::RandomSeed, UiCommand::ReuseSeed] {
            if c.button(ui, c != UiCommand::ReuseSeed || app.last_seed.is_some()) {
                command = Some(c);
            }
        }
    });
    let s = &mut app.settings;
    ui.horizontal(|ui| {
        ui.label("Size");
        for (value, label) in [(&mut s.width, "Width"), (&mut s.height, "Height")] {
            let r = ui.add(egui::DragValue::new(value).range(8..=4096).speed(8.0));
            r.widget_info(|| egui::WidgetInfo::labeled(egui::Role::SpinButton, true, label));
            *value = (*value / 8).max(1) * 8;
        }
        if UiCommand::SwapSize.button(ui, true) {
            command = Some(UiCommand::SwapSize);
        }
        crate::gui::panels::combo(ui, "Presets", "…", |ui| {
            for (w, h) in PRESETS {
                if ui
                    .selectable_label(s.width == w && s.height == h, format!("{w}×{h}"))
                    .clicked()
                {
                    s.width = w;
                    s.height = h;
                }
            }
        });
    });
    super::labeled_drag(
        ui,
        "Batch count",
        &mut s.batch_count,
        1..=100,
        0.1,
        "Jobs run one after another (seed advances by batch size)",
    );
    super::labeled_drag(
        ui,
        "Batch size",
        &mut s.batch_size,
        1..=16,
        0.1,
        "Images per job (seed + k for image k)",
    );

    ui.horizontal(|ui| {
        if UiCommand::PickInitImage.button(ui, true) {
            command = Some(UiCommand::PickInitImage);
        }
        let s = &mut app.settings;
        match s.init_image.clone() {
            Some(p) => {
                ui.label(
                    p.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                )
                .on_hover_text(p.display().to_string());
                if ui
                    .small_button("x")
                    .on_hover_text("Back to text-to-image")
                    .clicked()
                {
                    s.init_image = None;
                }
            }
            None => {
                ui.weak("text-to-image (drop an image for img2img)");
            }
        }
    });
    if app.settings.init_image.is_some() {
        let r = ui.add(egui::Slider::new(&mut app.settings.strength, 0.01..=1.0).text("Strength"));
        r.on_hover_text("How much to change the image: the last floor(steps × strength) steps run");
    }
    ui.checkbox(&mut app.settings.live_preview, "Live preview")
        .on_hover_text("Show the image forming at every step (cheap, no VAE)");

    ui.add_space(6.0);
    ui.horizontal(|ui| {
        let busy = app.job.is_some();
        if UiCommand::Generate.button(ui, !busy) {
            command = Some(UiCommand::Generate);
        }
        if UiCommand::Cancel.button(ui, busy) {
            command = Some(UiCommand::Cancel);
        }
        if UiCommand::CompareWithBaseline.button(ui, !busy && !app.settings.loras.is_empty()) {
            command = Some(UiCommand::CompareWithBaseline);
        }
    });
    if let Some(job) = &app.job {
        let frac = if job.total > 0 {
            job.step as f32 / job.total as f32
        } else {
            0.0
        };
        let eta = if app.rate > 0.0 {
            (job.total - job.step) as f64 / app.rate
        } else {
            0.0
        };
        ui.add(egui::ProgressBar::new(frac).text(format!(
            "{}/{} · {:.2} it/s · ETA {:.0} s",
            job.step, job.total, app.rate, eta
        )));
    }
    if let Some(c) = command {
        app.run_command(c);
    }
}
