//! `kiln models list DIR` and `kiln models get sd15 --dest DIR`: the models folder and
//! downloading Stable Diffusion 1.5 from the Hub (resumable, checksum-verified).

use std::path::PathBuf;

use anyhow::Result;
use kiln_engine::job::CancelToken;
use kiln_hub::catalog::{SD15_REPO, scan_models, sd15_files};
use kiln_hub::download::{HUB, download};

/// What to do with models.
#[derive(Debug, clap::Subcommand)]
pub enum ModelsCommand {
    /// List the checkpoints, LoRAs and embeddings in a folder (JSON).
    List {
        /// The models folder.
        dir: PathBuf,
    },
    /// Download Stable Diffusion 1.5 (diffusers layout) into a folder; run again to resume.
    Get {
        /// Only "sd15" for now.
        what: String,
        /// Destination folder.
        #[arg(long)]
        dest: PathBuf,
        /// Half-precision weights (2 GB instead of 4).
        #[arg(long)]
        fp16: bool,
        /// A Hub-compatible server.
        #[arg(long, default_value = HUB)]
        endpoint: String,
    },
}

/// Runs `kiln models …`.
pub fn models(command: ModelsCommand) -> Result<()> {
    match command {
        ModelsCommand::List { dir } => {
            println!("{}", serde_json::to_string_pretty(&scan_models(&dir)?)?);
            Ok(())
        }
        ModelsCommand::Get {
            what,
            dest,
            fp16,
            endpoint,
        } => {
            anyhow::ensure!(what == "sd15", "unknown model '{what}' (available: sd15)");
            let mut last = String::new();
            let out = download(
                &endpoint,
                SD15_REPO,
                "main",
                &sd15_files(fp16),
                &dest,
                &CancelToken::new(),
                &mut |p| {
                    let line = format!(
                        "[{}/{}] {} {:.0}%",
                        p.files_done,
                        p.files,
                        p.file,
                        p.done as f64 * 100.0 / p.size.max(1) as f64
                    );
                    if line != last {
                        eprintln!("{line}");
                        last = line;
                    }
                },
            )?;
            println!("{}", out.display());
            Ok(())
        }
    }
}
