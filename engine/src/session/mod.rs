//! A loaded model with what the user put on top of it — diffusers' loader mixins to the
//! pipeline's components: the [`Session`] owns the [`StableDiffusion`] components, the LoRA
//! stack (every entry addressed by its [`AdapterId`], and the entries prompt tags ask for),
//! the textual-inversion embeddings, the model's hash, and runs a resolved [`Job`] (applying
//! its prompt tags, then the pure pipeline, then the recipes of [`crate::recipe`]). The
//! command line drives a session directly; the window and the HTTP API drive one through the
//! engine thread ([`crate::worker`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::Tensor;

use crate::adapters::AdapterId;
use crate::adapters::lora::LoraAdapter;
use crate::adapters::lora::stack::{LoraStack, ParamKey, StackEntry, StackKey};
use crate::adapters::lora::targets::{Component, TargetIndex};
use crate::adapters::textual_inversion::TextualInversion;
use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::job::{CancelToken, LatentsData, Precision};
use crate::metadata::{EmbeddingRef, LoraRef, Recipe};
use crate::models::paths::param_paths;
use crate::pipeline::{StableDiffusion, StepProgress};
use crate::recipe::{Applied, absolute};
use crate::resolve::{Job, ModelChoice};
use crate::tokenizer::ClipTokenizer;
use crate::weights::CheckpointInfo;

/// A textual-inversion embedding loaded into the model.
#[derive(Debug, Clone)]
pub struct LoadedEmbedding {
    /// Its id.
    pub id: AdapterId,
    /// The embedding (token, vectors, width, file).
    pub ti: TextualInversion,
    /// Its token ids (one per vector).
    pub ids: Vec<u32>,
}

/// One image of a finished job, with its recipe.
#[derive(Debug, Clone)]
pub struct GeneratedImage {
    /// Pixels.
    pub image: RgbImage,
    /// Its recipe (for the PNG and "reuse parameters").
    pub recipe: Recipe,
}

/// What one iteration of a job made.
#[derive(Debug, Clone)]
pub struct Generated {
    /// Every image, prompt-major.
    pub images: Vec<GeneratedImage>,
    /// The final latents (before VAE decoding) of the whole batch.
    pub latents: LatentsData,
}

/// A loaded model and its adapters.
#[derive(Debug)]
pub struct Session {
    sd: StableDiffusion,
    device: DeviceSpec,
    /// What opening the device had to say (`auto` fell back to the CPU).
    device_notice: Option<String>,
    loras: LoraStack,
    embeddings: Vec<LoadedEmbedding>,
    /// The tokenizer and token table before any embedding (to unload one).
    base_text: Option<(ClipTokenizer, Tensor<2>)>,
    model_hash: Option<String>,
    /// What it was loaded from ([`Session::load`]), to load it again; `None` for models built
    /// in memory.
    choice: Option<ModelChoice>,
}

/// A model made ready to load ([`Session::prepare`]): its device is open and its file's
/// header read and understood (layout, family, architecture), but no weight is read yet.
#[derive(Debug)]
pub struct PreparedModel {
    choice: ModelChoice,
    checkpoint: crate::weights::Checkpoint,
    opened: crate::device::OpenedDevice,
    precision: Precision,
}

impl PreparedModel {
    /// Reads the weights onto the device (strictly) and records the model's A1111 hash
    /// (cached in `cache_dir`).
    pub fn load(self, cache_dir: Option<&Path>) -> Result<Session> {
        let dev = self.opened.device;
        let sd = StableDiffusion::from_checkpoint(self.checkpoint, &dev, self.precision)?;
        crate::device::log_memory(&dev, "loading the model");
        let model_hash = match crate::weights::hash::model_hash(&self.choice.path, cache_dir) {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "could not hash the model; recipes will not name its hash");
                None
            }
        };
        Ok(Session {
            model_hash,
            device_notice: self.opened.notice,
            choice: Some(self.choice),
            ..Session::new(sd, self.opened.spec)
        })
    }
}

