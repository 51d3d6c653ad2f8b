//! Training data: a folder of images (PNG, JPEG, WebP) with optional same-stem `.txt`
//! captions — no naming rules, no nested "repeats_name" folders — validated into a
//! [`DatasetReport`] the app shows before anything trains, and prepared into pixel tensors
//! (resize to cover + center/random crop, optional flip, optional aspect-ratio buckets).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::tokenizer::ClipTokenizer;

/// Image extensions read.
pub const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];

/// What is wrong (or notable) with one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Issue {
    /// The file cannot be decoded; it is skipped.
    Unreadable {
        /// The decoder's message.
        reason: String,
    },
    /// Smaller than the training resolution on its short side; upscaled or skipped by option.
    TooSmall {
        /// Width.
        width: usize,
        /// Height.
        height: usize,
    },
    /// No `.txt` beside it: the default caption is used.
    MissingCaption,
    /// Same bytes as an earlier file; it is skipped.
    Duplicate {
        /// The first copy.
        of: PathBuf,
    },
    /// The caption has more tokens than the text encoder reads (75 for SD 1.x: the
    /// tokenizer's length less BOS and EOS); it sees only the first ones.
    LongCaption {
        /// Its token count.
        tokens: usize,
    },
}

impl Issue {
    /// Whether the image is left out of training because of this issue.
    pub fn skips(&self, upscale_small: bool) -> bool {
        match self {
            Issue::Unreadable { .. } | Issue::Duplicate { .. } => true,
            Issue::TooSmall { .. } => !upscale_small,
            Issue::MissingCaption | Issue::LongCaption { .. } => false,
        }
    }
}

/// One image of the dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetEntry {
    /// The image file.
    pub path: PathBuf,
    /// Its caption (from the `.txt`), if any.
    pub caption: Option<String>,
    /// (width, height) when readable.
    pub size: Option<(usize, usize)>,
    /// Problems found.
    pub issues: Vec<Issue>,
}

/// Options that decide which images train and how they are prepared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatasetOptions {
    /// Square training size in pixels (bucket area with `buckets`).
    pub resolution: usize,
    /// Upscale images smaller than `resolution` instead of skipping them.
    pub upscale_small: bool,
    /// Caption for images without a `.txt` (e.g. the trigger word).
    pub default_caption: String,
    /// Random instead of center crops.
    pub random_crop: bool,
    /// Randomly mirror images horizontally.
    pub flip: bool,
    /// Aspect-ratio buckets (sides multiples of 64, area ≤ resolution², like kohya).
    pub buckets: bool,
    /// Times each image is seen per epoch.
    pub repeats: usize,
    /// Per-image repeats by file name, overriding `repeats` (e.g. more for rare poses).
    #[serde(default)]
    pub image_repeats: std::collections::BTreeMap<String, usize>,
}

impl DatasetOptions {
    /// How many times `path` is seen per epoch.
    pub fn repeats_of(&self, path: &Path) -> usize {
        path.file_name()
            .and_then(|n| self.image_repeats.get(&n.to_string_lossy().into_owned()))
            .copied()
            .unwrap_or(self.repeats)
            .max(1)
    }
}

impl Default for DatasetOptions {
    fn default() -> Self {
        DatasetOptions {
            resolution: 512,
            upscale_small: true,
            default_caption: String::new(),
            random_crop: false,
            flip: false,
            buckets: false,
            repeats: 1,
            image_repeats: Default::default(),
        }
    }
}

/// The validated dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetReport {
    /// Every image file found, in path order.
    pub entries: Vec<DatasetEntry>,
    /// The options it was validated with.
    pub options: DatasetOptions,
}

impl DatasetReport {
    /// Entries that will train.
    pub fn usable(&self) -> impl Iterator<Item = &DatasetEntry> {
        self.entries
            .iter()
            .filter(|e| !e.issues.iter().any(|i| i.skips(self.options.upscale_small)))
    }

