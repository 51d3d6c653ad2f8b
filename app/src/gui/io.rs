//! Every file the window reads or writes, on a thread of its own, so a frame never waits for
//! the disk: saving outputs (and their gallery thumbnails), listing the gallery, decoding
//! thumbnails and images to show, telling what a dropped file is, listing a dataset folder,
//! writing captions, Save as…, finding a run's newest checkpoint, and whether a model named
//! by a recipe or the settings is still there. Requests run in order;
//! each answer comes back as an [`IoResult`] and wakes the window.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use kiln_engine::image::RgbImage;
use kiln_engine::inspect::{Inspection, inspect};
use kiln_engine::metadata::{ImageInfo, Recipe, Source, read_image_info, write_png_with_recipe};
use kiln_engine::training::trainer::{
    CheckpointSummary, ExistingRun, TrainingConfig, checkpoint_summary, existing_run, free_name,
};
use kiln_engine::worker::Repaint;

/// Which thumbnail an answer is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ThumbKey {
    /// A gallery image.
    Gallery(PathBuf),
    /// Entry `i` of the dataset table.
    Dataset(usize),
}

/// What an image read from disk is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImagePurpose {
    /// The canvas.
    Show,
    /// Side 0 or 1 of the compare view.
    Compare(usize),
}

/// What a dropped file or folder is.
#[derive(Debug, Clone)]
pub enum Dropped {
    /// A folder that is no model: a training dataset.
    DatasetFolder,
    /// A checkpoint Kiln runs.
    Checkpoint,
    /// A LoRA.
    Lora,
    /// A textual-inversion embedding.
    Embedding,
    /// An image with generation parameters.
    Parameters(Box<ImageInfo>),
    /// Any other image (an img2img source).
    Image,
    /// A checkpoint of a family Kiln does not run.
    Unsupported(kiln_engine::family::ModelFamily),
    /// Nothing Kiln knows.
    Unknown,
    /// It could not be read.
    Unreadable(String),
}

/// A job for the I/O thread.
#[derive(Debug, Clone)]
pub enum IoRequest {
    /// Write a finished image into `dir` (a new name, PNG with its recipe), with a gallery
    /// thumbnail of edge `thumb`.
    SaveOutput {
        /// Pixels.
        image: RgbImage,
        /// Its recipe.
        recipe: Box<Recipe>,
        /// The output folder.
        dir: PathBuf,
        /// Thumbnail edge in pixels.
        thumb: u32,
    },
    /// List the PNGs in `dir` with what they record, newest first.
    ScanGallery {
        /// The output folder.
        dir: PathBuf,
    },
    /// A thumbnail of the image file `path`, at most `size` pixels on a side.
    Thumbnail {
        /// What it is for.
        key: ThumbKey,
        /// The image file.
        path: PathBuf,
        /// Longest side.
        size: u32,
    },
    /// Read an image file.
    ReadImage {
        /// What for.
        purpose: ImagePurpose,
        /// The file.
        path: PathBuf,
    },
    /// Tell what a dropped path is.
    Classify {
        /// The file or folder.
        path: PathBuf,
        /// Asked by Restore from image… (only parameters are wanted), not by a drop.
        restore: bool,
    },
    /// The image files of a dataset folder.
    ListDataset {
        /// The folder.
        dir: PathBuf,
    },
    /// Write a caption atomically.
    WriteCaption {
        /// Dataset entry.
        index: usize,
        /// The `.txt` beside the image.
        path: PathBuf,
        /// The caption.
        text: String,
    },
    /// Write `image` with `recipe` to `dest` (Save as…).
    SaveAs {
        /// Pixels.
        image: RgbImage,
        /// Its recipe.
        recipe: Box<Recipe>,
        /// The new file.
        dest: PathBuf,
        /// Whether an existing file there may be replaced (the user chose that very name; not
        /// when Kiln added the `.png`).
        replace: bool,
    },
    /// What a run of a training configuration's name already left in its output folder.
    RunOnDisk {
        /// The run.
        config: Box<TrainingConfig>,
    },
    /// Show `dir` in the system's file manager.
    OpenFolder {
        /// The folder.
        dir: PathBuf,
    },
    /// Whether the model at `path` is still there, before `then` opens it.
    ModelExists {
        /// The file or folder.
        path: PathBuf,
        /// What waits for the answer.
        then: AfterCheck,
    },
}

/// What waits for an [`IoRequest::ModelExists`] answer.
#[derive(Debug, Clone)]
pub enum AfterCheck {
    /// "Reuse parameters" of a Kiln recipe: its model, LoRA stack and embeddings.
    Reuse(Box<kiln_engine::resolve::GenerationSpec>),
    /// Opening the remembered model at start.
    Start,
}

