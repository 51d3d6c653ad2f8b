//! `kiln dataset shapes`: writes the procedural captioned shapes dataset
//! (`kiln_shapes`): `00000.png` + `00000.txt`, … — deterministic for a seed.

use std::path::PathBuf;

use anyhow::Result;
use kiln_engine::fs::write_atomic;
use kiln_engine::image::write_png;
use kiln_shapes::{BackgroundKind, SceneOptions, Style, scene_with};

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
        /// At most this many shapes per image: 2 (three in ten images have two), or 1.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
        max_shapes: u8,
        /// Kinds of background, comma-separated: plain, gradient, two-tone (half of all are
        /// plain when all three are drawn).
        #[arg(long, default_value = "plain,gradient,two-tone", value_delimiter = ',')]
        backgrounds: Vec<String>,
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
        max_shapes,
        backgrounds,
    } = command;
    let style = Style::parse(&style)
        .ok_or_else(|| anyhow::anyhow!("unknown --style '{style}' (solid, striped)"))?;
    let backgrounds = backgrounds
        .iter()
        .map(|b| {
            BackgroundKind::parse(b.trim()).ok_or_else(|| {
                anyhow::anyhow!("unknown background '{b}' (plain, gradient, two-tone)")
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let options = SceneOptions {
        max_shapes: max_shapes.into(),
        backgrounds,
        style,
    };
    std::fs::create_dir_all(&out)?;
    for i in 0..count {
        let s = scene_with(seed, i, &options);
        write_png(&out.join(format!("{i:05}.png")), &s.render(size), &[])?;
        write_atomic(&out.join(format!("{i:05}.txt")), s.caption().as_bytes())?;
    }
    println!("{count} images in {}", out.display());
    Ok(())
}