    /// One line for the app: "12 images: 10 usable, 1 unreadable, 1 duplicate, 3 without caption".
    pub fn summary(&self) -> String {
        let count = |f: &dyn Fn(&Issue) -> bool| {
            self.entries
                .iter()
                .filter(|e| e.issues.iter().any(f))
                .count()
        };
        let mut parts = vec![format!("{} usable", self.usable().count())];
        for (n, what) in [
            (
                count(&|i| matches!(i, Issue::Unreadable { .. })),
                "unreadable",
            ),
            (
                count(&|i| matches!(i, Issue::Duplicate { .. })),
                "duplicate",
            ),
            (
                count(&|i| matches!(i, Issue::TooSmall { .. })),
                if self.options.upscale_small {
                    "too small (upscaled)"
                } else {
                    "too small (skipped)"
                },
            ),
            (
                count(&|i| matches!(i, Issue::MissingCaption)),
                "without caption",
            ),
            (
                count(&|i| matches!(i, Issue::LongCaption { .. })),
                "with captions longer than the text encoder reads",
            ),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        format!("{} images: {}", self.entries.len(), parts.join(", "))
    }

    /// The caption an entry trains with.
    pub fn caption_of<'a>(&'a self, e: &'a DatasetEntry) -> &'a str {
        e.caption
            .as_deref()
            .unwrap_or(&self.options.default_caption)
    }
}

/// Words that never make a trigger.
const STOP_WORDS: [&str; 16] = [
    "a", "an", "the", "of", "and", "with", "in", "on", "at", "to", "for", "is", "by", "from",
    "photo", "image",
];

/// The token every caption shares — the first comma-separated tag found in all of them (of
/// two or more), else the first word (not a stop word like "a" or "of") — which a LoRA trained on them answers
/// to; None when they share none (or there are no captions).
pub fn common_token(captions: &[&str]) -> Option<String> {
    let first = captions.first()?;
    let tags = |c: &str| -> Vec<String> {
        c.split(',')
            .map(|t| t.trim().to_lowercase())
            .filter(|t| !t.is_empty())
            .collect()
    };
    let words = |c: &str| -> Vec<String> {
        c.split(|ch: char| !(ch.is_alphanumeric() || "<>-_'".contains(ch)))
            .map(str::to_lowercase)
            .filter(|w| !w.is_empty() && !STOP_WORDS.contains(&w.as_str()))
            .collect()
    };
    let shared = |split: &dyn Fn(&str) -> Vec<String>| {
        let others: Vec<Vec<String>> = captions[1..].iter().map(|c| split(c)).collect();
        split(first)
            .into_iter()
            .find(|t| others.iter().all(|o| o.contains(t)))
    };
    // One caption is all one tag: only its words can be the trigger.
    (captions.len() > 1)
        .then(|| shared(&tags))
        .flatten()
        .or_else(|| shared(&words))
}

/// The training plan: images × repeats × epochs ÷ batch = steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Usable images.
    pub images: usize,
    /// Repeats per image.
    pub repeats: usize,
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch: usize,
    /// Optimiser steps per epoch (⌈images × repeats ÷ batch⌉).
    pub steps_per_epoch: usize,
    /// Total optimiser steps.
    pub steps: usize,
    /// A VAE phase that runs before these steps (base training that trains the VAE and then
    /// the UNet): its steps and batch size. Step numbers count both phases.
    pub vae_phase: Option<(usize, usize)>,
}

impl Plan {
    /// The plan for `images` usable images.
    pub fn new(images: usize, repeats: usize, epochs: usize, batch: usize) -> Self {
        let steps_per_epoch = (images * repeats.max(1)).div_ceil(batch.max(1));
        Plan {
            images,
            repeats: repeats.max(1),
            epochs,
            batch: batch.max(1),
            steps_per_epoch,
            steps: steps_per_epoch * epochs,
            vae_phase: None,
        }
    }

    /// The plan cut to (or extended to) `steps` optimiser steps, as `--steps` / `max_steps`
    /// do: `epochs` becomes the epochs it starts, ⌈steps ÷ steps per epoch⌉.
    pub fn with_steps(mut self, steps: usize) -> Self {
        self.steps = steps;
        self.epochs = steps.div_ceil(self.steps_per_epoch.max(1));
        self
    }