/// A listed gallery image.
#[derive(Debug, Clone)]
pub struct GalleryEntry {
    /// The PNG.
    pub path: PathBuf,
    /// What it records, if anything.
    pub info: Option<ImageInfo>,
}

/// What a training run's name already holds in its output folder: the window asks before a
/// new run takes the name, and says exactly which run and step Resume continues.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunOnDisk {
    /// The result and checkpoints there.
    pub existing: ExistingRun,
    /// The newest checkpoint, as its header tells (None: none, or unreadable).
    pub latest: Option<CheckpointSummary>,
    /// Why the newest checkpoint cannot be read, if it cannot.
    pub latest_error: Option<String>,
    /// The first name no run uses yet ("keep both").
    pub free_name: String,
    /// The file under that name is not a Kiln training run's result (a downloaded LoRA, …):
    /// overwriting it loses something no checkpoint holds.
    pub foreign_result: bool,
}

impl RunOnDisk {
    /// Looks at the run `config` names (a few directory reads and one header).
    pub fn look(config: &TrainingConfig) -> Self {
        let existing = existing_run(&config.output, &config.name);
        let (latest, latest_error) = match existing.checkpoints.last() {
            None => (None, None),
            Some(path) => match checkpoint_summary(path) {
                Ok(s) => (Some(s), None),
                Err(e) => (None, Some(e.to_string())),
            },
        };
        let foreign_result = existing.result.as_ref().is_some_and(|r| {
            kiln_engine::weights::safetensors::SafeTensors::open(r)
                .map_or(true, |f| !f.metadata().contains_key("kiln_training_config"))
        });
        RunOnDisk {
            free_name: free_name(&config.output, &config.name),
            existing,
            latest,
            latest_error,
            foreign_result,
        }
    }
}

/// An answer of the I/O thread.
#[derive(Debug)]
pub enum IoResult {
    /// An output was written.
    Saved {
        /// Where.
        path: PathBuf,
        /// Its recipe (the gallery's info comes from it, not from reading the file back).
        recipe: Box<Recipe>,
        /// Its gallery thumbnail.
        thumb: egui::ColorImage,
    },
    /// An output could not be written.
    SaveFailed(String),
    /// The gallery's files (or why the folder could not be read).
    Gallery(Result<Vec<GalleryEntry>, String>),
    /// A thumbnail (None: the file does not decode).
    Thumbnail {
        /// What it is for.
        key: ThumbKey,
        /// The pixels.
        image: Option<egui::ColorImage>,
    },
    /// An image read for `purpose`.
    Image {
        /// What for.
        purpose: ImagePurpose,
        /// The file.
        path: PathBuf,
        /// The pixels and what the file records, or why it failed.
        result: Result<(RgbImage, Option<Box<Recipe>>), String>,
    },
    /// What a dropped path is.
    Classified {
        /// The file or folder.
        path: PathBuf,
        /// What it is.
        what: Dropped,
        /// Asked by Restore from image….
        restore: bool,
    },
    /// A dataset folder's image files.
    Dataset {
        /// The folder.
        dir: PathBuf,
        /// The files, or why not.
        result: Result<Vec<PathBuf>, String>,
    },
    /// A caption was (or was not) written.
    CaptionWritten {
        /// Dataset entry.
        index: usize,
        /// The caption.
        text: String,
        /// Whether it worked.
        result: Result<(), String>,
    },
    /// Save as… ended.
    SavedAs(Result<PathBuf, String>),
    /// What a run of that name left in its output folder.
    RunOnDisk {
        /// The run asked about.
        config: Box<TrainingConfig>,
        /// What is there.
        run: Box<RunOnDisk>,
    },
    /// A file manager could not be opened on `dir` (`why`).
    FolderNotOpened {
        /// The folder.
        dir: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// A file manager opened (or is opening).
    FolderOpened,
    /// Whether a model is still there.
    ModelExists {
        /// The file or folder.
        path: PathBuf,
        /// Whether it exists.
        exists: bool,
        /// What waits for the answer.
        then: AfterCheck,
    },
}

/// The I/O thread and its channels.
pub struct IoWorker {
    requests: Option<Sender<IoRequest>>,
    results: Receiver<IoResult>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for IoWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoWorker").finish_non_exhaustive()
    }
}

