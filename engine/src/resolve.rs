//! The one resolver: what a user asked for — a [`GenerationSpec`] from the command line, the
//! window or the HTTP API, optionally on top of an image's recipe — becomes the exact
//! [`Job`] the engine runs. Every front end calls [`resolve`]; none re-implements a rule:
//!
//! - **prompt tags**: `<lora:NAME:WEIGHT>` is removed from the prompt and negative prompt the
//!   encoder sees (the recipe keeps the prompt as typed, as A1111 does) and names
//!   `NAME.safetensors` (or a PEFT folder `NAME/`) in the LoRA folder; a tag naming a LoRA
//!   of the stack — the spec's, or the front end's (`stacked`) — is that stack entry, whose
//!   weight and switch decide (see [`crate::session::Session::run`]);
//! - **the base recipe** (`--from`, "Reuse parameters"): every setting not given is taken
//!   from it — Kiln's recipe first, else the A1111/ComfyUI/InvokeAI parameters; its LoRA
//!   stack and embeddings come with it unless others are given; its init image must still
//!   be the file it recorded (same SHA-256), else the job is refused
//!   ([`Error::InitImageChanged`]);
//! - **clip skip**, **sampler** (a schedule or η alone changes the base's sampler), **steps**
//!   (25), **CFG** (7.5), **seed** (drawn by [`crate::job::random_seed`] when open);
//! - **size**: as given (a single side makes a square), else the base's, else the init
//!   image's rounded down to a multiple of 8, else the model's native size
//!   ([`crate::weights::CheckpointInfo::native_size`]);
//! - **init image**: hashed (SHA-256, for the recipe) and checked against the hash the
//!   user's source expects, then decoded;
//! - **device** (`auto` unless given) and **precision** (the base's, else `auto`).

use std::path::{Path, PathBuf};

use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::job::{LatentsData, PrecisionChoice, random_seed};
use crate::metadata::ImageInfo;
use crate::pipeline::{GenerationRequest, InitImage};
use crate::schedulers::{Sampler, SamplerKind, Schedule};
use crate::weights::hash::sha256_file;

/// Steps when neither the user nor the base recipe says.
pub const DEFAULT_STEPS: usize = 25;
/// CFG scale when neither the user nor the base recipe says.
pub const DEFAULT_CFG: f64 = 7.5;
/// img2img strength when neither the user nor the base recipe says.
pub const DEFAULT_STRENGTH: f64 = 0.75;

/// A LoRA the user put in the stack: a file (or PEFT folder) and its weight.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraChoice {
    /// File or PEFT folder.
    pub path: PathBuf,
    /// Weight (multiplies alpha/rank; negative allowed).
    pub weight: f32,
}

/// A textual-inversion embedding the user loads.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingChoice {
    /// The file.
    pub path: PathBuf,
    /// Its token; None = the file stem.
    pub token: Option<String>,
}

/// An img2img source as the user named it.
#[derive(Debug, Clone, PartialEq)]
pub struct InitImageChoice {
    /// The file (PNG, JPEG or WebP).
    pub path: PathBuf,
    /// The SHA-256 the file must still have (set when it comes from a recipe), else None.
    pub expected_sha256: Option<String>,
}