    /// "10 images × 2 repeats × 3 epochs ÷ batch 4 = 15 steps" when the run is whole epochs;
    /// otherwise the steps per epoch and how many epochs the steps make: "10 images × 2
    /// repeats ÷ batch 4 = 5 steps per epoch; 12 steps ≈ 2.4 epochs". A VAE phase comes
    /// first: "the VAE 100 steps at batch 2 (≈ 20.0 epochs), then …; 112 steps in all".
    pub fn describe(&self) -> String {
        let per_epoch = self.steps_per_epoch.max(1) as f64;
        let this = if self.steps == self.steps_per_epoch * self.epochs {
            format!(
                "{} images × {} repeats × {} epochs ÷ batch {} = {} steps",
                self.images, self.repeats, self.epochs, self.batch, self.steps
            )
        } else {
            format!(
                "{} images × {} repeats ÷ batch {} = {} steps per epoch; {} steps ≈ {:.1} epochs",
                self.images,
                self.repeats,
                self.batch,
                self.steps_per_epoch,
                self.steps,
                self.steps as f64 / per_epoch
            )
        };
        match self.vae_phase {
            Some((steps, batch)) => format!(
                "the VAE {steps} steps at batch {batch} (≈ {:.1} epochs), then {this}; {} steps in all",
                (steps * batch) as f64 / (self.images * self.repeats).max(1) as f64,
                steps + self.steps
            ),
            None => this,
        }
    }
}

