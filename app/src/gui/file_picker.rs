//! A built-in file and folder picker, drawn with egui as a modal dialog.
//!
//! Kiln asks the system for its file dialogs (rfd: an XDG desktop portal, else zenity). Where
//! neither exists — a bare window manager, a container, a remote X session — rfd returns
//! nothing, and the window shows this picker instead: a folder's entries, Up and Home, a
//! path field to type into, and Open / Choose folder / Save. It picks an existing file (by
//! extension, optionally also a folder holding a given file, such as a diffusers model
//! folder with its `model_index.json`), an existing folder, or a file name to save to.
//!
//! The shown folder is read synchronously, once, when it changes (and on Refresh); the
//! entries are cached and each frame draws from the cache. A local folder lists in
//! milliseconds, so a worker thread would buy nothing there; a folder on a slow network mount
//! can stall that one frame, which a dialog the user is waiting on can afford.
//!
//! Names that are not valid UTF-8 are shown lossily but picked by their real path.

use std::path::{Component, Path, PathBuf};

use egui::{Button, Key, Modifiers, TextEdit};

/// What the picker picks.
#[derive(Debug, Clone, PartialEq)]
pub enum PickKind {
    /// An existing file whose extension (lower-case, no dot) is in `extensions` (empty = any);
    /// when `folders_with` is Some(name), a folder that contains a file called `name`
    /// (e.g. "model_index.json" for a diffusers model folder) can be picked too.
    OpenFile {
        /// The extensions a file may have (lower-case, no dot); empty for any.
        extensions: Vec<String>,
        /// A file whose presence makes a folder pickable as a whole.
        folders_with: Option<String>,
    },
    /// An existing folder.
    Folder,
    /// A file name to save to (need not exist), with this default name.
    SaveFile {
        /// The name the "File name" field starts with.
        default_name: String,
    },
}

/// What a frame of the picker ended with.
#[derive(Debug, Clone, PartialEq)]
pub enum PickerOutcome<T> {
    /// Still open: show it again next frame.
    Open,
    /// The user picked this path for this purpose.
    Picked(T, PathBuf),
    /// The user closed the picker without picking.
    Cancelled,
}

/// One entry of the shown folder.
#[derive(Debug, Clone)]
struct Entry {
    /// The name as shown (lossy for names that are not UTF-8).
    name: String,
    /// The real path.
    path: PathBuf,
    /// A folder (or a link to one).
    is_dir: bool,
    /// A folder holding the `folders_with` file: pickable as a whole.
    marked: bool,
    /// Its name starts with '.'.
    hidden: bool,
}

/// The shown folder's entries, read once per visit.
#[derive(Debug, Clone)]
enum Listing {
    /// Folders first, then files, each sorted case-insensitively.
    Entries(Vec<Entry>),
    /// The folder could not be read: why.
    Error(String),
}

/// What the main button would do now.
#[derive(Debug, Clone, PartialEq)]
enum Main {
    /// Pick this path.
    Pick(PathBuf),
    /// Enter this folder (a plain folder selected in an Open dialog).
    Enter(PathBuf),
}

/// A modal file or folder picker; `T` is the caller's purpose tag, handed back with the pick.
pub struct FilePicker<T> {
    title: String,
    kind: PickKind,
    purpose: T,
    note: Option<String>,
    /// The shown folder (absolute, lexically normalised).
    dir: PathBuf,
    /// The home folder, if there is one.
    home: Option<PathBuf>,
    /// The "Path" field: the shown folder or the selected entry, or what the user typed.
    path_text: String,
    /// The "File name" field (SaveFile).
    file_name: String,
    show_hidden: bool,
    listing: Listing,
    /// The shown folder itself holds the `folders_with` file.
    dir_marked: bool,
    /// The selected entry (an index into the listing).
    selected: Option<usize>,
    /// Why the last typed path was refused.
    message: Option<String>,
}

