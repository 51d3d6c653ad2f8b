//! The command line: `kiln generate`, `kiln inspect`, `kiln tokenize`.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use kiln_engine::image::write_png;
use kiln_engine::pipeline::{
    CancelToken, GenerationRequest, LatentsData, Sampler, StableDiffusion,
};
use kiln_engine::schedulers::Schedule;
use kiln_engine::tokenizer::ClipTokenizer;
use kiln_engine::weights::inspect::inspect;
use kiln_engine::weights::safetensors::{SafeTensors, WriteTensor, write_f32};

/// Kiln: a desktop Stable Diffusion studio.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate images from text prompts.
    Generate(GenerateArgs),
    /// Tell what a file or folder is: checkpoint, LoRA, embedding, or unknown.
    Inspect {
        /// File or folder to inspect.
        path: PathBuf,
    },
    /// Print the 77 CLIP token ids of TEXT as JSON.
    Tokenize {
        /// The prompt.
        text: String,
    },
}

#[derive(Debug, clap::Args)]
struct GenerateArgs {
    /// Checkpoint: a diffusers folder or a single-file SD 1.x .safetensors.
    #[arg(long)]
    model: PathBuf,
    /// Diffusers folder whose */config.json describe a single-file checkpoint.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Prompt (repeat for several).
    #[arg(long = "prompt", required = true)]
    prompts: Vec<String>,
    /// Negative prompt: one for all prompts, or one per prompt.
    #[arg(long = "negative")]
    negatives: Vec<String>,
    /// Sampler: ddim, ddpm, euler, euler-a, heun, lms, dpmpp-2m, dpmpp-2m-sde, dpmpp-2s-a, unipc, lcm.
    #[arg(long, default_value = "ddim")]
    sampler: String,
    /// Sigma schedule: default (the model's spacing), karras or exponential (not for ddim, ddpm, lcm).
    #[arg(long, default_value = "default")]
    schedule: String,
    /// Same as `--schedule karras`.
    #[arg(long)]
    karras: bool,
    /// DDIM η (0 = deterministic).
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    /// Denoising steps.
    #[arg(long, default_value_t = 25)]
    steps: usize,
    /// Classifier-free guidance scale.
    #[arg(long, default_value_t = 7.5)]
    cfg: f64,
    /// Seed of the first image (image k uses seed + k); random when omitted.
    #[arg(long)]
    seed: Option<u64>,
    /// Width in pixels (default: the model's native size).
    #[arg(long)]
    width: Option<usize>,
    /// Height in pixels (default: the model's native size).
    #[arg(long)]
    height: Option<usize>,
    /// Images per prompt.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Initial noise: safetensors with key `latents`, f32 [B, 4, H/f, W/f], before init_noise_sigma.
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
    /// Output PNG; with several images, a-0.png, a-1.png, …
    #[arg(long)]
    out: PathBuf,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Generate(args)) => generate(args),
        Some(Command::Inspect { path }) => {
            let what = inspect(&path)?;
            println!("{}", serde_json::to_string_pretty(&what)?);
            Ok(())
        }
        Some(Command::Tokenize { text }) => {
            let ids = ClipTokenizer::sd15()?.encode(&text)?;
            println!("{}", serde_json::to_string(&ids)?);
            Ok(())
        }
        None => {
            eprintln!("The desktop window is not built yet; use a subcommand (kiln --help).");
            Ok(())
        }
    }
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

/// AUTOMATIC1111's `parameters` text for one image (the prompt keeps its `<lora:…>` tags, as
/// A1111 writes it; `Lora hashes` lists each LoRA's short hash).
fn infotext(
    prompt: &str,
    negative: &str,
    req: &GenerationRequest,
    seed: u64,
    model: &str,
    loras: &[(String, String)],
) -> String {
    let sampler = req.sampler.a1111_name();
    let schedule = match req.sampler.schedule() {
        Schedule::Karras => ", Schedule type: Karras",
        Schedule::Exponential => ", Schedule type: Exponential",
        Schedule::Default => "",
    };
    let mut s = prompt.to_owned();
    if !negative.is_empty() {
        s.push_str(&format!("\nNegative prompt: {negative}"));
    }
    s.push_str(&format!(
        "\nSteps: {}, Sampler: {sampler}{schedule}, CFG scale: {}, Seed: {seed}, Size: {}x{}, Model: {model}",
        req.steps, req.cfg, req.width, req.height
    ));
    if !loras.is_empty() {
        let list: Vec<String> = loras.iter().map(|(n, h)| format!("{n}: {h}")).collect();
        s.push_str(&format!(", Lora hashes: \"{}\"", list.join(", ")));
    }
    s
}

