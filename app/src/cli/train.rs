//! `kiln train lora|ti`: train a LoRA or an embedding from a folder of images (and `.txt`
//! captions) on the device asked for, reporting the dataset, the plan and every step (as text, or as JSON
//! lines with `--json`: [`super::training_events`]); checkpoints and `--resume`.

use std::path::PathBuf;

use anyhow::Result;
use kiln_engine::device::DeviceSpec;
use kiln_engine::job::{CancelToken, PauseToken, PrecisionChoice};
use kiln_engine::training::lora::LoraConfig;
use kiln_engine::training::lr_schedule::LrSchedule;
use kiln_engine::training::trainer::{
    Method, TrainingConfig, latest_checkpoint, train_lora, train_textual_inversion,
};

use super::training_events::Report;

/// What to train.
#[derive(Debug, clap::Subcommand)]
pub enum TrainCommand {
    /// Train a LoRA on the UNet's attention layers.
    Lora(Box<LoraArgs>),
    /// Train a textual-inversion embedding (a new token).
    Ti(Box<TiArgs>),
    /// Train a whole model (VAE, UNet, text encoder) from an architecture file or a model.
    Base(Box<super::train_base::BaseArgs>),
}

/// Options of `kiln train lora`.
#[derive(Debug, clap::Args)]
pub struct LoraArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// LoRA rank.
    #[arg(long, default_value_t = 4)]
    rank: usize,
    /// LoRA alpha [default: the rank].
    #[arg(long)]
    alpha: Option<f64>,
    /// UNet layers to adapt, comma-separated: to_q, to_k, to_v, to_out.0, ff.net.0.proj,
    /// ff.net.2, proj_in, proj_out, conv1, conv2 (resnet convolutions).
    #[arg(long, value_delimiter = ',', default_value = "to_q,to_k,to_v,to_out.0")]
    targets: Vec<String>,
    /// Also write the LoRA in diffusers/PEFT format (NAME.peft.safetensors).
    #[arg(long)]
    export_peft: bool,
    /// The word that calls the LoRA up in a prompt, recorded in the file
    /// (modelspec.trigger_phrase) [default: the word every caption shares, if any].
    #[arg(long)]
    trigger: Option<String>,
    /// Text-encoder layers to adapt too, comma-separated: q_proj, k_proj, v_proj, out_proj,
    /// fc1, fc2 (none by default).
    #[arg(long, value_delimiter = ',')]
    text_encoder_targets: Vec<String>,
}

/// Options of `kiln train ti`.
#[derive(Debug, clap::Args)]
pub struct TiArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The new token, e.g. "<my-style>" (captions without it get it in front).
    #[arg(long)]
    token: String,
    /// Vectors per token.
    #[arg(long, default_value_t = 1)]
    vectors: usize,
    /// A word whose embedding starts the vectors.
    #[arg(long, default_value = "style")]
    init_word: String,
}

/// Options every method shares.
#[derive(Debug, clap::Args)]
pub struct CommonArgs {
    /// Base checkpoint (diffusers folder or single-file .safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Folder of images (png, jpg, webp) with optional same-name .txt captions.
    #[arg(long)]
    data: PathBuf,
    /// Output folder (the LoRA, checkpoints/).
    #[arg(long)]
    out: PathBuf,
    /// Name of the LoRA file [default: the data folder's name].
    #[arg(long)]
    name: Option<String>,
    /// Training resolution (square; bucket area with --buckets).
    #[arg(long, default_value_t = 512)]
    resolution: usize,
    /// Times each image is seen per epoch.
    #[arg(long, default_value_t = 1)]
    repeats: usize,
    /// Repeats for one image, overriding --repeats: FILE=N (repeatable; FILE is the image's name).
    #[arg(long = "image-repeats", value_name = "FILE=N")]
    image_repeats: Vec<String>,
    /// Epochs.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Stop after this many steps (overrides --epochs).
    #[arg(long)]
    steps: Option<usize>,
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Gradient accumulation (micro-batches per step).
    #[arg(long, default_value_t = 1)]
    accumulate: usize,
    /// Learning rate [default: 1e-4 for a LoRA, 5e-3 for an embedding].
    #[arg(long)]
    lr: Option<f64>,
    /// constant, constant-with-warmup, cosine or linear.
    #[arg(long, default_value = "constant-with-warmup")]
    lr_schedule: LrSchedule,
    /// Warm-up steps.
    #[arg(long, default_value_t = 0)]
    warmup: usize,
    /// min-SNR-γ (0 = off).
    #[arg(long, default_value_t = 5.0)]
    snr_gamma: f64,
    /// Noise offset.
    #[arg(long, default_value_t = 0.0)]
    noise_offset: f64,
    /// Clip the global gradient norm (0 = off).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Caption for images without a .txt.
    #[arg(long, default_value = "")]
    default_caption: String,
    /// Random crops instead of center crops.
    #[arg(long)]
    random_crop: bool,
    /// Random horizontal flips.
    #[arg(long)]
    flip: bool,
    /// Aspect-ratio buckets.
    #[arg(long)]
    buckets: bool,
    /// Skip images smaller than the resolution instead of upscaling them.
    #[arg(long)]
    skip_small: bool,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Checkpoint every N steps (0 = only at the end).
    #[arg(long, default_value_t = 100)]
    checkpoint_every: usize,
    /// Compute device: auto, cpu, cuda[:N], metal, vulkan or wgpu (what this build has; a
    /// checkpoint resumes on any device).
    #[arg(long, default_value = "auto")]
    device: DeviceSpec,
    /// Precision of the frozen model: auto (f32 on the CPU; bf16 on a GPU that computes in
    /// it, else f16), f32, f16 or bf16. What trains is always f32.
    #[arg(long, default_value = "auto")]
    precision: PrecisionChoice,
    /// Continue from a checkpoint (a file, or "latest" for the newest in OUT/checkpoints).
    #[arg(long)]
    resume: Option<String>,
    /// Report the run as JSON lines on stdout (started, step, checkpoint, samples, finished)
    /// instead of text on stderr.
    #[arg(long)]
    json: bool,
}

