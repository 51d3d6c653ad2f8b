//! The Models tab: the models folder's checkpoints, LoRAs and embeddings (the shipped model
//! first, marked built in) with family, details and size, each with its action (Load, Add to
//! stack); Rescan; "Get Stable Diffusion 1.5" with progress and Cancel; the folder, Hub
//! endpoint and precision settings. The folder is scanned on a thread of its own, and Stable
//! Diffusion 1.5 downloads on another (never the engine's, so generating goes on during a
//! download); the first-run choice of the shipped model is the app's.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, TryRecvError, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kiln_engine::fs::size_on_disk;
use kiln_engine::inspect::Inspection;
use kiln_engine::job::CancelToken;
use kiln_engine::worker::Repaint;
use kiln_hub::catalog::{ModelEntry, SD15_REPO, scan_models, sd15_dest, sd15_files};
use kiln_hub::download::{DownloadProgress, download};

use super::{Ctx, row_button};
use crate::gui::actions::Action;
use crate::gui::actions::Notification;

/// One row of the manager's list.
#[derive(Debug, Clone)]
pub struct ModelRow {
    /// What the engine made of the file or folder.
    pub entry: ModelEntry,
    /// The model shipped with Kiln (not in the models folder).
    pub built_in: bool,
    /// Its path with links resolved (computed by the scan thread, so "in use" is decided
    /// without touching the disk in a frame).
    pub canonical: PathBuf,
}

/// What a listed model is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    /// A checkpoint Kiln runs.
    Checkpoint,
    /// A LoRA.
    Lora,
    /// A textual-inversion embedding.
    Embedding,
    /// A checkpoint of another family.
    Unsupported,
    /// Nothing Kiln knows.
    Unknown,
}

impl ModelRow {
    /// The name shown: the file or folder name (the shipped model's name for the built-in one).
    pub fn name(&self) -> String {
        if self.built_in && self.kind() == RowKind::Checkpoint {
            return kiln_hub::install::NAME.to_owned();
        }
        super::file_name(&self.entry.path)
    }

    /// What it is.
    pub fn kind(&self) -> RowKind {
        match &self.entry.kind {
            Inspection::Checkpoint(_) => RowKind::Checkpoint,
            Inspection::Lora(_) => RowKind::Lora,
            Inspection::Embedding { .. } => RowKind::Embedding,
            Inspection::UnsupportedCheckpoint { .. } => RowKind::Unsupported,
            Inspection::Unknown { .. } => RowKind::Unknown,
        }
    }