impl IoWorker {
    /// Starts the thread; `repaint` wakes the window after every answer.
    pub fn spawn(repaint: Repaint) -> Self {
        let (tx, rx) = channel::<IoRequest>();
        let (results_tx, results) = channel();
        let thread = std::thread::Builder::new()
            .name("kiln-io".into())
            .spawn(move || {
                for request in rx {
                    let _ = results_tx.send(run(request));
                    repaint();
                }
            })
            .map_err(|e| tracing::error!("cannot start the I/O thread: {e}"))
            .ok();
        IoWorker {
            requests: Some(tx),
            results,
            thread,
        }
    }

    /// Queues `request`.
    pub fn send(&self, request: IoRequest) {
        if let Some(tx) = &self.requests {
            let _ = tx.send(request);
        }
    }

    /// Every answer waiting, in order.
    pub fn drain(&self) -> Vec<IoResult> {
        self.results.try_iter().collect()
    }
}

impl Drop for IoWorker {
    fn drop(&mut self) {
        // Closing the channel ends the thread once it has handled every request already
        // sent (saving the last images included; a file write is never cut short).
        self.requests = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Shows `dir` in the system's file manager (`xdg-open`, `open`, `explorer`). A launcher
/// that fails within half a second (no file manager, no handler) is an error; one still
/// running then is taken to have opened it and is left to finish on a thread of its own.
fn open_folder(dir: &Path) -> Result<(), String> {
    if !dir.is_dir() {
        return Err(format!("{} is not a folder (yet)", dir.display()));
    }
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(windows) {
        "explorer"
    } else {
        "xdg-open"
    };
    let mut child = std::process::Command::new(opener)
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("{opener} could not be started: {e}"))?;
    // Short: the I/O thread answers nothing else meanwhile. A launcher with no handler fails
    // at once.
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_millis(500) {
        match child.try_wait() {
            // Explorer exits 1 even when it opened the folder.
            Ok(Some(status)) if status.success() || cfg!(windows) => return Ok(()),
            Ok(Some(status)) => return Err(format!("{opener} found no file manager ({status})")),
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(50)),
            Err(e) => return Err(format!("{opener}: {e}")),
        }
    }
    std::thread::spawn(move || child.wait());
    Ok(())
}

/// RGB8 → egui image.
pub fn to_color_image(image: &RgbImage) -> egui::ColorImage {
    egui::ColorImage::from_rgb([image.width, image.height], &image.pixels)
}

/// `image` scaled down to at most `size` pixels on a side.
pub fn thumbnail(image: &RgbImage, size: u32) -> egui::ColorImage {
    let scale = (f64::from(size) / image.width.max(image.height) as f64).min(1.0);
    let (w, h) = (
        ((image.width as f64 * scale) as usize).max(1),
        ((image.height as f64 * scale) as usize).max(1),
    );
    if (w, h) == (image.width, image.height) {
        return to_color_image(image);
    }
    match image::RgbImage::from_raw(
        image.width as u32,
        image.height as u32,
        image.pixels.clone(),
    ) {
        Some(full) => {
            let small = image::imageops::thumbnail(&full, w as u32, h as u32);
            egui::ColorImage::from_rgb([w, h], small.as_raw())
        }
        None => to_color_image(&kiln_engine::image::fit(image, w, h)),
    }
}

/// A new file name in `dir` for an image of `seed`: `kiln-<ms>-<seed>.png`, numbered if taken.
fn output_path(dir: &Path, seed: u64) -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let mut path = dir.join(format!("kiln-{stamp}-{seed}.png"));
    let mut n = 1;
    while path.exists() {
        path = dir.join(format!("kiln-{stamp}-{seed}-{n}.png"));
        n += 1;
    }
    path
}

fn scan_gallery(dir: &Path) -> Result<Vec<GalleryEntry>, String> {
    let listing = match std::fs::read_dir(dir) {
        Ok(d) => d,
        // A folder that does not exist yet is an empty gallery.
        Err(_) if !dir.exists() => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = listing
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("png")))
        .map(|p| {
            (
                std::fs::metadata(&p)
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH),
                p,
            )
        })
        .collect();
    files.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
    Ok(files
        .into_iter()
        .map(|(_, path)| GalleryEntry {
            info: read_image_info(&path).ok(),
            path,
        })
        .collect())
}