impl<T: Clone> FilePicker<T> {
    /// `title` (window title, e.g. "Open model"), what it picks, the folder it starts in
    /// (falls back to the home folder, then "/" when it does not exist), the purpose handed
    /// back, and `note`: why the built-in picker is shown (e.g. "No system file dialog is
    /// available (no XDG desktop portal or zenity)"), shown as a weak line at the top.
    pub fn new(
        title: impl Into<String>,
        kind: PickKind,
        start: Option<&Path>,
        purpose: T,
        note: Option<String>,
    ) -> Self {
        let kind = match kind {
            PickKind::OpenFile {
                extensions,
                folders_with,
            } => PickKind::OpenFile {
                extensions: extensions
                    .iter()
                    .map(|e| e.trim_start_matches('.').to_lowercase())
                    .collect(),
                folders_with,
            },
            other => other,
        };
        let file_name = match &kind {
            PickKind::SaveFile { default_name } => default_name.clone(),
            _ => String::new(),
        };
        let home = home_dir();
        let dir = start
            .map(absolute)
            .filter(|p| p.is_dir())
            .or_else(|| home.clone().filter(|h| h.is_dir()))
            .unwrap_or_else(|| PathBuf::from("/"));
        let mut picker = FilePicker {
            title: title.into(),
            kind,
            purpose,
            note,
            dir: PathBuf::new(),
            home,
            path_text: String::new(),
            file_name,
            show_hidden: false,
            listing: Listing::Entries(Vec::new()),
            dir_marked: false,
            selected: None,
            message: None,
        };
        picker.set_dir(&dir);
        picker
    }

    /// Draws the picker as an [`egui::Modal`] (the rest of the window is blocked while it is
    /// open) and returns what happened this frame. Escape cancels.
    pub fn show(&mut self, ctx: &egui::Context) -> PickerOutcome<T> {
        let screen = ctx.content_rect().size();
        let width = (screen.x - 48.0).clamp(240.0, 640.0);
        let list_height = (screen.y - 280.0).clamp(96.0, 360.0);
        let modal = egui::Modal::new(egui::Id::unique("kiln_file_picker")).show(ctx, |ui| {
            ui.set_width(width);
            self.body(ui, list_height)
        });
        let mut done = modal.inner;
        if done.is_none()
            && modal.is_top_modal
            && !modal.any_popup_open
            && ctx.input_mut(|i| i.consume_key(Modifiers::NONE, Key::Escape))
        {
            done = Some(None);
        }
        match done {
            None => PickerOutcome::Open,
            Some(Some(path)) => {
                tracing::debug!(title = %self.title, path = %path.display(), "picked");
                PickerOutcome::Picked(self.purpose.clone(), path)
            }
            Some(None) => {
                tracing::debug!(title = %self.title, "picker cancelled");
                PickerOutcome::Cancelled
            }
        }
    }

