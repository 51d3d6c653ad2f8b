//! The original LDM `.yaml` config that AUTOMATIC1111 looks for beside a checkpoint
//! (`model.safetensors` + `model.yaml`). It fills in what tensor shapes cannot tell:
//! attention heads (`num_heads`, or `num_head_channels`), the VAE `scale_factor`, the beta
//! schedule (`linear_start`, `linear_end`, `timesteps`) and v-prediction
//! (`parameterization: v`). GroupNorm groups are fixed at 32 in LDM code, so a yaml never
//! changes them.

use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

use crate::error::{Error, Result};
use crate::models::config::{PerBlock, StableDiffusionConfig};
use crate::schedulers::SchedulerConfig;

/// The settings an LDM yaml contributes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LdmYaml {
    /// `unet_config.params.num_heads` (−1 or absent = unused).
    pub num_heads: Option<usize>,
    /// `unet_config.params.num_head_channels` (−1 or absent = unused).
    pub num_head_channels: Option<usize>,
    /// `model.params.scale_factor`.
    pub scale_factor: Option<f64>,
    /// `model.params.linear_start` (β start).
    pub linear_start: Option<f64>,
    /// `model.params.linear_end` (β end).
    pub linear_end: Option<f64>,
    /// `model.params.timesteps`.
    pub timesteps: Option<usize>,
    /// `model.params.parameterization == "v"`.
    pub v_prediction: bool,
}

fn positive(y: &Yaml) -> Option<usize> {
    y.as_i64().filter(|v| *v > 0).map(|v| v as usize)
}

fn float(y: &Yaml) -> Option<f64> {
    y.as_f64().or_else(|| y.as_i64().map(|v| v as f64))
}

impl LdmYaml {
    /// Reads `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let docs = YamlLoader::load_from_str(&text)
            .map_err(|e| Error::format(path, format!("invalid YAML: {e}")))?;
        let doc = docs
            .first()
            .ok_or_else(|| Error::format(path, "empty YAML"))?;
        let params = &doc["model"]["params"];
        if params.is_badvalue() {
            return Err(Error::format(path, "not an LDM config (no model.params)"));
        }
        let unet = &params["unet_config"]["params"];
        Ok(LdmYaml {
            num_heads: positive(&unet["num_heads"]),
            num_head_channels: positive(&unet["num_head_channels"]),
            scale_factor: float(&params["scale_factor"]),
            linear_start: float(&params["linear_start"]),
            linear_end: float(&params["linear_end"]),
            timesteps: positive(&params["timesteps"]),
            v_prediction: params["parameterization"].as_str() == Some("v"),
        })
    }

    /// Applies these settings to configs inferred from a checkpoint's shapes.
    pub fn apply(&self, config: &mut StableDiffusionConfig, scheduler: &mut SchedulerConfig) {
        if let Some(h) = self.num_heads {
            config.unet.attention_head_dim = PerBlock::One(h);
        } else if let Some(c) = self.num_head_channels {
            let heads = config
                .unet
                .block_out_channels
                .iter()
                .map(|ch| (ch / c).max(1))
                .collect();
            config.unet.attention_head_dim = PerBlock::Each(heads);
        }
        if let Some(s) = self.scale_factor {
            config.vae.scaling_factor = s;
        }
        if let Some(v) = self.linear_start {
            scheduler.beta_start = v;
        }
        if let Some(v) = self.linear_end {
            scheduler.beta_end = v;
        }
        if let Some(v) = self.timesteps {
            scheduler.num_train_timesteps = v;
        }
        if self.v_prediction {
            scheduler.prediction_type = crate::schedulers::PredictionType::VPrediction;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sd15_style_and_head_channel_configs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("m.yaml");
        std::fs::write(
            &p,
            "model:\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n  params:\n    linear_start: 0.001\n    linear_end: 0.02\n    \
             timesteps: 1000\n    scale_factor: 0.13025\n    parameterization: \"v\"\n    unet_config:\n      params:\n        \
             num_heads: -1\n        num_head_channels: 64\n        context_dim: 768\n",
        )
        .expect("write");
        let y = LdmYaml::read(&p).expect("read");
        assert_eq!(y.num_heads, None);
        assert_eq!(y.num_head_channels, Some(64));
        let mut cfg = crate::models::config::sd15();
        let mut sched = SchedulerConfig::sd15();
        y.apply(&mut cfg, &mut sched);
        assert_eq!(
            cfg.unet.attention_head_dim,
            PerBlock::Each(vec![5, 10, 20, 20])
        );
        assert_eq!(cfg.vae.scaling_factor, 0.13025);
        assert_eq!((sched.beta_start, sched.beta_end), (0.001, 0.02));
        assert_eq!(
            sched.prediction_type,
            crate::schedulers::PredictionType::VPrediction
        );
        std::fs::write(&p, "just: text\n").expect("write");
        assert!(LdmYaml::read(&p).is_err());
    }
}
