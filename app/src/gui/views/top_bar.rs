//! The top bar: the checkpoint, recent models, device and precision, load status and report,
//! and the "Serve API" switch.

use kiln_engine::device::DeviceSpec;
use kiln_engine::job::PrecisionChoice;

use super::Ctx;
use crate::gui::actions::Action;
use crate::gui::commands::UiCommand;
use crate::gui::studio::ModelStatus;

/// The top bar (it keeps no state of its own).
#[derive(Debug, Default)]
pub struct TopBar;

impl TopBar {
    /// Draws the top bar.
    pub fn ui(&mut self, ui: &mut egui::Ui, ctx: &mut Ctx<'_>) {
        egui::Panel::top("model").show(ui, |ui| {
            ui.horizontal_wrapped(|ui| {
                ui.strong("Kiln");
                ui.separator();
                for c in [UiCommand::OpenModel, UiCommand::OpenModelFolder] {
                    if c.button(ui, true) {
                        ctx.actions.push(Action::Ui(c));
                    }
                }
                let current = ctx
                    .settings
                    .model_path
                    .as_deref()
                    .map(super::file_name)
                    .unwrap_or_else(|| "—".into());
                let recent = ctx.settings.recent_models.clone();
                super::combo(ui, "Recent models", current, |ui| {
                    for p in &recent {
                        let selected = ctx.settings.model_path.as_ref() == Some(p);
                        if ui
                            .selectable_label(selected, p.display().to_string())
                            .clicked()
                        {
                            ctx.actions.push(Action::LoadModel(p.clone()));
                        }
                    }
                });
                let mut device = ctx.settings.device.clone();
                let mut precision = ctx.settings.precision;
                // The model reloads on another device; not while a training run holds the engine.
                ui.add_enabled_ui(ctx.studio.training.is_none(), |ui| {
                    super::combo(ui, "Device", device.to_string(), |ui| {
                        ui.selectable_value(&mut device, DeviceSpec::Auto, "auto");
                        for name in kiln_engine::device::available() {
                            if let Ok(d) = name.parse::<DeviceSpec>() {
                                ui.selectable_value(&mut device, d, name);
                            }
                        }
                    });
                    super::combo(ui, "Precision", precision.name(), |ui| {
                        for p in [
                            PrecisionChoice::Auto,
                            PrecisionChoice::F32,
                            PrecisionChoice::F16,
                            PrecisionChoice::Bf16,
                        ] {
                            ui.selectable_value(&mut precision, p, p.name());
                        }
                    });
                })
                .response
                .on_disabled_hover_text(
                    "A training run is using the engine: change the device or precision when it ends",
                );
                let changed = device != ctx.settings.device || precision != ctx.settings.precision;
                ctx.settings.device = device;
                ctx.settings.precision = precision;
                if changed && let Some(p) = ctx.settings.model_path.clone() {
                    ctx.actions.push(Action::LoadModel(p));
                }
                ui.separator();
                status(ui, &ctx.studio.model);
                ui.separator();
                api_switch(ui, ctx);
            });
        });
    }
}

/// The "Serve API" switch and, while it is on, where the API listens.
fn api_switch(ui: &mut egui::Ui, ctx: &mut Ctx<'_>) {
    let mut on = ctx.studio.api.is_some();
    let hover = match ctx.studio.api {
        Some(addr) => format!(
            "Serving AUTOMATIC1111's API at http://{addr}/ (this machine only): Open WebUI, \
             SillyTavern and scripts made for A1111 can generate here; their images appear \
             on the canvas and in the gallery. Click to stop."
        ),
        None => format!(
            "Serve AUTOMATIC1111's HTTP API on 127.0.0.1:{} so other programs can generate \
             with this window's model, LoRAs and embeddings",
            ctx.settings.api_port
        ),
    };
    if ui
        .toggle_value(&mut on, "Serve API")
        .on_hover_text(hover)
        .clicked()
    {
        ctx.actions.push(Action::ServeApi(on));
    }
    if let Some(addr) = ctx.studio.api {
        ui.weak(format!("http://{addr}/"));
    }
}

fn status(ui: &mut egui::Ui, model: &ModelStatus) {
    match model {
        ModelStatus::None => {
            ui.label("No model — open a checkpoint, drop one on the window, or pick one in Models");
        }
        ModelStatus::Loading(p) => {
            ui.spinner();
            ui.label(format!("Loading {}…", p.display()));
        }
        ModelStatus::Loaded {
            info,
            device,
            precision,
        } => {
            ui.label(format!("Model: {}", super::file_name(&info.path)))
                .on_hover_text(format!(
                    "{}\nfamily: {}\nlayout: {:?}\nweights: {}\nconfig: {}\ndevice: {device}, precision: {precision:?}",
                    info.path.display(),
                    info.family,
                    info.layout,
                    info.dtype,
                    info.config_source
                ));
            ui.weak(format!(
                "{} · {:?} · {} · {device} {precision:?}",
                info.family, info.layout, info.dtype
            ));
        }
        ModelStatus::Failed(e) => {
            ui.colored_label(ui.visuals().error_fg_color, format!("Could not load: {e}"));
        }
    }
}
