//! Text-to-image and image-to-image, following diffusers' `StableDiffusionPipeline` and
//! `StableDiffusionImg2ImgPipeline` step by step:
//! 1. encode prompts and negative prompts (CFG only when guidance > 1);
//! 2. prepare latents: txt2img — noise (given, or per-image seeded) × `init_noise_sigma`;
//!    img2img — the init image fitted to the requested size ([`crate::image::fit`]), encoded
//!    by the VAE (posterior **mean**, where diffusers samples the posterior: the VAE's σ is
//!    tiny and the mean keeps a recipe independent of the VAE's RNG), × `scaling_factor`, then
//!    noised by the scheduler to the step where `strength` starts (`--latents` then gives that
//!    noise);
//! 3. denoise: UNet on `[negative; positive]`, guidance, scheduler step — with a step
//!    callback carrying a cheap preview, and a cancel token checked before every UNet call;
//! 4. decode `latents / scaling_factor` with the VAE and convert to RGB8.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::{Device, FloatDType, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::adapters::lora::LoraAdapter;
use crate::adapters::lora::stack::{LoraStack, ParamKey, StackEntry};
use crate::adapters::lora::targets::{Component, TargetIndex};
use crate::error::{Error, Result};
use crate::image::{RgbImage, to_rgb8};
use crate::metadata::{EmbeddingRef, InitImageRef, LoraRef, ModelRef, Recipe};
use crate::models::clip_text::ClipTextModel;
use crate::models::paths::{map_params, param_paths};
use crate::models::unet_2d_condition::UNet2DConditionModel;
use crate::models::vae::AutoencoderKL;
pub use crate::schedulers::sampler::Sampler;
use crate::schedulers::{Noise, Scheduler, interp, predict_x0};
use crate::tokenizer::ClipTokenizer;
use crate::weights::loader::Loader;
use crate::weights::{Checkpoint, CheckpointInfo};

/// A flag the UI or CLI sets to stop a running job; checked before every step.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A fresh, unset token.
    pub fn new() -> Self {
        Self::default()
    }
    /// Asks the job to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// Whether cancellation was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Reported after every UNet call of the denoising loop.
#[derive(Debug, Clone)]
pub struct StepProgress {
    /// Calls done (1-based).
    pub step: usize,
    /// Total calls (Heun and DPM++ 2S a make two per step).
    pub total: usize,
    /// The image forming (the predicted clean image; decoded by the VAE for small images,
    /// else by [`crate::preview`]'s cheap map); only when [`GenerationRequest::preview`] is
    /// set. One image per output image.
    pub preview: Option<Vec<RgbImage>>,
}

/// Numeric precision of the UNet and the text encoder. The VAE always runs in f32 (its
/// decoder overflows f16 on SD 1.x), as do the scheduler math and prompt weighting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats everywhere.
    #[default]
    F32,
    /// 16-bit weights and activations in the UNet and text encoder (half the memory and,
    /// on GPUs, about twice the speed).
    F16,
}

impl Precision {
    /// f16 on GPU backends, f32 on the CPU (where f16 is not faster).
    pub fn default_for(device: &Device) -> Self {
        if crate::device::is_cpu(device) {
            Precision::F32
        } else {
            Precision::F16
        }
    }

    /// Burn's dtype for it.
    pub fn dtype(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::F16 => FloatDType::F16,
        }
    }
}

/// A textual-inversion embedding loaded into the model.
#[derive(Debug, Clone)]
pub struct LoadedEmbedding {
    /// The embedding (token, vectors, width, file).
    pub ti: crate::adapters::textual_inversion::TextualInversion,
    /// Its token ids (one per vector).
    pub ids: Vec<u32>,
}

/// `path` made absolute (as given when that fails), for recipes.
fn absolute(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_owned())
        .to_string_lossy()
        .into_owned()
}

/// An img2img source.
#[derive(Debug, Clone)]
pub struct InitImage {
    /// The image (any size: fitted to the request's size, see [`crate::image::fit`]).
    pub image: RgbImage,
    /// The file it came from, for the recipe (None: not recorded).
    pub path: Option<PathBuf>,
    /// How much to change it, 0 < strength ≤ 1: the last `⌊steps·strength⌋` steps are run.
    pub strength: f64,
}

