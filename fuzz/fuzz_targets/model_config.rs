//! Model configuration files: an LDM `model.yaml` beside a single-file checkpoint (A1111's
//! convention) applied to SD 1.5's configs, and a diffusers folder's `config.json` for each
//! component, each then validated as a load would.
#![no_main]

use kiln_engine::models::config::{
    AutoencoderKLConfig, ClipTextConfig, UNet2DConditionConfig, sd15,
};
use kiln_engine::schedulers::SchedulerConfig;
use kiln_engine::weights::ldm_yaml::LdmYaml;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (kind, bytes) = kiln_fuzz::select(data, 2);
    if kind == 0 {
        let path = kiln_fuzz::scratch_file("model.yaml", bytes);
        if let Ok(yaml) = LdmYaml::read(&path) {
            let (mut config, mut scheduler) = (sd15(), SchedulerConfig::sd15());
            yaml.apply(&mut config, &mut scheduler);
            let _ = (config.unet.validate(), config.vae.validate());
            let _ = config.text_encoder.validate();
        }
    } else {
        if let Ok(c) = serde_json::from_slice::<UNet2DConditionConfig>(bytes) {
            let _ = c.validate();
        }
        if let Ok(c) = serde_json::from_slice::<AutoencoderKLConfig>(bytes) {
            let _ = c.validate();
        }
        if let Ok(c) = serde_json::from_slice::<ClipTextConfig>(bytes) {
            let _ = c.validate();
        }
        let _ = serde_json::from_slice::<SchedulerConfig>(bytes);
    }
});
