//! What an image says about how it was made.
//!
//! Kiln writes two PNG text chunks per image: `parameters`, AUTOMATIC1111's infotext (so
//! A1111, Civitai and every tool that reads it see the recipe), and `kiln`, a JSON
//! [`Recipe`] with everything needed to regenerate the image exactly (`kiln generate --from`).
//! Reading ([`read_image_info`]) understands Kiln, A1111 (`parameters`), ComfyUI (`prompt`,
//! the API graph) and InvokeAI (`invokeai_metadata`) PNGs, and returns the common
//! [`Parameters`] the app's "reuse parameters" applies.

pub mod a1111;
pub mod comfyui;
pub mod invokeai;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::job::Precision;
use crate::schedulers::Schedule;
use crate::schedulers::sampler::Sampler;

/// Keyword of Kiln's JSON chunk.
pub const KILN_CHUNK: &str = "kiln";
/// Keyword of A1111's infotext chunk.
pub const PARAMETERS_CHUNK: &str = "parameters";
/// Version of the [`Recipe`] format.
pub const RECIPE_VERSION: u32 = 1;

/// A model file, by name, path and hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ModelRef {
    /// Display name (file stem or folder name), A1111's `Model`.
    pub name: String,
    /// Path as given when generating.
    pub path: String,
    /// A1111's "Model hash" (first 10 hex digits of the SHA-256), when known.
    #[serde(default)]
    pub hash: Option<String>,
}

/// One entry of the LoRA stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraRef {
    /// Display name.
    pub name: String,
    /// File or PEFT folder.
    pub path: String,
    /// A1111's short hash.
    pub hash: String,
    /// Weight in the stack.
    pub weight: f32,
}

/// One textual-inversion embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingRef {
    /// The token the prompt uses.
    pub token: String,
    /// The file.
    pub path: String,
}

/// The img2img source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitImageRef {
    /// The file.
    pub path: String,
    /// SHA-256 of the file (hex), to refuse a changed file.
    pub sha256: String,
    /// Denoising strength.
    pub strength: f64,
}

/// Everything that determines one Kiln image (the `kiln` PNG chunk).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    /// [`RECIPE_VERSION`].
    pub version: u32,
    /// The prompt as written (A1111 syntax, `<lora:…>` tags included).
    pub prompt: String,
    /// The negative prompt.
    pub negative_prompt: String,
    /// Sampler, schedule and η.
    pub sampler: Sampler,
    /// Denoising steps.
    pub steps: usize,
    /// CFG scale.
    pub cfg: f64,
    /// This image's seed.
    pub seed: u64,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// CLIP skip (1 = last layer).
    pub clip_skip: usize,
    /// The checkpoint.
    pub model: ModelRef,
    /// The LoRA stack (enabled entries, in order).
    #[serde(default)]
    pub loras: Vec<LoraRef>,
    /// Loaded embeddings.
    #[serde(default)]
    pub embeddings: Vec<EmbeddingRef>,
    /// img2img source, if any.
    #[serde(default)]
    pub init_image: Option<InitImageRef>,
    /// UNet/text-encoder precision (f16 and f32 give slightly different images).
    #[serde(default)]
    pub precision: Precision,
    /// The device it ran on (recorded, not reused: a recipe made on a GPU regenerates on
    /// whatever device the user picks; absent in recipes before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceSpec>,
}

impl Recipe {
    /// AUTOMATIC1111's infotext for this recipe (the `parameters` chunk).
    pub fn a1111_parameters(&self) -> String {
        a1111::write(&self.parameters())
    }

    /// The recipe as common [`Parameters`].
    pub fn parameters(&self) -> Parameters {
        Parameters {
            prompt: Some(self.prompt.clone()),
            negative_prompt: Some(self.negative_prompt.clone()),
            steps: Some(self.steps),
            sampler: Some(self.sampler.a1111_name().to_owned()),
            schedule: Some(self.sampler.schedule()),
            cfg: Some(self.cfg),
            seed: Some(self.seed),
            size: Some((self.width, self.height)),
            model: Some(self.model.name.clone()).filter(|n| !n.is_empty()),
            model_hash: self.model.hash.clone(),
            clip_skip: Some(self.clip_skip).filter(|c| *c > 1),
            strength: self.init_image.as_ref().map(|i| i.strength),
            loras: self
                .loras
                .iter()
                .map(|l| LoraParam {
                    name: l.name.clone(),
                    weight: Some(l.weight),
                    hash: Some(l.hash.clone()),
                })
                .collect(),
            extra: BTreeMap::new(),
        }
    }
}