impl Session {
    /// Loads `model` (strictly) on its device ([`DeviceSpec::open`]) at its precision (the
    /// device's default when none is asked for) and records its A1111 hash (cached in
    /// `cache_dir`): [`Session::prepare`], then [`PreparedModel::load`].
    pub fn load(model: &ModelChoice, cache_dir: Option<&Path>) -> Result<Self> {
        Self::prepare(model)?.load(cache_dir)
    }

    /// The cheap half of [`Session::load`]: opens the device, checks the precision on it and
    /// reads the checkpoint's headers and configs (no weights). A file that is no model, an
    /// architecture Kiln refuses or a device that is not there fails here, in milliseconds —
    /// the engine does this before it lets the current model go.
    pub fn prepare(model: &ModelChoice) -> Result<PreparedModel> {
        let opened = model.device.open()?;
        let precision = model
            .precision
            .on(&opened.device)
            .check_on(&opened.device)?;
        let checkpoint = crate::weights::Checkpoint::open(&model.path, model.config.as_deref())?;
        Ok(PreparedModel {
            choice: model.clone(),
            checkpoint,
            opened,
            precision,
        })
    }

    /// What the model was loaded from ([`Session::load`]); `None` for a session over models
    /// built in memory ([`Session::new`]).
    pub fn choice(&self) -> Option<&ModelChoice> {
        self.choice.as_ref()
    }

    /// A session over models already built (a training run's, a test's), on `device`.
    pub fn new(sd: StableDiffusion, device: DeviceSpec) -> Self {
        Session {
            sd,
            device,
            device_notice: None,
            loras: LoraStack::default(),
            embeddings: Vec::new(),
            base_text: None,
            model_hash: None,
            choice: None,
        }
    }

    /// The model's components (with the stack merged in and the embeddings' tokens added).
    pub fn model(&self) -> &StableDiffusion {
        &self.sd
    }

    /// What was loaded.
    pub fn info(&self) -> &CheckpointInfo {
        &self.sd.info
    }

    /// The device it runs on (never `auto`).
    pub fn device(&self) -> &DeviceSpec {
        &self.device
    }

    /// What opening the device had to say (`auto` fell back to the CPU, and why).
    pub fn device_notice(&self) -> Option<&str> {
        self.device_notice.as_deref()
    }

    /// The UNet and text encoder's precision.
    pub fn precision(&self) -> Precision {
        self.sd.precision()
    }

    /// A1111's model hash recorded in recipes, when it could be computed.
    pub fn model_hash(&self) -> Option<&str> {
        self.model_hash.as_deref()
    }

    /// What a job run now would record: the model, the LoRAs changing it (in merge order),
    /// the embeddings and the precision.
    pub fn applied(&self) -> Applied {
        Applied {
            model: crate::recipe::model_ref(&self.sd.info.path, self.model_hash()),
            loras: self
                .loras
                .entries()
                .iter()
                .filter(|e| e.is_applied())
                .map(|e| LoraRef {
                    name: e.adapter.name.clone(),
                    path: absolute(&e.adapter.path),
                    hash: e.adapter.report.short_hash.clone(),
                    weight: e.weight,
                })
                .collect(),
            embeddings: self
                .embeddings
                .iter()
                .map(|e| EmbeddingRef {
                    token: e.ti.token.clone(),
                    path: absolute(&e.ti.path),
                })
                .collect(),
            precision: self.precision(),
            device: self.device.clone(),
        }
    }

    /// Converts the UNet, the text encoder and the stack's kept weights to `precision`.
    pub fn set_precision(&mut self, precision: Precision) {
        self.sd.set_precision(precision);
        self.loras.cast_pristine(precision.dtype());
        if let Some((_, table)) = &mut self.base_text {
            *table = table.clone().cast(precision.dtype());
        }
    }