    /// The folder shown.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The dialog's content; `Some(Some(path))` when picked, `Some(None)` when cancelled.
    fn body(&mut self, ui: &mut egui::Ui, list_height: f32) -> Option<Option<PathBuf>> {
        let mut done = None;
        ui.heading(&self.title);
        if let Some(note) = &self.note {
            ui.weak(note);
        }
        ui.add_space(4.0);

        ui.horizontal(|ui| {
            let parent = self.dir.parent().map(Path::to_path_buf);
            if ui
                .add_enabled(parent.is_some(), Button::new("Up"))
                .on_hover_text("The parent folder")
                .clicked()
                && let Some(parent) = parent
            {
                self.set_dir(&parent);
            }
            let home = self.home.clone();
            if ui
                .add_enabled(home.is_some(), Button::new("Home"))
                .on_hover_text("Your home folder")
                .clicked()
                && let Some(home) = home
            {
                self.set_dir(&home);
            }
            let label = ui.label("Path");
            let r = ui
                .add(TextEdit::singleline(&mut self.path_text).desired_width(f32::INFINITY))
                .labelled_by(label.id)
                .on_hover_text("Type a folder and press Enter to go there, or a file to pick it");
            if r.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter)) {
                done = self.submit_typed().map(Some);
            }
        });

        let (clicked, double_clicked) = self.list(ui, list_height);
        if let Some(i) = clicked {
            self.select(i);
        }
        if let Some(i) = double_clicked
            && let Some(entry) = self.entry(i).cloned()
        {
            if entry.is_dir {
                self.set_dir(&entry.path);
            } else {
                done = Some(Some(match &self.kind {
                    PickKind::SaveFile { .. } => self.dir.join(&entry.name),
                    _ => entry.path,
                }));
            }
        }

        ui.horizontal(|ui| {
            let r = ui.checkbox(&mut self.show_hidden, "Show hidden");
            if r.changed()
                && !self.show_hidden
                && self
                    .selected
                    .and_then(|i| self.entry(i))
                    .is_some_and(|e| e.hidden)
            {
                self.selected = None;
                self.path_text = self.dir.display().to_string();
            }
            if ui
                .button("Refresh")
                .on_hover_text("Read the folder again")
                .clicked()
            {
                let dir = self.dir.clone();
                self.set_dir(&dir);
            }
        });

        if matches!(self.kind, PickKind::SaveFile { .. }) {
            ui.horizontal(|ui| {
                let label = ui.label("File name");
                let r = ui
                    .add(TextEdit::singleline(&mut self.file_name).desired_width(f32::INFINITY))
                    .labelled_by(label.id);
                if r.lost_focus()
                    && ui.input(|i| i.key_pressed(Key::Enter))
                    && let Some(Main::Pick(path)) = self.main_action()
                {
                    done = Some(Some(path));
                }
            });
            if let Some(warning) = self.save_warning() {
                ui.weak(warning);
            }
        }

        if let Some(message) = &self.message {
            ui.colored_label(ui.visuals().error_fg_color, message);
        }

        ui.separator();
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            let main = self.main_action();
            let text = match self.kind {
                PickKind::OpenFile { .. } => "Open",
                PickKind::Folder => "Choose folder",
                PickKind::SaveFile { .. } => "Save",
            };
            if ui.add_enabled(main.is_some(), Button::new(text)).clicked() {
                match main {
                    Some(Main::Pick(path)) => done = Some(Some(path)),
                    Some(Main::Enter(dir)) => self.set_dir(&dir),
                    None => {}
                }
            }
            if ui.button("Cancel").clicked() {
                done = Some(None);
            }
        });
        done
    }

    /// The entries (or the read error) in a scroll area; returns the entry clicked and the
    /// entry double-clicked this frame.
    fn list(&self, ui: &mut egui::Ui, height: f32) -> (Option<usize>, Option<usize>) {
        let mut clicked = None;
        let mut double_clicked = None;
        egui::Frame::group(ui.style()).show(ui, |ui| {
            egui::ScrollArea::vertical()
                .id_salt("kiln_file_picker_entries")
                .auto_shrink([false, false])
                .max_height(height)
                .min_scrolled_height(height)
                .show(ui, |ui| match &self.listing {
                    Listing::Error(e) => {
                        ui.colored_label(ui.visuals().error_fg_color, e);
                    }
                    Listing::Entries(entries) => {
                        let mut shown = 0;
                        for (i, e) in entries.iter().enumerate() {
                            if e.hidden && !self.show_hidden {
                                continue;
                            }
                            shown += 1;
                            let text = if e.is_dir {
                                format!("{}/", e.name)
                            } else {
                                e.name.clone()
                            };
                            ui.horizontal(|ui| {
                                let r = ui.add(Button::selectable(self.selected == Some(i), text));
                                if e.marked
                                    && let PickKind::OpenFile {
                                        folders_with: Some(f),
                                        ..
                                    } = &self.kind
                                {
                                    ui.weak(format!("holds {f}"));
                                }
                                if r.double_clicked() {
                                    double_clicked = Some(i);
                                } else if r.clicked() {
                                    clicked = Some(i);
                                }
                            });
                        }
                        if shown == 0 {
                            ui.weak("Nothing to pick here");
                        }
                    }
                });
        });
        (clicked, double_clicked)
    }

    /// Entry `i` of the listing.
    fn entry(&self, i: usize) -> Option<&Entry> {
        match &self.listing {
            Listing::Entries(entries) => entries.get(i),
            Listing::Error(_) => None,
        }
    }

    /// Selects entry `i`: the Path field shows it; in a Save dialog a file's name becomes
    /// the file name.
    fn select(&mut self, i: usize) {
        let Some(entry) = self.entry(i).cloned() else {
            return;
        };
        self.selected = Some(i);
        self.message = None;
        self.path_text = entry.path.display().to_string();
        if !entry.is_dir && matches!(self.kind, PickKind::SaveFile { .. }) {
            self.file_name = entry.name;
        }
    }

    /// What the main button does now, or None when it is disabled.
    fn main_action(&self) -> Option<Main> {
        let selected = self.selected.and_then(|i| self.entry(i));
        match &self.kind {
            PickKind::OpenFile { .. } => match selected {
                Some(e) if !e.is_dir || e.marked => Some(Main::Pick(e.path.clone())),
                Some(e) => Some(Main::Enter(e.path.clone())),
                None if self.dir_marked => Some(Main::Pick(self.dir.clone())),
                None => None,
            },
            PickKind::Folder => match selected {
                Some(e) => Some(Main::Pick(e.path.clone())),
                None if matches!(self.listing, Listing::Entries(_)) => {
                    Some(Main::Pick(self.dir.clone()))
                }
                None => None,
            },
            PickKind::SaveFile { .. } => {
                let name = self.file_name.trim();
                let plain = {
                    let mut c = Path::new(name).components();
                    matches!((c.next(), c.next()), (Some(Component::Normal(_)), None))
                };
                let is_folder = self.listed(name).is_some_and(|e| e.is_dir);
                (plain && !is_folder && matches!(self.listing, Listing::Entries(_)))
                    .then(|| Main::Pick(self.dir.join(name)))
            }
        }
    }

    /// The listed entry called `name`, if any.
    fn listed(&self, name: &str) -> Option<&Entry> {
        match &self.listing {
            Listing::Entries(entries) => entries.iter().find(|e| e.name == name),
            Listing::Error(_) => None,
        }
    }

    /// A Save dialog's word on the file name: it replaces a file, or names a folder.
    fn save_warning(&self) -> Option<String> {
        let name = self.file_name.trim();
        let entry = self.listed(name)?;
        Some(if entry.is_dir {
            format!("\"{name}\" is a folder")
        } else {
            format!("\"{name}\" exists and will be replaced")
        })
    }

    /// Enter in the Path field: a folder is shown, a file valid for the kind is picked (its
    /// path returned); anything else says why in a red line.
    fn submit_typed(&mut self) -> Option<PathBuf> {
        let text = self.path_text.trim().to_owned();
        if text.is_empty() {
            return None;
        }
        let typed = match (text.as_str(), text.strip_prefix("~/"), &self.home) {
            ("~", _, Some(home)) => home.clone(),
            (_, Some(rest), Some(home)) => home.join(rest),
            _ => PathBuf::from(&text),
        };
        let path = normalize(&self.dir.join(typed));
        if path.is_dir() {
            self.set_dir(&path);
            return None;
        }
        let refusal = match &self.kind {
            PickKind::OpenFile { extensions, .. } => {
                if !path.is_file() {
                    format!("No such file or folder: {}", path.display())
                } else if !extension_matches(&path, extensions) {
                    let dotted: Vec<String> = extensions.iter().map(|e| format!(".{e}")).collect();
                    format!("Not a {} file: {}", dotted.join(" or "), path.display())
                } else {
                    return Some(path);
                }
            }
            PickKind::Folder => format!("No such folder: {}", path.display()),
            PickKind::SaveFile { .. } => {
                if path.parent().is_some_and(Path::is_dir) && path.file_name().is_some() {
                    return Some(path);
                }
                format!(
                    "No such folder: {}",
                    path.parent().unwrap_or(&path).display()
                )
            }
        };
        tracing::debug!(%refusal, "typed path refused");
        self.message = Some(refusal);
        None
    }

    /// Shows `dir` (read now) with nothing selected.
    fn set_dir(&mut self, dir: &Path) {
        self.dir = normalize(&absolute(dir));
        self.selected = None;
        self.message = None;
        self.path_text = self.dir.display().to_string();
        self.listing = read_listing(&self.dir, &self.kind);
        self.dir_marked = match &self.kind {
            PickKind::OpenFile {
                folders_with: Some(f),
                ..
            } => self.dir.join(f).is_file(),
            _ => false,
        };
    }

    /// The names shown in the list, in order (folders with a trailing '/').
    #[cfg(test)]
    fn shown_names(&self) -> Vec<String> {
        match &self.listing {
            Listing::Entries(entries) => entries
                .iter()
                .filter(|e| self.show_hidden || !e.hidden)
                .map(|e| {
                    if e.is_dir {
                        format!("{}/", e.name)
                    } else {
                        e.name.clone()
                    }
                })
                .collect(),
            Listing::Error(_) => Vec::new(),
        }
    }
}

