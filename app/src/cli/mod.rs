//! The command line: `kiln generate`, `kiln train`, `kiln diff`, `kiln info`, `kiln inspect`,
//! `kiln tokenize`, `kiln serve`.

mod dataset;
mod diff;
mod eval;
mod generate;
mod info;
mod models;
mod serve;
mod train;
mod train_base;
mod training_events;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use kiln_engine::inspect::inspect;
use kiln_engine::tokenizer::ClipTokenizer;

/// Kiln: a desktop Stable Diffusion studio.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a subcommand: open the window with this checkpoint loaded.
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
    /// Without a subcommand: add this LoRA to the stack at weight W (1 when left out);
    /// repeatable.
    #[arg(long = "lora", value_name = "FILE[:W]", value_parser = crate::gui::start::parse_lora)]
    loras: Vec<(PathBuf, f32)>,
    /// Without a subcommand: load this embedding under TOKEN (the file stem when left out);
    /// repeatable.
    #[arg(long = "embedding", value_name = "FILE[:TOKEN]", value_parser = crate::gui::start::parse_embedding)]
    embeddings: Vec<(PathBuf, Option<String>)>,
    /// Without a subcommand: open this folder of images as the training dataset.
    #[arg(long, value_name = "DIR")]
    dataset: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate images from text prompts (txt2img), or from an image (img2img).
    Generate(Box<generate::GenerateArgs>),
    /// Train an adapter from a folder of images.
    #[command(subcommand)]
    Train(train::TrainCommand),
    /// Measure how well a model follows prompts (held-out shapes prompts, scored from pixels).
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// The models folder, and downloading Stable Diffusion 1.5.
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Write a procedural training dataset.
    #[command(subcommand)]
    Dataset(dataset::DatasetCommand),
    /// Serve an AUTOMATIC1111-compatible HTTP API (/sdapi/v1) on this machine.
    Serve(Box<serve::ServeArgs>),
    /// Compare two images: mean/max |Δ|, changed pixels, PSNR, optional heatmap.
    Diff(diff::DiffArgs),
    /// Print the recipe stored in a PNG (Kiln, AUTOMATIC1111, ComfyUI or InvokeAI).
    Info {
        /// The PNG.
        image: PathBuf,
        /// Print JSON instead of A1111-style text.
        #[arg(long)]
        json: bool,
    },
    /// Tell what a file or folder is: checkpoint, LoRA, embedding, or unknown.
    Inspect {
        /// File or folder to inspect.
        path: PathBuf,
    },
    /// Print the CLIP token ids of TEXT as JSON: 77 (SD 1.x), or as many as --model's
    /// tokenizer takes.
    Tokenize {
        /// The prompt.
        text: String,
        /// A diffusers folder whose tokenizer length to use (kiln-tiny's is 32).
        #[arg(long)]
        model: Option<PathBuf>,
    },
}

/// The process's peak resident memory in bytes (`VmHWM`; Linux only, else `None`).
pub(crate) fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Generate(args)) => generate::generate(*args),
        Some(Command::Info { image, json }) => info::info(&image, json),
        Some(Command::Train(t)) => train::train(t),
        Some(Command::Diff(d)) => diff::diff(d),
        Some(Command::Serve(s)) => serve::serve(*s),
        Some(Command::Dataset(d)) => dataset::dataset(d),
        Some(Command::Eval(e)) => eval::eval(e),
        Some(Command::Models(m)) => models::models(m),
        Some(Command::Inspect { path }) => {
            let what = inspect(&path)?;
            println!("{}", serde_json::to_string_pretty(&what)?);
            Ok(())
        }
        Some(Command::Tokenize { text, model }) => {
            let mut tokenizer = ClipTokenizer::sd15()?;
            if let Some(dir) = model {
                let length = kiln_engine::weights::FolderConfigs::read(&dir)?.tokenizer_max_length;
                tokenizer = tokenizer.with_max_length(length)?;
            }
            let ids = tokenizer.encode(&text)?;
            println!("{}", serde_json::to_string(&ids)?);
            Ok(())
        }
        None => crate::gui::run(crate::gui::start::StartArgs {
            model: cli.model,
            loras: cli.loras,
            embeddings: cli.embeddings,
            dataset: cli.dataset,
        }),
    }
}