    /// Every layer of this model a LoRA can modify, under every alias LoRA files use.
    pub fn lora_targets(&self) -> TargetIndex {
        TargetIndex::new(
            &param_paths(&self.sd.unet),
            &param_paths(&self.sd.text_encoder),
            self.sd.info.config.unet.layers_per_block,
        )
    }

    /// Opens a LoRA file or PEFT folder and checks it against this model.
    pub fn open_lora(&self, path: &Path) -> Result<LoraAdapter> {
        LoraAdapter::open(path, &self.lora_targets())
    }

    /// The LoRA stack, in merge order (the front end's entries, then prompt tags').
    pub fn loras(&self) -> &[StackEntry] {
        self.loras.entries()
    }

    /// Adds `adapter` under `id` (replacing an entry of that id) and merges it.
    pub fn add_lora(&mut self, id: AdapterId, adapter: LoraAdapter, weight: f32, enabled: bool) {
        let dirty = self.loras.push(
            StackKey::Adapter(id),
            Arc::new(adapter),
            weight,
            enabled,
            self.sd.device(),
        );
        self.remerge(&dirty);
    }

    /// Changes the weight of LoRA `id`; only the layers it covers are recomputed. False when
    /// the stack has no such entry.
    pub fn set_lora_weight(&mut self, id: AdapterId, weight: f32) -> bool {
        let dirty = self.loras.set_weight(&StackKey::Adapter(id), weight);
        self.remerge(&dirty);
        self.loras.get(&StackKey::Adapter(id)).is_some()
    }

    /// Turns LoRA `id` on or off. False when the stack has no such entry.
    pub fn set_lora_enabled(&mut self, id: AdapterId, enabled: bool) -> bool {
        let dirty = self.loras.set_enabled(&StackKey::Adapter(id), enabled);
        self.remerge(&dirty);
        self.loras.get(&StackKey::Adapter(id)).is_some()
    }

    /// Removes LoRA `id` (its layers return to their merged-without-it values).
    pub fn remove_lora(&mut self, id: AdapterId) {
        let dirty = self.loras.remove(&StackKey::Adapter(id));
        self.remerge(&dirty);
    }

    /// Orders the stack as `order` says (see [`LoraStack::reorder`]).
    pub fn reorder_loras(&mut self, order: &[AdapterId]) {
        let dirty = self.loras.reorder(order);
        self.remerge(&dirty);
    }

    fn remerge(&mut self, dirty: &BTreeSet<ParamKey>) {
        let sd = &mut self.sd;
        sd.unet = self
            .loras
            .merge_into(Component::Unet, sd.unet.clone(), dirty);
        sd.text_encoder =
            self.loras
                .merge_into(Component::TextEncoder, sd.text_encoder.clone(), dirty);
    }

    /// Makes the prompt-tag entries of the stack exactly `wanted` (file, weight), in order.
    /// Tags naming a LoRA the front end stacked are not among them: the resolver left those
    /// to the stack entry ([`Session::stacked_lora_names`]). Every new file is opened before
    /// the stack changes: a tag that cannot be loaded leaves the stack as it was.
    fn set_prompt_loras(&mut self, wanted: &[(PathBuf, f32)]) -> Result<()> {
        let current: Vec<StackKey> = self
            .loras
            .entries()
            .iter()
            .filter(|e| matches!(e.key, StackKey::PromptTag(_)))
            .map(|e| e.key.clone())
            .collect();
        let in_order = current.len() == wanted.len()
            && current
                .iter()
                .zip(wanted)
                .all(|(k, (p, _))| *k == StackKey::PromptTag(p.clone()));
        let mut dirty = BTreeSet::new();
        if in_order {
            for (path, weight) in wanted {
                dirty.extend(
                    self.loras
                        .set_weight(&StackKey::PromptTag(path.clone()), *weight),
                );
            }
        } else {
            // Open (or keep) every wanted adapter first; only then change the stack.
            let mut adapters = Vec::with_capacity(wanted.len());
            for (path, weight) in wanted {
                let key = StackKey::PromptTag(path.clone());
                let adapter = match self.loras.get(&key) {
                    Some(e) => e.adapter.clone(),
                    None => Arc::new(self.open_lora(path)?),
                };
                adapters.push((key, adapter, *weight));
            }
            for key in current {
                dirty.extend(self.loras.remove(&key));
            }
            for (key, adapter, weight) in adapters {
                dirty.extend(
                    self.loras
                        .push(key, adapter, weight, true, self.sd.device()),
                );
            }
        }
        self.remerge(&dirty);
        Ok(())
    }

