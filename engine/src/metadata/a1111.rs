//! AUTOMATIC1111's infotext: the prompt, `Negative prompt: …`, then one line of
//! `Key: value` pairs separated by `, `; values containing `,`, `:` or a newline are
//! JSON-quoted (A1111's `quote`).

use std::collections::BTreeMap;

use crate::metadata::{LoraParam, Parameters};
use crate::schedulers::Schedule;

/// A1111's quoting of one value.
pub fn quote(value: &str) -> String {
    if value.contains([',', ':', '\n']) {
        serde_json::Value::String(value.to_owned()).to_string()
    } else {
        value.to_owned()
    }
}

/// Writes the infotext of `p` (keys in A1111's order; absent fields are left out).
pub fn write(p: &Parameters) -> String {
    let mut s = p.prompt.clone().unwrap_or_default();
    if let Some(n) = p.negative_prompt.as_deref().filter(|n| !n.is_empty()) {
        s.push_str(&format!("\nNegative prompt: {n}"));
    }
    let mut kv: Vec<(&str, String)> = Vec::new();
    if let Some(v) = p.steps {
        kv.push(("Steps", v.to_string()));
    }
    if let Some(v) = &p.sampler {
        kv.push(("Sampler", v.clone()));
    }
    match p.schedule {
        Some(Schedule::Karras) => kv.push(("Schedule type", "Karras".into())),
        Some(Schedule::Exponential) => kv.push(("Schedule type", "Exponential".into())),
        _ => {}
    }
    if let Some(v) = p.cfg {
        kv.push(("CFG scale", v.to_string()));
    }
    if let Some(v) = p.seed {
        kv.push(("Seed", v.to_string()));
    }
    if let Some((w, h)) = p.size {
        kv.push(("Size", format!("{w}x{h}")));
    }
    if let Some(v) = &p.model_hash {
        kv.push(("Model hash", v.clone()));
    }
    if let Some(v) = &p.model {
        kv.push(("Model", v.clone()));
    }
    if let Some(v) = p.strength {
        kv.push(("Denoising strength", v.to_string()));
    }
    if let Some(v) = p.clip_skip {
        kv.push(("Clip skip", v.to_string()));
    }
    let hashes: Vec<String> = p
        .loras
        .iter()
        .filter_map(|l| Some(format!("{}: {}", l.name, l.hash.as_ref()?)))
        .collect();
    if !hashes.is_empty() {
        kv.push(("Lora hashes", hashes.join(", ")));
    }
    for (k, v) in &p.extra {
        kv.push((k.as_str(), v.clone()));
    }
    let line: Vec<String> = kv
        .into_iter()
        .map(|(k, v)| format!("{k}: {}", quote(&v)))
        .collect();
    s.push('\n');
    s.push_str(&line.join(", "));
    s
}

/// The `Key: value` pairs of an infotext's last line, in order; None when it has fewer than
/// three (then it is not a parameters line, as A1111 decides).
fn pairs(line: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        let colon = rest.find(':')?;
        let key = rest[..colon].trim();
        if key.is_empty()
            || !key
                .chars()
                .next()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
            || key.contains(',')
        {
            return None;
        }
        rest = rest[colon + 1..].trim_start();
        let value = if rest.starts_with('"') {
            // A JSON string: find its end, honouring escapes.
            let mut end = None;
            let mut escaped = false;
            for (i, c) in rest.char_indices().skip(1) {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end?;
            let v: String = serde_json::from_str(&rest[..=end]).ok()?;
            rest = &rest[end + 1..];
            v
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            let v = rest[..end].trim().to_owned();
            rest = &rest[end..];
            v
        };
        out.push((key.to_owned(), value));
        rest = rest
            .trim_start()
            .strip_prefix(',')
            .unwrap_or(rest)
            .trim_start();
    }
    (out.len() >= 3).then_some(out)
}