fn classify(path: &Path) -> Dropped {
    // A folder that is not a diffusers model or PEFT adapter is a training dataset.
    if path.is_dir()
        && !path.join("model_index.json").exists()
        && !path.join("adapter_config.json").exists()
    {
        return Dropped::DatasetFolder;
    }
    let is_image = path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        matches!(
            e.to_ascii_lowercase().as_str(),
            "png" | "jpg" | "jpeg" | "webp"
        )
    });
    if is_image {
        return match read_image_info(path) {
            Ok(info) => Dropped::Parameters(Box::new(info)),
            Err(_) => Dropped::Image,
        };
    }
    match inspect(path) {
        Ok(Inspection::Checkpoint(_)) => Dropped::Checkpoint,
        Ok(Inspection::Lora(_)) => Dropped::Lora,
        Ok(Inspection::Embedding { .. }) => Dropped::Embedding,
        Ok(Inspection::UnsupportedCheckpoint { family }) => Dropped::Unsupported(family),
        Ok(Inspection::Unknown { .. }) => Dropped::Unknown,
        Err(e) => Dropped::Unreadable(e.to_string()),
    }
}

fn run(request: IoRequest) -> IoResult {
    match request {
        IoRequest::SaveOutput {
            image,
            recipe,
            dir,
            thumb,
        } => {
            if let Err(e) = std::fs::create_dir_all(&dir) {
                return IoResult::SaveFailed(format!(
                    "cannot create the output folder {}: {e}",
                    dir.display()
                ));
            }
            let path = output_path(&dir, recipe.seed);
            match write_png_with_recipe(&path, &image, &recipe) {
                Ok(()) => IoResult::Saved {
                    thumb: thumbnail(&image, thumb),
                    path,
                    recipe,
                },
                Err(e) => IoResult::SaveFailed(e.to_string()),
            }
        }
        IoRequest::ScanGallery { dir } => IoResult::Gallery(scan_gallery(&dir)),
        IoRequest::Thumbnail { key, path, size } => IoResult::Thumbnail {
            key,
            image: kiln_engine::image::read_image(&path)
                .ok()
                .map(|img| thumbnail(&img, size)),
        },
        IoRequest::ReadImage { purpose, path } => {
            let result = kiln_engine::image::read_image(&path)
                .map(|img| {
                    let recipe = read_image_info(&path)
                        .ok()
                        .filter(|i| i.source == Source::Kiln)
                        .and_then(|i| i.recipe)
                        .map(Box::new);
                    (img, recipe)
                })
                .map_err(|e| e.to_string());
            IoResult::Image {
                purpose,
                path,
                result,
            }
        }
        IoRequest::Classify { path, restore } => IoResult::Classified {
            restore,
            what: classify(&path),
            path,
        },
        IoRequest::ListDataset { dir } => IoResult::Dataset {
            result: kiln_engine::training::dataset::image_files(&dir).map_err(|e| e.to_string()),
            dir,
        },
        IoRequest::WriteCaption { index, path, text } => IoResult::CaptionWritten {
            result: kiln_engine::fs::write_atomic(&path, text.as_bytes())
                .map_err(|e| e.to_string()),
            index,
            text,
        },
        IoRequest::SaveAs {
            image,
            recipe,
            dest,
            replace,
        } => IoResult::SavedAs(if !replace && dest.exists() {
            Err(format!(
                "{} exists already: choose another name, or that one with its .png",
                dest.display()
            ))
        } else {
            write_png_with_recipe(&dest, &image, &recipe)
                .map(|()| dest)
                .map_err(|e| e.to_string())
        }),
        IoRequest::RunOnDisk { config } => IoResult::RunOnDisk {
            run: Box::new(RunOnDisk::look(&config)),
            config,
        },
        IoRequest::OpenFolder { dir } => match open_folder(&dir) {
            Ok(()) => IoResult::FolderOpened,
            Err(why) => IoResult::FolderNotOpened { dir, why },
        },
        IoRequest::ModelExists { path, then } => IoResult::ModelExists {
            exists: path.exists(),
            path,
            then,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_taken_by_a_file_no_run_made_is_marked_foreign() {
        let dir = tempfile::tempdir().unwrap();
        let config = TrainingConfig {
            output: dir.path().to_owned(),
            name: "style".into(),
            ..TrainingConfig::default()
        };
        let free = RunOnDisk::look(&config);
        assert!(free.existing.is_empty() && !free.foreign_result);
        assert_eq!(free.free_name, "style");
        // A downloaded LoRA under the run's name: no kiln_training_config in its header.
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/fixtures/adapters/kohya_qkvo.safetensors"),
            dir.path().join("style.safetensors"),
        )
        .unwrap();
        let taken = RunOnDisk::look(&config);
        assert!(taken.foreign_result);
        assert_eq!(taken.free_name, "style-2");
        assert!(taken.latest.is_none() && taken.latest_error.is_none());
    }
}