/// Everything that determines a txt2img result.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    /// One entry per prompt.
    pub prompts: Vec<String>,
    /// One negative for all prompts, or one per prompt (empty = "").
    pub negatives: Vec<String>,
    /// The sampler.
    pub sampler: Sampler,
    /// Denoising steps.
    pub steps: usize,
    /// Classifier-free guidance scale (≤ 1 disables the negative pass).
    pub cfg: f64,
    /// Seed of image 0; image k uses `seed + k`.
    pub seed: u64,
    /// Image width in pixels (a multiple of the VAE factor × 2^(UNet levels − 1)).
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Images per prompt.
    pub batch: usize,
    /// Initial noise `[B, C, h, w]` (before `init_noise_sigma`), replacing seeded noise.
    pub latents: Option<LatentsData>,
    /// CLIP skip (1 = last layer).
    pub clip_skip: usize,
    /// img2img: start from this image instead of pure noise.
    pub init_image: Option<InitImage>,
    /// Compute a live preview (the predicted clean image) after every UNet call.
    pub preview: bool,
}

/// Latents as plain host data.
#[derive(Debug, Clone, PartialEq)]
pub struct LatentsData {
    /// `[B, C, h, w]`.
    pub shape: [usize; 4],
    /// Row-major values.
    pub values: Vec<f32>,
}

/// What txt2img returns.
#[derive(Debug, Clone)]
pub struct GenerationOutput {
    /// One image per prompt × batch, prompt-major.
    pub images: Vec<RgbImage>,
    /// Final latents before VAE decoding.
    pub latents: LatentsData,
    /// The seed of each image.
    pub seeds: Vec<u64>,
}

/// An SD 1.x pipeline on one device: text encoder, UNet, VAE, tokenizer and scheduler config.
#[derive(Debug)]
pub struct StableDiffusion {
    /// The text encoder.
    pub text_encoder: ClipTextModel,
    /// The denoiser.
    pub unet: UNet2DConditionModel,
    /// The autoencoder.
    pub vae: AutoencoderKL,
    /// The tokenizer.
    pub tokenizer: ClipTokenizer,
    /// What was loaded.
    pub info: CheckpointInfo,
    loras: LoraStack,
    device: Device,
    precision: Precision,
    embeddings: Vec<LoadedEmbedding>,
    /// The tokenizer and token table before any embedding (to unload one).
    base_text: Option<(ClipTokenizer, Tensor<2>)>,
    model_hash: Option<String>,
}

impl StableDiffusion {
    /// Loads a diffusers folder or single-file checkpoint (strictly) onto `device`.
    pub fn load(path: &Path, config_dir: Option<&Path>, device: &Device) -> Result<Self> {
        let ckpt = Checkpoint::open(path, config_dir)?;
        Self::from_checkpoint(ckpt, device)
    }

    /// Builds the models from an opened checkpoint.
    pub fn from_checkpoint(ckpt: Checkpoint, device: &Device) -> Result<Self> {
        let cfg = &ckpt.info.config;
        let mut ld = Loader::from_source(&ckpt.text_encoder, device);
        let text_encoder = ClipTextModel::load(&cfg.text_encoder, &mut ld)?;
        ld.finish("text encoder")?;
        let mut ld = Loader::from_source(&ckpt.unet, device);
        let unet = UNet2DConditionModel::load(&cfg.unet, &mut ld)?;
        ld.finish("UNet")?;
        let mut ld = Loader::from_source(&ckpt.vae, device);
        let vae = AutoencoderKL::load(&cfg.vae, &mut ld)?;
        ld.finish("VAE")?;
        tracing::info!(path = %ckpt.info.path.display(), layout = ?ckpt.info.layout, "model loaded");
        Self::from_models(text_encoder, unet, vae, ckpt.info, device)
    }

    /// A pipeline over models already built (e.g. by a training run), described by `info`.
    pub fn from_models(
        text_encoder: ClipTextModel,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        info: CheckpointInfo,
        device: &Device,
    ) -> Result<Self> {
        Ok(StableDiffusion {
            text_encoder,
            unet,
            vae,
            tokenizer: ClipTokenizer::sd15()?
                .with_max_length(info.config.checked_tokenizer_length()?)?,
            info,
            loras: LoraStack::default(),
            device: device.clone(),
            precision: Precision::F32,
            embeddings: Vec::new(),
            base_text: None,
            model_hash: None,
        })
    }

