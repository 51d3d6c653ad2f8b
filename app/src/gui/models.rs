//! The model manager's runtime side: the models folder scanned on a background thread, Stable
//! Diffusion 1.5 downloaded on a thread of its own (never the engine's, so generating goes on
//! during a download), and the first-run choice of the shipped model. The panel that draws it
//! is `panels/models.rs`; the folder, the Hub endpoint and the fp16 choice are persisted in
//! [`super::state::Settings`].

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kiln_engine::download::{DownloadProgress, ModelEntry, SD15_REPO, download, sd15_files};
use kiln_engine::pipeline::CancelToken;
use kiln_engine::weights::inspect::Inspection;

use super::app::{EmbeddingStatus, KilnApp, ModelStatus};

/// One row of the manager's list.
#[derive(Debug, Clone)]
pub struct ModelRow {
    /// What the engine made of the file or folder.
    pub entry: ModelEntry,
    /// The model shipped with Kiln (not in the models folder).
    pub built_in: bool,
}

impl ModelRow {
    /// The name shown: the file or folder name (the shipped model's name for the built-in one).
    pub fn name(&self) -> String {
        if self.built_in {
            return kiln_engine::bundled::NAME.to_owned();
        }
        self.entry
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.entry.path.display().to_string())
    }

    /// "checkpoint", "LoRA", "embedding" or "unsupported checkpoint".
    pub fn kind(&self) -> &'static str {
        match &self.entry.kind {
            Inspection::Checkpoint(_) => "checkpoint",
            Inspection::Lora(_) => "LoRA",
            Inspection::Embedding { .. } => "embedding",
            Inspection::UnsupportedCheckpoint { .. } => "unsupported checkpoint",
            Inspection::Unknown { .. } => "unknown",
        }
    }

    /// The model family it belongs to (or was made for).
    pub fn family(&self) -> String {
        match &self.entry.kind {
            Inspection::Checkpoint(info) => info.family.clone(),
            Inspection::Lora(report) => report.family.clone().unwrap_or_else(|| "—".into()),
            Inspection::Embedding { width, .. } => match width {
                768 => "Stable Diffusion 1.x".into(),
                1024 => "Stable Diffusion 2.x".into(),
                w => format!("{w}-wide text encoder"),
            },
            Inspection::UnsupportedCheckpoint { family } => family.clone(),
            Inspection::Unknown { .. } => "—".into(),
        }
    }

    /// A short description (layout and weights, rank, vectors).
    pub fn details(&self) -> String {
        match &self.entry.kind {
            Inspection::Checkpoint(info) => {
                let layout = match info.layout {
                    kiln_engine::weights::Layout::Diffusers => "diffusers folder",
                    kiln_engine::weights::Layout::SingleFile => "single file",
                };
                format!("{layout} · {}", info.dtype)
            }
            Inspection::Lora(report) => {
                let ranks: Vec<String> = report.ranks.iter().map(|r| r.to_string()).collect();
                format!("rank {} · {} modules", ranks.join("/"), report.modules)
            }
            Inspection::Embedding {
                token,
                vectors,
                width,
                ..
            } => format!("token {token} · {vectors}×{width}"),
            Inspection::UnsupportedCheckpoint { .. } => "Kiln runs SD 1.x only".into(),
            Inspection::Unknown { .. } => String::new(),
        }
    }

    /// Why it cannot be used with Kiln's SD 1.x models, if it cannot.
    pub fn refusal(&self) -> Option<String> {
        match &self.entry.kind {
            Inspection::UnsupportedCheckpoint { family } => Some(format!(
                "a {family} checkpoint; Kiln runs Stable Diffusion 1.x"
            )),
            Inspection::Lora(report)
                if report
                    .family
                    .as_deref()
                    .is_some_and(|f| f != kiln_engine::adapters::lora::MODEL_FAMILY) =>
            {
                Some(format!(
                    "made for {}; Kiln runs Stable Diffusion 1.x",
                    report.family.clone().unwrap_or_default()
                ))
            }
            Inspection::Embedding { width: 1024, .. } => Some(
                "made for Stable Diffusion 2.x (1024-wide); Kiln runs Stable Diffusion 1.x".into(),
            ),
            _ => None,
        }
    }
}