    /// The names (file stems) of the LoRAs the front end stacked, on or off: a prompt tag
    /// naming one of them is that entry (see [`crate::resolve::resolve`]).
    pub fn stacked_lora_names(&self) -> Vec<String> {
        self.loras
            .entries()
            .iter()
            .filter(|e| matches!(e.key, StackKey::Adapter(_)))
            .map(|e| e.adapter.name.clone())
            .collect()
    }

    /// Loads a textual-inversion embedding (A1111 `.pt`/`.safetensors`, diffusers
    /// `learned_embeds`) under `token` (the file stem when None) as `id` (replacing an
    /// embedding of that id); returns it. On an error the embeddings stay as they were.
    pub fn load_embedding(
        &mut self,
        id: AdapterId,
        path: &Path,
        token: Option<&str>,
    ) -> Result<&LoadedEmbedding> {
        let ti = crate::adapters::textual_inversion::load(path, token)?;
        self.text_transaction(|s| {
            if s.embeddings.iter().any(|e| e.id == id) {
                s.remove_embedding_now(id)?;
            }
            if s.base_text.is_none() {
                let table = s.sd.text_encoder.embeddings.token_embedding.weight.val();
                s.base_text = Some((s.sd.tokenizer.clone(), table));
            }
            let ids = crate::adapters::textual_inversion::apply(
                &ti,
                &mut s.sd.tokenizer,
                &mut s.sd.text_encoder,
            )?;
            s.embeddings.push(LoadedEmbedding { id, ti, ids });
            Ok(())
        })?;
        self.embeddings
            .last()
            .ok_or_else(|| Error::InvalidRequest("the embedding was not kept".into()))
    }

    /// The loaded embeddings, in load order.
    pub fn embeddings(&self) -> &[LoadedEmbedding] {
        &self.embeddings
    }

    /// Unloads embedding `id`: the tokenizer and token table return to the model's own, and
    /// the other embeddings are applied again (their token ids may change). On an error the
    /// embeddings stay as they were.
    pub fn remove_embedding(&mut self, id: AdapterId) -> Result<()> {
        self.text_transaction(|s| s.remove_embedding_now(id))
    }

    fn remove_embedding_now(&mut self, id: AdapterId) -> Result<()> {
        if !self.embeddings.iter().any(|e| e.id == id) {
            return Ok(());
        }
        let Some((tokenizer, table)) = self.base_text.clone() else {
            return Ok(());
        };
        let mut kept = std::mem::take(&mut self.embeddings);
        kept.retain(|e| e.id != id);
        self.sd.tokenizer = tokenizer;
        let param = self.sd.text_encoder.embeddings.token_embedding.weight.id;
        self.sd.text_encoder.embeddings.token_embedding.weight =
            burn::module::Param::initialized(param, table);
        for mut e in kept {
            e.ids = crate::adapters::textual_inversion::apply(
                &e.ti,
                &mut self.sd.tokenizer,
                &mut self.sd.text_encoder,
            )?;
            self.embeddings.push(e);
        }
        Ok(())
    }

    /// Runs `change` on the text side (tokenizer, token table, embeddings); when it fails,
    /// puts all three back as they were.
    fn text_transaction(&mut self, change: impl FnOnce(&mut Self) -> Result<()>) -> Result<()> {
        let tokenizer = self.sd.tokenizer.clone();
        let table = self.sd.text_encoder.embeddings.token_embedding.clone();
        let embeddings = self.embeddings.clone();
        let result = change(self);
        if result.is_err() {
            self.sd.tokenizer = tokenizer;
            self.sd.text_encoder.embeddings.token_embedding = table;
            self.embeddings = embeddings;
        }
        result
    }