/// Reads `dir` for `kind`: folders, and the files that `kind` can pick.
fn read_listing(dir: &Path, kind: &PickKind) -> Listing {
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot read folder");
            return Listing::Error(format!("Cannot read {}: {e}", dir.display()));
        }
    };
    let mut entries = Vec::new();
    for item in read {
        let item = match item {
            Ok(item) => item,
            Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %e, "skipping an unreadable entry");
                continue;
            }
        };
        let path = item.path();
        let name = item.file_name().to_string_lossy().into_owned();
        // Follow links: a link to a folder is a folder; a broken link is listed as a file.
        let is_dir = std::fs::metadata(&path).is_ok_and(|m| m.is_dir());
        let marked = match kind {
            PickKind::OpenFile { extensions, .. } if !is_dir => {
                if !extension_matches(&path, extensions) {
                    continue;
                }
                false
            }
            PickKind::Folder if !is_dir => continue,
            PickKind::OpenFile {
                folders_with: Some(f),
                ..
            } => path.join(f).is_file(),
            _ => false,
        };
        entries.push(Entry {
            hidden: name.starts_with('.'),
            name,
            path,
            is_dir,
            marked,
        });
    }
    entries.sort_by_cached_key(|e| (!e.is_dir, e.name.to_lowercase(), e.name.clone()));
    Listing::Entries(entries)
}

