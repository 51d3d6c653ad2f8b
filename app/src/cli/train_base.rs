//! `kiln train base`: train a whole model — the VAE first (an autoencoder with a KL term),
//! then the UNet and the text encoder on the cached latents — from an architecture file or
//! from an existing model, into a diffusers folder. Sample images go to `OUT/samples/`.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use kiln_engine::device::DeviceSpec;
use kiln_engine::job::{CancelToken, PauseToken};
use kiln_engine::training::base::{
    BaseTrainingConfig, Part, VaePhase, latest_base_checkpoint, train_base as run,
};
use kiln_engine::training::lr_schedule::LrSchedule;
use kiln_engine::training::run::TrainingEvent;

use super::training_events::Report;

/// Options of `kiln train base`.
#[derive(Debug, clap::Args)]
pub struct BaseArgs {
    /// Architecture file: `{"unet": …, "vae": …, "text_encoder": …, "scheduler": …}` with
    /// diffusers' config fields; the weights start random.
    #[arg(long, value_name = "ARCH.json")]
    config: Option<PathBuf>,
    /// Start from this model instead (diffusers folder or .safetensors).
    #[arg(long)]
    init: Option<PathBuf>,
    /// Folder of images (png, jpg, webp) with same-name .txt captions.
    #[arg(long)]
    data: PathBuf,
    /// Output folder: the trained model (diffusers layout), checkpoints/ and samples/.
    #[arg(long)]
    out: PathBuf,
    /// Components to train, comma-separated: vae, unet, text_encoder.
    #[arg(long, value_delimiter = ',', default_value = "vae,unet,text_encoder")]
    train: Vec<String>,
    /// With --init: components to draw at random from --seed instead of taking them from
    /// the --init model, comma-separated (a new text encoder for a trained UNet, say).
    #[arg(long, value_delimiter = ',', value_name = "PARTS")]
    fresh: Vec<String>,
    /// Standard deviation of a random text encoder's token and position embeddings. CLIP's
    /// 0.02 leaves a small encoder's outputs nearly the same for every word; 0.5 keeps each
    /// word and its place in the caption apart.
    #[arg(long, default_value_t = 0.02)]
    text_embedding_std: f64,
    /// Words whose token embeddings are drawn anew at --text-embedding-std (from --seed),
    /// the rest of the text encoder kept, comma-separated: gives words a frozen encoder
    /// blurs together ("circle,square,star") a direction of their own.
    #[arg(long, value_delimiter = ',', value_name = "WORDS")]
    fresh_words: Vec<String>,
    /// Square training resolution.
    #[arg(long, default_value_t = 64)]
    resolution: usize,
    /// Optimiser steps of the VAE phase.
    #[arg(long, default_value_t = 2000)]
    vae_steps: usize,
    /// Images per VAE step.
    #[arg(long, default_value_t = 16)]
    vae_batch: usize,
    /// Learning rate of the VAE phase.
    #[arg(long, default_value_t = 1e-3)]
    vae_lr: f64,
    /// Weight of the VAE's KL term (against the mean absolute pixel error).
    #[arg(long, default_value_t = 1e-6)]
    kl_weight: f64,
    /// Weight of the VAE's edge term (error of neighbouring-pixel differences).
    #[arg(long, default_value_t = 1.0)]
    edge_weight: f64,
    /// Extra weight of the VAE's pixel error within two pixels of an edge.
    #[arg(long, default_value_t = 0.0)]
    detail_weight: f64,
    /// Optimiser steps of the diffusion phase (UNet and text encoder).
    #[arg(long, default_value_t = 10_000)]
    steps: usize,
    /// Images per diffusion step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Learning rate of the diffusion phase.
    #[arg(long, default_value_t = 5e-4)]
    lr: f64,
    /// constant, constant-with-warmup, cosine or linear (each phase runs its own).
    #[arg(long, default_value = "cosine")]
    lr_schedule: LrSchedule,
    /// Warm-up steps (each phase).
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 1e-2)]
    weight_decay: f64,
    /// min-SNR-γ (0 = plain MSE).
    #[arg(long, default_value_t = 5.0)]
    snr_gamma: f64,
    /// Floor of the loss weighting in x₀ terms: steps noisier than this SNR count as much as
    /// it does (1 = truncated-SNR weighting, like v-prediction's loss), so the noisy steps that
    /// decide the layout are learned from the caption; 0 = off (plain min-SNR-γ).
    #[arg(long, default_value_t = 0.0)]
    snr_floor: f64,
    /// Probability of training on the empty caption (for classifier-free guidance).
    #[arg(long, default_value_t = 0.1)]
    caption_dropout: f64,
    /// Noise offset: adds this × one normal value per image and channel to the noise, so the
    /// model has to learn overall colours from the caption (0 = off).
    #[arg(long, default_value_t = 0.0)]
    noise_offset: f64,
    /// Levels of multi-resolution ("pyramid") noise added to the noise: normal values on grids
    /// of ½, ¼, … the latent's height and width, upsampled, meant to make the model take the
    /// layout from the caption rather than from the noise (0 = off; kohya's option; strong
    /// discounts change what sampling from white noise gives).
    #[arg(long, default_value_t = 0)]
    multires_noise_iterations: usize,
    /// Weight ratio between successive levels of multi-resolution noise.
    #[arg(long, default_value_t = 0.3)]
    multires_noise_discount: f64,
    /// Replace the noise schedule of --config or --init with this diffusers scheduler config
    /// (a `scheduler_config.json`); the saved model carries it.
    #[arg(long, value_name = "scheduler_config.json")]
    scheduler: Option<PathBuf>,
    /// Token ids per caption (the tokenizer's model_max_length, 77 for SD 1.x): fewer for
    /// short captions, so the UNet's cross-attention is not spread over the padding. Default:
    /// the --init model's, or 77.
    #[arg(long, value_name = "N")]
    tokenizer_max_length: Option<usize>,
    /// EMA decay of the saved weights (0 = no EMA).
    #[arg(long, default_value_t = 0.999)]
    ema_decay: f64,
    /// Clip the global gradient norm (0 = off).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Seed of the initial weights and of every random choice.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Checkpoint every N steps (and at the end of each phase).
    #[arg(long, default_value_t = 500)]
    checkpoint_every: usize,
    /// Checkpoints to keep (0 = all).
    #[arg(long, default_value_t = 2)]
    keep_checkpoints: usize,
    /// Sample images every N diffusion steps (0 = never), written to OUT/samples/.
    #[arg(long, default_value_t = 0)]
    sample_every: usize,
    /// A sample prompt (repeatable).
    #[arg(long = "sample-prompt")]
    sample_prompts: Vec<String>,
    /// Save the model in half precision.
    #[arg(long)]
    fp16: bool,
    /// Compute device: auto, cpu, cuda[:N], metal, vulkan or wgpu (what this build has; a
    /// checkpoint resumes on any device).
    #[arg(long, default_value = "auto")]
    device: DeviceSpec,
    /// Continue from a checkpoint (a file, or "latest" for the newest in OUT/checkpoints).
    #[arg(long)]
    resume: Option<String>,
    /// Report the run as JSON lines on stdout (started, phase, step, checkpoint, samples,
    /// finished) instead of text on stderr.
    #[arg(long)]
    json: bool,
}

