//! `kiln generate`: txt2img and img2img from the command line, writing PNGs that carry
//! A1111's `parameters` and Kiln's exact recipe; `--from IMAGE.png` starts from an image's
//! recipe (Kiln's, or A1111/ComfyUI/InvokeAI settings) and applies the flags given as
//! overrides. The flags become a [`GenerationSpec`]; the engine's resolver
//! ([`kiln_engine::resolve`]) makes the job, as it does for the window.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use kiln_engine::adapters::AdapterId;
use kiln_engine::device::DeviceSpec;
use kiln_engine::job::{CancelToken, LatentsData, PrecisionChoice};
use kiln_engine::metadata::{read_image_info, write_png_with_recipe};
use kiln_engine::pipeline::StepProgress;
use kiln_engine::resolve::{
    EmbeddingChoice, GenerationSpec, InitImageChoice, LoraChoice, ModelChoice, resolve,
    resolve_model,
};
use kiln_engine::schedulers::{SamplerKind, Schedule};
use kiln_engine::session::{Generated, Session};
use kiln_engine::weights::Checkpoint;
use kiln_engine::weights::safetensors::{SafeTensors, WriteTensor, write_f32};

/// Options of `kiln generate`. Settings left out come from `--from`, else the defaults shown.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Start from the recipe in this PNG (Kiln, A1111, ComfyUI or InvokeAI); other flags override it.
    #[arg(long, value_name = "IMAGE.png")]
    from: Option<PathBuf>,
    /// Checkpoint: a diffusers folder or a single-file SD 1.x .safetensors [default: the
    /// recipe's model with --from, else the built-in kiln-tiny].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Diffusers folder whose */config.json describe a single-file checkpoint.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Prompt (repeat for several).
    #[arg(long = "prompt")]
    prompts: Vec<String>,
    /// Negative prompt: one for all prompts, or one per prompt.
    #[arg(long = "negative")]
    negatives: Vec<String>,
    /// Sampler: ddim, ddpm, euler, euler-a, heun, lms, dpmpp-2m, dpmpp-2m-sde, dpmpp-2s-a, unipc, lcm [default: ddim].
    #[arg(long)]
    sampler: Option<SamplerKind>,
    /// Sigma schedule: default (the model's spacing), karras or exponential (not for ddim, ddpm, lcm).
    #[arg(long)]
    schedule: Option<Schedule>,
    /// Same as `--schedule karras`.
    #[arg(long)]
    karras: bool,
    /// DDIM η (0 = deterministic) [default: 0].
    #[arg(long)]
    eta: Option<f64>,
    /// Denoising steps [default: 25].
    #[arg(long)]
    steps: Option<usize>,
    /// Classifier-free guidance scale [default: 7.5].
    #[arg(long)]
    cfg: Option<f64>,
    /// Seed of the first image (image k uses seed + k); random when omitted.
    #[arg(long)]
    seed: Option<u64>,
    /// Width in pixels [default: the init image's width rounded down to a multiple of 8, else the model's native size].
    #[arg(long)]
    width: Option<usize>,
    /// Height in pixels [default: as --width].
    #[arg(long)]
    height: Option<usize>,
    /// Images per prompt.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Batches one after another (A1111's batch count): batch k starts at seed + k·batch.
    #[arg(long, default_value_t = 1)]
    batch_count: usize,
    /// img2img source (PNG, JPEG or WebP); it is scaled to cover the output size and
    /// center-cropped.
    #[arg(long, value_name = "FILE")]
    init_image: Option<PathBuf>,
    /// img2img strength, 0 < F ≤ 1: the last ⌊steps·F⌋ steps run [default: 0.75].
    #[arg(long, value_name = "F")]
    strength: Option<f64>,
    /// Initial noise: safetensors with key `latents`, f32 [B, 4, H/f, W/f], before
    /// init_noise_sigma; with --init-image, the noise added to the encoded image.
    #[arg(long)]
    latents: Option<PathBuf>,
    /// Write the final latents (before VAE decoding) here, key `latents`.
    #[arg(long)]
    save_latents: Option<PathBuf>,
    /// LoRA to apply: FILE or FILE:WEIGHT (repeatable; weight 1 by default, negative allowed).
    #[arg(long = "lora", value_name = "FILE[:WEIGHT]")]
    loras: Vec<String>,
    /// Folder where `<lora:NAME:WEIGHT>` prompt tags look for NAME.safetensors.
    #[arg(long)]
    lora_dir: Option<PathBuf>,
    /// Textual-inversion embedding: FILE or FILE:TOKEN (repeatable; token = file stem by default).
    #[arg(long = "embedding", value_name = "FILE[:TOKEN]")]
    embeddings: Vec<String>,
    /// CLIP skip: 1 uses the text encoder's last layer, 2 the one before [default: the recipe's, else 1].
    #[arg(long)]
    clip_skip: Option<usize>,
    /// Compute device: auto, cpu, cuda[:N], metal, vulkan or wgpu (what this build has).
    #[arg(long, default_value = "auto")]
    device: DeviceSpec,
    /// UNet/text-encoder precision: auto (f16 on GPUs, f32 on the CPU), f32, f16 or bf16 [default: auto, or the recipe's].
    #[arg(long)]
    precision: Option<PrecisionChoice>,
    /// Output PNG; with several images, a-0.png, a-1.png, …
    #[arg(long)]
    out: PathBuf,
    /// Print one JSON object on stdout instead of the paths: the images, seeds, device and
    /// precision, seconds to load, to generate and per batch, UNet calls per second, the
    /// device's peak memory (GPU backends) and the process's peak resident memory (Linux).
    #[arg(long)]
    json: bool,
}