fn generate(args: GenerateArgs) -> Result<()> {
    let schedule = match (args.karras, args.schedule.as_str()) {
        (true, _) | (false, "karras") => Schedule::Karras,
        (false, "default") => Schedule::Default,
        (false, "exponential") => Schedule::Exponential,
        (false, other) => {
            bail!("unknown schedule '{other}' (available: default, karras, exponential)")
        }
    };
    let sampler = Sampler::from_name(&args.sampler, schedule, args.eta)?;
    let device = kiln_engine::device::device(&args.device)?;
    let latents = args.latents.as_deref().map(read_latents).transpose()?;
    let random_seed = args.seed.is_none();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            % 4_294_967_296
    });
    let mut sd = StableDiffusion::load(&args.model, args.config.as_deref(), &device)?;
    // `<lora:NAME:WEIGHT>` tags are removed from the prompts and added to the stack.
    let mut loras: Vec<(PathBuf, f32)> = args
        .loras
        .iter()
        .map(|s| {
            split_suffix(s, |w| w.parse::<f32>().ok())
                .map(|(p, w)| (PathBuf::from(p), w.unwrap_or(1.0)))
        })
        .collect::<Result<_>>()?;
    let mut prompts = Vec::with_capacity(args.prompts.len());
    for p in &args.prompts {
        let (text, tags) = kiln_engine::prompt::lora_tags(p);
        for (name, weight) in tags {
            let dir = args.lora_dir.as_deref().with_context(|| {
                format!(
                    "the prompt uses <lora:{name}:…>; give --lora-dir DIR to say where LoRAs are"
                )
            })?;
            let file = dir.join(format!("{name}.safetensors"));
            if !file.exists() {
                bail!("<lora:{name}:…>: {} does not exist", file.display());
            }
            if !loras.iter().any(|(f, _)| f == &file) {
                loras.push((file, weight));
            }
        }
        prompts.push(text);
    }
    let mut negatives = Vec::with_capacity(args.negatives.len());
    for n in &args.negatives {
        negatives.push(kiln_engine::prompt::lora_tags(n).0);
    }
    let mut hashes = Vec::new();
    for (file, weight) in &loras {
        let adapter = sd.open_lora(file)?;
        hashes.push((adapter.name.clone(), adapter.report.short_hash.clone()));
        sd.add_lora(adapter, *weight);
    }
    for spec in &args.embeddings {
        let (file, token) = split_suffix(spec, |t| {
            (!t.is_empty() && !t.contains(['/', '\\'])).then(|| t.to_owned())
        })?;
        sd.load_embedding(Path::new(&file), token.as_deref())?;
    }
    let native = sd
        .info
        .config
        .unet
        .sample_size
        .map(|s| s * sd.vae_scale_factor())
        .unwrap_or(512);
    let request = GenerationRequest {
        prompts,
        negatives,
        sampler,
        steps: args.steps,
        cfg: args.cfg,
        seed,
        width: args.width.unwrap_or(native),
        height: args.height.unwrap_or(native),
        batch: args.batch,
        latents,
        clip_skip: 1,
        init_image: None,
        preview: false,
    };
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(request.steps as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps  {per_sec}  ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    let output = sd.generate(&request, &CancelToken::new(), &mut |p| {
        if let Some(bar) = &bar {
            bar.set_position(p.step as u64);
        }
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
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
    let model_name = args
        .model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    for (k, (path, image)) in output_paths(&args.out, output.images.len())
        .iter()
        .zip(&output.images)
        .enumerate()
    {
        let prompt_index = k / request.batch;
        let negative = request
            .negatives
            .get(prompt_index)
            .or(request.negatives.first())
            .cloned()
            .unwrap_or_default();
        let parameters = infotext(
            &args.prompts[prompt_index],
            &negative,
            &request,
            output.seeds[k],
            &model_name,
            &hashes,
        );
        write_png(path, image, &[("parameters", &parameters)])?;
        println!("{}", path.display());
    }
    Ok(())
}
