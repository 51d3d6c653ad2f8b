//! Text-to-image and image-to-image, following diffusers' `StableDiffusionPipeline` and
//! `StableDiffusionImg2ImgPipeline` step by step. The pipeline is pure: models in, pixels out,
//! no file I/O and no adapter bookkeeping (that is [`crate::session`]'s):
//! 1. encode prompts and negative prompts through a [`text::PromptEncoder`] (CFG only when
//!    guidance > 1);
//! 2. prepare latents ([`latents`]): txt2img — noise (given, or per-image seeded) ×
//!    `init_noise_sigma`; img2img — the init image fitted to the requested size
//!    ([`crate::image::fit`]), encoded by the VAE (posterior **mean**, where diffusers samples
//!    the posterior: the VAE's σ is tiny and the mean keeps a recipe independent of the VAE's
//!    RNG), × `scaling_factor`, then noised by the scheduler to the step where `strength`
//!    starts (given latents are then that noise);
//! 3. denoise ([`denoise`]): UNet on `[negative; positive]`, guidance, scheduler step — with a
//!    step callback carrying a cheap preview, and a cancel token checked before every UNet
//!    call;
//! 4. decode `latents / scaling_factor` with the VAE and convert to RGB8.

pub mod denoise;
pub mod latents;
pub mod text;

use std::path::Path;

use burn::tensor::{Device, FloatDType, Int, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::image::{RgbImage, to_rgb8};
use crate::job::{CancelToken, LatentsData, Precision};
use crate::loader::Loader;
use crate::models::clip_text::ClipTextModel;
use crate::models::paths::map_params;
use crate::models::unet_2d_condition::UNet2DConditionModel;
use crate::models::vae::AutoencoderKL;
use crate::schedulers::Noise;
use crate::schedulers::sampler::Sampler;
use crate::tensors::latents_to_host;
use crate::tokenizer::ClipTokenizer;
use crate::weights::{Checkpoint, CheckpointInfo};
use text::{ClipPromptEncoder, PromptEncoder};

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

/// An img2img source.
#[derive(Debug, Clone)]
pub struct InitImage {
    /// The image (any size: fitted to the request's size, see [`crate::image::fit`]).
    pub image: RgbImage,
    /// How much to change it, 0 < strength ≤ 1: the last `⌊steps·strength⌋` steps are run.
    pub strength: f64,
}

/// Everything that determines a txt2img (or img2img) result.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    /// One entry per prompt, as the text encoder sees it (A1111 emphasis syntax; no
    /// `<lora:…>` tags — [`crate::resolve`] takes those out).
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
    /// The noise the sampler's steps draw, replayed in order (each `[B, C, h, w]`) instead of
    /// the seeded streams: to reproduce another implementation's run of a stochastic sampler
    /// exactly (see [`Noise::replay`]). None for every normal run.
    pub step_noise: Option<Vec<LatentsData>>,
}

impl GenerationRequest {
    /// The seed of every image, prompt-major.
    pub fn seeds(&self) -> Vec<u64> {
        (0..(self.prompts.len() * self.batch) as u64)
            .map(|k| self.seed.wrapping_add(k))
            .collect()
    }

    /// One negative prompt per prompt (the one given for all, or "" when none).
    pub fn negatives_per_prompt(&self) -> Result<Vec<String>> {
        match self.negatives.len() {
            0 => Ok(vec![String::new(); self.prompts.len()]),
            1 => Ok(vec![self.negatives[0].clone(); self.prompts.len()]),
            n if n == self.prompts.len() => Ok(self.negatives.clone()),
            n => Err(Error::InvalidRequest(format!(
                "{n} negative prompts for {} prompts: give one, or one per prompt",
                self.prompts.len()
            ))),
        }
    }
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

/// An SD 1.x model on one device — text encoder, UNet, VAE, tokenizer and scheduler config
/// (diffusers' pipeline components) — and the generation it runs.
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
    device: Device,
    precision: Precision,
}