/// Runs `kiln train base`.
pub fn train_base(a: BaseArgs) -> Result<()> {
    let parts = |names: &[String]| {
        names
            .iter()
            .map(|s| Part::parse(s))
            .collect::<kiln_engine::Result<Vec<_>>>()
    };
    let train = parts(&a.train)?;
    let fresh = parts(&a.fresh)?;
    let positive = |v: f64| (v > 0.0).then_some(v);
    let scheduler = match &a.scheduler {
        Some(path) => Some(
            serde_json::from_str(
                &std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
            )
            .with_context(|| format!("{} is not a scheduler config", path.display()))?,
        ),
        None => None,
    };
    let config = BaseTrainingConfig {
        architecture: a.config,
        init: a.init,
        data: a.data,
        output: a.out,
        train,
        resolution: a.resolution,
        vae: VaePhase {
            steps: a.vae_steps,
            batch_size: a.vae_batch,
            learning_rate: a.vae_lr,
            kl_weight: a.kl_weight,
            edge_weight: a.edge_weight,
            detail_weight: a.detail_weight,
        },
        steps: a.steps,
        batch_size: a.batch,
        learning_rate: a.lr,
        lr_schedule: a.lr_schedule,
        warmup_steps: a.warmup,
        adamw: kiln_engine::training::adamw::AdamWConfig {
            weight_decay: a.weight_decay,
            ..Default::default()
        },
        max_grad_norm: positive(a.max_grad_norm),
        snr_gamma: positive(a.snr_gamma),
        snr_floor: a.snr_floor,
        caption_dropout: a.caption_dropout,
        noise_offset: a.noise_offset,
        multires_noise_iterations: a.multires_noise_iterations,
        multires_noise_discount: a.multires_noise_discount,
        ema_decay: positive(a.ema_decay),
        scheduler,
        tokenizer_max_length: a.tokenizer_max_length,
        fresh,
        text_embedding_std: a.text_embedding_std,
        fresh_words: a.fresh_words,
        seed: a.seed,
        checkpoint_every: a.checkpoint_every,
        keep_checkpoints: a.keep_checkpoints,
        sample_every: a.sample_every,
        sample_prompts: a.sample_prompts,
        half_precision: a.fp16,
        device: a.device,
    };
    let resume = match a.resume.as_deref() {
        Some("latest") => Some(latest_base_checkpoint(&config).ok_or_else(|| {
            anyhow!(
                "no checkpoint in {}",
                config.output.join("checkpoints").display()
            )
        })?),
        Some(p) => Some(PathBuf::from(p)),
        None => None,
    };
    let samples = config.output.join("samples");
    let vae_steps = config.vae_steps();
    let diffusion_parts = match (config.trains(Part::Unet), config.trains(Part::TextEncoder)) {
        (true, true) => "the UNet and text encoder",
        (true, false) => "the UNet",
        _ => "the text encoder",
    };
    let report = Report::from_flag(a.json);
    let mut failed = None;
    // Each phase is announced at the first step it runs (a resumed run starts mid-phase).
    let mut phase = None;
    let out = run(
        &config,
        resume.as_deref(),
        &CancelToken::new(),
        &PauseToken::default(),
        &mut |e| {
            let mut files = Vec::new();
            match &e {
                TrainingEvent::Step { step, total, .. } => {
                    let now = if *step <= vae_steps {
                        "vae"
                    } else {
                        "diffusion"
                    };
                    if phase.replace(now) != Some(now) {
                        if now == "vae" {
                            report.phase("vae", &format!("the VAE ({vae_steps} steps)"), vae_steps)
                        } else {
                            report.phase("diffusion", diffusion_parts, total - vae_steps)
                        }
                    }
                }
                TrainingEvent::Samples { step, images } => {
                    match save_samples(&samples, *step, images) {
                        Ok(saved) => files = saved,
                        Err(err) => {
                            failed.get_or_insert(err);
                        }
                    }
                }
                _ => {}
            }
            report.event(&e, &files);
        },
    )?;
    if let Some(err) = failed {
        eprintln!("warning: could not save sample images: {err}");
    }
    report.finished(&out);
    Ok(())
}

/// Writes sample images as `DIR/stepNNNNNN-K.png`; returns the files.
fn save_samples(
    dir: &std::path::Path,
    step: usize,
    images: &[kiln_engine::image::RgbImage],
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::with_capacity(images.len());
    for (k, img) in images.iter().enumerate() {
        let path = dir.join(format!("step{step:06}-{k}.png"));
        kiln_engine::image::write_png(&path, img, &[])?;
        files.push(path);
    }
    Ok(files)
}