/// What a user asked for. Every setting is optional: left out, it comes from the base recipe
/// (when there is one) or the default (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationSpec {
    /// Checkpoint: a diffusers folder or single-file `.safetensors` (None: the base recipe's,
    /// else the front end's default — the loaded model, or the shipped one).
    pub model: Option<PathBuf>,
    /// A diffusers folder whose `*/config.json` describe a single-file checkpoint.
    pub config: Option<PathBuf>,
    /// Prompts as typed (A1111 syntax, `<lora:…>` tags allowed); empty = the base's prompt.
    pub prompts: Vec<String>,
    /// One negative prompt for all prompts, or one per prompt; empty = the base's (or none).
    pub negatives: Vec<String>,
    /// The sampler.
    pub sampler: Option<SamplerKind>,
    /// Sigma schedule.
    pub schedule: Option<Schedule>,
    /// DDIM η.
    pub eta: Option<f64>,
    /// Denoising steps.
    pub steps: Option<usize>,
    /// Classifier-free guidance scale.
    pub cfg: Option<f64>,
    /// Seed of the first image (image k of an iteration uses seed + k).
    pub seed: Option<u64>,
    /// Width in pixels.
    pub width: Option<usize>,
    /// Height in pixels.
    pub height: Option<usize>,
    /// Images per prompt and iteration (A1111's batch size).
    pub batch_size: usize,
    /// Iterations, one after another, the seed advancing by the batch size (A1111's batch
    /// count, `n_iter`).
    pub batch_count: usize,
    /// CLIP skip (1 = the last layer).
    pub clip_skip: Option<usize>,
    /// LoRAs to stack (empty = the base recipe's; the window keeps its stack in the session).
    pub loras: Vec<LoraChoice>,
    /// Where `<lora:NAME:…>` tags look for `NAME.safetensors`.
    pub lora_dir: Option<PathBuf>,
    /// Embeddings to load (empty = the base recipe's).
    pub embeddings: Vec<EmbeddingChoice>,
    /// img2img source (None: the base recipe's, if its file is unchanged).
    pub init_image: Option<InitImageChoice>,
    /// img2img strength, 0 < s ≤ 1.
    pub strength: Option<f64>,
    /// Initial noise `[B, C, h, w]` (before `init_noise_sigma`), replacing seeded noise.
    pub latents: Option<LatentsData>,
    /// Compute device.
    pub device: Option<DeviceSpec>,
    /// UNet/text-encoder precision; None = the base's, else `auto`.
    pub precision: Option<PrecisionChoice>,
    /// Compute live previews.
    pub preview: bool,
}

impl Default for GenerationSpec {
    fn default() -> Self {
        GenerationSpec {
            model: None,
            config: None,
            prompts: Vec::new(),
            negatives: Vec::new(),
            sampler: None,
            schedule: None,
            eta: None,
            steps: None,
            cfg: None,
            seed: None,
            width: None,
            height: None,
            batch_size: 1,
            batch_count: 1,
            clip_skip: None,
            loras: Vec::new(),
            lora_dir: None,
            embeddings: Vec::new(),
            init_image: None,
            strength: None,
            latents: None,
            device: None,
            precision: None,
            preview: false,
        }
    }
}

impl GenerationSpec {
    /// Every setting `info` records, as a spec: what "Reuse parameters" puts in the window and
    /// what `--from` starts from. Kiln's recipe gives everything (model, LoRA stack,
    /// embeddings, init image with its hash); other tools' parameters what Kiln understands.
    pub fn from_image(info: &ImageInfo) -> GenerationSpec {
        let p = &info.parameters;
        let recipe = info.recipe.as_ref();
        let sampler = recipe.map(|r| r.sampler).or_else(|| p.kiln_sampler());
        GenerationSpec {
            model: recipe.map(|r| PathBuf::from(&r.model.path)),
            prompts: p.prompt.iter().cloned().collect(),
            negatives: p.negative_prompt.iter().cloned().collect(),
            sampler: sampler.map(|s| s.kind()),
            schedule: sampler.map(|s| s.schedule()),
            eta: match sampler {
                Some(Sampler::Ddim { eta }) => Some(eta),
                _ => None,
            },
            steps: p.steps,
            cfg: p.cfg,
            seed: p.seed,
            width: p.size.map(|s| s.0),
            height: p.size.map(|s| s.1),
            clip_skip: recipe.map(|r| r.clip_skip).or(p.clip_skip),
            loras: recipe
                .iter()
                .flat_map(|r| &r.loras)
                .map(|l| LoraChoice {
                    path: PathBuf::from(&l.path),
                    weight: l.weight,
                })
                .collect(),
            embeddings: recipe
                .iter()
                .flat_map(|r| &r.embeddings)
                .map(|e| EmbeddingChoice {
                    path: PathBuf::from(&e.path),
                    token: Some(e.token.clone()),
                })
                .collect(),
            init_image: recipe
                .and_then(|r| r.init_image.as_ref())
                .map(|i| InitImageChoice {
                    path: PathBuf::from(&i.path),
                    expected_sha256: Some(i.sha256.clone()),
                }),
            strength: recipe
                .and_then(|r| r.init_image.as_ref())
                .map(|i| i.strength)
                .or(p.strength),
            precision: recipe.map(|r| r.precision.into()),
            ..GenerationSpec::default()
        }
    }

