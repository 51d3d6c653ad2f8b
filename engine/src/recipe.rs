//! Building the [`Recipe`] of every image a session makes: the job as resolved (prompts as
//! typed, sampler, size, seed, init image and its hash) and what the session applied (model
//! and hash, the LoRAs in merge order with their hashes, the embeddings, the precision). The
//! recipe format and its PNG chunks are [`crate::metadata`]'s.

use std::path::Path;

use crate::device::DeviceSpec;
use crate::job::Precision;
use crate::metadata::{EmbeddingRef, InitImageRef, LoraRef, ModelRef, RECIPE_VERSION, Recipe};
use crate::resolve::Job;

/// What a session applied to a job: the model and what was on top of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The checkpoint (name, absolute path, A1111 hash).
    pub model: ModelRef,
    /// The LoRAs that changed the model (enabled, weight ≠ 0), in merge order.
    pub loras: Vec<LoraRef>,
    /// The embeddings loaded, in load order.
    pub embeddings: Vec<EmbeddingRef>,
    /// The UNet/text-encoder precision.
    pub precision: Precision,
    /// The device it runs on.
    pub device: DeviceSpec,
}

/// A model's entry in a recipe: its file stem, absolute path and hash.
pub fn model_ref(path: &Path, hash: Option<&str>) -> ModelRef {
    ModelRef {
        name: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        path: absolute(path),
        hash: hash.map(str::to_owned),
    }
}

/// `path` made absolute (as given when that fails), for recipes.
pub fn absolute(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_owned())
        .to_string_lossy()
        .into_owned()
}

/// The recipe of every image of one iteration of `job` as `applied` (prompt-major, as the
/// pipeline returns them; `seeds` as it reports them).
pub fn recipes(applied: &Applied, job: &Job, seeds: &[u64]) -> Vec<Recipe> {
    let req = &job.request;
    let base = Recipe {
        version: RECIPE_VERSION,
        prompt: String::new(),
        negative_prompt: String::new(),
        sampler: req.sampler,
        steps: req.steps,
        cfg: req.cfg,
        seed: 0,
        width: req.width,
        height: req.height,
        clip_skip: req.clip_skip,
        model: applied.model.clone(),
        loras: applied.loras.clone(),
        embeddings: applied.embeddings.clone(),
        init_image: job
            .init_image
            .as_ref()
            .zip(req.init_image.as_ref())
            .map(|(file, init)| InitImageRef {
                path: absolute(&file.path),
                sha256: file.sha256.clone(),
                strength: init.strength,
            }),
        precision: applied.precision,
        device: Some(applied.device.clone()),
    };
    seeds
        .iter()
        .enumerate()
        .map(|(k, seed)| {
            let p = k / req.batch.max(1);
            Recipe {
                prompt: job.typed_prompts.get(p).cloned().unwrap_or_default(),
                negative_prompt: job.typed_negatives.get(p).cloned().unwrap_or_default(),
                seed: *seed,
                ..base.clone()
            }
        })
        .collect()
}