impl StableDiffusion {
    /// Loads a diffusers folder or single-file checkpoint (strictly) onto `device`, in f32.
    pub fn load(path: &Path, config_dir: Option<&Path>, device: &Device) -> Result<Self> {
        Self::load_at(path, config_dir, device, Precision::F32)
    }

    /// Loads a checkpoint with the UNet and text encoder at `precision` (the VAE in f32): each
    /// tensor goes from its file to the device in that type, so an f16 file loaded for f16
    /// inference never exists as f32 (peak host memory ≈ the model in f16, not twice the file).
    pub fn load_at(
        path: &Path,
        config_dir: Option<&Path>,
        device: &Device,
        precision: Precision,
    ) -> Result<Self> {
        let ckpt = Checkpoint::open(path, config_dir)?;
        Self::from_checkpoint(ckpt, device, precision)
    }

    /// Builds the models from an opened checkpoint, the UNet and text encoder at `precision`.
    pub fn from_checkpoint(
        ckpt: Checkpoint,
        device: &Device,
        precision: Precision,
    ) -> Result<Self> {
        let cfg = &ckpt.info.config;
        let dtype = precision.dtype().into();
        let mut ld = Loader::from_source(&ckpt.text_encoder, device).with_dtype(dtype);
        let text_encoder = ClipTextModel::load(&cfg.text_encoder, &mut ld)?;
        ld.finish("text encoder")?;
        let mut ld = Loader::from_source(&ckpt.unet, device).with_dtype(dtype);
        let unet = UNet2DConditionModel::load(&cfg.unet, &mut ld)?;
        ld.finish("UNet")?;
        // The VAE stays f32: its GroupNorms overflow in f16 (diffusers' `force_upcast`).
        let mut ld = Loader::from_source(&ckpt.vae, device);
        let vae = AutoencoderKL::load(&cfg.vae, &mut ld)?;
        ld.finish("VAE")?;
        tracing::info!(
            path = %ckpt.info.path.display(),
            layout = ?ckpt.info.layout,
            precision = precision.name(),
            "model loaded"
        );
        let mut sd = Self::from_models(text_encoder, unet, vae, ckpt.info, device)?;
        sd.precision = precision;
        Ok(sd)
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
            device: device.clone(),
            precision: Precision::F32,
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

    /// Converts the UNet and text encoder to `precision`. Going back from f16 to f32 does not
    /// restore the rounded bits. (A session with a LoRA stack converts through
    /// [`crate::session::Session::set_precision`], which converts the stack's kept weights
    /// too.)
    pub fn set_precision(&mut self, precision: Precision) {
        if precision == self.precision {
            return;
        }
        let dtype = precision.dtype();
        let all = |_: &str| true;
        self.unet = map_params(self.unet.clone(), &all, &mut |_, t| t.cast(dtype));
        self.text_encoder = map_params(self.text_encoder.clone(), &all, &mut |_, t| t.cast(dtype));
        self.precision = precision;
    }

    /// Pixels per latent.
    pub fn vae_scale_factor(&self) -> usize {
        self.info.config.vae.scale_factor()
    }

    /// The text encoding of this model (SD 1.x: one CLIP text encoder).
    pub fn prompt_encoder(&self) -> ClipPromptEncoder<'_> {
        ClipPromptEncoder {
            model: &self.text_encoder,
            tokenizer: &self.tokenizer,
            device: &self.device,
        }
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

    /// Text embeddings `[N, 77·k, hidden]` for `prompts` in AUTOMATIC1111's syntax (see
    /// [`ClipPromptEncoder`]).
    pub fn encode_prompts(&self, prompts: &[String], clip_skip: usize) -> Result<Tensor<3>> {
        Ok(self.prompt_encoder().encode(prompts, clip_skip)?.context)
    }

    /// Latent size `[h, w]` of a `width`×`height` image; an error unless both are positive
    /// multiples of the VAE factor (a size the UNet's levels do not divide is resized inside).
    pub fn latent_size(&self, width: usize, height: usize) -> Result<[usize; 2]> {
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
    pub fn unet_forward(&self, sample: Tensor<4>, t: f64, context: &Tensor<3>) -> Tensor<4> {
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
        let negatives = req.negatives_per_prompt()?;
        let [h, w] = self.latent_size(req.width, req.height)?;
        let seeds = req.seeds();
        let mut noise = match &req.step_noise {
            Some(draws) => Noise::replay(&seeds, draws.clone()),
            None => Noise::new(&seeds),
        };
        let mut scheduler = req.sampler.scheduler(&self.info.scheduler, req.steps)?;

        // 1. Prompts, repeated `batch` times each (prompt-major, as diffusers).
        let guided = req.cfg > 1.0;
        let context =
            self.encode_prompt(&req.prompts, &negatives, req.batch, guided, req.clip_skip)?;

        // 2. Initial latents, and the first UNet call (img2img skips the first steps).
        let shape = [seeds.len(), self.vae.latent_channels, h, w];
        let (latents, start) = latents::prepare(self, req, shape, scheduler.as_ref(), &mut noise)?;

        // 3. Denoising loop.
        let latents = denoise::denoise(
            self,
            denoise::Denoise {
                scheduler: scheduler.as_mut(),
                latents,
                start,
                context: &context,
                cfg: guided.then_some(req.cfg),
                preview: req.preview,
            },
            &mut noise,
            cancel,
            on_step,
        )?;
        noise.finish()?;
        let final_latents = latents_to_host(latents.clone())?;
        if final_latents.values.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite("the denoising loop".into()));
        }

        // 4. Decode.
        Ok(GenerationOutput {
            images: self.decode(latents)?,
            latents: final_latents,
            seeds,
        })
    }