    /// This spec with every setting it leaves open taken from `base` (lists count as open
    /// when empty; a schedule or η given alone applies to `base`'s sampler; `base`'s init
    /// image only when this spec names none, and `base`'s strength then too).
    pub fn or(self, base: GenerationSpec) -> GenerationSpec {
        fn list<T>(a: Vec<T>, b: Vec<T>) -> Vec<T> {
            if a.is_empty() { b } else { a }
        }
        let own_init = self.init_image.is_some();
        GenerationSpec {
            model: self.model.or(base.model),
            config: self.config.or(base.config),
            prompts: list(self.prompts, base.prompts),
            negatives: list(self.negatives, base.negatives),
            sampler: self.sampler.or(base.sampler),
            schedule: self.schedule.or(if self.sampler.is_none() {
                base.schedule
            } else {
                None
            }),
            eta: self.eta.or(if self.sampler.is_none() {
                base.eta
            } else {
                None
            }),
            steps: self.steps.or(base.steps),
            cfg: self.cfg.or(base.cfg),
            seed: self.seed.or(base.seed),
            width: self.width.or(base.width),
            height: self.height.or(base.height),
            batch_size: self.batch_size,
            batch_count: self.batch_count,
            clip_skip: self.clip_skip.or(base.clip_skip),
            loras: list(self.loras, base.loras),
            lora_dir: self.lora_dir.or(base.lora_dir),
            embeddings: list(self.embeddings, base.embeddings),
            strength: self
                .strength
                .or(if own_init { None } else { base.strength }),
            init_image: if own_init {
                self.init_image
            } else {
                base.init_image
            },
            latents: self.latents.or(base.latents),
            device: self.device.or(base.device),
            precision: self.precision.or(base.precision),
            preview: self.preview,
        }
    }
}

/// A LoRA named by a `<lora:NAME:WEIGHT>` prompt tag.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptLora {
    /// NAME as written in the tag.
    pub name: String,
    /// The file (or PEFT folder) it names in the LoRA folder.
    pub path: PathBuf,
    /// The tag's weight (1 when absent).
    pub weight: f32,
}

/// The model a job runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelChoice {
    /// File or folder.
    pub path: PathBuf,
    /// Configs for a single-file checkpoint.
    pub config: Option<PathBuf>,
    /// The device asked for.
    pub device: DeviceSpec,
    /// The precision asked for.
    pub precision: PrecisionChoice,
}

/// An img2img source as resolved: the pixels, and what the recipe records of it.
#[derive(Debug, Clone)]
pub struct ResolvedInitImage {
    /// The file.
    pub path: PathBuf,
    /// Its SHA-256 (hex), computed once.
    pub sha256: String,
}

/// The exact job: what the pipeline runs, and what the recipe records.
#[derive(Debug, Clone)]
pub struct Job {
    /// What one iteration runs: prompts and negatives as the encoder sees them (tags
    /// removed), the first iteration's seed, the size, the init image.
    pub request: GenerationRequest,
    /// Iterations (each with `request.batch` images per prompt, the seed advancing by it).
    pub batch_count: usize,
    /// The prompts as typed (with their tags), for the recipe.
    pub typed_prompts: Vec<String>,
    /// The negative prompts as typed, one per prompt.
    pub typed_negatives: Vec<String>,
    /// LoRAs to stack (given, or the base recipe's).
    pub loras: Vec<LoraChoice>,
    /// LoRAs the prompt's tags name, in order.
    pub prompt_loras: Vec<PromptLora>,
    /// Embeddings to load (given, or the base recipe's).
    pub embeddings: Vec<EmbeddingChoice>,
    /// The init image's file and hash, for the recipe.
    pub init_image: Option<ResolvedInitImage>,
    /// Whether the seed was drawn at random (a front end shows it).
    pub random_seed: bool,
}

/// The model `spec` runs on: the one given, else the base recipe's (None: the front end's
/// default). An image from another tool records no path, so `--from` it needs a model.
pub fn resolve_model(
    spec: &GenerationSpec,
    base: Option<&ImageInfo>,
) -> Result<Option<ModelChoice>> {
    let merged = match base {
        Some(b) => spec.clone().or(GenerationSpec::from_image(b)),
        None => spec.clone(),
    };
    if merged.model.is_none() && base.is_some() {
        return Err(Error::InvalidRequest(
            "give --model (a diffusers folder or .safetensors checkpoint); only Kiln images \
             record the model's path"
                .into(),
        ));
    }
    Ok(merged.model.map(|path| ModelChoice {
        path,
        config: merged.config,
        device: merged.device.unwrap_or_default(),
        precision: merged.precision.unwrap_or_default(),
    }))
}