/// `bytes` for people: "912 B", "4.4 MB", "3.44 GB" (decimal units, as download sizes are
/// quoted).
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if value >= 100.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else if value >= 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

/// The bytes of a file, or of every file under a folder (what the Models tab shows; unreadable
/// entries count 0).
pub fn size_on_disk(path: &Path) -> u64 {
    if path.is_dir() {
        std::fs::read_dir(path)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| size_on_disk(&e.path()))
                    .sum()
            })
            .unwrap_or(0)
    } else {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }
}

/// What a scan found: the rows, or why the folder could not be read.
type ScanResult = Result<Vec<ModelRow>, String>;

/// Lists the shipped model (first) and every model in `dir`. A folder that does not exist yet
/// is empty, not an error (it is created by the first download).
fn scan(dir: &Path, bundled: Option<&Path>) -> ScanResult {
    let mut rows = Vec::new();
    if let Some(b) = bundled {
        match kiln_engine::weights::inspect::inspect(b) {
            Ok(kind) => rows.push(ModelRow {
                entry: ModelEntry {
                    path: b.to_owned(),
                    kind,
                    bytes: size_on_disk(b),
                },
                built_in: true,
            }),
            Err(e) => tracing::warn!("the shipped model at {} is unreadable: {e}", b.display()),
        }
    }
    let found = match kiln_engine::download::scan_models(dir) {
        Ok(found) => found,
        Err(_) if !dir.exists() => Vec::new(),
        Err(e) => return Err(e.to_string()),
    };
    let bundled_canon = bundled.and_then(|b| b.canonicalize().ok());
    rows.extend(
        found
            .into_iter()
            .filter(|e| bundled_canon.is_none() || e.path.canonicalize().ok() != bundled_canon)
            .map(|entry| ModelRow {
                entry,
                built_in: false,
            }),
    );
    Ok(rows)
}

/// A message from the download thread.
#[derive(Debug)]
enum DownloadMessage {
    Progress(DownloadProgress),
    Done(kiln_engine::Result<PathBuf>),
}

/// A download of Stable Diffusion 1.5 in progress.
#[derive(Debug)]
pub struct Download {
    /// Stops it (between two chunks; what arrived stays for the next attempt).
    pub cancel: CancelToken,
    /// The last progress report.
    pub progress: Option<DownloadProgress>,
    /// Where the files go.
    pub dest: PathBuf,
    /// The endpoint it talks to.
    pub endpoint: String,
    /// When it started.
    pub started: Instant,
    /// Bytes received in this session (for the rate; what earlier attempts left is not
    /// counted).
    pub received: u64,
    messages: Receiver<DownloadMessage>,
    thread: Option<JoinHandle<()>>,
}

/// The model manager's runtime state (nothing here is persisted).
#[derive(Debug, Default)]
pub struct ModelsTab {
    /// The shipped model, when this installation has one.
    pub bundled: Option<PathBuf>,
    /// What the last scan found.
    pub rows: Vec<ModelRow>,
    /// A scan is running.
    pub scanning: bool,
    /// Why the last scan failed.
    pub scan_error: Option<String>,
    /// The running download.
    pub download: Option<Download>,
    /// How the last download ended, when it did not succeed.
    pub download_end: Option<DownloadEnd>,
    /// The first-run model is loading: take its native size once it is ready.
    pub take_native_size: bool,
    scan_results: Option<Receiver<ScanResult>>,
    /// A cancelled download's thread that has not returned yet (a new download waits for it,
    /// so two threads never write the same files).
    stopping: Option<JoinHandle<()>>,
}

impl ModelsTab {
    /// Nothing scanned yet; `bundled` is the shipped model, when there is one.
    pub fn new(bundled: Option<PathBuf>) -> Self {
        ModelsTab {
            bundled,
            ..Default::default()
        }
    }

    /// Whether a download can start now.
    pub fn can_download(&self) -> bool {
        self.download.is_none() && self.stopping.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        // Closing the window stops the download; the partial file resumes next time.
        self.cancel.cancel();
    }
}

/// Where Stable Diffusion 1.5 goes in `models_dir`.
pub fn sd15_dest(models_dir: &Path, fp16: bool) -> PathBuf {
    models_dir.join(if fp16 {
        "stable-diffusion-v1-5-fp16"
    } else {
        "stable-diffusion-v1-5"
    })
}