    /// "checkpoint", "LoRA", "embedding", "unsupported checkpoint" or "unknown".
    pub fn kind_label(&self) -> &'static str {
        match self.kind() {
            RowKind::Checkpoint => "checkpoint",
            RowKind::Lora => "LoRA",
            RowKind::Embedding => "embedding",
            RowKind::Unsupported => "unsupported checkpoint",
            RowKind::Unknown => "unknown",
        }
    }

    /// The model family it belongs to (or was made for).
    pub fn family(&self) -> String {
        match &self.entry.kind {
            Inspection::Checkpoint(info) => info.family.to_string(),
            Inspection::Lora(report) => report
                .family
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_else(|| "—".into()),
            Inspection::Embedding { width, .. } => match width {
                768 => "Stable Diffusion 1.x".into(),
                1024 => "Stable Diffusion 2.x".into(),
                w => format!("{w}-wide text encoder"),
            },
            Inspection::UnsupportedCheckpoint { family } => family.to_string(),
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
            Inspection::Unknown { .. } => "cannot be read as a model".into(),
        }
    }

    /// Why it cannot be used with Kiln's SD 1.x models, if it cannot.
    pub fn refusal(&self) -> Option<String> {
        if let Some(problem) = &self.entry.problem {
            return Some(problem.clone());
        }
        match &self.entry.kind {
            Inspection::UnsupportedCheckpoint { family } => Some(format!(
                "a {family} checkpoint; Kiln runs Stable Diffusion 1.x"
            )),
            Inspection::Lora(report)
                if report
                    .family
                    .as_ref()
                    .is_some_and(|f| *f != kiln_engine::family::ModelFamily::Sd1) =>
            {
                Some(format!(
                    "made for {}; Kiln runs Stable Diffusion 1.x",
                    self.family()
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

/// What a scan found.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// The rows: the shipped model first, then the folder's.
    pub rows: Vec<ModelRow>,
    /// Whether the folder exists.
    pub folder_exists: bool,
    /// Whether a (possibly partial) download of Stable Diffusion 1.5 is there: [f32, fp16].
    pub sd15_present: [bool; 2],
}

/// `path` with links resolved, else as an absolute path.
fn canonical(path: &Path) -> PathBuf {
    path.canonicalize()
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_owned())
}

/// Lists the shipped model (first) and every model in `dir`. A folder that does not exist yet
/// is empty, not an error (it is created by the first download).
fn scan(dir: &Path, bundled: Option<&Path>) -> Result<Scan, String> {
    let mut rows = Vec::new();
    // The shipped model first, then the LoRAs shipped with it (the example LoRA).
    let shipped: Vec<PathBuf> = bundled
        .map(|b| {
            std::iter::once(b.to_owned())
                .chain(kiln_hub::install::loras_beside(b))
                .collect()
        })
        .unwrap_or_default();
    for b in &shipped {
        match kiln_engine::inspect::inspect(b) {
            Ok(kind) => rows.push(ModelRow {
                entry: ModelEntry {
                    path: b.clone(),
                    kind,
                    bytes: size_on_disk(b),
                    problem: None,
                },
                built_in: true,
                canonical: canonical(b),
            }),
            Err(e) => tracing::warn!("the shipped {} is unreadable: {e}", b.display()),
        }
    }
    let found = match scan_models(dir) {
        Ok(found) => found,
        Err(_) if !dir.exists() => Vec::new(),
        Err(e) => return Err(e.to_string()),
    };
    let shipped_canon: Vec<PathBuf> = shipped.iter().map(|p| canonical(p)).collect();
    rows.extend(
        found
            .into_iter()
            .map(|entry| ModelRow {
                canonical: canonical(&entry.path),
                entry,
                built_in: false,
            })
            .filter(|row| !shipped_canon.contains(&row.canonical)),
    );
    Ok(Scan {
        rows,
        folder_exists: dir.is_dir(),
        sd15_present: [
            sd15_dest(dir, false).exists(),
            sd15_dest(dir, true).exists(),
        ],
    })
}

/// A message from the download thread.
#[derive(Debug)]
enum DownloadMessage {
    Progress(DownloadProgress),
    Done(kiln_hub::Result<PathBuf>),
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

impl Drop for Download {
    fn drop(&mut self) {
        // Closing the window stops the download; the partial file resumes next time.
        self.cancel.cancel();
    }
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

/// The host part of an endpoint URL ("huggingface.co").
fn host(endpoint: &str) -> &str {
    let rest = endpoint
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(endpoint);
    rest.split('/').next().unwrap_or(rest)
}

/// What to tell the user when a download ends with `error`. `reached` says whether the
/// server answered with the file list (else it was never reached).
pub fn download_failure(endpoint: &str, error: &kiln_hub::Error, reached: bool) -> DownloadEnd {
    use kiln_hub::Error;
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

/// What the Models tab needs to know of the rest of the studio to mark rows in use.
pub struct InUse<'a> {
    /// The loaded (or loading) checkpoint.
    pub model: Option<&'a Path>,
    /// The stack's LoRAs.
    pub loras: Vec<&'a Path>,
    /// The loaded embeddings.
    pub embeddings: Vec<&'a Path>,
}

/// The model manager's runtime state (nothing here is persisted).
pub struct ModelsView {
    /// The shipped model, when this installation has one.
    pub bundled: Option<PathBuf>,
    /// What the last scan found.
    pub scan: Scan,
    /// A scan is running.
    pub scanning: bool,
    /// Why the last scan failed.
    pub scan_error: Option<String>,
    /// The running download.
    pub download: Option<Download>,
    /// How the last download ended, when it did not succeed.
    pub download_end: Option<DownloadEnd>,
    scan_results: Option<Receiver<Result<Scan, String>>>,
    /// A cancelled download's thread that has not returned yet (a new download waits for it,
    /// so two threads never write the same files).
    stopping: Option<JoinHandle<()>>,
    repaint: Repaint,
}

impl std::fmt::Debug for ModelsView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelsView")
            .field("rows", &self.scan.rows.len())
            .finish_non_exhaustive()
    }
}

impl ModelsView {
    /// Nothing scanned yet; `bundled` is the shipped model, when there is one; `repaint`
    /// wakes the window when a thread has news.
    pub fn new(bundled: Option<PathBuf>, repaint: Repaint) -> Self {
        ModelsView {
            bundled,
            scan: Scan::default(),
            scanning: false,
            scan_error: None,
            download: None,
            download_end: None,
            scan_results: None,
            stopping: None,
            repaint,
        }
    }

    /// The rows of the last scan.
    pub fn rows(&self) -> &[ModelRow] {
        &self.scan.rows
    }

    /// Whether a download can start now.
    pub fn can_download(&self) -> bool {
        self.download.is_none() && self.stopping.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Scans `dir` again (on a background thread; the list updates when it ends).
    pub fn rescan(&mut self, dir: &Path) -> Option<Notification> {
        let (tx, rx) = channel();
        let dir = dir.to_owned();
        let bundled = self.bundled.clone();
        let repaint = self.repaint.clone();
        let spawned = std::thread::Builder::new()
            .name("kiln-scan-models".into())
            .spawn(move || {
                let _ = tx.send(scan(&dir, bundled.as_deref()));
                repaint();
            });
        match spawned {
            Ok(_) => {
                self.scanning = true;
                self.scan_results = Some(rx);
                None
            }
            Err(e) => Some(Notification::new(
                "Cannot scan the models folder",
                e.to_string(),
                true,
            )),
        }
    }

    /// Starts downloading Stable Diffusion 1.5 into `models_dir` (resuming what an earlier
    /// attempt left) from `endpoint`, on a thread of its own.
    pub fn start_sd15_download(
        &mut self,
        models_dir: &Path,
        endpoint: &str,
        fp16: bool,
    ) -> Option<Notification> {
        if !self.can_download() {
            return None;
        }
        self.stopping = None;
        self.download_end = None;
        let dest = sd15_dest(models_dir, fp16);
        let endpoint = endpoint.trim().trim_end_matches('/').to_owned();
        let cancel = CancelToken::new();
        let (tx, rx) = channel();
        let repaint = self.repaint.clone();
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
                self.download = Some(Download {
                    cancel,
                    progress: None,
                    dest,
                    endpoint,
                    started: Instant::now(),
                    received: 0,
                    messages: rx,
                    thread: Some(thread),
                });
                None
            }
            Err(e) => Some(Notification::new(
                "Cannot start the download",
                e.to_string(),
                true,
            )),
        }
    }

    /// Stops the download. The manager forgets it at once; its thread ends after the chunk it
    /// is reading (a stalled connection cannot hold the window).
    pub fn cancel_download(&mut self) {
        if let Some(mut d) = self.download.take() {
            d.cancel.cancel();
            self.stopping = d.thread.take();
            self.download_end = Some(download_failure(
                &d.endpoint,
                &kiln_hub::Error::Cancelled,
                d.progress.is_some(),
            ));
        }
    }

    /// Takes what the scan and download threads sent (once a frame); returns what to tell
    /// the user and whether the folder should be scanned again (a download ended).
    pub fn poll(&mut self) -> (Option<Notification>, bool) {
        if let Some(rx) = &self.scan_results {
            let result = match rx.try_recv() {
                Ok(result) => Some(result),
                Err(TryRecvError::Empty) => None,
                // The thread ended without an answer (it panicked; the panic hook logged it).
                Err(TryRecvError::Disconnected) => {
                    Some(Err("the scan stopped unexpectedly".into()))
                }
            };
            if let Some(result) = result {
                self.scan_results = None;
                self.scanning = false;
                match result {
                    Ok(scan) => {
                        self.scan = scan;
                        self.scan_error = None;
                    }
                    Err(e) => self.scan_error = Some(e),
                }
            }
        }
        // None: still running; Some(None): the thread ended without a result (a panic).
        let mut finished: Option<Option<kiln_hub::Result<PathBuf>>> = None;
        if let Some(d) = &mut self.download {
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
        let Some(result) = finished else {
            return (None, false);
        };
        let Some(d) = self.download.take() else {
            return (None, false);
        };
        let notice = match result {
            Some(Ok(path)) => Notification::new(
                "Stable Diffusion 1.5 is ready",
                format!("{} — pick it in the Models tab to load it.", path.display()),
                false,
            ),
            Some(Err(e)) => {
                let end = download_failure(&d.endpoint, &e, d.progress.is_some());
                let n = Notification::new(end.title.clone(), end.details.clone(), end.error);
                self.download_end = Some(end);
                n
            }
            None => {
                let end = DownloadEnd {
                    title: "The download stopped unexpectedly".into(),
                    details: "What arrived is kept; Get Stable Diffusion 1.5 again to resume."
                        .into(),
                    error: true,
                };
                let n = Notification::new(end.title.clone(), end.details.clone(), true);
                self.download_end = Some(end);
                n
            }
        };
        (Some(notice), true)
    }

    /// Whether a listed model is in use: the loaded (or loading) checkpoint, a LoRA in the
    /// stack, an embedding loaded. Decided without the disk: a path in use is compared, made
    /// absolute (lexically), with the row's path as listed and as the scan resolved it.
    pub fn in_use(row: &ModelRow, in_use: &InUse<'_>) -> bool {
        let same = |p: &Path| {
            let p = std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
            p == row.entry.path || p == row.canonical
        };
        match row.kind() {
            RowKind::Checkpoint => in_use.model.is_some_and(same),
            RowKind::Lora => in_use.loras.iter().any(|l| same(l)),
            RowKind::Embedding => in_use.embeddings.iter().any(|e| same(e)),
            _ => false,
        }
    }

    /// Draws the Models tab.
    pub fn ui(&mut self, ui: &mut egui::Ui, ctx: &mut Ctx<'_>, in_use: &InUse<'_>) {
        egui::ScrollArea::vertical().show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.heading("Models");
                if ui
                    .button("Rescan")
                    .on_hover_text("List the models folder again")
                    .clicked()
                    && let Some(n) = self.rescan(&ctx.settings.models_dir)
                {
                    ctx.actions.push(Action::Notify(n));
                }
                if self.scanning {
                    ui.spinner();
                }
            });
            ui.horizontal(|ui| {
                ui.weak(format!("Folder: {}", ctx.settings.models_dir.display()));
                if self.scan.folder_exists
                    && ui
                        .small_button("Open folder")
                        .on_hover_text("Show the models folder in the file manager")
                        .clicked()
                {
                    ctx.actions.push(Action::OpenUrl(format!(
                        "file://{}",
                        ctx.settings.models_dir.display()
                    )));
                }
            });
            if let Some(e) = &self.scan_error {
                ui.colored_label(
                    ui.visuals().error_fg_color,
                    format!("Cannot read the models folder: {e}"),
                );
            }
            ui.add_space(4.0);
            self.list(ui, ctx, in_use);
            ui.add_space(8.0);
            ui.separator();
            self.download_ui(ui, ctx);
            ui.add_space(8.0);
            ui.separator();
            self.settings_ui(ui, ctx);
        });
    }

    fn list(&mut self, ui: &mut egui::Ui, ctx: &mut Ctx<'_>, in_use: &InUse<'_>) {
        if self.scan.rows.is_empty() {
            if !self.scanning {
                ui.weak(
                    "No models here yet. Get Stable Diffusion 1.5 below, or copy checkpoints \
                     (.safetensors or diffusers folders), LoRAs and embeddings into the folder and \
                     press Rescan.",
                );
            }
            return;
        }
        egui::Grid::new("models-table")
            .striped(true)
            .num_columns(6)
            .spacing([16.0, 6.0])
            .show(ui, |ui| {
                for title in ["Name", "Kind", "Family", "Details", "Size", ""] {
                    ui.strong(title);
                }
                ui.end_row();
                for row in &self.scan.rows {
                    let name = row.name();
                    ui.horizontal(|ui| {
                        ui.label(&name)
                            .on_hover_text(row.entry.path.display().to_string());
                        if row.built_in {
                            let v = ui.visuals();
                            let badge = egui::RichText::new(" built in ")
                                .small()
                                .color(v.selection.stroke.color)
                                .background_color(v.selection.bg_fill);
                            ui.label(badge).on_hover_text(if row.kind() == RowKind::Lora {
                                "A LoRA that ships with Kiln, trained on kiln-tiny: striped fills"
                            } else {
                                "The model that ships with Kiln: small, fast, and made for \
                                 simple shapes and colours"
                            });
                        }
                    });
                    ui.label(row.kind_label());
                    ui.label(row.family());
                    ui.weak(row.details());
                    ui.label(format_bytes(row.entry.bytes));
                    if let Some(reason) = row.refusal() {
                        // Broken files are listed, with what is wrong in words.
                        let text = if row.entry.problem.is_some() {
                            format!("broken: {reason}")
                        } else {
                            "cannot use".to_owned()
                        };
                        ui.colored_label(ui.visuals().error_fg_color, text)
                            .on_hover_text(reason);
                    } else if Self::in_use(row, in_use) {
                        ui.weak(match row.kind() {
                            RowKind::Lora => "in the stack",
                            _ => "loaded",
                        });
                    } else {
                        let path = row.entry.path.clone();
                        let (text, label, action) = match row.kind() {
                            RowKind::Checkpoint => {
                                ("Load", format!("Load {name}"), Action::LoadModel(path))
                            }
                            RowKind::Lora => (
                                "Add to stack",
                                format!("Add {name} to the LoRA stack"),
                                Action::AddLora(path, 1.0),
                            ),
                            _ => (
                                "Load",
                                format!("Load embedding {name}"),
                                Action::AddEmbedding(path, None),
                            ),
                        };
                        if row_button(ui, text, &label) {
                            ctx.actions.push(action);
                        }
                    }
                    ui.end_row();
                }
            });
    }

    fn download_ui(&mut self, ui: &mut egui::Ui, ctx: &mut Ctx<'_>) {
        ui.heading("Stable Diffusion 1.5");
        let fp16 = ctx.settings.download_fp16;
        let dest = sd15_dest(&ctx.settings.models_dir, fp16);
        ui.label(format!(
            "The diffusers weights of Stable Diffusion 1.5 ({SD15_REPO}) from {}, into {}. About \
             {} GB; an interrupted download resumes, and every file is checked against its SHA-256.",
            ctx.settings.hub_endpoint,
            dest.display(),
            if fp16 { 2 } else { 4 }
        ));
        let idle = self.download.is_none();
        ui.add_enabled(
            idle,
            egui::Checkbox::new(
                &mut ctx.settings.download_fp16,
                "Half precision (fp16): 2 GB instead of 4",
            ),
        )
        .on_hover_text(
            "The same model in 16-bit weights; on the CPU Kiln computes in f32 either way",
        );
        let mut cancel = false;
        match &self.download {
            Some(d) => {
                progress(ui, d);
                cancel = ui
                    .button("Cancel download")
                    .on_hover_text("Stop; what arrived is kept and the next Get resumes from it")
                    .clicked();
            }
            None => {
                let listed = self.scan.rows.iter().any(|r| r.entry.path == dest);
                if ui
                    .add_enabled(
                        self.can_download(),
                        egui::Button::new("Get Stable Diffusion 1.5"),
                    )
                    .on_hover_text("Download (or finish downloading) Stable Diffusion 1.5")
                    .clicked()
                    && let Some(n) = self.start_sd15_download(
                        &ctx.settings.models_dir,
                        &ctx.settings.hub_endpoint,
                        fp16,
                    )
                {
                    ctx.actions.push(Action::Notify(n));
                }
                if listed {
                    ui.weak("It is in the list above; getting it again only checks the files.");
                } else if self.scan.sd15_present[usize::from(fp16)] {
                    ui.weak(format!(
                        "A partial download is in {}; Get Stable Diffusion 1.5 resumes it.",
                        dest.display()
                    ));
                }
                if let Some(end) = &self.download_end {
                    if end.error {
                        ui.colored_label(ui.visuals().error_fg_color, &end.title);
                    } else {
                        ui.strong(&end.title);
                    }
                    ui.label(&end.details);
                }
            }
        }
        if cancel {
            self.cancel_download();
        }
    }

    fn settings_ui(&mut self, ui: &mut egui::Ui, ctx: &mut Ctx<'_>) {
        egui::CollapsingHeader::new("Settings")
            .default_open(true)
            .show(ui, |ui| {
                let mut rescan = false;
                let s = &mut *ctx.settings;
                ui.horizontal(|ui| {
                    let l = ui.label("Models folder");
                    let mut text = s.models_dir.display().to_string();
                    let r = ui
                        .add(egui::TextEdit::singleline(&mut text).desired_width(380.0))
                        .labelled_by(l.id)
                        .on_hover_text("Where Kiln looks for models and puts downloads");
                    if r.changed() {
                        s.models_dir = text.into();
                    }
                    rescan |= r.lost_focus();
                    if ui.button("Browse…").clicked() {
                        ctx.actions
                            .push(Action::Pick(crate::gui::dialogs::Pick::ModelsFolder));
                    }
                    let default = crate::paths::default_models_dir();
                    if ui
                        .button("Default")
                        .on_hover_text(default.display().to_string())
                        .clicked()
                    {
                        s.models_dir = default;
                        rescan = true;
                    }
                });
                ui.horizontal(|ui| {
                    let l = ui.label("Hub endpoint");
                    ui.add(
                        egui::TextEdit::singleline(&mut s.hub_endpoint)
                            .hint_text(kiln_hub::download::HUB)
                            .desired_width(380.0),
                    )
                    .labelled_by(l.id)
                    .on_hover_text(
                        "The Hugging Face Hub, or a mirror with its layout, that downloads come from",
                    );
                    let default = crate::gui::state::default_hub_endpoint();
                    if ui.button("Reset").on_hover_text(&default).clicked() {
                        s.hub_endpoint = default;
                    }
                });
                if rescan && let Some(n) = self.rescan(&ctx.settings.models_dir) {
                    ctx.actions.push(Action::Notify(n));
                }
            });
    }
}