/// `<lora:NAME:…>` → the file in `dir` (`NAME.safetensors`, or a PEFT folder `NAME/`). NAME
/// is a name, never a path: one with a separator, `..`, or a drive prefix is not found (a
/// prompt from the HTTP API must not reach files outside the LoRA folder).
fn find_tag_lora(name: &str, dir: Option<&Path>) -> Result<PathBuf> {
    let dir = dir.ok_or_else(|| Error::LoraTagNotFound {
        name: name.to_owned(),
        dir: None,
    })?;
    let plain =
        !name.is_empty() && !name.contains(['/', '\\', ':', '\0']) && name != "." && name != "..";
    if !plain {
        return Err(Error::LoraTagNotFound {
            name: name.to_owned(),
            dir: Some(dir.to_owned()),
        });
    }
    let file = dir.join(format!("{name}.safetensors"));
    if file.is_file() {
        return Ok(file);
    }
    let folder = dir.join(name);
    if folder.join("adapter_model.safetensors").is_file() {
        return Ok(folder);
    }
    Err(Error::LoraTagNotFound {
        name: name.to_owned(),
        dir: Some(dir.to_owned()),
    })
}

/// The prompts as typed, the negatives (one per prompt) as typed, the prompts and negatives
/// as the encoder sees them (tags removed), and the LoRAs the prompts' tags name.
type Prompts = (
    Vec<String>,
    Vec<String>,
    Vec<String>,
    Vec<String>,
    Vec<PromptLora>,
);