/// `path` has one of `extensions` (lower-case, no dot), or `extensions` is empty.
fn extension_matches(path: &Path, extensions: &[String]) -> bool {
    extensions.is_empty()
        || path
            .extension()
            .map(|e| e.to_string_lossy().to_lowercase())
            .is_some_and(|e| extensions.contains(&e))
}

/// The home folder, if the environment names an absolute one.
fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

/// `path` made absolute against the current folder (unchanged when that is unknown).
fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// `path` without `.` and `..` components (lexically, as file dialogs do: links are not
/// resolved).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                // ".." of the root is the root.
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(c),
            },
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

#[cfg(test)]
mod tests {
    use egui_kittest::Harness;
    use egui_kittest::kittest::{NodeT, Queryable};

    use super::*;

    type State = (FilePicker<u32>, Option<PickerOutcome<u32>>);

    /// The picker in a window; the first outcome other than Open is kept (and the picker
    /// is no longer shown, as the caller would do).
    ///
    /// Frames are 1/60 s apart (kittest's default is 1/4 s, which makes two clicks too slow
    /// to count as a double click).
    fn harness(picker: FilePicker<u32>) -> Harness<'static, State> {
        harness_from(
            Harness::builder().with_size(egui::vec2(900.0, 700.0)),
            picker,
        )
    }

    /// [`harness`] with `builder`'s size and options.
    fn harness_from(
        builder: egui_kittest::HarnessBuilder<State>,
        picker: FilePicker<u32>,
    ) -> Harness<'static, State> {
        builder.with_step_dt(1.0 / 60.0).build_ui_state(
            |ui, state: &mut State| {
                if state.1.is_some() {
                    return;
                }
                let outcome = state.0.show(ui.ctx());
                if outcome != PickerOutcome::Open {
                    state.1 = Some(outcome);
                }
            },
            (picker, None),
        )
    }

    /// Lets more than a double-click's time pass, so the next click counts as a single one.
    fn pause(h: &mut Harness<'static, State>) {
        h.run_steps(30);
    }

    fn double_click(h: &mut Harness<'static, State>, label: &str) {
        h.get_by_label(label).click();
        h.get_by_label(label).click();
        h.run();
        pause(h);
    }

    fn click(h: &mut Harness<'static, State>, label: &str) {
        h.get_by_label(label).click();
        h.run();
    }

    fn disabled(h: &Harness<'static, State>, label: &str) -> bool {
        h.get_by_label(label).accesskit_node().is_disabled()
    }

    /// Types `text` into the field labelled `label` and presses Enter there.
    fn type_and_enter(h: &mut Harness<'static, State>, label: &str, text: &str) {
        h.get_by_label(label).set_text_value_accesskit(text);
        h.run();
        h.get_by_label(label).focus();
        h.run();
        h.key_press(Key::Enter);
        h.run();
    }

    fn outcome(h: &Harness<'static, State>) -> Option<PickerOutcome<u32>> {
        h.state().1.clone()
    }

    /// root/{a.safetensors, B.SafeTensors, notes.txt, .hidden.safetensors, .git/,
    /// sub/c.safetensors, Zed/, model/model_index.json}
    fn tree() -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("temp dir");
        let p = root.path();
        for f in [
            "a.safetensors",
            "B.SafeTensors",
            "notes.txt",
            ".hidden.safetensors",
        ] {
            std::fs::write(p.join(f), b"x").expect("write");
        }
        for d in [".git", "sub", "Zed", "model"] {
            std::fs::create_dir(p.join(d)).expect("mkdir");
        }
        std::fs::write(p.join("sub/c.safetensors"), b"x").expect("write");
        std::fs::write(p.join("model/model_index.json"), b"{}").expect("write");
        root
    }

    fn open(root: &Path, folders_with: Option<&str>) -> FilePicker<u32> {
        FilePicker::new(
            "Pick a file",
            PickKind::OpenFile {
                extensions: vec!["safetensors".into()],
                folders_with: folders_with.map(str::to_owned),
            },
            Some(root),
            7,
            Some("No system file dialog is available".into()),
        )
    }

    #[test]
    fn open_file_lists_matching_files_and_folders_and_a_double_click_picks() {
        let root = tree();
        let mut h = harness(open(root.path(), None));
        h.run();
        assert!(
            h.query_by_label("No system file dialog is available")
                .is_some()
        );
        assert_eq!(
            h.state().0.shown_names(),
            ["model/", "sub/", "Zed/", "a.safetensors", "B.SafeTensors"],
            "folders first, then matching files, case-insensitively; hidden ones and notes.txt left out"
        );
        for shown in ["model/", "sub/", "Zed/", "a.safetensors", "B.SafeTensors"] {
            assert!(h.query_by_label(shown).is_some(), "{shown} is listed");
        }
        for hidden in ["notes.txt", ".hidden.safetensors", ".git/"] {
            assert!(h.query_by_label(hidden).is_none(), "{hidden} is not listed");
        }
        assert!(disabled(&h, "Open"), "nothing selected");

        click(&mut h, "Show hidden");
        assert!(h.query_by_label(".hidden.safetensors").is_some());
        assert!(h.query_by_label(".git/").is_some());
        assert!(h.query_by_label("notes.txt").is_none());
        click(&mut h, "Show hidden");
        assert!(h.query_by_label(".hidden.safetensors").is_none());

        // A click soon after the last one would make this a triple click.
        pause(&mut h);
        h.get_by_label("a.safetensors").click();
        h.get_by_label("a.safetensors").click();
        h.run();
        assert_eq!(
            outcome(&h),
            Some(PickerOutcome::Picked(7, root.path().join("a.safetensors")))
        );
    }

    #[test]
    fn a_selected_file_is_picked_with_open() {
        let root = tree();
        let mut h = harness(open(root.path(), None));
        click(&mut h, "B.SafeTensors");
        assert!(!disabled(&h, "Open"));
        assert_eq!(
            h.get_by_label("Path").value().as_deref(),
            Some(&*root.path().join("B.SafeTensors").to_string_lossy()),
            "the Path field shows the selection"
        );
        assert_eq!(outcome(&h), None, "one click only selects");
        click(&mut h, "Open");
        assert_eq!(
            outcome(&h),
            Some(PickerOutcome::Picked(7, root.path().join("B.SafeTensors")))
        );
    }

    #[test]
    fn navigation_by_double_click_up_and_the_path_field() {
        let root = tree();
        let sub = root.path().join("sub");
        let mut h = harness(open(root.path(), None));
        h.run();
        double_click(&mut h, "sub/");
        assert_eq!(h.state().0.dir(), sub);
        assert_eq!(h.state().0.shown_names(), ["c.safetensors"]);
        assert_eq!(outcome(&h), None);

        click(&mut h, "Up");
        assert_eq!(h.state().0.dir(), root.path());
        assert!(h.query_by_label("a.safetensors").is_some());

        type_and_enter(&mut h, "Path", &sub.to_string_lossy());
        assert_eq!(h.state().0.dir(), sub);
        assert_eq!(
            h.get_by_label("Path").value(),
            Some(sub.to_string_lossy().into_owned())
        );

        // A relative path, with "..", is taken from the shown folder.
        type_and_enter(&mut h, "Path", "../Zed");
        assert_eq!(h.state().0.dir(), root.path().join("Zed"));
        assert!(h.query_by_label("Nothing to pick here").is_some());
        assert_eq!(outcome(&h), None);
    }

    #[test]
    fn typing_a_file_picks_it_only_when_it_fits() {
        let root = tree();
        let mut h = harness(open(root.path(), None));
        h.run();
        type_and_enter(
            &mut h,
            "Path",
            &root.path().join("notes.txt").to_string_lossy(),
        );
        assert_eq!(outcome(&h), None, "not a .safetensors file");
        assert!(
            h.query_by_label_contains("Not a .safetensors file")
                .is_some()
        );
        type_and_enter(&mut h, "Path", "missing.safetensors");
        assert!(
            h.query_by_label_contains("No such file or folder")
                .is_some()
        );
        assert_eq!(outcome(&h), None);
        type_and_enter(
            &mut h,
            "Path",
            &root.path().join("a.safetensors").to_string_lossy(),
        );
        assert_eq!(
            outcome(&h),
            Some(PickerOutcome::Picked(7, root.path().join("a.safetensors")))
        );
    }

    #[test]
    fn a_folder_holding_folders_with_is_picked_whole_and_a_plain_folder_is_entered() {
        let root = tree();
        let mut h = harness(open(root.path(), Some("model_index.json")));
        h.run();
        assert!(
            h.query_by_label("holds model_index.json").is_some(),
            "marked"
        );
        click(&mut h, "model/");
        click(&mut h, "Open");
        assert_eq!(
            outcome(&h),
            Some(PickerOutcome::Picked(7, root.path().join("model")))
        );

        let mut h = harness(open(root.path(), Some("model_index.json")));
        h.run();
        click(&mut h, "sub/");
        assert!(!disabled(&h, "Open"));
        click(&mut h, "Open");
        assert_eq!(h.state().0.dir(), root.path().join("sub"), "entered");
        assert_eq!(outcome(&h), None);
        assert!(
            disabled(&h, "Open"),
            "nothing to pick in sub/ until a file is selected"
        );

        // Inside the model folder, Open with nothing selected picks the folder itself.
        let mut h = harness(open(root.path(), Some("model_index.json")));
        h.run();
        double_click(&mut h, "model/");
        assert_eq!(h.state().0.dir(), root.path().join("model"));
        assert!(!disabled(&h, "Open"));
        click(&mut h, "Open");
        assert_eq!(
            outcome(&h),
            Some(PickerOutcome::Picked(7, root.path().join("model")))
        );
    }

    #[test]
    fn folder_kind_chooses_the_selected_folder_or_the_shown_one() {
        let root = tree();
        let folder = || {
            FilePicker::new(
                "Pick a folder",
                PickKind::Folder,
                Some(root.path()),
                3,
                None,
            )
        };
        let mut h = harness(folder());
        h.run();
        assert_eq!(
            h.state().0.shown_names(),
            ["model/", "sub/", "Zed/"],
            "no files"
        );
        click(&mut h, "sub/");
        click(&mut h, "Choose folder");
        assert_eq!(
            outcome(&h),
            Some(PickerOutcome::Picked(3, root.path().join("sub")))
        );

        let mut h = harness(folder());
        h.run();
        click(&mut h, "Choose folder");
        assert_eq!(
            outcome(&h),
            Some(PickerOutcome::Picked(3, root.path().to_path_buf()))
        );
    }

    #[test]
    fn save_file_uses_the_default_name_or_the_edited_one() {
        let root = tree();
        let save = || {
            FilePicker::new(
                "Save image",
                PickKind::SaveFile {
                    default_name: "image.png".into(),
                },
                Some(root.path()),
                5,
                None,
            )
        };
        let mut h = harness(save());
        h.run();
        assert_eq!(
            h.get_by_label("File name").value().as_deref(),
            Some("image.png")
        );
        assert_eq!(
            h.state().0.shown_names(),
            [
                "model/",
                "sub/",
                "Zed/",
                "a.safetensors",
                "B.SafeTensors",
                "notes.txt"
            ],
            "a Save dialog lists every file"
        );
        click(&mut h, "Save");
        assert_eq!(
            outcome(&h),
            Some(PickerOutcome::Picked(5, root.path().join("image.png")))
        );

        let mut h = harness(save());
        h.run();
        h.get_by_label("File name").set_text_value_accesskit("");
        h.run();
        assert!(disabled(&h, "Save"), "no name");
        h.get_by_label("File name")
            .set_text_value_accesskit("other.png");
        h.run();
        assert!(!disabled(&h, "Save"));
        click(&mut h, "Save");
        assert_eq!(
            outcome(&h),
            Some(PickerOutcome::Picked(5, root.path().join("other.png")))
        );

        // Selecting a file takes its name (and says it will be replaced).
        let mut h = harness(save());
        h.run();
        click(&mut h, "notes.txt");
        assert_eq!(
            h.get_by_label("File name").value().as_deref(),
            Some("notes.txt")
        );
        assert!(h.query_by_label_contains("will be replaced").is_some());
        click(&mut h, "Save");
        assert_eq!(
            outcome(&h),
            Some(PickerOutcome::Picked(5, root.path().join("notes.txt")))
        );
    }

    #[test]
    fn cancel_and_escape_cancel() {
        let root = tree();
        let mut h = harness(open(root.path(), None));
        h.run();
        click(&mut h, "Cancel");
        assert_eq!(outcome(&h), Some(PickerOutcome::Cancelled));

        let mut h = harness(open(root.path(), None));
        h.run();
        h.key_press(Key::Escape);
        h.run();
        assert_eq!(outcome(&h), Some(PickerOutcome::Cancelled));
    }

    #[test]
    fn a_missing_start_falls_back_and_an_unreadable_folder_shows_an_error() {
        let root = tree();
        let missing = root.path().join("no-such-folder");
        let picker = open(&missing, None);
        let expected = home_dir()
            .filter(|h| h.is_dir())
            .unwrap_or_else(|| PathBuf::from("/"));
        assert_eq!(picker.dir(), expected);

        let sub = root.path().join("sub");
        let mut h = harness(open(&sub, None));
        h.run();
        std::fs::remove_dir_all(&sub).expect("remove sub");
        click(&mut h, "Refresh");
        assert!(
            h.query_by_label_contains("Cannot read").is_some(),
            "the error is shown"
        );
        assert!(disabled(&h, "Open"));
        click(&mut h, "Up");
        assert_eq!(h.state().0.dir(), root.path());
        assert!(h.query_by_label("a.safetensors").is_some(), "still usable");
        assert_eq!(outcome(&h), None);
    }

    #[cfg(unix)]
    #[test]
    fn a_name_that_is_not_utf8_is_shown_lossily_and_picked_by_its_real_path() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let root = tree();
        let name = OsStr::from_bytes(b"bad\xff.safetensors");
        std::fs::write(root.path().join(name), b"x").expect("write");
        // egui's default fonts have no U+FFFD: the app draws a box there, the harness would panic.
        let mut h = harness_from(
            Harness::builder()
                .with_size(egui::vec2(900.0, 700.0))
                .allow_missing_glyphs(),
            open(root.path(), None),
        );
        h.run();
        click(&mut h, "bad\u{fffd}.safetensors");
        click(&mut h, "Open");
        assert_eq!(
            outcome(&h),
            Some(PickerOutcome::Picked(7, root.path().join(name)))
        );
    }

    #[test]
    fn every_control_is_on_screen_in_a_small_window() {
        let root = tree();
        let save = FilePicker::new(
            "Save image",
            PickKind::SaveFile {
                default_name: "image.png".into(),
            },
            Some(root.path()),
            5,
            Some("No system file dialog is available".into()),
        );
        let mut h = harness_from(Harness::builder().with_size(egui::vec2(480.0, 360.0)), save);
        h.run();
        let screen = egui::Rect::from_min_size(egui::Pos2::ZERO, egui::vec2(480.0, 360.0));
        for label in [
            "Up",
            "Home",
            "Path",
            "Show hidden",
            "File name",
            "Save",
            "Cancel",
        ] {
            let rect = h.get_by_label(label).rect();
            assert!(screen.contains_rect(rect), "{label} at {rect:?}");
        }
        click(&mut h, "Cancel");
        assert_eq!(outcome(&h), Some(PickerOutcome::Cancelled));
    }

    #[test]
    fn paths_are_normalised_lexically() {
        assert_eq!(
            normalize(Path::new("/a/b/../c/./d")),
            PathBuf::from("/a/c/d")
        );
        assert_eq!(normalize(Path::new("/..")), PathBuf::from("/"));
    }
}