    /// The device the models live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The UNet and text encoder's precision (f32 after loading).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Converts the UNet and text encoder (and the LoRA stack's kept weights) to `precision`.
    /// Going back from f16 to f32 does not restore the rounded bits.
    pub fn set_precision(&mut self, precision: Precision) {
        if precision == self.precision {
            return;
        }
        let dtype = precision.dtype();
        let all = |_: &str| true;
        self.unet = map_params(self.unet.clone(), &all, &mut |_, t| t.cast(dtype));
        self.text_encoder = map_params(self.text_encoder.clone(), &all, &mut |_, t| t.cast(dtype));
        self.loras.cast_pristine(dtype);
        self.precision = precision;
    }

    /// Every layer of this model a LoRA can modify, under every alias LoRA files use.
    pub fn lora_targets(&self) -> TargetIndex {
        TargetIndex::new(
            &param_paths(&self.unet),
            &param_paths(&self.text_encoder),
            self.info.config.unet.layers_per_block,
        )
    }

    /// Opens a LoRA file or PEFT folder and checks it against this model.
    pub fn open_lora(&self, path: &Path) -> Result<LoraAdapter> {
        LoraAdapter::open(path, &self.lora_targets())
    }

    /// The LoRA stack, in order.
    pub fn loras(&self) -> &[StackEntry] {
        self.loras.entries()
    }

    /// Adds a LoRA at `weight` (enabled) and merges it; returns its index in the stack.
    pub fn add_lora(&mut self, adapter: LoraAdapter, weight: f32) -> usize {
        let dirty = self.loras.push(Arc::new(adapter), weight, &self.device);
        self.remerge(&dirty);
        self.loras.entries().len() - 1
    }

    /// Changes the weight of LoRA `i`; only the layers it covers are recomputed.
    pub fn set_lora_weight(&mut self, i: usize, weight: f32) {
        let dirty = self.loras.set_weight(i, weight);
        self.remerge(&dirty);
    }

    /// Turns LoRA `i` on or off.
    pub fn set_lora_enabled(&mut self, i: usize, enabled: bool) {
        let dirty = self.loras.set_enabled(i, enabled);
        self.remerge(&dirty);
    }

    /// Removes LoRA `i` (its layers return to their merged-without-it values).
    pub fn remove_lora(&mut self, i: usize) {
        let dirty = self.loras.remove(i);
        self.remerge(&dirty);
    }

    fn remerge(&mut self, dirty: &std::collections::BTreeSet<ParamKey>) {
        self.unet = self
            .loras
            .merge_into(Component::Unet, self.unet.clone(), dirty);
        self.text_encoder =
            self.loras
                .merge_into(Component::TextEncoder, self.text_encoder.clone(), dirty);
    }

    /// Moves LoRA `from` to position `to` in the stack.
    pub fn move_lora(&mut self, from: usize, to: usize) {
        let dirty = self.loras.move_entry(from, to);
        self.remerge(&dirty);
    }

    /// Loads a textual-inversion embedding (A1111 `.pt`/`.safetensors`, diffusers
    /// `learned_embeds`) under `token` (the file stem when None); returns the new token ids.
    pub fn load_embedding(&mut self, path: &Path, token: Option<&str>) -> Result<Vec<u32>> {
        let ti = crate::adapters::textual_inversion::load(path, token)?;
        if self.base_text.is_none() {
            let table = self.text_encoder.embeddings.token_embedding.weight.val();
            self.base_text = Some((self.tokenizer.clone(), table));
        }
        let ids = crate::adapters::textual_inversion::apply(
            &ti,
            &mut self.tokenizer,
            &mut self.text_encoder,
        )?;
        self.embeddings.push(LoadedEmbedding {
            ti,
            ids: ids.clone(),
        });
        Ok(ids)
    }

    /// The loaded embeddings, in load order.
    pub fn embeddings(&self) -> &[LoadedEmbedding] {
        &self.embeddings
    }

    /// Unloads embedding `i`: the tokenizer and token table return to the model's own, and the
    /// other embeddings are applied again (their token ids may change).
    pub fn remove_embedding(&mut self, i: usize) -> Result<()> {
        if i >= self.embeddings.len() {
            return Ok(());
        }
        let Some((tokenizer, table)) = self.base_text.clone() else {
            return Ok(());
        };
        let mut kept = std::mem::take(&mut self.embeddings);
        kept.remove(i);
        self.tokenizer = tokenizer;
        let id = self.text_encoder.embeddings.token_embedding.weight.id;
        self.text_encoder.embeddings.token_embedding.weight =
            burn::module::Param::initialized(id, table);
        for mut e in kept {
            e.ids = crate::adapters::textual_inversion::apply(
                &e.ti,
                &mut self.tokenizer,
                &mut self.text_encoder,
            )?;
            self.embeddings.push(e);
        }
        Ok(())
    }