fn resolve_prompts(spec: &GenerationSpec, stacked: &[String]) -> Result<Prompts> {
    if spec.prompts.is_empty() {
        return Err(Error::InvalidRequest(
            "at least one prompt is needed".into(),
        ));
    }
    let typed_prompts = spec.prompts.clone();
    let typed_negatives: Vec<String> = match spec.negatives.len() {
        0 => vec![String::new(); typed_prompts.len()],
        1 => vec![spec.negatives[0].clone(); typed_prompts.len()],
        n if n == typed_prompts.len() => spec.negatives.clone(),
        n => {
            return Err(Error::InvalidRequest(format!(
                "{n} negative prompts for {} prompts: give one, or one per prompt",
                typed_prompts.len()
            )));
        }
    };
    let stacked: Vec<String> = spec
        .loras
        .iter()
        .filter_map(|l| l.path.file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .chain(stacked.iter().cloned())
        .collect();
    let mut prompts = Vec::with_capacity(typed_prompts.len());
    let mut tags: Vec<PromptLora> = Vec::new();
    for p in &typed_prompts {
        let (text, found) = crate::prompt::lora_tags(p);
        for (name, weight) in found {
            // A tag naming a LoRA of the stack (as when a recipe is regenerated) is that LoRA.
            if tags.iter().any(|l| l.name == name) || stacked.contains(&name) {
                continue;
            }
            let path = find_tag_lora(&name, spec.lora_dir.as_deref())?;
            tags.push(PromptLora { name, path, weight });
        }
        prompts.push(text);
    }
    let negatives = typed_negatives
        .iter()
        .map(|n| crate::prompt::lora_tags(n).0)
        .collect();
    Ok((typed_prompts, typed_negatives, prompts, negatives, tags))
}

/// The init image: hashed, refused when it is not the file the spec expects, decoded.
fn resolve_init_image(choice: &InitImageChoice) -> Result<(RgbImage, ResolvedInitImage)> {
    let sha256 = sha256_file(&choice.path);
    if let Some(expected) = &choice.expected_sha256
        && sha256.as_ref().ok() != Some(expected)
    {
        return Err(Error::InitImageChanged {
            path: choice.path.clone(),
        });
    }
    let image = crate::image::read_image(&choice.path)?;
    Ok((
        image,
        ResolvedInitImage {
            path: choice.path.clone(),
            sha256: sha256?,
        },
    ))
}

/// `spec` on top of `base` (an image's recipe, or None): the exact job (see the module docs
/// for every rule). `stacked` names (file stems) the LoRAs the front end keeps in its own
/// stack besides `spec.loras` (the window's; empty for the command line). `native_size` tells the model's native size
/// ([`crate::weights::CheckpointInfo::native_size`]); it is asked only when nothing else
/// decides the size, so a request that is wrong on its own is refused before the model is
/// opened.
pub fn resolve(
    spec: &GenerationSpec,
    base: Option<&ImageInfo>,
    stacked: &[String],
    native_size: impl FnOnce() -> Result<usize>,
) -> Result<Job> {
    if let Some(b) = base
        && spec.sampler.is_none()
        && b.recipe.is_none()
        && b.parameters.kiln_sampler().is_none()
    {
        return Err(Error::InvalidRequest(format!(
            "the image's sampler '{}' is not one Kiln has; choose one with --sampler",
            b.parameters.sampler.as_deref().unwrap_or("?")
        )));
    }
    let strength_given = spec.strength.is_some();
    let spec = match base {
        Some(b) => spec.clone().or(GenerationSpec::from_image(b)),
        None => spec.clone(),
    };
    if strength_given && spec.init_image.is_none() {
        return Err(Error::InvalidRequest(
            "--strength needs --init-image (a strength needs an init image)".into(),
        ));
    }
    if spec.batch_size == 0 || spec.batch_count == 0 {
        return Err(Error::InvalidRequest(
            "batch size and batch count must be at least 1".into(),
        ));
    }
    let sampler = spec
        .sampler
        .unwrap_or(SamplerKind::Ddim)
        .with(spec.schedule.unwrap_or_default(), spec.eta.unwrap_or(0.0))?;
    let (typed_prompts, typed_negatives, prompts, negatives, prompt_loras) =
        resolve_prompts(&spec, stacked)?;
    let init = spec
        .init_image
        .as_ref()
        .map(resolve_init_image)
        .transpose()?;
    // Size: given, else the base's, else the init image's, else the model's native size.
    let (width, height) = match (spec.width, spec.height) {
        (Some(w), Some(h)) => (w, h),
        (Some(w), None) => (w, w),
        (None, Some(h)) => (h, h),
        (None, None) => match &init {
            Some((image, _)) => (image.width / 8 * 8, image.height / 8 * 8),
            None => {
                let native = native_size()?;
                (native, native)
            }
        },
    };
    let (seed, random_seed) = match spec.seed {
        Some(s) => (s, false),
        None => (random_seed(), true),
    };
    let strength = spec.strength.unwrap_or(DEFAULT_STRENGTH);
    let (init_image, init_ref) = match init {
        Some((image, file)) => (Some(InitImage { image, strength }), Some(file)),
        None => (None, None),
    };
    Ok(Job {
        request: GenerationRequest {
            prompts,
            negatives,
            sampler,
            steps: spec.steps.unwrap_or(DEFAULT_STEPS),
            cfg: spec.cfg.unwrap_or(DEFAULT_CFG),
            seed,
            width,
            height,
            batch: spec.batch_size,
            latents: spec.latents,
            clip_skip: spec.clip_skip.unwrap_or(1),
            init_image,
            preview: spec.preview,
            step_noise: None,
        },
        batch_count: spec.batch_count,
        typed_prompts,
        typed_negatives,
        loras: spec.loras,
        prompt_loras,
        embeddings: spec.embeddings,
        init_image: init_ref,
        random_seed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{InitImageRef, ModelRef, Parameters, RECIPE_VERSION, Recipe, Source};
    use crate::schedulers::Schedule;

    fn spec(prompt: &str) -> GenerationSpec {
        GenerationSpec {
            prompts: vec![prompt.to_owned()],
            ..GenerationSpec::default()
        }
    }

    /// A native size that must not be asked for.
    fn not_asked() -> Result<usize> {
        panic!("the native size was asked although the request decides the size")
    }

    fn a1111(parameters: Parameters) -> ImageInfo {
        ImageInfo {
            source: Source::Automatic1111,
            parameters,
            recipe: None,
        }
    }

    fn kiln_recipe(init_image: Option<InitImageRef>) -> ImageInfo {
        let recipe = Recipe {
            version: RECIPE_VERSION,
            prompt: "a fox <lora:style:0.5>".into(),
            negative_prompt: "blurry".into(),
            sampler: Sampler::EulerAncestral {
                schedule: Schedule::Karras,
            },
            steps: 12,
            cfg: 5.0,
            seed: 77,
            width: 320,
            height: 256,
            clip_skip: 2,
            model: ModelRef {
                name: "m".into(),
                path: "/models/m.safetensors".into(),
                hash: None,
            },
            loras: Vec::new(),
            embeddings: Vec::new(),
            init_image,
            precision: crate::job::Precision::F16,
            device: None,
        };
        ImageInfo {
            source: Source::Kiln,
            parameters: recipe.parameters(),
            recipe: Some(recipe),
        }
    }

    #[test]
    fn defaults_fill_what_is_open_and_the_native_size_decides_the_size() {
        let job = resolve(&spec("a cat"), None, &[], || Ok(512)).unwrap();
        let r = &job.request;
        assert_eq!(r.prompts, ["a cat"]);
        assert_eq!(r.negatives, [""]);
        assert_eq!(r.sampler, Sampler::Ddim { eta: 0.0 });
        assert_eq!(
            (r.steps, r.cfg, r.clip_skip),
            (DEFAULT_STEPS, DEFAULT_CFG, 1)
        );
        assert_eq!((r.width, r.height, r.batch), (512, 512, 1));
        assert!(job.random_seed);
        assert_eq!(job.batch_count, 1);
        let given = GenerationSpec {
            seed: Some(3),
            ..spec("a cat")
        };
        assert!(!resolve(&given, None, &[], || Ok(512)).unwrap().random_seed);
    }

    #[test]
    fn one_side_makes_a_square_and_a_given_size_never_asks_the_model() {
        let s = GenerationSpec {
            width: Some(384),
            ..spec("x")
        };
        let r = resolve(&s, None, &[], not_asked).unwrap().request;
        assert_eq!((r.width, r.height), (384, 384));
        let s = GenerationSpec {
            height: Some(200),
            width: Some(264),
            ..spec("x")
        };
        let r = resolve(&s, None, &[], not_asked).unwrap().request;
        assert_eq!((r.width, r.height), (264, 200));
    }

    #[test]
    fn negatives_are_one_for_all_or_one_per_prompt() {
        let s = GenerationSpec {
            prompts: vec!["a".into(), "b".into()],
            negatives: vec!["n".into()],
            ..GenerationSpec::default()
        };
        assert_eq!(
            resolve(&s, None, &[], || Ok(64)).unwrap().typed_negatives,
            ["n", "n"]
        );
        let s = GenerationSpec {
            negatives: vec!["n".into(), "m".into(), "o".into()],
            ..s
        };
        let err = resolve(&s, None, &[], || Ok(64)).unwrap_err();
        assert!(matches!(err, Error::InvalidRequest(_)), "{err}");
        let err = resolve(&GenerationSpec::default(), None, &[], || Ok(64)).unwrap_err();
        assert!(matches!(err, Error::InvalidRequest(_)), "{err}");
    }

    #[test]
    fn lora_tags_leave_the_encoded_prompt_and_name_files_in_the_lora_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("style.safetensors"), b"").unwrap();
        std::fs::create_dir(dir.path().join("peft")).unwrap();
        std::fs::write(dir.path().join("peft/adapter_model.safetensors"), b"").unwrap();
        let s = GenerationSpec {
            prompts: vec![
                "a fox <lora:style:0.6>, snow <lora:peft>".into(),
                "<lora:style:0.9> a hare".into(),
            ],
            negatives: vec!["blurry <lora:style:-1>".into()],
            lora_dir: Some(dir.path().to_owned()),
            ..GenerationSpec::default()
        };
        let job = resolve(&s, None, &[], || Ok(64)).unwrap();
        assert_eq!(job.request.prompts, ["a fox , snow", "a hare"]);
        assert_eq!(job.request.negatives, ["blurry", "blurry"]);
        assert_eq!(
            job.typed_prompts, s.prompts,
            "the recipe keeps the prompt as typed"
        );
        let tags: Vec<_> = job
            .prompt_loras
            .iter()
            .map(|l| (l.name.as_str(), l.path.clone(), l.weight))
            .collect();
        assert_eq!(
            tags,
            [
                ("style", dir.path().join("style.safetensors"), 0.6),
                ("peft", dir.path().join("peft"), 1.0),
            ],
            "each LoRA once, the first tag's weight, negatives' tags ignored"
        );
    }

    #[test]
    fn a_tag_is_a_name_in_the_lora_folder_never_a_path_out_of_it() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("loras");
        std::fs::create_dir(&dir).unwrap();
        // A LoRA one level up, and a PEFT folder two up: reachable only by a path.
        std::fs::write(root.path().join("outside.safetensors"), b"").unwrap();
        for name in ["../outside", "..\\outside", "sub/../../outside", "..", "."] {
            let s = GenerationSpec {
                prompts: vec![format!("a fox <lora:{name}:1>")],
                lora_dir: Some(dir.clone()),
                ..GenerationSpec::default()
            };
            let err = resolve(&s, None, &[], || Ok(64)).unwrap_err();
            assert!(
                matches!(&err, Error::LoraTagNotFound { name: n, .. } if n == name),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn a_tag_naming_a_stacked_lora_is_that_lora_and_an_unknown_tag_is_refused() {
        let s = GenerationSpec {
            loras: vec![LoraChoice {
                path: "/anywhere/style.safetensors".into(),
                weight: 0.5,
            }],
            ..spec("a fox <lora:style:0.5>")
        };
        let job = resolve(&s, None, &[], || Ok(64)).unwrap();
        assert!(job.prompt_loras.is_empty());
        assert_eq!(job.loras, s.loras);
        // The window's stack lives in the engine, not in the spec: named by `stacked`.
        let job = resolve(
            &spec("a fox <lora:style:0.5>"),
            None,
            &["style".into()],
            || Ok(64),
        )
        .unwrap();
        assert!(job.prompt_loras.is_empty() && job.loras.is_empty());
        assert_eq!(job.request.prompts, ["a fox"]);

        let err = resolve(&spec("<lora:nowhere:1>"), None, &[], || Ok(64)).unwrap_err();
        assert!(
            matches!(&err, Error::LoraTagNotFound { name, dir: None } if name == "nowhere"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let s = GenerationSpec {
            lora_dir: Some(dir.path().to_owned()),
            ..spec("<lora:nowhere:1>")
        };
        let err = resolve(&s, None, &[], || Ok(64)).unwrap_err();
        assert!(
            matches!(&err, Error::LoraTagNotFound { dir: Some(d), .. } if d == dir.path()),
            "{err}"
        );
        assert_eq!(err.kind(), crate::error::ErrorKind::NotFound);
    }

    #[test]
    fn another_tools_parameters_are_the_base_and_the_spec_overrides_them() {
        let base = a1111(Parameters {
            prompt: Some("a lighthouse".into()),
            negative_prompt: Some("fog".into()),
            steps: Some(30),
            sampler: Some("DPM++ 2M".into()),
            schedule: Some(Schedule::Karras),
            cfg: Some(6.0),
            seed: Some(1234),
            size: Some((640, 448)),
            clip_skip: Some(2),
            ..Parameters::default()
        });
        let job = resolve(&GenerationSpec::default(), Some(&base), &[], not_asked).unwrap();
        let r = &job.request;
        assert_eq!(r.prompts, ["a lighthouse"]);
        assert_eq!(r.negatives, ["fog"]);
        assert_eq!(
            r.sampler,
            Sampler::DpmPp2m {
                schedule: Schedule::Karras
            }
        );
        assert_eq!((r.steps, r.cfg, r.seed), (30, 6.0, 1234));
        assert_eq!((r.width, r.height, r.clip_skip), (640, 448, 2));
        assert!(!job.random_seed);

        // A schedule alone changes the base's sampler; a sampler drops the base's schedule.
        let s = GenerationSpec {
            schedule: Some(Schedule::Exponential),
            steps: Some(8),
            clip_skip: Some(1),
            ..GenerationSpec::default()
        };
        let r = resolve(&s, Some(&base), &[], not_asked).unwrap().request;
        assert_eq!(
            r.sampler,
            Sampler::DpmPp2m {
                schedule: Schedule::Exponential
            }
        );
        assert_eq!((r.steps, r.clip_skip), (8, 1));
        let s = GenerationSpec {
            sampler: Some(SamplerKind::Euler),
            ..GenerationSpec::default()
        };
        let r = resolve(&s, Some(&base), &[], not_asked).unwrap().request;
        assert_eq!(
            r.sampler,
            Sampler::Euler {
                schedule: Schedule::Default
            }
        );
    }

    #[test]
    fn a_base_whose_sampler_kiln_lacks_needs_one_and_a_base_without_a_model_needs_one() {
        let base = a1111(Parameters {
            prompt: Some("x".into()),
            sampler: Some("Restart".into()),
            ..Parameters::default()
        });
        let err = resolve(&GenerationSpec::default(), Some(&base), &[], || Ok(64)).unwrap_err();
        assert!(err.to_string().contains("Restart"), "{err}");
        let s = GenerationSpec {
            sampler: Some(SamplerKind::Lcm),
            ..GenerationSpec::default()
        };
        assert_eq!(
            resolve(&s, Some(&base), &[], || Ok(64))
                .unwrap()
                .request
                .sampler,
            Sampler::Lcm
        );
        assert!(resolve_model(&s, Some(&base)).is_err());
        assert_eq!(resolve_model(&s, None).unwrap(), None);
    }

    #[test]
    fn a_kiln_recipe_gives_model_precision_and_clip_skip_and_its_tags_stay_tags() {
        let base = kiln_recipe(None);
        let m = resolve_model(&GenerationSpec::default(), Some(&base))
            .unwrap()
            .unwrap();
        assert_eq!(m.path, PathBuf::from("/models/m.safetensors"));
        assert_eq!(m.precision, PrecisionChoice::F16);
        assert_eq!(m.device, DeviceSpec::Auto);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("style.safetensors"), b"").unwrap();
        let s = GenerationSpec {
            lora_dir: Some(dir.path().to_owned()),
            ..GenerationSpec::default()
        };
        let job = resolve(&s, Some(&base), &[], not_asked).unwrap();
        assert_eq!(job.request.prompts, ["a fox"]);
        assert_eq!(job.typed_prompts, ["a fox <lora:style:0.5>"]);
        assert_eq!(job.prompt_loras.len(), 1);
        assert_eq!(job.request.clip_skip, 2);
        assert_eq!(
            job.request.sampler,
            Sampler::EulerAncestral {
                schedule: Schedule::Karras
            }
        );
    }

    #[test]
    fn the_init_image_is_hashed_once_checked_against_the_recipe_and_sizes_the_job() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("init.png");
        let image = RgbImage {
            width: 70,
            height: 45,
            pixels: vec![128; 70 * 45 * 3],
        };
        crate::image::write_png(&path, &image, &[]).unwrap();
        let sha = sha256_file(&path).unwrap();
        let s = GenerationSpec {
            init_image: Some(InitImageChoice {
                path: path.clone(),
                expected_sha256: None,
            }),
            strength: Some(0.4),
            ..spec("x")
        };
        let job = resolve(&s, None, &[], not_asked).unwrap();
        assert_eq!((job.request.width, job.request.height), (64, 40));
        assert_eq!(job.request.init_image.as_ref().unwrap().strength, 0.4);
        assert_eq!(job.init_image.as_ref().unwrap().sha256, sha);

        let recipe = |sha256: &str| {
            kiln_recipe(Some(InitImageRef {
                path: path.to_string_lossy().into_owned(),
                sha256: sha256.into(),
                strength: 0.3,
            }))
        };
        let job = resolve(&spec("x"), Some(&recipe(&sha)), &[], not_asked).unwrap();
        assert_eq!(job.request.init_image.unwrap().strength, 0.3);
        let err = resolve(&spec("x"), Some(&recipe("00")), &[], not_asked).unwrap_err();
        assert!(matches!(err, Error::InitImageChanged { .. }), "{err}");
        // An init image of the user's own takes the default strength, not the recipe's.
        let own = GenerationSpec {
            strength: None,
            ..s.clone()
        };
        let job = resolve(&own, Some(&recipe("00")), &[], not_asked).unwrap();
        assert_eq!(job.request.init_image.unwrap().strength, DEFAULT_STRENGTH);

        let err = resolve(
            &GenerationSpec {
                strength: Some(0.5),
                ..spec("x")
            },
            None,
            &[],
            || Ok(64),
        )
        .unwrap_err();
        assert!(err.to_string().contains("--init-image"), "{err}");
    }

    #[test]
    fn zero_batches_are_refused() {
        for (batch_size, batch_count) in [(0, 1), (1, 0)] {
            let s = GenerationSpec {
                batch_size,
                batch_count,
                ..spec("x")
            };
            assert!(matches!(
                resolve(&s, None, &[], || Ok(64)),
                Err(Error::InvalidRequest(_))
            ));
        }
    }
}
