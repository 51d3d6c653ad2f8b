//! Sampler settings: sampler, schedule, steps, CFG, CLIP skip, seed (random/fixed, dice, reuse
//! last), size (multiples of 8, presets, swap), batch count and size, img2img init image and
//! strength; and the action bar — Generate / Cancel / Compare with their progress and a line
//! saying which adapters a Generate will use — which the window keeps visible below the
//! scrolling settings. Generate is disabled, saying why, while a training run holds the
//! engine.

use kiln_engine::schedulers::{SamplerKind, Schedule};

use super::Ctx;
use super::lora_stack::StackSummary;
use crate::gui::actions::Action;
use crate::gui::commands::UiCommand;

/// Size presets for a model trained at `native` pixels: its own size and the sizes people use
/// with it — 64, 96, 128 for kiln-tiny; 512-class for SD 1.5; 1024-class for SDXL.
pub fn presets(native: usize) -> Vec<(usize, usize)> {
    let n = native.max(8);
    if n <= 256 {
        // A small model: its size, 1.5× and 2× (multiples of 8).
        let up = |f: usize| (n * f / 2).div_ceil(8) * 8;
        vec![(n, n), (up(3), up(3)), (up(4), up(4))]
    } else if n < 1024 {
        let s = |v: usize| v * n / 512 / 8 * 8;
        vec![
            (s(512), s(512)),
            (s(512), s(768)),
            (s(768), s(512)),
            (s(640), s(640)),
            (s(384), s(384)),
        ]
    } else {
        vec![
            (1024, 1024),
            (896, 1152),
            (1152, 896),
            (832, 1216),
            (1216, 832),
        ]
    }
}

/// The sampler panel (its state is the persisted settings).
#[derive(Debug, Default)]
pub struct SamplerView;

impl SamplerView {
    /// Draws the sampler settings.
    pub fn ui(&mut self, ui: &mut egui::Ui, ctx: &mut Ctx<'_>) {
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
            let native = s.native_size;
            super::combo(ui, "Presets", "…", |ui| {
                for (w, h) in presets(native) {
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

    /// Draws the action bar: what a Generate will use (`loras`, and `embeddings` loaded), then
    /// Generate, Cancel and Compare with baseline (only with a LoRA switched on), and the
    /// progress.
    pub fn action_bar(
        &mut self,
        ui: &mut egui::Ui,
        ctx: &mut Ctx<'_>,
        loras: StackSummary,
        embeddings: usize,
    ) {
        let blocked = ctx.studio.cannot_generate();
        let mut uses: Vec<String> = loras.describe().into_iter().collect();
        if embeddings > 0 {
            uses.push(format!(
                "{embeddings} embedding{}",
                if embeddings == 1 { "" } else { "s" }
            ));
        }
        // Always one line, so the buttons below never move under the pointer.
        if uses.is_empty() {
            ui.weak("No LoRA or embedding: the model as it is");
        } else {
            let line = uses.join(" · ");
            if loras.refused > 0 {
                ui.colored_label(ui.visuals().warn_fg_color, line);
            } else {
                ui.weak(line);
            }
        }
        ui.horizontal(|ui| {
            if UiCommand::Generate.button_unless(ui, blocked) {
                ctx.actions.push(Action::Ui(UiCommand::Generate));
            }
            if UiCommand::Cancel.button(ui, ctx.studio.job.is_some()) {
                ctx.actions.push(Action::Ui(UiCommand::Cancel));
            }
            let compare = blocked.or_else(|| loras.nothing_to_compare());
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
            ui.add(egui::ProgressBar::new(frac).text(progress_text(job)));
        }
    }
}

/// What the progress bar of `job` says: which image of how many, the step, the rate and the
/// time left — or that it is starting, before the first step (never "0/0 · 0.00 it/s").
pub fn progress_text(job: &crate::gui::studio::Job) -> String {
    if job.total == 0 {
        return "Starting: loading what the prompt needs…".to_owned();
    }
    let rate = job.rate();
    let eta = if rate > 0.0 {
        format!("ETA {:.0} s", (job.total - job.step) as f64 / rate)
    } else {
        "ETA …".to_owned()
    };
    let which = match (job.images, job.per_call) {
        (0 | 1, _) => String::new(),
        (n, 1) => format!("image {} of {n} · ", (job.made + 1).min(n)),
        (n, k) => format!(
            "images {}–{} of {n} · ",
            (job.made + 1).min(n),
            (job.made + k).min(n)
        ),
    };
    format!(
        "{which}step {}/{} · {rate:.2} it/s · {eta}",
        job.step, job.total
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(
        step: usize,
        total: usize,
        images: usize,
        per_call: usize,
        made: usize,
    ) -> crate::gui::studio::Job {
        crate::gui::studio::Job {
            id: 1,
            step,
            total,
            started: std::time::Instant::now() - std::time::Duration::from_secs(2),
            images,
            per_call,
            made,
        }
    }

    #[test]
    fn presets_follow_the_native_size() {
        assert_eq!(presets(64), [(64, 64), (96, 96), (128, 128)]);
        assert_eq!(presets(512)[..3], [(512, 512), (512, 768), (768, 512)]);
        assert_eq!(presets(768)[0], (768, 768));
        assert_eq!(presets(1024)[..2], [(1024, 1024), (896, 1152)]);
    }

    #[test]
    fn progress_says_starting_then_which_image() {
        assert!(progress_text(&job(0, 0, 3, 1, 0)).starts_with("Starting"));
        let t = progress_text(&job(30, 75, 3, 1, 1));
        assert!(t.starts_with("image 2 of 3 · step 30/75 · "), "{t}");
        assert!(t.contains("it/s · ETA "), "{t}");
        let t = progress_text(&job(10, 50, 4, 2, 2));
        assert!(t.starts_with("images 3–4 of 4 · "), "{t}");
        assert!(progress_text(&job(1, 25, 1, 1, 0)).starts_with("step 1/25"));
    }
}
