//! `kiln diff A.png B.png`: how much two images differ (what an adapter changes at the same
//! seed), with an optional heatmap.

use std::path::PathBuf;

use anyhow::Result;
use kiln_engine::diff::{BARELY_CHANGES, diff_stats, heatmap};
use kiln_engine::image::{read_image, write_png};

/// Options of `kiln diff`.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// First image (e.g. the baseline).
    a: PathBuf,
    /// Second image (e.g. with the adapter).
    b: PathBuf,
    /// A pixel counts as changed when a channel differs by more than this (0–255).
    #[arg(long, default_value_t = 8)]
    threshold: u8,
    /// Write a difference heatmap here.
    #[arg(long)]
    heatmap: Option<PathBuf>,
    /// Heatmap gain (×): makes small differences visible.
    #[arg(long, default_value_t = 4.0)]
    gain: f32,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `kiln diff`.
pub fn diff(a: DiffArgs) -> Result<()> {
    let (x, y) = (read_image(&a.a)?, read_image(&a.b)?);
    let stats = diff_stats(&x, &y, a.threshold)?;
    if let Some(path) = &a.heatmap {
        write_png(path, &heatmap(&x, &y, a.gain)?, &[])?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(());
    }
    println!(
        "mean |Δ|: {:.3} (0–255){}",
        stats.mean_abs,
        if stats.mean_abs < BARELY_CHANGES {
            "  — barely changes the image"
        } else {
            ""
        }
    );
    println!("max |Δ|: {}", stats.max_abs);
    println!(
        "changed (> {}): {:.2}% of pixels",
        stats.threshold,
        stats.changed * 100.0
    );
    println!("PSNR: {:.2} dB", stats.psnr_db);
    Ok(())
}
