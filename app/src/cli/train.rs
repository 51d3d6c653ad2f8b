//! `kiln train lora|ti`: train a LoRA or an embedding from a folder of images (and `.txt`
//! captions) on the CPU,
//! printing the dataset report, the plan and one line per step; checkpoints and `--resume`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use kiln_engine::pipeline::CancelToken;
use kiln_engine::training::lora::LoraConfig;
use kiln_engine::training::lr_schedule::LrSchedule;
use kiln_engine::training::trainer::{
    PauseToken, TrainingConfig, TrainingEvent, latest_checkpoint, train_lora,
};

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
    lr_schedule: String,
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
    /// Continue from a checkpoint (a file, or "latest" for the newest in OUT/checkpoints).
    #[arg(long)]
    resume: Option<String>,
}

/// Runs `kiln train …`.
pub fn train(command: TrainCommand) -> Result<()> {
    let (a, lora, ti, default_lr, export_peft) = match command {
        TrainCommand::Lora(l) => {
            let lora = LoraConfig {
                rank: l.rank,
                alpha: l.alpha.unwrap_or(l.rank as f64),
                targets: l.targets.clone(),
                text_encoder_targets: l.text_encoder_targets.clone(),
            };
            (l.common, lora, None, 1e-4, l.export_peft)
        }
        TrainCommand::Base(b) => return super::train_base::train_base(*b),
        TrainCommand::Ti(t) => {
            let ti = kiln_engine::training::textual_inversion::TiConfig {
                token: t.token,
                vectors: t.vectors,
                init_word: t.init_word,
            };
            (t.common, LoraConfig::default(), Some(ti), 5e-3, false)
        }
    };
    let lr_schedule = parse_lr_schedule(&a.lr_schedule)?;
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
        lora,
        textual_inversion: ti,
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
        lr_schedule,
        warmup_steps: a.warmup,
        max_grad_norm: (a.max_grad_norm > 0.0).then_some(a.max_grad_norm),
        snr_gamma: (a.snr_gamma > 0.0).then_some(a.snr_gamma),
        noise_offset: a.noise_offset,
        seed: a.seed,
        checkpoint_every: a.checkpoint_every,
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
    let out = train_lora(
        &config,
        resume.as_deref(),
        &CancelToken::new(),
        &PauseToken::default(),
        &mut |e| print_event(&e),
    )?;
    println!("{}", out.display());
    Ok(())
}

/// Parses `--lr-schedule`.
pub(super) fn parse_lr_schedule(name: &str) -> Result<LrSchedule> {
    Ok(match name {
        "constant" => LrSchedule::Constant,
        "constant-with-warmup" => LrSchedule::ConstantWithWarmup,
        "cosine" => LrSchedule::Cosine,
        "linear" => LrSchedule::Linear,
        other => bail!(
            "unknown --lr-schedule '{other}' (constant, constant-with-warmup, cosine, linear)"
        ),
    })
}

/// Prints a training event to stderr: the data report and plan, one line per step, checkpoints.
pub(super) fn print_event(e: &TrainingEvent) {
    match e {
        TrainingEvent::Started {
            report,
            plan,
            from_step,
        } => {
            eprintln!("data: {}", report.summary());
            for entry in &report.entries {
                for issue in &entry.issues {
                    eprintln!("  {}: {issue:?}", entry.path.display());
                }
            }
            eprintln!(
                "plan: {}{}",
                plan.describe(),
                if *from_step > 0 {
                    format!(" (resuming at step {from_step})")
                } else {
                    String::new()
                }
            );
        }
        TrainingEvent::Step {
            step,
            total,
            epoch,
            loss,
            smoothed_loss,
            lr,
            grad_norm,
            it_per_s,
            eta_s,
        } => {
            eprintln!(
                "step {step}/{total} epoch {epoch} loss {loss:.5} (smoothed {smoothed_loss:.5}) lr {lr:.3e} grad-norm {grad_norm:.4} {it_per_s:.2} it/s ETA {eta_s:.0}s"
            );
        }
        TrainingEvent::Checkpoint { path, .. } => eprintln!("checkpoint: {}", path.display()),
        TrainingEvent::Samples { step, images } => {
            eprintln!("samples at step {step}: {}", images.len())
        }
    }
}