    /// Runs `job` (its `loras` and `embeddings` are the caller's to load first): its prompt
    /// tags' LoRAs join the end of the stack (see [`Session::set_prompt_loras`]), then each of
    /// its `batch_count` iterations runs the pipeline — the seed advancing by the batch size —
    /// and reports its images with their recipes through `on_images`. `on_step` hears of every
    /// UNet call, counted over the whole job.
    pub fn run(
        &mut self,
        job: &Job,
        cancel: &CancelToken,
        on_step: &mut dyn FnMut(StepProgress),
        on_images: &mut dyn FnMut(Generated),
    ) -> Result<()> {
        let tags: Vec<(PathBuf, f32)> = job
            .prompt_loras
            .iter()
            .map(|l| (l.path.clone(), l.weight))
            .collect();
        self.set_prompt_loras(&tags)?;
        let count = job.batch_count.max(1);
        let mut request = job.request.clone();
        for iteration in 0..count {
            request.seed = job
                .request
                .seed
                .wrapping_add((iteration * request.batch) as u64);
            let mut progress = |p: StepProgress| {
                on_step(StepProgress {
                    step: iteration * p.total + p.step,
                    total: count * p.total,
                    preview: p.preview,
                })
            };
            let out = self.sd.generate(&request, cancel, &mut progress)?;
            let recipes = crate::recipe::recipes(&self.applied(), job, &out.seeds);
            on_images(Generated {
                images: out
                    .images
                    .into_iter()
                    .zip(recipes)
                    .map(|(image, recipe)| GeneratedImage { image, recipe })
                    .collect(),
                latents: out.latents,
            });
        }
        crate::device::log_memory(self.sd.device(), "generating");
        Ok(())
    }

    /// Runs the first image of `job` twice at the same seed — every LoRA off (the stack's and
    /// the prompt tags'), then the stack as it is — for the compare view; returns (baseline,
    /// adapted).
    pub fn compare_with_baseline(
        &mut self,
        job: &Job,
        cancel: &CancelToken,
        on_step: &mut dyn FnMut(StepProgress),
    ) -> Result<(GeneratedImage, GeneratedImage)> {
        let mut single = job.clone();
        single.batch_count = 1;
        single.request.batch = 1;
        let first = |s: &mut Session,
                     j: &Job,
                     on_step: &mut dyn FnMut(StepProgress)|
         -> Result<GeneratedImage> {
            let mut image = None;
            s.run(j, cancel, on_step, &mut |g| {
                image = image.take().or_else(|| g.images.into_iter().next())
            })?;
            image.ok_or_else(|| Error::InvalidRequest("the request made no image".into()))
        };
        // Baseline: every adapter off (re-merging only their layers), then restored.
        // Its recipe records the prompts without their LoRA tags: it is what ran, and reusing
        // it must not bring the tags' LoRAs back.
        let mut baseline_job = single.clone();
        baseline_job.prompt_loras.clear();
        baseline_job.typed_prompts = baseline_job.request.prompts.clone();
        baseline_job.typed_negatives = baseline_job.request.negatives.clone();
        let on: Vec<StackKey> = self
            .loras
            .entries()
            .iter()
            .filter(|e| e.enabled)
            .map(|e| e.key.clone())
            .collect();
        let mut dirty = BTreeSet::new();
        for key in &on {
            dirty.extend(self.loras.set_enabled(key, false));
        }
        self.remerge(&dirty);
        let baseline = first(self, &baseline_job, &mut *on_step);
        let mut dirty = BTreeSet::new();
        for key in &on {
            dirty.extend(self.loras.set_enabled(key, true));
        }
        self.remerge(&dirty);
        let baseline = baseline?;
        let adapted = first(self, &single, on_step)?;
        Ok((baseline, adapted))
    }
}