/// The image files of `dir` (not recursive), sorted.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| IMAGE_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Validates `files` (or the images of a folder, see [`image_files`]).
pub fn validate(
    files: &[PathBuf],
    options: &DatasetOptions,
    tokenizer: &ClipTokenizer,
) -> Result<DatasetReport> {
    let mut seen: HashMap<[u8; 32], PathBuf> = HashMap::new();
    let mut entries = Vec::with_capacity(files.len());
    for path in files {
        let mut issues = Vec::new();
        let caption = match std::fs::read_to_string(path.with_extension("txt")) {
            Ok(text) => Some(text.trim().to_owned()),
            Err(_) => {
                issues.push(Issue::MissingCaption);
                None
            }
        };
        if let Some(c) = &caption {
            let (tokens, _) = crate::prompt::token_count(tokenizer, c)?;
            if tokens > tokenizer.max_length() - 2 {
                issues.push(Issue::LongCaption { tokens });
            }
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        let mut size = None;
        if let Some(first) = seen.get(&digest) {
            issues.push(Issue::Duplicate { of: first.clone() });
        } else {
            seen.insert(digest, path.clone());
            match image::load_from_memory(&bytes) {
                Ok(img) => {
                    let (w, h) = (img.width() as usize, img.height() as usize);
                    size = Some((w, h));
                    if w.min(h) < options.resolution {
                        issues.push(Issue::TooSmall {
                            width: w,
                            height: h,
                        });
                    }
                }
                Err(e) => issues.push(Issue::Unreadable {
                    reason: e.to_string(),
                }),
            }
        }
        entries.push(DatasetEntry {
            path: path.clone(),
            caption,
            size,
            issues,
        });
    }
    Ok(DatasetReport {
        entries,
        options: options.clone(),
    })
}

/// The bucket (width, height) for an image: sides multiples of 64, area ≤ resolution², the
/// aspect ratio closest to the image's (kohya's scheme). Without buckets: the square.
pub fn bucket(size: (usize, usize), options: &DatasetOptions) -> (usize, usize) {
    let r = options.resolution;
    if !options.buckets {
        return (r, r);
    }
    let area = r * r;
    let aspect = size.0 as f64 / size.1.max(1) as f64;
    let mut best = (r, r);
    let mut best_err = f64::INFINITY;
    let mut w = 256.min(r);
    while w <= r * 2 {
        let h = (area / w) / 64 * 64;
        if h >= 256.min(r) {
            let err = ((w as f64 / h as f64).ln() - aspect.ln()).abs();
            if err < best_err {
                best_err = err;
                best = (w, h);
            }
        }
        w += 64;
    }
    best
}

/// `image` resized to cover `width × height` and cropped (center, or at a random offset),
/// optionally mirrored.
pub fn prepare(
    image: &RgbImage,
    width: usize,
    height: usize,
    random_crop: bool,
    flip: bool,
    rng: &mut ChaCha8Rng,
) -> RgbImage {
    let fitted = if random_crop {
        let scale = (width as f64 / image.width as f64).max(height as f64 / image.height as f64);
        let (sw, sh) = (
            ((image.width as f64 * scale).round() as usize).max(width),
            ((image.height as f64 * scale).round() as usize).max(height),
        );
        let scaled = crate::image::fit(image, sw, sh);
        let (x0, y0) = (
            rng.random_range(0..=sw - width),
            rng.random_range(0..=sh - height),
        );
        let mut pixels = Vec::with_capacity(width * height * 3);
        for y in 0..height {
            let row = ((y0 + y) * sw + x0) * 3;
            pixels.extend_from_slice(&scaled.pixels[row..row + width * 3]);
        }
        RgbImage {
            width,
            height,
            pixels,
        }
    } else {
        crate::image::fit(image, width, height)
    };
    if !flip {
        return fitted;
    }
    let mut out = fitted.clone();
    for y in 0..height {
        for x in 0..width {
            let (src, dst) = ((y * width + x) * 3, (y * width + (width - 1 - x)) * 3);
            out.pixels[dst..dst + 3].copy_from_slice(&fitted.pixels[src..src + 3]);
        }
    }
    out
}

/// A deterministic RNG for (seed, purpose, index): every random choice of a run derives from
/// the seed and the step/epoch it serves, so a resumed run makes the same choices.
pub fn rng_for(seed: u64, purpose: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index);
    rng
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_counts_steps() {
        let p = Plan::new(10, 2, 3, 4);
        assert_eq!((p.steps_per_epoch, p.steps), (5, 15));
        assert_eq!(
            p.describe(),
            "10 images × 2 repeats × 3 epochs ÷ batch 4 = 15 steps"
        );
        // A step count that is not whole epochs says so instead of a product that is wrong.
        let cut = p.with_steps(12);
        assert_eq!(cut.epochs, 3);
        assert_eq!(
            cut.describe(),
            "10 images × 2 repeats ÷ batch 4 = 5 steps per epoch; 12 steps ≈ 2.4 epochs"
        );
        assert_eq!(
            p.with_steps(10).describe(),
            "10 images × 2 repeats × 2 epochs ÷ batch 4 = 10 steps"
        );
        let two_phases = Plan {
            vae_phase: Some((100, 2)),
            ..cut
        };
        assert_eq!(
            two_phases.describe(),
            "the VAE 100 steps at batch 2 (≈ 10.0 epochs), then 10 images × 2 repeats ÷ batch 4 \
             = 5 steps per epoch; 12 steps ≈ 2.4 epochs; 112 steps in all"
        );
    }

    #[test]
    fn buckets_keep_the_aspect_ratio_within_the_area() {
        let o = DatasetOptions {
            resolution: 512,
            buckets: true,
            ..DatasetOptions::default()
        };
        assert_eq!(bucket((1000, 1000), &o), (512, 512));
        let (w, h) = bucket((1536, 1024), &o);
        assert!(
            w > h && w * h <= 512 * 512 && w % 64 == 0 && h % 64 == 0,
            "{w}×{h}"
        );
        let (w, h) = bucket((600, 1200), &o);
        assert!(h > w && w * h <= 512 * 512, "{w}×{h}");
        assert_eq!(bucket((600, 1200), &DatasetOptions::default()), (512, 512));
    }

    #[test]
    fn flip_mirrors_and_crop_keeps_size() {
        let img = RgbImage {
            width: 4,
            height: 2,
            pixels: (0..24).map(|v| v as u8).collect(),
        };
        let mut rng = rng_for(0, 0, 0);
        let out = prepare(&img, 4, 2, false, true, &mut rng);
        assert_eq!(
            &out.pixels[..3],
            &img.pixels[9..12],
            "first pixel is the old last of the row"
        );
        let out = prepare(&img, 2, 2, true, false, &mut rng);
        assert_eq!((out.width, out.height, out.pixels.len()), (2, 2, 12));
    }

    #[test]
    fn the_shared_token_is_a_common_tag_else_a_common_word() {
        assert_eq!(
            common_token(&["sks dog, on grass", "sks dog, in snow"]).as_deref(),
            Some("sks dog")
        );
        assert_eq!(
            common_token(&["a red half", "A blue half"]).as_deref(),
            Some("half")
        );
        assert_eq!(
            common_token(&["a cat", "a dog"]),
            None,
            "stop words never count"
        );
        assert_eq!(
            common_token(&["<zz-style> tree"]).as_deref(),
            Some("<zz-style>")
        );
        assert_eq!(common_token(&[]), None);
    }
}