    /// A1111's model hash recorded in recipes (computed by the caller, who owns the cache).
    pub fn set_model_hash(&mut self, hash: Option<String>) {
        self.model_hash = hash;
    }

    /// The recipe of every image of a finished `req` (prompt-major, as [`GenerationOutput`];
    /// `seeds` as it reports them).
    pub fn recipes(&self, req: &GenerationRequest, seeds: &[u64]) -> Vec<Recipe> {
        // What all images share (the init image's hash is read once), then each one's prompt
        // and seed.
        let path = &self.info.path;
        let base = Recipe {
            version: crate::metadata::RECIPE_VERSION,
            prompt: String::new(),
            negative_prompt: String::new(),
            sampler: req.sampler,
            steps: req.steps,
            cfg: req.cfg,
            seed: 0,
            width: req.width,
            height: req.height,
            clip_skip: req.clip_skip,
            model: ModelRef {
                name: path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                path: absolute(path),
                hash: self.model_hash.clone(),
            },
            loras: self
                .loras
                .entries()
                .iter()
                .filter(|e| e.enabled && e.weight != 0.0)
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
            init_image: req.init_image.as_ref().and_then(|i| {
                let path = i.path.as_ref()?;
                Some(InitImageRef {
                    path: absolute(path),
                    sha256: crate::weights::hash::sha256_file(path).ok()?,
                    strength: i.strength,
                })
            }),
            precision: self.precision,
        };
        seeds
            .iter()
            .enumerate()
            .map(|(k, seed)| {
                let p = k / req.batch.max(1);
                Recipe {
                    prompt: req.prompts.get(p).cloned().unwrap_or_default(),
                    negative_prompt: req
                        .negatives
                        .get(p)
                        .or(req.negatives.first())
                        .cloned()
                        .unwrap_or_default(),
                    seed: *seed,
                    ..base.clone()
                }
            })
            .collect()
    }

    /// Pixels per latent.
    pub fn vae_scale_factor(&self) -> usize {
        self.info.config.vae.scale_factor()
    }

    /// Token ids `[N, L]` for `prompts` (L = the tokenizer's length, 77 for SD 1.x).
    pub fn token_ids(&self, prompts: &[String]) -> Result<Tensor<2, Int>> {
        let len = self.tokenizer.max_length();
        let mut ids = Vec::with_capacity(prompts.len() * len);
        for p in prompts {
            ids.extend(self.tokenizer.encode(p)?.into_iter().map(i64::from));
        }
        Ok(Tensor::from_data(
            TensorData::new(ids, [prompts.len(), len]),
            &self.device,
        ))
    }

    /// Text embeddings `[N, 77·k, hidden]` for `prompts`, with AUTOMATIC1111's prompt syntax
    /// (see [`crate::prompt`]): every prompt becomes k 77-token chunks (k = the most any
    /// prompt needs; shorter ones are padded with empty chunks, as A1111 pads the negative
    /// prompt to the positive one); emphasis multiplies each token's embedding and then the
    /// chunk is rescaled to its original mean. (A1111 takes that mean over the whole batch of
    /// prompts; Kiln takes it per prompt so an image does not depend on its batch.) Plain
    /// prompts of ≤ 75 tokens give exactly diffusers' embeddings.
    pub fn encode_prompts(&self, prompts: &[String], clip_skip: usize) -> Result<Tensor<3>> {
        let mut per_prompt = Vec::with_capacity(prompts.len());
        for p in prompts {
            per_prompt.push(crate::prompt::chunks(&self.tokenizer, p)?);
        }
        let k = per_prompt.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let len = self.tokenizer.max_length();
        let empty = crate::prompt::Chunk {
            ids: self.tokenizer.encode("")?,
            weights: vec![1.0; len],
        };
        let mut ids: Vec<i64> = Vec::with_capacity(prompts.len() * k * len);
        let mut weights: Vec<f32> = Vec::with_capacity(prompts.len() * k * len);
        for chunks in &per_prompt {
            for c in chunks
                .iter()
                .chain(std::iter::repeat_n(&empty, k - chunks.len()))
            {
                ids.extend(c.ids.iter().map(|&i| i64::from(i)));
                weights.extend(&c.weights);
            }
        }
        let n = prompts.len() * k;
        let ids: Tensor<2, Int> = Tensor::from_data(TensorData::new(ids, [n, len]), &self.device);
        let mut z = self
            .text_encoder
            .forward(ids, clip_skip)
            .cast(FloatDType::F32);
        if weights.iter().any(|w| *w != 1.0) {
            let w: Tensor<3> =
                Tensor::from_data(TensorData::new(weights, [n, len, 1]), &self.device);
            let original = z.clone().mean_dims(&[1, 2]);
            let weighted = z * w;
            let new = weighted.clone().mean_dims(&[1, 2]);
            z = weighted * (original / new);
        }
        let hidden = z.dims()[2];
        Ok(z.reshape([prompts.len(), k * len, hidden]))
    }

