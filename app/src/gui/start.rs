//! What `kiln` (no subcommand) opens with: `--model PATH`, `--lora FILE[:W]` (repeatable),
//! `--embedding FILE[:TOKEN]` (repeatable) and `--dataset DIR`, so that everything a drop
//! does can be asked for on the command line (and from a file manager's "Open with").
//!
//! A model given here is loaded but, like any other, remembered only once it loads; the
//! LoRAs join the remembered stack (a file already there keeps its row, with the new weight);
//! the dataset opens the Train tab.

use std::path::PathBuf;

use super::state::{EmbeddingSetting, LoraSetting, Settings};

/// The window's start-up arguments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StartArgs {
    /// Load this checkpoint (file or diffusers folder) instead of the remembered one.
    pub model: Option<PathBuf>,
    /// Add these LoRAs to the stack, at these weights.
    pub loras: Vec<(PathBuf, f32)>,
    /// Load these embeddings (under these tokens; None: the file stem).
    pub embeddings: Vec<(PathBuf, Option<String>)>,
    /// Use this folder as the training dataset (and show the Train tab).
    pub dataset: Option<PathBuf>,
}

/// Whether `s` is the tail of a path rather than a weight or token after the last `:` (so a
/// Windows path such as `C:\x.safetensors` is not split).
fn is_path_tail(s: &str) -> bool {
    s.is_empty() || s.contains(['/', '\\'])
}

/// Parses `FILE[:W]` (W a number; 1 when left out). A file that exists under the whole
/// argument is that file, colons and all.
pub fn parse_lora(spec: &str) -> Result<(PathBuf, f32), String> {
    if std::path::Path::new(spec).exists() {
        return Ok((PathBuf::from(spec), 1.0));
    }
    match spec.rsplit_once(':') {
        Some((path, w)) if !path.is_empty() && !is_path_tail(w) => {
            let weight: f32 = w.trim().parse().map_err(|_| {
                format!("--lora {spec}: the weight after ':' must be a number, like {path}:0.8")
            })?;
            if !weight.is_finite() {
                return Err(format!("--lora {spec}: the weight must be a finite number"));
            }
            Ok((PathBuf::from(path), weight))
        }
        _ => Ok((PathBuf::from(spec), 1.0)),
    }
}

/// Parses `FILE[:TOKEN]` (the token: what prompts write; the file stem when left out). A file
/// that exists under the whole argument is that file.
pub fn parse_embedding(spec: &str) -> Result<(PathBuf, Option<String>), String> {
    if std::path::Path::new(spec).exists() {
        return Ok((PathBuf::from(spec), None));
    }
    match spec.rsplit_once(':') {
        Some((path, token)) if !path.is_empty() && !is_path_tail(token) => {
            if token.trim().is_empty() || token.contains(char::is_whitespace) {
                return Err(format!(
                    "--embedding {spec}: the token after ':' must be one word, like {path}:<my-style>"
                ));
            }
            Ok((PathBuf::from(path), Some(token.to_owned())))
        }
        _ => Ok((PathBuf::from(spec), None)),
    }
}

impl StartArgs {
    /// Puts the arguments into `settings` (before the window's first frame).
    pub fn apply(&self, settings: &mut Settings) {
        if let Some(model) = &self.model {
            // Remembered (and listed in Recent) only once it loads.
            settings.model_path = Some(model.clone());
        }
        for (path, weight) in &self.loras {
            match settings.loras.iter_mut().find(|l| &l.path == path) {
                Some(l) => {
                    l.weight = *weight;
                    l.enabled = true;
                }
                None => settings.loras.push(LoraSetting {
                    path: path.clone(),
                    weight: *weight,
                    enabled: true,
                }),
            }
        }
        for (path, token) in &self.embeddings {
            settings.embeddings.retain(|e| &e.path != path);
            settings.embeddings.push(EmbeddingSetting {
                path: path.clone(),
                token: token.clone(),
            });
        }
        if let Some(dir) = &self.dataset {
            settings.train.data = Some(dir.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_and_embedding_specs_split_at_the_last_colon_unless_it_is_a_path() {
        assert_eq!(
            parse_lora("a/b.safetensors"),
            Ok(("a/b.safetensors".into(), 1.0))
        );
        assert_eq!(
            parse_lora("a/b.safetensors:0.6"),
            Ok(("a/b.safetensors".into(), 0.6))
        );
        assert_eq!(parse_lora("x:-1.5"), Ok(("x".into(), -1.5)));
        assert_eq!(
            parse_lora(r"C:\l\b.safetensors"),
            Ok((r"C:\l\b.safetensors".into(), 1.0))
        );
        assert!(
            parse_lora("b.safetensors:strong")
                .unwrap_err()
                .contains("must be a number")
        );
        assert!(parse_lora("b.safetensors:inf").is_err());
        assert_eq!(parse_embedding("e/cat.pt"), Ok(("e/cat.pt".into(), None)));
        assert_eq!(
            parse_embedding("e/cat.pt:<kitty>"),
            Ok(("e/cat.pt".into(), Some("<kitty>".into())))
        );
        assert!(parse_embedding("cat.pt:two words").is_err());
    }

    #[test]
    fn start_arguments_join_the_remembered_settings() {
        let mut s = Settings {
            loras: vec![LoraSetting {
                path: "old.safetensors".into(),
                weight: 0.5,
                enabled: false,
            }],
            ..Settings::default()
        };
        let remembered = s.recent_models.clone();
        StartArgs {
            model: Some("m".into()),
            loras: vec![
                ("old.safetensors".into(), 0.8),
                ("new.safetensors".into(), 1.0),
            ],
            embeddings: vec![("cat.pt".into(), Some("<c>".into()))],
            dataset: Some("pics".into()),
        }
        .apply(&mut s);
        assert_eq!(s.model_path, Some("m".into()));
        assert_eq!(s.recent_models, remembered, "remembered only once it loads");
        let stack: Vec<_> = s
            .loras
            .iter()
            .map(|l| (l.path.clone(), l.weight, l.enabled))
            .collect();
        assert_eq!(
            stack,
            [
                ("old.safetensors".into(), 0.8, true),
                ("new.safetensors".into(), 1.0, true)
            ]
        );
        assert_eq!(s.embeddings[0].token.as_deref(), Some("<c>"));
        assert_eq!(s.train.data, Some("pics".into()));
    }
}