/// The host part of an endpoint URL ("huggingface.co").
fn host(endpoint: &str) -> &str {
    let rest = endpoint
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(endpoint);
    rest.split('/').next().unwrap_or(rest)
}

/// How a download ended without a model: what to tell the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadEnd {
    /// The headline ("Could not reach huggingface.co").
    pub title: String,
    /// What happened and what to do.
    pub details: String,
    /// A failure (false: the user cancelled).
    pub error: bool,
}

/// What to tell the user when a download ends with `error`. `reached` says whether the
/// server answered with the file list (else it was never reached).
pub fn download_failure(endpoint: &str, error: &kiln_engine::Error, reached: bool) -> DownloadEnd {
    use kiln_engine::Error;
    let (title, details): (String, String) = match error {
        Error::Cancelled => (
            "Download cancelled".into(),
            "What arrived is kept; Get Stable Diffusion 1.5 again to resume.".into(),
        ),
        Error::Network { reason, .. }
            if !reached
                && !reason.starts_with("http status")
                && !reason.starts_with("not a Hub file list")
                && !reason.starts_with("the repository has no file") =>
        {
            (
                format!("Could not reach {}", host(endpoint)),
                format!(
                    "Could not reach {}: {reason} — check your connection, or set a mirror \
                     (Hub endpoint) in the Models tab's settings.",
                    host(endpoint)
                ),
            )
        }
        Error::Network { .. } if !reached => (
            format!("{} did not serve Stable Diffusion 1.5", host(endpoint)),
            format!(
                "{error}. Is the Hub endpoint in the Models tab's settings a Hugging Face Hub \
                 (or a mirror with its layout)?"
            ),
        ),
        Error::Network { .. } => (
            "The download was interrupted".into(),
            format!("{error}. What arrived is kept; Get Stable Diffusion 1.5 again to resume."),
        ),
        Error::ChecksumMismatch { .. } => (
            "A downloaded file was damaged".into(),
            format!("{error}. Get Stable Diffusion 1.5 again to fetch it anew."),
        ),
        e => ("The download failed".into(), e.to_string()),
    };
    DownloadEnd {
        title,
        details,
        error: !matches!(error, Error::Cancelled),
    }
}

impl KilnApp {
    /// Scans the models folder again (on a background thread; the list updates when it ends).
    pub fn rescan_models(&mut self) {
        let (tx, rx) = channel();
        let dir = self.settings.models_dir.clone();
        let bundled = self.models.bundled.clone();
        let repaint = self.repaint();
        let spawned = std::thread::Builder::new()
            .name("kiln-scan-models".into())
            .spawn(move || {
                let _ = tx.send(scan(&dir, bundled.as_deref()));
                repaint();
            });
        match spawned {
            Ok(_) => {
                self.models.scanning = true;
                self.models.scan_results = Some(rx);
            }
            Err(e) => self.notify("Cannot scan the models folder", e.to_string(), true),
        }
    }

    /// Starts downloading Stable Diffusion 1.5 into the models folder (resuming what an
    /// earlier attempt left), on a thread of its own.
    pub fn start_sd15_download(&mut self) {
        if !self.models.can_download() {
            return;
        }
        self.models.stopping = None;
        self.models.download_end = None;
        let fp16 = self.settings.download_fp16;
        let dest = sd15_dest(&self.settings.models_dir, fp16);
        let endpoint = self
            .settings
            .hub_endpoint
            .trim()
            .trim_end_matches('/')
            .to_owned();
        let cancel = CancelToken::new();
        let (tx, rx) = channel();
        let repaint = self.repaint();
        let (thread_cancel, thread_dest, thread_endpoint) =
            (cancel.clone(), dest.clone(), endpoint.clone());
        let spawned = std::thread::Builder::new()
            .name("kiln-download".into())
            .spawn(move || {
                let mut last: Option<(Instant, usize, String)> = None;
                let result = download(
                    &thread_endpoint,
                    SD15_REPO,
                    "main",
                    &sd15_files(fp16),
                    &thread_dest,
                    &thread_cancel,
                    &mut |p| {
                        // At most ten reports a second, and every file's first and last.
                        let due = last.as_ref().is_none_or(|(t, files_done, file)| {
                            t.elapsed() >= Duration::from_millis(100)
                                || *files_done != p.files_done
                                || *file != p.file
                        }) || p.done == p.size;
                        if due {
                            last = Some((Instant::now(), p.files_done, p.file.clone()));
                            let _ = tx.send(DownloadMessage::Progress(p));
                            repaint();
                        }
                    },
                );
                let _ = tx.send(DownloadMessage::Done(result));
                repaint();
            });
        match spawned {
            Ok(thread) => {
                self.models.download = Some(Download {
                    cancel,
                    progress: None,
                    dest,
                    endpoint,
                    started: Instant::now(),
                    received: 0,
                    messages: rx,
                    thread: Some(thread),
                });
            }
            Err(e) => self.notify("Cannot start the download", e.to_string(), true),
        }
    }