/// A LoRA as another tool records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraParam {
    /// Name.
    pub name: String,
    /// Weight, when recorded.
    pub weight: Option<f32>,
    /// Hash, when recorded.
    pub hash: Option<String>,
}

/// Generation settings as any tool records them; every field optional.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Parameters {
    /// Prompt.
    pub prompt: Option<String>,
    /// Negative prompt.
    pub negative_prompt: Option<String>,
    /// Steps.
    pub steps: Option<usize>,
    /// Sampler, as A1111 labels it (`Euler a`, `DPM++ 2M`, …).
    pub sampler: Option<String>,
    /// Schedule type.
    pub schedule: Option<Schedule>,
    /// CFG scale.
    pub cfg: Option<f64>,
    /// Seed.
    pub seed: Option<u64>,
    /// (width, height).
    pub size: Option<(usize, usize)>,
    /// Model name.
    pub model: Option<String>,
    /// Model hash.
    pub model_hash: Option<String>,
    /// CLIP skip, when not 1.
    pub clip_skip: Option<usize>,
    /// img2img denoising strength.
    pub strength: Option<f64>,
    /// LoRAs.
    pub loras: Vec<LoraParam>,
    /// Anything else the source recorded, by its own key.
    pub extra: BTreeMap<String, String>,
}

impl Parameters {
    /// The Kiln sampler these parameters name, when Kiln has it.
    pub fn kiln_sampler(&self) -> Option<Sampler> {
        Sampler::from_a1111(self.sampler.as_deref()?, self.schedule.unwrap_or_default())
    }
}

/// Which tool wrote an image's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// Kiln (`kiln` chunk).
    Kiln,
    /// AUTOMATIC1111 or a tool writing its infotext (`parameters`).
    Automatic1111,
    /// ComfyUI (`prompt`).
    ComfyUi,
    /// InvokeAI (`invokeai_metadata`).
    InvokeAi,
}

/// What an image's metadata says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// Who wrote it.
    pub source: Source,
    /// The settings.
    pub parameters: Parameters,
    /// The exact recipe, for Kiln images.
    pub recipe: Option<Recipe>,
}

/// `image` as PNG bytes carrying `recipe` (A1111 `parameters` + Kiln's `kiln` chunk): what
/// [`write_png_with_recipe`] writes and the HTTP API sends.
pub fn png_with_recipe(image: &crate::image::RgbImage, recipe: &Recipe) -> Result<Vec<u8>> {
    let json = serde_json::to_string(recipe).map_err(|e| Error::Config(format!("recipe: {e}")))?;
    crate::image::encode_png(
        image,
        &[
            (PARAMETERS_CHUNK, &recipe.a1111_parameters()),
            (KILN_CHUNK, &json),
        ],
    )
}

/// Writes `image` as a PNG carrying `recipe` ([`png_with_recipe`]), atomically.
pub fn write_png_with_recipe(
    path: &Path,
    image: &crate::image::RgbImage,
    recipe: &Recipe,
) -> Result<()> {
    let bytes = png_with_recipe(image, recipe)?;
    crate::fs::write_atomic(path, &bytes)
}

/// Reads the recipe of a PNG: Kiln's chunk first, then A1111, ComfyUI, InvokeAI.
pub fn read_image_info(path: &Path) -> Result<ImageInfo> {
    let chunks = crate::image::read_png_text(path)?;
    image_info(&chunks).ok_or_else(|| {
        Error::format(
            path,
            "the image carries no generation parameters (Kiln, A1111, ComfyUI or InvokeAI)",
        )
    })
}

/// [`read_image_info`] on already-read text chunks; None when none is recognised.
pub fn image_info(chunks: &[(String, String)]) -> Option<ImageInfo> {
    let get = |k: &str| {
        chunks
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    if let Some(recipe) = get(KILN_CHUNK).and_then(|j| serde_json::from_str::<Recipe>(j).ok()) {
        return Some(ImageInfo {
            source: Source::Kiln,
            parameters: recipe.parameters(),
            recipe: Some(recipe),
        });
    }
    if let Some(p) = get(PARAMETERS_CHUNK).and_then(a1111::parse) {
        return Some(ImageInfo {
            source: Source::Automatic1111,
            parameters: p,
            recipe: None,
        });
    }
    if let Some(p) = get("prompt").and_then(comfyui::parse) {
        return Some(ImageInfo {
            source: Source::ComfyUi,
            parameters: p,
            recipe: None,
        });
    }
    if let Some(p) = get("invokeai_metadata").and_then(invokeai::parse) {
        return Some(ImageInfo {
            source: Source::InvokeAi,
            parameters: p,
            recipe: None,
        });
    }
    None
}
