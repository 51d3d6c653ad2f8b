//! `kiln generate`: txt2img and img2img from the command line, writing PNGs that carry
//! A1111's `parameters` and Kiln's exact recipe; `--from IMAGE.png` starts from an image's
//! recipe (Kiln's, or A1111/ComfyUI/InvokeAI settings) and applies the flags given as overrides.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use kiln_engine::metadata::{read_image_info, write_png_with_recipe};
use kiln_engine::pipeline::{
    CancelToken, GenerationRequest, InitImage, LatentsData, Precision, Sampler, StableDiffusion,
    StepProgress,
};
use kiln_engine::schedulers::Schedule;
use kiln_engine::weights::hash::{model_hash, sha256_file};
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
    sampler: Option<String>,
    /// Sigma schedule: default (the model's spacing), karras or exponential (not for ddim, ddpm, lcm).
    #[arg(long)]
    schedule: Option<String>,
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
    /// Compute device: cpu, wgpu, metal, vulkan, cuda, or auto.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// UNet/text-encoder precision: auto (f16 on GPUs, f32 on the CPU), f32 or f16 [default: auto, or the recipe's].
    #[arg(long)]
    precision: Option<String>,
    /// Output PNG; with several images, a-0.png, a-1.png, …
    #[arg(long)]
    out: PathBuf,
}

/// A recipe's settings merged with the flags, before the model is loaded.
struct Plan {
    model: PathBuf,
    prompts: Vec<String>,
    negatives: Vec<String>,
    sampler: Sampler,
    steps: usize,
    cfg: f64,
    seed: Option<u64>,
    size: Option<(usize, usize)>,
    clip_skip: usize,
    loras: Vec<(PathBuf, f32)>,
    embeddings: Vec<(PathBuf, Option<String>)>,
    init_image: Option<(PathBuf, f64)>,
    precision: Option<Precision>,
}

fn parse_schedule(karras: bool, schedule: Option<&str>) -> Result<Option<Schedule>> {
    Ok(match (karras, schedule) {
        (true, _) | (false, Some("karras")) => Some(Schedule::Karras),
        (false, Some("default")) => Some(Schedule::Default),
        (false, Some("exponential")) => Some(Schedule::Exponential),
        (false, Some(other)) => {
            bail!("unknown schedule '{other}' (available: default, karras, exponential)")
        }
        (false, None) => None,
    })
}