/// Runs `kiln train …`.
pub fn train(command: TrainCommand) -> Result<()> {
    let (a, method, default_lr, (export_peft, trigger)) = match command {
        TrainCommand::Lora(l) => {
            let lora = LoraConfig {
                rank: l.rank,
                alpha: l.alpha.unwrap_or(l.rank as f64),
                targets: l.targets.clone(),
                text_encoder_targets: l.text_encoder_targets.clone(),
            };
            (
                l.common,
                Method::Lora(lora),
                1e-4,
                (l.export_peft, l.trigger),
            )
        }
        TrainCommand::Base(b) => return super::train_base::train_base(*b),
        TrainCommand::Ti(t) => {
            let ti = kiln_engine::training::textual_inversion::TiConfig {
                token: t.token,
                vectors: t.vectors,
                init_word: t.init_word,
            };
            (t.common, Method::TextualInversion(ti), 5e-3, (false, None))
        }
    };
    let report = Report::from_flag(a.json);
    let name = a.name.clone().unwrap_or_else(|| {
        a.data
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "lora".into())
    });
    let config = TrainingConfig {
        model: a.model.clone(),
        data: a.data.clone(),
        output: a.out.clone(),
        name,
        method,
        dataset: kiln_engine::training::dataset::DatasetOptions {
            resolution: a.resolution,
            upscale_small: !a.skip_small,
            default_caption: a.default_caption.clone(),
            random_crop: a.random_crop,
            flip: a.flip,
            buckets: a.buckets,
            repeats: a.repeats,
            image_repeats: a
                .image_repeats
                .iter()
                .map(|spec| {
                    let (name, n) = spec.rsplit_once('=').ok_or_else(|| {
                        anyhow::anyhow!("--image-repeats takes FILE=N, got '{spec}'")
                    })?;
                    Ok((
                        name.to_owned(),
                        n.parse::<usize>().map_err(|_| {
                            anyhow::anyhow!("--image-repeats {spec}: N must be a whole number")
                        })?,
                    ))
                })
                .collect::<Result<_>>()?,
        },
        epochs: a.epochs,
        max_steps: a.steps,
        batch_size: a.batch,
        gradient_accumulation: a.accumulate,
        learning_rate: a.lr.unwrap_or(default_lr),
        export_peft,
        trigger,
        lr_schedule: a.lr_schedule,
        warmup_steps: a.warmup,
        max_grad_norm: (a.max_grad_norm > 0.0).then_some(a.max_grad_norm),
        snr_gamma: (a.snr_gamma > 0.0).then_some(a.snr_gamma),
        noise_offset: a.noise_offset,
        seed: a.seed,
        checkpoint_every: a.checkpoint_every,
        device: a.device.clone(),
        precision: a.precision,
        ..TrainingConfig::default()
    };
    let resume = match a.resume.as_deref() {
        Some("latest") => Some(latest_checkpoint(&config).ok_or_else(|| {
            anyhow::anyhow!(
                "no checkpoint in {}",
                config.output.join("checkpoints").display()
            )
        })?),
        Some(p) => Some(PathBuf::from(p)),
        None => None,
    };
    let train = match config.method {
        Method::Lora(_) => train_lora,
        Method::TextualInversion(_) => train_textual_inversion,
    };
    let out = train(
        &config,
        resume.as_deref(),
        &CancelToken::new(),
        &PauseToken::default(),
        &mut |e| report.event(&e, &[]),
    )?;
    report.finished(&out);
    Ok(())
}
