//! InvokeAI's `invokeai_metadata` chunk (JSON with `positive_prompt`, `seed`, `scheduler`, …).

use serde_json::Value;

use crate::metadata::{LoraParam, Parameters};
use crate::schedulers::Schedule;

/// Parses an `invokeai_metadata` chunk; None when it is not a JSON object with a prompt.
pub fn parse(json: &str) -> Option<Parameters> {
    let m: Value = serde_json::from_str(json).ok()?;
    let prompt = m["positive_prompt"].as_str()?.to_owned();
    let mut p = Parameters {
        prompt: Some(prompt),
        negative_prompt: m["negative_prompt"].as_str().map(str::to_owned),
        steps: m["steps"].as_u64().map(|v| v as usize),
        cfg: m["cfg_scale"].as_f64(),
        seed: m["seed"].as_u64(),
        model: m["model"]["name"]
            .as_str()
            .or(m["model"]["model_name"].as_str())
            .map(str::to_owned),
        model_hash: m["model"]["hash"].as_str().map(str::to_owned),
        strength: m["strength"].as_f64().filter(|s| *s < 1.0),
        ..Parameters::default()
    };
    if let (Some(w), Some(h)) = (m["width"].as_u64(), m["height"].as_u64()) {
        p.size = Some((w as usize, h as usize));
    }
    if let Some(s) = m["scheduler"].as_str() {
        let (base, karras) = match s.strip_suffix("_k") {
            Some(b) => (b, true),
            None => (s, false),
        };
        let label = match base {
            "euler" => "Euler",
            "euler_a" => "Euler a",
            "heun" => "Heun",
            "lms" => "LMS",
            "dpmpp_2m" => "DPM++ 2M",
            "dpmpp_2m_sde" => "DPM++ 2M SDE",
            "dpmpp_2s" => "DPM++ 2S",
            "ddim" => "DDIM",
            "ddpm" => "DDPM",
            "unipc" => "UniPC",
            "lcm" => "LCM",
            other => other,
        };
        p.sampler = Some(label.to_owned());
        p.schedule = Some(if karras {
            Schedule::Karras
        } else {
            Schedule::Default
        });
    }
    if let Some(loras) = m["loras"].as_array() {
        p.loras = loras
            .iter()
            .filter_map(|l| {
                let name = l["model"]["name"]
                    .as_str()
                    .or(l["lora"]["model_name"].as_str())?;
                Some(LoraParam {
                    name: name.to_owned(),
                    weight: l["weight"].as_f64().map(|w| w as f32),
                    hash: l["model"]["hash"].as_str().map(str::to_owned),
                })
            })
            .collect();
    }
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_hand_made_invokeai_record() {
        let json = r#"{"generation_mode": "txt2img", "positive_prompt": "a lighthouse at dusk", "negative_prompt": "blurry",
            "width": 768, "height": 512, "seed": 42, "cfg_scale": 7.5, "steps": 30, "scheduler": "dpmpp_2m_k",
            "model": {"name": "dreamshaper-8", "hash": "blake3:abc", "base": "sd-1", "type": "main"},
            "loras": [{"model": {"name": "pixel-art", "hash": "blake3:def"}, "weight": 0.6}]}"#;
        let p = parse(json).expect("parameters");
        assert_eq!(p.prompt.as_deref(), Some("a lighthouse at dusk"));
        assert_eq!(
            (p.steps, p.cfg, p.seed, p.size),
            (Some(30), Some(7.5), Some(42), Some((768, 512)))
        );
        assert_eq!(
            (p.sampler.as_deref(), p.schedule),
            (Some("DPM++ 2M"), Some(Schedule::Karras))
        );
        assert_eq!(p.model.as_deref(), Some("dreamshaper-8"));
        assert_eq!(
            p.loras,
            vec![LoraParam {
                name: "pixel-art".into(),
                weight: Some(0.6),
                hash: Some("blake3:def".into())
            }]
        );
        assert!(parse(r#"{"seed": 1}"#).is_none());
    }
}