impl GenerateArgs {
    /// What the flags ask for (the rest comes from `--from` or the defaults, in the resolver).
    fn spec(&self) -> Result<GenerationSpec> {
        let loras = self
            .loras
            .iter()
            .map(|s| {
                split_suffix(s, |w| w.parse::<f32>().ok()).map(|(p, w)| LoraChoice {
                    path: PathBuf::from(p),
                    weight: w.unwrap_or(1.0),
                })
            })
            .collect::<Result<_>>()?;
        let embeddings = self
            .embeddings
            .iter()
            .map(|s| {
                split_suffix(s, |t| {
                    (!t.is_empty() && !t.contains(['/', '\\'])).then(|| t.to_owned())
                })
                .map(|(f, token)| EmbeddingChoice {
                    path: PathBuf::from(f),
                    token,
                })
            })
            .collect::<Result<_>>()?;
        Ok(GenerationSpec {
            model: self.model.clone(),
            config: self.config.clone(),
            prompts: self.prompts.clone(),
            negatives: self.negatives.clone(),
            sampler: self.sampler,
            schedule: if self.karras {
                Some(Schedule::Karras)
            } else {
                self.schedule
            },
            eta: self.eta,
            steps: self.steps,
            cfg: self.cfg,
            seed: self.seed,
            width: self.width,
            height: self.height,
            batch_size: self.batch,
            batch_count: self.batch_count,
            clip_skip: self.clip_skip,
            loras,
            lora_dir: self.lora_dir.clone(),
            embeddings,
            init_image: self.init_image.clone().map(|path| InitImageChoice {
                path,
                expected_sha256: None,
            }),
            strength: self.strength,
            latents: self.latents.as_deref().map(read_latents).transpose()?,
            device: Some(self.device.clone()),
            precision: self.precision,
            preview: false,
        })
    }
}

/// Progress on stderr: a bar with it/s and ETA on a terminal, plain lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
}

impl Progress {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} steps  {per_sec}  ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Progress {
            bar,
            started: Instant::now(),
        }
    }

    fn step(&self, p: &StepProgress) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(p.total as u64);
                bar.set_position(p.step as u64);
            }
            None => {
                let secs = self.started.elapsed().as_secs_f64();
                let rate = p.step as f64 / secs.max(1e-9);
                let eta = (p.total - p.step) as f64 / rate.max(1e-9);
                eprintln!("step {}/{}  {rate:.2} it/s  ETA {eta:.0}s", p.step, p.total);
            }
        }
    }

    fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Runs `kiln generate`.