    /// Step 1: the text conditioning `[N, L, D]` (cast to the model's precision) of every
    /// image, prompt-major: with guidance, the negatives' first and then the prompts'.
    fn encode_prompt(
        &self,
        prompts: &[String],
        negatives: &[String],
        batch: usize,
        guided: bool,
        clip_skip: usize,
    ) -> Result<Tensor<3>> {
        let repeat = |v: &[String]| {
            v.iter()
                .flat_map(|p| std::iter::repeat_n(p.clone(), batch))
                .collect::<Vec<_>>()
        };
        let mut all = if guided {
            repeat(negatives)
        } else {
            Vec::new()
        };
        all.extend(repeat(prompts));
        let embeds = self.prompt_encoder().encode(&all, clip_skip)?;
        Ok(embeds.context.cast(self.precision.dtype()))
    }

    /// Step 4: latents `[B, C, h, w]` (scaled, as the UNet sees them) → RGB8 images.
    pub fn decode(&self, latents: Tensor<4>) -> Result<Vec<RgbImage>> {
        to_rgb8(self.vae.decode(latents / self.vae.scaling_factor))
    }

    /// The live preview of predicted clean latents `x0` `[B, C, h, w]`: decoded by the VAE when
    /// that is cheap (images of at most [`EXACT_PREVIEW_PIXELS`], like the shipped model's
    /// 64×64, whose latents no fixed colour map describes), else the fixed linear map of
    /// [`crate::preview`].
    pub fn preview(&self, x0: Tensor<4>) -> Result<Vec<RgbImage>> {
        let [_, _, h, w] = x0.dims();
        let f = self.vae_scale_factor();
        if h * f * w * f <= EXACT_PREVIEW_PIXELS {
            return self.decode(x0);
        }
        Ok(crate::preview::latents_to_rgb(&latents_to_host(x0)?, f))
    }
}

/// Images up to this many pixels get previews decoded by the VAE (a few milliseconds for a
/// 64×64 image; an SD 1.5 decode at 512×512 takes seconds on a CPU).
pub const EXACT_PREVIEW_PIXELS: usize = 96 * 96;
