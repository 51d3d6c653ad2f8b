//! What the server offers by name: checkpoints (`sd-models`), LoRAs (`loras`). A request names
//! them; a name is looked up in these lists and never joined onto a path, so no request can
//! reach a file outside the configured folders.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::config::ServeConfig;
use crate::error::ApiError;

/// A checkpoint the server can load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointEntry {
    /// File or diffusers folder.
    pub path: PathBuf,
    /// A1111's `model_name`: the file stem or folder name.
    pub name: String,
    /// A1111's short hash (10 hex digits), when known (the loaded model's).
    pub hash: Option<String>,
}

impl CheckpointEntry {
    /// An entry for `path` (hash unknown).
    pub fn new(path: &Path) -> Self {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        CheckpointEntry {
            path: path.to_owned(),
            name,
            hash: None,
        }
    }

    /// A1111's `title`: `name [hash]` when the hash is known, else the name.
    pub fn title(&self) -> String {
        match &self.hash {
            Some(h) => format!("{} [{h}]", self.name),
            None => self.name.clone(),
        }
    }

    /// Whether a client's `sd_model_checkpoint` names this entry: its title, name, hash or
    /// file name, or a title with another hash (an A1111 title).
    pub fn answers_to(&self, wanted: &str) -> bool {
        let wanted = wanted.trim();
        let without_hash = wanted
            .rsplit_once(" [")
            .filter(|(_, h)| h.ends_with(']'))
            .map_or(wanted, |(n, _)| n);
        wanted == self.title()
            || without_hash == self.name
            || self.hash.as_deref() == Some(wanted)
            || self
                .path
                .file_name()
                .is_some_and(|f| f.to_string_lossy() == wanted)
    }

    /// The `sd-models` entry.
    pub fn to_json(&self) -> Value {
        json!({
            "title": self.title(),
            "model_name": self.name,
            "hash": self.hash,
            "sha256": null,
            "filename": self.path,
            "config": null,
        })
    }
}

/// Every checkpoint on offer: the start-up model, the built-in one, and the checkpoints in
/// the models folder, each once. `loaded` gives the loaded model's hash.
pub fn checkpoints(config: &ServeConfig, loaded: Option<&CheckpointEntry>) -> Vec<CheckpointEntry> {
    // (A window serving the API with no model loaded has none to start from.)
    let mut paths: Vec<PathBuf> = Some(config.model.clone())
        .filter(|p| !p.as_os_str().is_empty())
        .into_iter()
        .collect();
    paths.extend(kiln_hub::install::bundled_model());
    if let Some(dir) = &config.models_dir
        && let Ok(entries) = kiln_hub::catalog::scan_models(dir)
    {
        paths.extend(entries.into_iter().filter_map(|e| {
            matches!(e.kind, kiln_engine::inspect::Inspection::Checkpoint(_)).then_some(e.path)
        }));
    }
    let mut out: Vec<CheckpointEntry> = Vec::new();
    for path in paths {
        let same = |a: &Path| {
            a == path
                || (a.canonicalize().ok().is_some()
                    && a.canonicalize().ok() == path.canonicalize().ok())
        };
        if out.iter().any(|e| same(&e.path)) {
            continue;
        }
        let mut entry = CheckpointEntry::new(&path);
        if let Some(l) = loaded.filter(|l| same(&l.path)) {
            entry.hash = l.hash.clone();
        }
        out.push(entry);
    }
    out
}

/// The checkpoint a client names, or a 404 listing the titles there are.
pub fn find_checkpoint(
    list: &[CheckpointEntry],
    wanted: &str,
) -> Result<CheckpointEntry, ApiError> {
    list.iter()
        .find(|e| e.answers_to(wanted))
        .cloned()
        .ok_or_else(|| ApiError::NotFound {
            what: "Model",
            name: wanted.to_owned(),
            known: list.iter().map(CheckpointEntry::title).collect(),
        })
}

/// `GET /sdapi/v1/loras`: every `NAME.safetensors` file and PEFT folder in the LoRA folder,
/// with the file's safetensors metadata (kohya's `ss_*` keys) as A1111 shows it.
pub fn loras(dir: Option<&Path>) -> Vec<Value> {
    let Some(dir) = dir else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "safetensors") && p.is_file()
                || p.join("adapter_model.safetensors").is_file()
        })
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let file = if path.is_dir() {
                path.join("adapter_model.safetensors")
            } else {
                path.clone()
            };
            let metadata = kiln_engine::weights::safetensors::SafeTensors::open_lazy(&file)
                .map(|f| json!(f.metadata()))
                .unwrap_or_else(|_| json!({}));
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            json!({"name": name, "alias": name, "path": path, "metadata": metadata})
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_answers_to_its_title_name_hash_and_file_name() {
        let mut e = CheckpointEntry::new(Path::new("/m/dream.safetensors"));
        assert_eq!(e.title(), "dream");
        e.hash = Some("0123456789".into());
        assert_eq!(e.title(), "dream [0123456789]");
        for name in [
            "dream [0123456789]",
            "dream",
            "0123456789",
            "dream.safetensors",
            "dream [ffffffff]",
        ] {
            assert!(e.answers_to(name), "{name}");
        }
        for name in ["drea", "../dream", "/m/dream.safetensors", ""] {
            assert!(!e.answers_to(name), "{name}");
        }
        let err = find_checkpoint(&[e], "other").expect_err("404");
        assert!(matches!(err, ApiError::NotFound { known, .. } if known == ["dream [0123456789]"]));
    }
}
