//! File dialogs: every "…" action ([`Pick`]) asks the system's dialog (rfd: an XDG desktop
//! portal or zenity on Linux, the native panels elsewhere) where there is one, and the
//! built-in picker ([`FilePicker`]) where there is none — saying why — so that no action is
//! lost on a minimal desktop or in a container.
//!
//! Whether Linux has a system dialog is decided once, at start-up, from what is installed
//! (`zenity` on `PATH`, or the desktop portal's service with a back end that offers a file
//! chooser, and a session bus); `KILN_FILE_DIALOG=builtin` or `=system` overrides it. rfd
//! cannot tell a failed dialog from a cancelled one, so the choice has to be made before
//! asking.

use std::path::{Path, PathBuf};

use super::file_picker::{FilePicker, PickKind};

/// What a file dialog is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// A checkpoint file or a diffusers folder to load.
    OpenModel,
    /// A diffusers model folder (the system dialog picks files or folders, not both).
    OpenModelFolder,
    /// A LoRA file to add to the stack.
    AddLora,
    /// An embedding to load.
    AddEmbedding,
    /// An img2img source image.
    InitImage,
    /// Where to save the shown image.
    SaveImage,
    /// A folder of training images.
    Dataset,
    /// The models folder.
    ModelsFolder,
    /// A PNG whose parameters to restore.
    ReadImage,
}

impl Pick {
    /// The dialog's title and what it picks (`default_name` for a save).
    pub fn spec(self, default_name: &str) -> (&'static str, PickKind) {
        let files = |exts: &[&str]| PickKind::OpenFile {
            extensions: exts.iter().map(|e| (*e).to_owned()).collect(),
            folders_with: None,
        };
        match self {
            Pick::OpenModel | Pick::OpenModelFolder => (
                "Open a model (.safetensors or diffusers folder)",
                PickKind::OpenFile {
                    extensions: vec!["safetensors".into()],
                    folders_with: Some("model_index.json".into()),
                },
            ),
            Pick::AddLora => (
                "Add a LoRA",
                PickKind::OpenFile {
                    extensions: vec!["safetensors".into()],
                    folders_with: Some("adapter_config.json".into()),
                },
            ),
            Pick::AddEmbedding => ("Load an embedding", files(&["pt", "safetensors", "bin"])),
            Pick::InitImage => (
                "Start from an image",
                files(&["png", "jpg", "jpeg", "webp"]),
            ),
            Pick::ReadImage => ("Restore parameters from an image", files(&["png"])),
            Pick::SaveImage => (
                "Save the image as",
                PickKind::SaveFile {
                    default_name: default_name.to_owned(),
                },
            ),
            Pick::Dataset => ("Choose a folder of training images", PickKind::Folder),
            Pick::ModelsFolder => ("Choose the models folder", PickKind::Folder),
        }
    }
}

/// Which dialogs this desktop has.
#[derive(Debug, Clone, PartialEq)]
pub struct Dialogs {
    /// Ok: the system's; Err: the built-in one, and why.
    pub system: Result<(), String>,
}

impl Dialogs {
    /// What this machine offers (see the module documentation).
    pub fn detect() -> Self {
        let system = match std::env::var("KILN_FILE_DIALOG").as_deref() {
            Ok("builtin") => Err("KILN_FILE_DIALOG=builtin asks for Kiln's own file dialog".into()),
            Ok("system") => Ok(()),
            _ => system_dialog_available(),
        };
        Dialogs { system }
    }

    /// The built-in picker, for `reason`.
    pub fn built_in(reason: impl Into<String>) -> Self {
        Dialogs {
            system: Err(reason.into()),
        }
    }

    /// Asks for a path for `pick`, starting in `start`: the system dialog's answer now, or
    /// the built-in picker to show.
    pub fn ask(&self, pick: Pick, start: Option<&Path>, default_name: &str) -> Asked {
        let (title, kind) = pick.spec(default_name);
        match &self.system {
            Ok(()) => match system_dialog(pick, title, start, default_name) {
                Some(path) => Asked::Picked(path),
                None => Asked::Cancelled,
            },
            Err(why) => Asked::ShowPicker(Box::new(FilePicker::new(
                title,
                kind,
                start,
                pick,
                Some(why.clone()),
            ))),
        }
    }
}

/// What asking for a path gave.
pub enum Asked {
    /// The system dialog's answer.
    Picked(PathBuf),
    /// The system dialog was closed without one.
    Cancelled,
    /// No system dialog: show this picker (it answers in a later frame).
    ShowPicker(Box<FilePicker<Pick>>),
}

/// The system's dialog for `pick` (blocks until the user answers).
fn system_dialog(pick: Pick, title: &str, start: Option<&Path>, name: &str) -> Option<PathBuf> {
    let mut d = rfd::FileDialog::new().set_title(title);
    if let Some(dir) = start.filter(|d| d.is_dir()) {
        d = d.set_directory(dir);
    }
    match pick {
        Pick::OpenModel => d.add_filter("Checkpoint", &["safetensors"]).pick_file(),
        Pick::AddLora => d.add_filter("LoRA", &["safetensors"]).pick_file(),
        Pick::AddEmbedding => d
            .add_filter("Embedding", &["pt", "safetensors", "bin"])
            .pick_file(),
        Pick::InitImage => d
            .add_filter("Image", &["png", "jpg", "jpeg", "webp"])
            .pick_file(),
        Pick::ReadImage => d.add_filter("PNG", &["png"]).pick_file(),
        Pick::SaveImage => d
            .add_filter("PNG", &["png"])
            .set_file_name(name)
            .save_file(),
        Pick::OpenModelFolder | Pick::Dataset | Pick::ModelsFolder => d.pick_folder(),
    }
}

#[cfg(target_os = "linux")]
fn system_dialog_available() -> Result<(), String> {
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|dir| dir.join(name).is_file()))
    };
    if on_path("zenity") {
        return Ok(());
    }
    let bus = std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some()
        || std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| Path::new(&d).join("bus").exists());
    let portal = [
        "/usr/share/dbus-1/services",
        "/usr/local/share/dbus-1/services",
    ]
    .iter()
    .any(|d| {
        Path::new(d)
            .join("org.freedesktop.portal.Desktop.service")
            .is_file()
    });
    let chooser = [
        "/usr/share/xdg-desktop-portal/portals",
        "/usr/local/share/xdg-desktop-portal/portals",
    ]
    .iter()
    .filter_map(|d| std::fs::read_dir(d).ok())
    .flatten()
    .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
    .any(|text| text.contains("org.freedesktop.impl.portal.FileChooser"));
    if bus && portal && chooser {
        Ok(())
    } else {
        Err(
            "This desktop has no system file dialog (no XDG desktop portal with a file \
             chooser, no zenity): Kiln's own is shown instead."
                .into(),
        )
    }
}

#[cfg(not(target_os = "linux"))]
fn system_dialog_available() -> Result<(), String> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_system_dialog_the_built_in_picker_says_why() {
        let d = Dialogs::built_in("no portal here");
        let Asked::ShowPicker(picker) = d.ask(Pick::Dataset, Some(Path::new("/")), "") else {
            panic!("the system dialog was asked");
        };
        assert_eq!(picker.dir(), Path::new("/"));
        let (_, kind) = Pick::OpenModel.spec("");
        assert!(matches!(
            kind,
            PickKind::OpenFile { folders_with: Some(ref f), .. } if f == "model_index.json"
        ));
        assert!(matches!(
            Pick::SaveImage.spec("kiln-1.png").1,
            PickKind::SaveFile { ref default_name } if default_name == "kiln-1.png"
        ));
    }
}