    /// Stops the download. The manager forgets it at once; its thread ends after the chunk it
    /// is reading (a stalled connection cannot hold the window).
    pub fn cancel_download(&mut self) {
        if let Some(mut d) = self.models.download.take() {
            d.cancel.cancel();
            self.models.stopping = d.thread.take();
            self.models.download_end = Some(download_failure(
                &d.endpoint,
                &kiln_engine::Error::Cancelled,
                d.progress.is_some(),
            ));
        }
    }

    /// Uses a listed model: a checkpoint loads, a LoRA joins the stack, an embedding loads.
    pub fn use_model_row(&mut self, row: usize) {
        let Some(r) = self.models.rows.get(row).cloned() else {
            return;
        };
        if let Some(reason) = r.refusal() {
            self.notify(format!("Cannot use {}", r.name()), reason, true);
            return;
        }
        match r.entry.kind {
            Inspection::Checkpoint(_) => self.load_model(r.entry.path),
            Inspection::Lora(_) => self.add_lora(r.entry.path, 1.0),
            Inspection::Embedding { .. } => self.add_embedding(r.entry.path, None),
            Inspection::UnsupportedCheckpoint { .. } | Inspection::Unknown { .. } => {}
        }
    }

    /// Whether a listed model is in use: the loaded (or loading) checkpoint, a LoRA in the
    /// stack, an embedding loaded.
    pub fn model_row_in_use(&self, row: &ModelRow) -> bool {
        let same = |a: &Path, b: &Path| {
            a == b
                || (a.canonicalize().ok().is_some()
                    && a.canonicalize().ok() == b.canonicalize().ok())
        };
        let path = row.entry.path.as_path();
        match &row.entry.kind {
            Inspection::Checkpoint(_) => match &self.model {
                ModelStatus::Loading(p) => same(p, path),
                ModelStatus::Loaded { info, .. } => same(&info.path, path),
                _ => false,
            },
            Inspection::Lora(_) => self.settings.loras.iter().any(|l| same(&l.path, path)),
            Inspection::Embedding { .. } => self
                .settings
                .embeddings
                .iter()
                .zip(&self.embedding_status)
                .any(|(e, s)| same(&e.path, path) && !matches!(s, EmbeddingStatus::Failed(_))),
            _ => false,
        }
    }

