//! ComfyUI's `prompt` chunk: the API graph `{id: {class_type, inputs}}`. The sampler node
//! (`KSampler`/`KSamplerAdvanced`) is followed through its links to the text encoders, the
//! latent size, the LoRA loaders and the checkpoint loader. Values that are links to other
//! kinds of nodes (primitives, custom nodes) are left unset.

use serde_json::Value;

use crate::metadata::{LoraParam, Parameters};
use crate::schedulers::Schedule;

/// A1111's label for a ComfyUI `sampler_name`.
fn sampler_label(name: &str) -> Option<&'static str> {
    Some(match name {
        "euler" => "Euler",
        "euler_ancestral" => "Euler a",
        "heun" => "Heun",
        "lms" => "LMS",
        "dpmpp_2m" => "DPM++ 2M",
        "dpmpp_2m_sde" | "dpmpp_2m_sde_gpu" => "DPM++ 2M SDE",
        "dpmpp_2s_ancestral" => "DPM++ 2S a",
        "ddim" => "DDIM",
        "ddpm" => "DDPM",
        "uni_pc" | "uni_pc_bh2" => "UniPC",
        "lcm" => "LCM",
        _ => return None,
    })
}

/// Parses a ComfyUI `prompt` chunk; None when it has no sampler node.
pub fn parse(json: &str) -> Option<Parameters> {
    let graph: Value = serde_json::from_str(json).ok()?;
    let nodes = graph.as_object()?;
    let node = |link: &Value| -> Option<&Value> {
        nodes.get(
            link.as_array()?
                .first()?
                .as_str()
                .map(str::to_owned)
                .or_else(|| link[0].as_u64().map(|n| n.to_string()))?
                .as_str(),
        )
    };
    let (_, sampler) = nodes.iter().find(|(_, n)| {
        matches!(
            n["class_type"].as_str(),
            Some("KSampler" | "KSamplerAdvanced")
        )
    })?;
    let inputs = &sampler["inputs"];
    let text = |link: &Value| {
        node(link)
            .filter(|n| n["class_type"] == "CLIPTextEncode")
            .and_then(|n| n["inputs"]["text"].as_str())
            .map(str::to_owned)
    };
    let mut p = Parameters {
        prompt: text(&inputs["positive"]),
        negative_prompt: text(&inputs["negative"]),
        steps: inputs["steps"].as_u64().map(|v| v as usize),
        cfg: inputs["cfg"].as_f64(),
        seed: inputs["seed"].as_u64().or(inputs["noise_seed"].as_u64()),
        ..Parameters::default()
    };
    if let Some(name) = inputs["sampler_name"].as_str() {
        p.sampler = Some(
            sampler_label(name)
                .map(str::to_owned)
                .unwrap_or_else(|| name.to_owned()),
        );
    }
    p.schedule = match inputs["scheduler"].as_str() {
        Some("karras") => Some(Schedule::Karras),
        Some("exponential") => Some(Schedule::Exponential),
        Some("normal") => Some(Schedule::Default),
        Some(other) => {
            p.extra.insert("scheduler".into(), other.to_owned());
            None
        }
        None => None,
    };
    if let Some(d) = inputs["denoise"].as_f64().filter(|d| *d < 1.0) {
        p.strength = Some(d);
    }
    if let Some(latent) =
        node(&inputs["latent_image"]).filter(|n| n["class_type"] == "EmptyLatentImage")
    {
        let i = &latent["inputs"];
        if let (Some(w), Some(h)) = (i["width"].as_u64(), i["height"].as_u64()) {
            p.size = Some((w as usize, h as usize));
        }
    }
    // Follow the model link through LoRA loaders to the checkpoint.
    let mut link = inputs["model"].clone();
    for _ in 0..64 {
        let Some(n) = node(&link) else { break };
        let i = &n["inputs"];
        match n["class_type"].as_str() {
            Some("LoraLoader" | "LoraLoaderModelOnly") => {
                if let Some(name) = i["lora_name"].as_str() {
                    let stem = name.rsplit(['/', '\\']).next().unwrap_or(name);
                    let stem = stem.strip_suffix(".safetensors").unwrap_or(stem).to_owned();
                    p.loras.insert(
                        0,
                        LoraParam {
                            name: stem,
                            weight: i["strength_model"].as_f64().map(|w| w as f32),
                            hash: None,
                        },
                    );
                }
                link = i["model"].clone();
            }
            Some("CheckpointLoaderSimple" | "CheckpointLoader") => {
                p.model = i["ckpt_name"].as_str().map(|s| {
                    let s = s.rsplit(['/', '\\']).next().unwrap_or(s);
                    s.strip_suffix(".safetensors")
                        .or(s.strip_suffix(".ckpt"))
                        .unwrap_or(s)
                        .to_owned()
                });
                break;
            }
            _ => break,
        }
    }
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made API graph as ComfyUI's default workflow saves it, with one LoRA.
    const GRAPH: &str = r#"{
      "3": {"class_type": "KSampler", "inputs": {"seed": 156680208700286, "steps": 20, "cfg": 8.0,
            "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": 1.0,
            "model": ["10", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
      "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15/v1-5-pruned-emaonly.safetensors"}},
      "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 640, "batch_size": 1}},
      "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a watercolor fox", "clip": ["10", 1]}},
      "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["10", 1]}},
      "10": {"class_type": "LoraLoader", "inputs": {"lora_name": "styles/ink.safetensors", "strength_model": 0.7, "strength_clip": 1.0, "model": ["4", 0], "clip": ["4", 1]}}
    }"#;

    #[test]
    fn parses_a_hand_made_comfyui_graph() {
        let p = parse(GRAPH).expect("parameters");
        assert_eq!(p.prompt.as_deref(), Some("a watercolor fox"));
        assert_eq!(p.negative_prompt.as_deref(), Some("text, watermark"));
        assert_eq!(
            (p.steps, p.cfg, p.seed, p.size),
            (
                Some(20),
                Some(8.0),
                Some(156_680_208_700_286),
                Some((512, 640))
            )
        );
        assert_eq!(
            (p.sampler.as_deref(), p.schedule),
            (Some("DPM++ 2M"), Some(Schedule::Karras))
        );
        assert_eq!(p.model.as_deref(), Some("v1-5-pruned-emaonly"));
        assert_eq!(
            p.loras,
            vec![LoraParam {
                name: "ink".into(),
                weight: Some(0.7),
                hash: None
            }]
        );
        assert_eq!(p.strength, None, "denoise 1.0 is txt2img");
        assert!(parse(r#"{"1": {"class_type": "SaveImage", "inputs": {}}}"#).is_none());
    }
}
