//! `kiln dataset shapes`: writes the procedural captioned shapes dataset
//! (`kiln_engine::shapes`): `00000.png` + `00000.txt`, … — deterministic for a seed.

use std::path::PathBuf;

use anyhow::Result;
use kiln_engine::image::write_png;
use kiln_engine::shapes::{Style, scene_in_style};
use kiln_engine::weights::safetensors::write_atomic;

/// Which dataset.
#[derive(Debug, clap::Subcommand)]
pub enum DatasetCommand {
    /// Shapes in named colours, sizes and positions, with exact captions.
    Shapes {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Number of images.
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Image size in pixels.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Fill of every shape: solid, or striped (data for a style LoRA; captions say
        /// "striped").
        #[arg(long, default_value = "solid")]
        style: String,
    },
}

/// Runs `kiln dataset …`.
pub fn dataset(command: DatasetCommand) -> Result<()> {
    let DatasetCommand::Shapes {
        out,
        count,
        seed,
        size,
        style,
    } = command;
    let style = Style::parse(&style)
        .ok_or_else(|| anyhow::anyhow!("unknown --style '{style}' (solid, striped)"))?;
    std::fs::create_dir_all(&out)?;
    for i in 0..count {
        let s = scene_in_style(seed, i, style);
        write_png(&out.join(format!("{i:05}.png")), &s.render(size), &[])?;
        write_atomic(&out.join(format!("{i:05}.txt")), s.caption().as_bytes())?;
    }
    println!("{count} images in {}", out.display());
    Ok(())
}