pub fn generate(args: GenerateArgs) -> Result<()> {
    let base = args.from.as_deref().map(read_image_info).transpose()?;
    let spec = args.spec()?;
    let model = match resolve_model(&spec, base.as_ref())? {
        Some(m) => m,
        None => ModelChoice {
            path: crate::paths::bundled_or_error()?,
            config: spec.config.clone(),
            device: spec.device.clone().unwrap_or_default(),
            precision: spec.precision.unwrap_or_default(),
        },
    };
    let job = resolve(&spec, base.as_ref(), &[], || {
        Ok(Checkpoint::open(&model.path, model.config.as_deref())?
            .info
            .native_size())
    })?;
    let loading = Instant::now();
    let mut session = Session::load(&model, crate::paths::cache_dir().as_deref())?;
    let load_seconds = loading.elapsed().as_secs_f64();
    for (k, l) in job.loras.iter().enumerate() {
        let adapter = session.open_lora(&l.path)?;
        session.add_lora(AdapterId(k as u64), adapter, l.weight, true);
    }
    for (k, e) in job.embeddings.iter().enumerate() {
        session.load_embedding(AdapterId(k as u64), &e.path, e.token.as_deref())?;
    }
    let progress = Progress::new();
    let mut generated: Vec<Generated> = Vec::new();
    let running = Instant::now();
    // When each UNet call ended (the engine waits for a GPU's queued work before reporting),
    // and each batch.
    let mut calls: Vec<f64> = Vec::new();
    let mut batches: Vec<f64> = Vec::new();
    session.run(
        &job,
        &CancelToken::new(),
        &mut |p| {
            calls.push(running.elapsed().as_secs_f64());
            progress.step(&p)
        },
        &mut |g| {
            batches.push(running.elapsed().as_secs_f64());
            generated.push(g)
        },
    )?;
    let generate_seconds = running.elapsed().as_secs_f64();
    progress.finish();
    if let (Some(path), Some(g)) = (&args.save_latents, generated.last()) {
        let l = &g.latents;
        write_f32(
            path,
            &[WriteTensor {
                name: "latents",
                shape: l.shape.to_vec(),
                data: &l.values,
            }],
            &BTreeMap::new(),
        )?;
    }
    if job.random_seed {
        eprintln!("seed: {}", job.request.seed);
    }
    let images: Vec<_> = generated.into_iter().flat_map(|g| g.images).collect();
    let paths = output_paths(&args.out, images.len());
    for (path, g) in paths.iter().zip(&images) {
        write_png_with_recipe(path, &g.image, &g.recipe)?;
        if !args.json {
            println!("{}", path.display());
        }
    }
    if args.json {
        // Calls per second over the calls after the first (the first includes the text
        // encoder and a GPU's kernel compilation), as A1111's it/s.
        let rate = match (calls.first(), calls.last()) {
            (Some(first), Some(last)) if calls.len() > 1 && last > first => {
                (calls.len() - 1) as f64 / (last - first)
            }
            _ => calls.len() as f64 / generate_seconds.max(1e-9),
        };
        let device = session.model().device();
        let summary = serde_json::json!({
            "images": paths,
            "seeds": images.iter().map(|g| g.recipe.seed).collect::<Vec<_>>(),
            "device": session.device(),
            "precision": session.precision().name(),
            "width": job.request.width,
            "height": job.request.height,
            "steps": job.request.steps,
            "load_seconds": load_seconds,
            "generate_seconds": generate_seconds,
            "unet_calls": calls.len(),
            // Seconds each batch took (the first includes a GPU's kernel compilation).
            "batch_seconds": batches
                .iter()
                .scan(0.0, |last, t| {
                    let d = t - *last;
                    *last = *t;
                    Some(d)
                })
                .collect::<Vec<_>>(),
            "unet_calls_per_second": rate,
            "device_memory_peak_bytes": kiln_engine::device::memory_in_use(device).map(|m| m.1),
            "peak_rss_bytes": super::peak_rss_bytes(),
        });
        println!("{summary}");
    }
    Ok(())
}

fn read_latents(path: &Path) -> Result<LatentsData> {
    let file = SafeTensors::open(path)?;
    let info = file
        .info("latents")
        .with_context(|| format!("{}: no tensor named 'latents'", path.display()))?;
    let shape: [usize; 4] = info.shape.clone().try_into().map_err(|s: Vec<usize>| {
        anyhow::anyhow!(
            "{}: 'latents' must be 4-D [B, C, h, w], got {s:?}",
            path.display()
        )
    })?;
    Ok(LatentsData {
        shape,
        values: file.f32("latents")?,
    })
}

fn output_paths(out: &Path, n: usize) -> Vec<PathBuf> {
    if n == 1 {
        return vec![out.to_owned()];
    }
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let ext = out
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "png".into());
    (0..n)
        .map(|i| out.with_file_name(format!("{stem}-{i}.{ext}")))
        .collect()
}

/// Splits `FILE:SUFFIX` when the part after the last `:` parses with `parse` (so paths with
/// drive letters or colons still work).
pub(super) fn split_suffix<T>(
    spec: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<(String, Option<T>)> {
    if let Some((file, suffix)) = spec.rsplit_once(':')
        && let Some(v) = parse(suffix)
        && !file.is_empty()
    {
        return Ok((file.to_owned(), Some(v)));
    }
    if spec.is_empty() {
        bail!("empty file name");
    }
    Ok((spec.to_owned(), None))
}