    /// Takes what the scan and download threads sent (once a frame).
    pub fn poll_models(&mut self) {
        use std::sync::mpsc::TryRecvError;
        if let Some(rx) = &self.models.scan_results {
            let result = match rx.try_recv() {
                Ok(result) => Some(result),
                Err(TryRecvError::Empty) => None,
                // The thread ended without an answer (it panicked; the panic hook logged it).
                Err(TryRecvError::Disconnected) => {
                    Some(Err("the scan stopped unexpectedly".into()))
                }
            };
            if let Some(result) = result {
                self.models.scan_results = None;
                self.models.scanning = false;
                match result {
                    Ok(rows) => {
                        self.models.rows = rows;
                        self.models.scan_error = None;
                    }
                    Err(e) => self.models.scan_error = Some(e),
                }
            }
        }
        // None: still running; Some(None): the thread ended without a result (a panic).
        let mut finished: Option<Option<kiln_engine::Result<PathBuf>>> = None;
        if let Some(d) = &mut self.models.download {
            loop {
                match d.messages.try_recv() {
                    Ok(DownloadMessage::Progress(p)) => {
                        // Only growth within a file counts: a file's first report may start
                        // at what an earlier attempt left (or at its size, when complete).
                        if let Some(q) = d.progress.as_ref().filter(|q| q.file == p.file) {
                            d.received += p.done.saturating_sub(q.done);
                        }
                        d.progress = Some(p);
                    }
                    Ok(DownloadMessage::Done(result)) => finished = Some(Some(result)),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        finished.get_or_insert(None);
                        break;
                    }
                }
            }
        }
        if let Some(result) = finished
            && let Some(d) = self.models.download.take()
        {
            match result {
                Some(Ok(path)) => {
                    self.notify(
                        "Stable Diffusion 1.5 is ready",
                        format!("{} — pick it in the Models tab to load it.", path.display()),
                        false,
                    );
                }
                Some(Err(e)) => {
                    let end = download_failure(&d.endpoint, &e, d.progress.is_some());
                    self.notify(end.title.clone(), end.details.clone(), end.error);
                    self.models.download_end = Some(end);
                }
                None => {
                    let end = DownloadEnd {
                        title: "The download stopped unexpectedly".into(),
                        details: "What arrived is kept; Get Stable Diffusion 1.5 again to resume."
                            .into(),
                        error: true,
                    };
                    self.notify(end.title.clone(), end.details.clone(), true);
                    self.models.download_end = Some(end);
                }
            }
            self.rescan_models();
        }
    }

    /// Chooses the model to open at start: the remembered one; else (first run) the shipped
    /// model with the sample prompt and its native size; when the remembered model is gone,
    /// the shipped one with a notice.
    pub(crate) fn open_start_model(&mut self) {
        let bundled = self.models.bundled.clone();
        match (self.settings.model_path.clone(), bundled) {
            (Some(path), _) if path.exists() => self.load_model(path),
            (Some(path), Some(bundled)) => {
                self.settings.recent_models.retain(|p| p != &path);
                self.notify(
                    "The last model is gone",
                    format!(
                        "{} no longer exists; opened the built-in model {} instead.",
                        path.display(),
                        kiln_engine::bundled::NAME
                    ),
                    false,
                );
                self.open_bundled(bundled);
            }
            // No shipped model to fall back to: loading says what is missing.
            (Some(path), None) => self.load_model(path),
            (None, Some(bundled)) => self.open_bundled(bundled),
            (None, None) => {}
        }
    }

    fn open_bundled(&mut self, path: PathBuf) {
        if self.settings.prompt.trim().is_empty() {
            self.settings.prompt = kiln_engine::bundled::SAMPLE_PROMPT.to_owned();
            self.models.take_native_size = true;
        }
        self.load_model(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_download_sizes() {
        assert_eq!(format_bytes(912), "912 B");
        assert_eq!(format_bytes(4_385_040), "4.39 MB");
        assert_eq!(format_bytes(3_438_167_536), "3.44 GB");
        assert_eq!(format_bytes(12_500_000), "12.5 MB");
    }

    #[test]
    fn no_network_names_the_host_and_the_way_out() {
        let e = kiln_engine::Error::Network {
            url: format!(
                "{}/api/models/{SD15_REPO}/tree/main?recursive=1",
                kiln_engine::download::HUB
            ),
            reason: "io: failed to lookup address information".into(),
        };
        let end = download_failure(kiln_engine::download::HUB, &e, false);
        assert_eq!(end.title, "Could not reach huggingface.co");
        assert!(
            end.details
                .starts_with("Could not reach huggingface.co: io: failed to lookup")
        );
        assert!(
            end.details.contains("set a mirror (Hub endpoint)"),
            "{}",
            end.details
        );
        assert!(end.error);
        // The same error after bytes arrived is an interruption, and says how to resume.
        let end = download_failure(kiln_engine::download::HUB, &e, true);
        assert_eq!(end.title, "The download was interrupted");
        assert!(end.details.contains("again to resume"), "{}", end.details);
        // A server that answers but is no Hub says so.
        let e = kiln_engine::Error::Network {
            url: "http://mirror.example/api".into(),
            reason: "http status: 404".into(),
        };
        let end = download_failure("http://mirror.example/", &e, false);
        assert_eq!(
            end.title,
            "mirror.example did not serve Stable Diffusion 1.5"
        );
        // Cancelling is no failure.
        assert!(
            !download_failure(
                kiln_engine::download::HUB,
                &kiln_engine::Error::Cancelled,
                true
            )
            .error
        );
    }
}
