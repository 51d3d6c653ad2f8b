//! Sampler settings: sampler, schedule, steps, CFG, CLIP skip, seed (random/fixed, dice, reuse
//! last), size (multiples of 8, presets, swap), batch count and size, img2img init image and
//! strength, and the Generate / Cancel / Compare buttons with their progress. Generate is
//! disabled, saying why, while a training run holds the engine.

use kiln_engine::schedulers::{SamplerKind, Schedule};

use super::Ctx;
use crate::gui::actions::Action;
use crate::gui::commands::UiCommand;

/// Size presets (SD 1.5 is trained at 512).
const PRESETS: [(usize, usize); 5] = [(512, 512), (512, 768), (768, 512), (640, 640), (384, 384)];

/// The sampler panel (its state is the persisted settings).
#[derive(Debug, Default)]
pub struct SamplerView;

impl SamplerView {
    /// Draws the sampler panel; `has_loras` says whether Compare with baseline has anything
    /// to compare.
    pub fn ui(&mut self, ui: &mut egui::Ui, ctx: &mut Ctx<'_>, has_loras: bool) {
        ui.heading("Sampler");
        let s = &mut *ctx.settings;
        super::combo(ui, "Sampler", s.sampler.a1111_name(), |ui| {
            for kind in SamplerKind::ALL {
                ui.selectable_value(&mut s.sampler, kind, kind.a1111_name());
            }
        });
        let fixed = s.sampler.fixed_schedule();
        ui.add_enabled_ui(!fixed, |ui| {
            let shown = if fixed { Schedule::Default } else { s.schedule };
            super::combo(ui, "Schedule", format!("{shown:?}"), |ui| {
                ui.selectable_value(&mut s.schedule, Schedule::Default, "Default")
                    .on_hover_text("The model's timestep spacing");
                ui.selectable_value(&mut s.schedule, Schedule::Karras, "Karras");
                ui.selectable_value(&mut s.schedule, Schedule::Exponential, "Exponential");
            });
        });
        if s.sampler == SamplerKind::Ddim {
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
        super::labeled_drag(
            ui,
            "CLIP skip",
            &mut s.clip_skip,
            1..=12,
            0.05,
            "1 uses the text encoder's last layer; 2 the one before (as many anime models expect)",
        );
        ui.horizontal(|ui| {
            ui.checkbox(&mut s.random_seed, "Random seed")
                .on_hover_text("Draw a new seed for every Generate");
            ui.add_enabled_ui(!s.random_seed, |ui| {
                let r = ui.add(egui::DragValue::new(&mut s.seed).range(0..=u64::from(u32::MAX)));
                r.widget_info(|| egui::WidgetInfo::labeled(egui::Role::SpinButton, true, "Seed"));
            });
        });
        ui.horizontal(|ui| {
            for c in [UiCommand::RandomSeed, UiCommand::ReuseSeed] {
                if c.button(
                    ui,
                    c != UiCommand::ReuseSeed || ctx.studio.last_seed.is_some(),
                ) {
                    ctx.actions.push(Action::Ui(c));
                }
            }
        });
        let s = &mut *ctx.settings;
        ui.horizontal(|ui| {
            ui.label("Size");
            for (value, label) in [(&mut s.width, "Width"), (&mut s.height, "Height")] {
                let r = ui.add(egui::DragValue::new(value).range(8..=4096).speed(8.0));
                r.widget_info(|| egui::WidgetInfo::labeled(egui::Role::SpinButton, true, label));
                *value = (*value / 8).max(1) * 8;
            }
            if UiCommand::SwapSize.button(ui, true) {
                ctx.actions.push(Action::Ui(UiCommand::SwapSize));
            }
            super::combo(ui, "Presets", "…", |ui| {
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
        self.init_image(ui, ctx);
        ui.checkbox(&mut ctx.settings.live_preview, "Live preview")
            .on_hover_text("Show the image forming at every step (cheap, no VAE)");
        ui.add_space(6.0);
        self.buttons(ui, ctx, has_loras);
    }

    fn init_image(&mut self, ui: &mut egui::Ui, ctx: &mut Ctx<'_>) {
        ui.horizontal(|ui| {
            if UiCommand::PickInitImage.button(ui, true) {
                ctx.actions.push(Action::Ui(UiCommand::PickInitImage));
            }
            match ctx.settings.init_image.clone() {
                Some(p) => {
                    ui.label(super::file_name(&p))
                        .on_hover_text(p.display().to_string());
                    if ui
                        .small_button("x")
                        .on_hover_text("Back to text-to-image")
                        .clicked()
                    {
                        ctx.settings.set_init_image(None);
                    }
                }
                None => {
                    ui.weak("text-to-image (drop an image for img2img)");
                }
            }
        });
        if ctx.settings.init_image.is_some() {
            let r =
                ui.add(egui::Slider::new(&mut ctx.settings.strength, 0.01..=1.0).text("Strength"));
            r.on_hover_text(
                "How much to change the image: the last floor(steps × strength) steps run",
            );
        }
    }

    fn buttons(&mut self, ui: &mut egui::Ui, ctx: &mut Ctx<'_>, has_loras: bool) {
        let blocked = ctx.studio.cannot_generate();
        ui.horizontal(|ui| {
            if UiCommand::Generate.button_unless(ui, blocked) {
                ctx.actions.push(Action::Ui(UiCommand::Generate));
            }
            if UiCommand::Cancel.button(ui, ctx.studio.job.is_some()) {
                ctx.actions.push(Action::Ui(UiCommand::Cancel));
            }
            let compare = blocked.or((!has_loras).then_some("The LoRA stack is empty"));
            if UiCommand::CompareWithBaseline.button_unless(ui, compare) {
                ctx.actions.push(Action::Ui(UiCommand::CompareWithBaseline));
            }
        });
        if let Some(why) = blocked.filter(|_| ctx.studio.training.is_some()) {
            ui.colored_label(ui.visuals().warn_fg_color, why);
        }
        if let Some(job) = &ctx.studio.job {
            let frac = if job.total > 0 {
                job.step as f32 / job.total as f32
            } else {
                0.0
            };
            let rate = job.rate();
            let eta = if rate > 0.0 {
                (job.total - job.step) as f64 / rate
            } else {
                0.0
            };
            ui.add(egui::ProgressBar::new(frac).text(format!(
                "{}/{} · {rate:.2} it/s · ETA {eta:.0} s",
                job.step, job.total
            )));
        }
    }
}