/// A running download's progress: file i of n, bytes, percentage, rate and time left.
fn progress(ui: &mut egui::Ui, d: &Download) {
    let Some(p) = &d.progress else {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label(format!("Connecting to {}…", d.endpoint));
        });
        return;
    };
    let number = if p.done == p.size && p.files_done > 0 {
        p.files_done
    } else {
        p.files_done + 1
    };
    ui.label(format!(
        "File {} of {}: {}",
        number.min(p.files),
        p.files,
        p.file
    ));
    let frac = if p.size == 0 {
        1.0
    } else {
        p.done as f32 / p.size as f32
    };
    let rate = d.received as f64 / d.started.elapsed().as_secs_f64().max(1e-3);
    ui.horizontal(|ui| {
        ui.add(
            egui::ProgressBar::new(frac)
                .desired_width(360.0)
                .text(format!(
                    "{} of {} ({:.0}%)",
                    format_bytes(p.done),
                    format_bytes(p.size),
                    frac * 100.0
                )),
        );
        let mut speed = format!("{}/s", format_bytes(rate as u64));
        if rate > 0.0 && p.done < p.size {
            let secs = (p.size - p.done) as f64 / rate;
            speed += &format!(" · {} left for this file", super::duration(secs));
        }
        ui.weak(speed);
    });
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
        let hub = kiln_hub::download::HUB;
        let e = kiln_hub::Error::Network {
            url: format!("{hub}/api/models/{SD15_REPO}/tree/main?recursive=1"),
            reason: "io: failed to lookup address information".into(),
        };
        let end = download_failure(hub, &e, false);
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
        let end = download_failure(hub, &e, true);
        assert_eq!(end.title, "The download was interrupted");
        assert!(end.details.contains("again to resume"), "{}", end.details);
        // A server that answers but is no Hub says so.
        let e = kiln_hub::Error::Network {
            url: "http://mirror.example/api".into(),
            reason: "http status: 404".into(),
        };
        let end = download_failure("http://mirror.example/", &e, false);
        assert_eq!(
            end.title,
            "mirror.example did not serve Stable Diffusion 1.5"
        );
        // Cancelling is no failure.
        assert!(!download_failure(hub, &kiln_hub::Error::Cancelled, true).error);
    }
}