/// Merges `--from` (if any) with the flags; flags win.
fn plan(args: &GenerateArgs) -> Result<Plan> {
    let from = args.from.as_deref().map(read_image_info).transpose()?;
    let recipe = from.as_ref().and_then(|i| i.recipe.clone());
    let params = from
        .as_ref()
        .map(|i| i.parameters.clone())
        .unwrap_or_default();
    let schedule = parse_schedule(args.karras, args.schedule.as_deref())?;
    let from_sampler = recipe
        .as_ref()
        .map(|r| r.sampler)
        .or_else(|| params.kiln_sampler());
    if from.is_some() && from_sampler.is_none() && args.sampler.is_none() {
        bail!(
            "the image's sampler '{}' is not one Kiln has; choose one with --sampler",
            params.sampler.as_deref().unwrap_or("?")
        );
    }
    let sampler = match (&args.sampler, from_sampler) {
        (Some(name), _) => {
            Sampler::from_name(name, schedule.unwrap_or_default(), args.eta.unwrap_or(0.0))?
        }
        (None, Some(s)) if schedule.is_some() || args.eta.is_some() => Sampler::from_name(
            s.name(),
            schedule.unwrap_or(s.schedule()),
            args.eta
                .or(match s {
                    Sampler::Ddim { eta } => Some(eta),
                    _ => None,
                })
                .unwrap_or(0.0),
        )?,
        (None, Some(s)) => s,
        (None, None) => Sampler::from_name(
            "ddim",
            schedule.unwrap_or_default(),
            args.eta.unwrap_or(0.0),
        )?,
    };
    let model = match (&args.model, &recipe) {
        (Some(m), _) => m.clone(),
        (None, Some(r)) => PathBuf::from(&r.model.path),
        (None, None) if from.is_some() => bail!(
            "give --model (a diffusers folder or .safetensors checkpoint); only Kiln images record the model's path"
        ),
        (None, None) => bundled_or_error()?,
    };
    let prompts = if !args.prompts.is_empty() {
        args.prompts.clone()
    } else if let Some(p) = &params.prompt {
        vec![p.clone()]
    } else {
        bail!("give at least one --prompt");
    };
    let negatives = if !args.negatives.is_empty() || from.is_none() {
        args.negatives.clone()
    } else {
        params.negative_prompt.clone().into_iter().collect()
    };
    let loras = if !args.loras.is_empty() || recipe.is_none() {
        args.loras
            .iter()
            .map(|s| {
                split_suffix(s, |w| w.parse::<f32>().ok())
                    .map(|(p, w)| (PathBuf::from(p), w.unwrap_or(1.0)))
            })
            .collect::<Result<_>>()?
    } else {
        recipe
            .iter()
            .flat_map(|r| &r.loras)
            .map(|l| (PathBuf::from(&l.path), l.weight))
            .collect()
    };
    let embeddings = if !args.embeddings.is_empty() || recipe.is_none() {
        args.embeddings
            .iter()
            .map(|s| {
                split_suffix(s, |t| {
                    (!t.is_empty() && !t.contains(['/', '\\'])).then(|| t.to_owned())
                })
                .map(|(f, t)| (PathBuf::from(f), t))
            })
            .collect::<Result<_>>()?
    } else {
        recipe
            .iter()
            .flat_map(|r| &r.embeddings)
            .map(|e| (PathBuf::from(&e.path), Some(e.token.clone())))
            .collect()
    };
    let recipe_init = recipe.as_ref().and_then(|r| r.init_image.as_ref());
    if let Some(i) = recipe_init
        && args.init_image.is_none()
        && sha256_file(Path::new(&i.path)).ok().as_deref() != Some(i.sha256.as_str())
    {
        bail!(
            "the recipe's init image {} is missing or has changed since; give --init-image",
            i.path
        );
    }
    let init_image = match (&args.init_image, recipe_init) {
        (Some(p), _) => Some((p.clone(), args.strength.or(params.strength).unwrap_or(0.75))),
        (None, Some(i)) => Some((PathBuf::from(&i.path), args.strength.unwrap_or(i.strength))),
        (None, None) => None,
    };
    if args.strength.is_some() && init_image.is_none() {
        bail!("--strength needs --init-image");
    }
    let size = match (
        args.width.or(params.size.map(|s| s.0)),
        args.height.or(params.size.map(|s| s.1)),
    ) {
        (Some(w), Some(h)) => Some((w, h)),
        (Some(w), None) => Some((w, w)),
        (None, Some(h)) => Some((h, h)),
        (None, None) => None,
    };
    let precision = match args.precision.as_deref() {
        Some("f32") => Some(Precision::F32),
        Some("f16") => Some(Precision::F16),
        Some("auto") => None,
        Some(other) => bail!("unknown precision '{other}' (available: auto, f32, f16)"),
        None => recipe.as_ref().map(|r| r.precision),
    };
    Ok(Plan {
        precision,
        model,
        prompts,
        negatives,
        sampler,
        steps: args.steps.or(params.steps).unwrap_or(25),
        cfg: args.cfg.or(params.cfg).unwrap_or(7.5),
        seed: args.seed.or(params.seed),
        size,
        clip_skip: recipe
            .as_ref()
            .map(|r| r.clip_skip)
            .or(params.clip_skip)
            .unwrap_or(1),
        loras,
        embeddings,
        init_image,
    })
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
    let plan = plan(&args)?;
    let device = kiln_engine::device::device(&args.device)?;
    let latents = args.latents.as_deref().map(read_latents).transpose()?;
    let random_seed = plan.seed.is_none();
    let seed = plan.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            % 4_294_967_296
    });
    let mut sd = StableDiffusion::load(&plan.model, args.config.as_deref(), &device)?;
    sd.set_precision(
        plan.precision
            .unwrap_or_else(|| Precision::default_for(&device)),
    );
    // `<lora:NAME:WEIGHT>` tags are removed from the prompts and added to the stack (unless a
    // LoRA of that name is already in it, as when regenerating from a recipe).
    let mut loras = plan.loras.clone();
    let mut prompts = Vec::with_capacity(plan.prompts.len());
    for p in &plan.prompts {
        let (text, tags) = kiln_engine::prompt::lora_tags(p);
        for (name, weight) in tags {
            if loras
                .iter()
                .any(|(f, _)| f.file_stem().is_some_and(|s| s.to_string_lossy() == name))
            {
                continue;
            }
            let dir = args.lora_dir.as_deref().with_context(|| {
                format!(
                    "the prompt uses <lora:{name}:…>; give --lora-dir DIR to say where LoRAs are"
                )
            })?;
            let file = dir.join(format!("{name}.safetensors"));
            if !file.exists() {
                bail!("<lora:{name}:…>: {} does not exist", file.display());
            }
            loras.push((file, weight));
        }
        prompts.push(text);
    }
    let negatives: Vec<String> = plan
        .negatives
        .iter()
        .map(|n| kiln_engine::prompt::lora_tags(n).0)
        .collect();
    for (file, weight) in &loras {
        let adapter = sd.open_lora(file)?;
        sd.add_lora(adapter, *weight);
    }
    for (file, token) in &plan.embeddings {
        sd.load_embedding(file, token.as_deref())?;
    }
    let init = match &plan.init_image {
        Some((path, strength)) => {
            let image = kiln_engine::image::read_image(path)?;
            Some((image, *strength, path))
        }
        None => None,
    };
    let native = sd
        .info
        .config
        .unet
        .sample_size
        .map(|s| s * sd.vae_scale_factor())
        .unwrap_or(512);
    let (width, height) = match (plan.size, &init) {
        (Some(s), _) => s,
        (None, Some((image, _, _))) => (image.width / 8 * 8, image.height / 8 * 8),
        (None, None) => (native, native),
    };
    let request = GenerationRequest {
        prompts,
        negatives,
        sampler: plan.sampler,
        steps: plan.steps,
        cfg: plan.cfg,
        seed,
        width,
        height,
        batch: args.batch,
        latents,
        clip_skip: plan.clip_skip,
        init_image: init.as_ref().map(|(image, strength, path)| InitImage {
            path: Some((*path).clone()),
            image: image.clone(),
            strength: *strength,
        }),
        preview: false,
    };
    let progress = Progress::new();
    let output = sd.generate(&request, &CancelToken::new(), &mut |p| progress.step(&p))?;
    progress.finish();
    if let Some(path) = &args.save_latents {
        let l = &output.latents;
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
    if random_seed {
        eprintln!("seed: {seed}");
    }
    sd.set_model_hash(model_hash(&plan.model, super::cache_dir().as_deref()).ok());
    let recipes = sd.recipes(&request, &output.seeds);
    for (k, ((path, image), mut recipe)) in output_paths(&args.out, output.images.len())
        .iter()
        .zip(&output.images)
        .zip(recipes)
        .enumerate()
    {
        // The recipe keeps the prompts as typed (with their <lora:…> tags, as A1111 does).
        let p = k / request.batch;
        recipe.prompt = plan.prompts[p].clone();
        recipe.negative_prompt = plan
            .negatives
            .get(p)
            .or(plan.negatives.first())
            .cloned()
            .unwrap_or_default();
        write_png_with_recipe(path, image, &recipe)?;
        println!("{}", path.display());
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
fn split_suffix<T>(spec: &str, parse: impl Fn(&str) -> Option<T>) -> Result<(String, Option<T>)> {
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

/// The built-in model (kiln-tiny), or an error that says where it was looked for.
pub(super) fn bundled_or_error() -> Result<PathBuf> {
    kiln_engine::bundled::bundled_model().ok_or_else(|| {
        anyhow::anyhow!(
            "no --model given and the built-in model ({}) is not installed; looked in: {}",
            kiln_engine::bundled::NAME,
            kiln_engine::bundled::candidates()
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}