/// Parses an A1111 infotext; None when it has no parameters line.
pub fn parse(text: &str) -> Option<Parameters> {
    let text = text.trim_end();
    let (body, last) = match text.rsplit_once('\n') {
        Some((b, l)) => (b, l),
        None => ("", text),
    };
    let kv = pairs(last)?;
    let mut p = Parameters::default();
    let (prompt, negative) = match body.find("Negative prompt:") {
        Some(i) => (
            &body[..i],
            Some(body[i + "Negative prompt:".len()..].trim()),
        ),
        None => (body, None),
    };
    p.prompt = Some(prompt.trim_end_matches('\n').to_owned());
    p.negative_prompt = negative.map(str::to_owned);
    let mut extra = BTreeMap::new();
    for (k, v) in kv {
        match k.as_str() {
            "Steps" => p.steps = v.parse().ok(),
            // Before A1111 1.9 the schedule was part of the sampler's name.
            "Sampler" => match v.strip_suffix(" Karras") {
                Some(base) => {
                    p.sampler = Some(base.to_owned());
                    p.schedule = Some(Schedule::Karras);
                }
                None => p.sampler = Some(v),
            },
            "Schedule type" => {
                p.schedule = match v.as_str() {
                    "Karras" => Some(Schedule::Karras),
                    "Exponential" => Some(Schedule::Exponential),
                    _ => Some(Schedule::Default),
                }
            }
            "CFG scale" => p.cfg = v.parse().ok(),
            "Seed" => p.seed = v.parse().ok(),
            "Size" => {
                p.size = v
                    .split_once('x')
                    .and_then(|(w, h)| Some((w.trim().parse().ok()?, h.trim().parse().ok()?)))
            }
            "Model hash" => p.model_hash = Some(v),
            "Model" => p.model = Some(v),
            "Clip skip" => p.clip_skip = v.parse().ok(),
            "Denoising strength" => p.strength = v.parse().ok(),
            "Lora hashes" => {
                p.loras = v
                    .split(',')
                    .filter_map(|e| e.split_once(':'))
                    .map(|(n, h)| LoraParam {
                        name: n.trim().to_owned(),
                        weight: None,
                        hash: Some(h.trim().to_owned()),
                    })
                    .collect()
            }
            _ => {
                extra.insert(k, v);
            }
        }
    }
    // Weights come from the prompt's <lora:NAME:WEIGHT> tags.
    if let Some(prompt) = &p.prompt {
        for (name, weight) in crate::prompt::lora_tags(prompt).1 {
            match p.loras.iter_mut().find(|l| l.name == name) {
                Some(l) => l.weight = Some(weight),
                None => p.loras.push(LoraParam {
                    name,
                    weight: Some(weight),
                    hash: None,
                }),
            }
        }
    }
    p.extra = extra;
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An infotext as A1111 1.10 writes it (hand-made).
    const A1111: &str = "masterpiece, (red fox:1.2), <lora:fluffy:0.8>\nsnowy forest\nNegative prompt: blurry, lowres\nSteps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3141592653, Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.45, Clip skip: 2, Lora hashes: \"fluffy: 0123456789ab\", TI hashes: \"easyneg: abcdef123456\", Version: v1.10.1";

    #[test]
    fn parses_a_hand_made_a1111_infotext() {
        let p = parse(A1111).expect("parameters");
        assert_eq!(
            p.prompt.as_deref(),
            Some("masterpiece, (red fox:1.2), <lora:fluffy:0.8>\nsnowy forest")
        );
        assert_eq!(p.negative_prompt.as_deref(), Some("blurry, lowres"));
        assert_eq!(
            (p.steps, p.cfg, p.seed, p.size),
            (Some(28), Some(6.5), Some(3_141_592_653), Some((512, 768)))
        );
        assert_eq!(
            (p.sampler.as_deref(), p.schedule),
            (Some("DPM++ 2M"), Some(Schedule::Karras))
        );
        assert_eq!(
            (p.model.as_deref(), p.model_hash.as_deref()),
            (Some("v1-5-pruned-emaonly"), Some("6ce0161689"))
        );
        assert_eq!((p.clip_skip, p.strength), (Some(2), Some(0.45)));
        assert_eq!(
            p.loras,
            vec![LoraParam {
                name: "fluffy".into(),
                weight: Some(0.8),
                hash: Some("0123456789ab".into())
            }]
        );
        assert_eq!(
            p.extra.get("TI hashes").map(String::as_str),
            Some("easyneg: abcdef123456")
        );
        assert_eq!(p.extra.get("Version").map(String::as_str), Some("v1.10.1"));
        assert_eq!(
            p.kiln_sampler(),
            Some(crate::schedulers::sampler::Sampler::DpmPp2m {
                schedule: Schedule::Karras
            })
        );
    }

    #[test]
    fn writes_what_it_parses() {
        let p = parse(A1111).expect("parameters");
        let again = parse(&write(&p)).expect("round trip");
        assert_eq!(again, p);
        assert!(write(&p).contains("Lora hashes: \"fluffy: 0123456789ab\""));
    }

    #[test]
    fn prompt_only_and_no_negative() {
        let p = parse("a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512")
            .expect("parameters");
        assert_eq!(
            (p.prompt.as_deref(), p.negative_prompt.as_deref()),
            (Some("a cat"), None)
        );
        assert_eq!(
            p.kiln_sampler(),
            Some(crate::schedulers::sampler::Sampler::EulerAncestral {
                schedule: Schedule::Default
            })
        );
        assert!(
            parse("just a caption, nothing else").is_none(),
            "a caption is not a parameters line"
        );
    }

    #[test]
    fn quoting_as_a1111() {
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("a, b"), "\"a, b\"");
        assert_eq!(quote("x: \"y\"\nz"), "\"x: \\\"y\\\"\\nz\"");
    }
}