    fn check_size(&self, width: usize, height: usize) -> Result<[usize; 2]> {
        let f = self.vae_scale_factor();
        let levels = self.info.config.unet.block_out_channels.len();
        let multiple = f * (1 << (levels - 1));
        if width == 0 || height == 0 || !width.is_multiple_of(f) || !height.is_multiple_of(f) {
            return Err(Error::InvalidRequest(format!(
                "width and height must be positive multiples of {f}, got {width}×{height}"
            )));
        }
        if !width.is_multiple_of(multiple) || !height.is_multiple_of(multiple) {
            tracing::warn!(
                "{width}×{height} is not a multiple of {multiple}; the UNet will resize skip connections"
            );
        }
        Ok([height / f, width / f])
    }

    /// The UNet at the model's precision: `sample` `[B, C, h, w]` (f32) at timestep `t`,
    /// `context` `[B, M, D]` → `[B, C, h, w]` in f32.
    fn unet_forward(&self, sample: Tensor<4>, t: f64, context: &Tensor<3>) -> Tensor<4> {
        let b = sample.dims()[0];
        let sample = sample.cast(self.precision.dtype());
        self.unet
            .forward(sample, &vec![t as f32; b], context)
            .cast(FloatDType::F32)
    }

    /// Runs txt2img, or img2img when `req.init_image` is set. `on_step` is called after every
    /// UNet call; `cancel` is checked before each (a cancelled run returns
    /// [`Error::Cancelled`]).
    pub fn generate(
        &self,
        req: &GenerationRequest,
        cancel: &CancelToken,
        on_step: &mut dyn FnMut(StepProgress),
    ) -> Result<GenerationOutput> {
        if req.prompts.is_empty() {
            return Err(Error::InvalidRequest(
                "at least one prompt is needed".into(),
            ));
        }
        if req.batch == 0 {
            return Err(Error::InvalidRequest("batch must be at least 1".into()));
        }
        let negatives: Vec<String> = match req.negatives.len() {
            0 => vec![String::new(); req.prompts.len()],
            1 => vec![req.negatives[0].clone(); req.prompts.len()],
            n if n == req.prompts.len() => req.negatives.clone(),
            n => {
                return Err(Error::InvalidRequest(format!(
                    "{n} negative prompts for {} prompts: give one, or one per prompt",
                    req.prompts.len()
                )));
            }
        };
        let [h, w] = self.check_size(req.width, req.height)?;
        let total = req.prompts.len() * req.batch;
        let channels = self.vae.latent_channels;
        let seeds: Vec<u64> = (0..total as u64)
            .map(|k| req.seed.wrapping_add(k))
            .collect();
        let mut noise = Noise::new(&seeds);
        let mut scheduler: Box<dyn Scheduler> =
            req.sampler.scheduler(&self.info.scheduler, req.steps)?;

        // 1. Prompts, repeated `batch` times each (prompt-major, as diffusers).
        let repeat = |v: &[String]| {
            v.iter()
                .flat_map(|p| std::iter::repeat_n(p.clone(), req.batch))
                .collect::<Vec<_>>()
        };
        let guided = req.cfg > 1.0;
        let context = if guided {
            let mut all = repeat(&negatives);
            all.extend(repeat(&req.prompts));
            self.encode_prompts(&all, req.clip_skip)?
        } else {
            self.encode_prompts(&repeat(&req.prompts), req.clip_skip)?
        };
        let context = context.cast(self.precision.dtype());

        // 2. Initial latents, and the first UNet call (img2img skips the first steps).
        let shape = [total, channels, h, w];
        let given = match &req.latents {
            Some(l) => {
                if l.shape != shape {
                    return Err(Error::InvalidRequest(format!(
                        "--latents has shape {:?}, this request needs {shape:?}",
                        l.shape
                    )));
                }
                Some(Tensor::from_data(
                    TensorData::new(l.values.clone(), l.shape),
                    &self.device,
                ))
            }
            None => None,
        };
        let timesteps = scheduler.timesteps().to_vec();
        let (mut latents, start) = match &req.init_image {
            None => (
                given.unwrap_or_else(|| noise.randn(shape, &self.device))
                    * scheduler.init_noise_sigma(),
                0,
            ),
            Some(init) => {
                if !(init.strength > 0.0 && init.strength <= 1.0) {
                    return Err(Error::InvalidRequest(format!(
                        "strength must be in (0, 1], got {}",
                        init.strength
                    )));
                }
                // diffusers' get_timesteps: run the last ⌊steps·strength⌋ steps.
                let run = ((req.steps as f64 * init.strength) as usize).min(req.steps);
                if run == 0 {
                    return Err(Error::InvalidRequest(format!(
                        "strength {} × {} steps runs no step; raise the strength or the steps",
                        init.strength, req.steps
                    )));
                }
                let start = (req.steps - run) * scheduler.order();
                let fitted = crate::image::fit(&init.image, req.width, req.height);
                let pixels = crate::image::from_rgb8(&[&fitted], &self.device);
                let encoded = self.vae.encode_mean(pixels) * self.vae.scaling_factor;
                let encoded = encoded.repeat_dim(0, total);
                let eps = given.unwrap_or_else(|| noise.randn(shape, &self.device));
                (scheduler.add_noise(encoded, eps, start), start)
            }
        };

        // 3. Denoising loop.
        let calls = timesteps.len() - start;
        // The preview shows x̂₀ from the (scaled) UNet input and the guided prediction.
        let preview_alphas = if req.preview {
            Some(self.info.scheduler.alphas_cumprod()?)
        } else {
            None
        };
        for (i, &t) in timesteps.iter().enumerate().skip(start) {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let input = scheduler.scale_model_input(latents.clone(), i);
            let pred = if guided {
                let input = Tensor::cat(vec![input.clone(), input.clone()], 0);
                let out = self.unet_forward(input, t, &context);
                let mut halves = out.chunk(2, 0);
                let text = halves.pop().expect("two halves");
                let uncond = halves.pop().expect("two halves");
                uncond.clone() + (text - uncond) * req.cfg
            } else {
                self.unet_forward(input.clone(), t, &context)
            };
            let preview = match &preview_alphas {
                Some(alphas) => {
                    let x0 = predict_x0(
                        &self.info.scheduler.prediction_type,
                        &input,
                        pred.clone(),
                        interp(t, alphas),
                    );
                    Some(self.preview(x0)?)
                }
                None => None,
            };
            latents = scheduler.step(pred, i, latents, &mut noise);
            on_step(StepProgress {
                step: i + 1 - start,
                total: calls,
                preview,
            });
        }
        let final_latents = latents_to_host(latents.clone())?;
        if final_latents.values.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite("the denoising loop".into()));
        }

        // 4. Decode.
        let decoded = self.vae.decode(latents / self.vae.scaling_factor);
        let images = to_rgb8(decoded)?;
        Ok(GenerationOutput {
            images,
            latents: final_latents,
            seeds,
        })
    }

    /// The live preview of predicted clean latents `x0` `[B, C, h, w]`: decoded by the VAE when
    /// that is cheap (images of at most [`EXACT_PREVIEW_PIXELS`], like the shipped model's
    /// 64×64, whose latents no fixed colour map describes), else the fixed linear map of
    /// [`crate::preview`].
    fn preview(&self, x0: Tensor<4>) -> Result<Vec<RgbImage>> {
        let [_, _, h, w] = x0.dims();
        let f = self.vae_scale_factor();
        if h * f * w * f <= EXACT_PREVIEW_PIXELS {
            return to_rgb8(self.vae.decode(x0 / self.vae.scaling_factor));
        }
        Ok(crate::preview::latents_to_rgb(&latents_to_host(x0)?, f))
    }
}

/// Images up to this many pixels get previews decoded by the VAE (a few milliseconds for a
/// 64×64 image; an SD 1.5 decode at 512×512 takes seconds on a CPU).
pub const EXACT_PREVIEW_PIXELS: usize = 96 * 96;

/// Copies a `[B, C, h, w]` tensor to the host.
pub fn latents_to_host(t: Tensor<4>) -> Result<LatentsData> {
    let shape = t.dims();
    let values = t
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| Error::InvalidRequest(format!("reading latents: {e:?}")))?;
    Ok(LatentsData { shape, values })
}
