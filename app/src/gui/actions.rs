//! What views ask for, queued during the frame and carried out by the app after it (rerun's
//! command queue): a view never reaches into another view, the engine or the disk.

use std::path::PathBuf;

use kiln_engine::metadata::ImageInfo;
use kiln_engine::protocol::Command;

use super::commands::UiCommand;
use super::io::IoRequest;

/// A tab of the middle of the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tab {
    /// The canvas.
    #[default]
    Canvas,
    /// The compare view.
    Compare,
    /// Training.
    Train,
    /// The model manager.
    Models,
}

/// One thing a view asks for.
#[derive(Debug, Clone)]
pub enum Action {
    /// A user command from the table (button, shortcut).
    Ui(UiCommand),
    /// A command for the engine, as is.
    Engine(Command),
    /// Load this checkpoint.
    LoadModel(PathBuf),
    /// Add this LoRA to the stack at this weight.
    AddLora(PathBuf, f32),
    /// Load this embedding (under this token; None = the file stem).
    AddEmbedding(PathBuf, Option<String>),
    /// Restore every setting an image records.
    Reuse(Box<ImageInfo>),
    /// A job for the I/O thread.
    Io(IoRequest),
    /// Switch the middle of the window to this tab.
    ShowTab(Tab),
    /// Tell the user.
    Notify(Notification),
    /// Use this folder as the training dataset.
    Dataset(PathBuf),
    /// Write caption `text` for dataset entry `index` (to `path`, the `.txt`).
    SaveCaption {
        /// The entry.
        index: usize,
        /// The `.txt` file.
        path: PathBuf,
        /// The caption.
        text: String,
    },
    /// Open this URL in the system's browser.
    OpenUrl(String),
    /// Start (true) or stop the HTTP API in the window.
    ServeApi(bool),
    /// Show this folder in the system's file manager (saying where it is if none opens).
    OpenFolder(PathBuf),
    /// Ask for a path (a file dialog) and carry it out.
    Pick(super::dialogs::Pick),
    /// Start training as the Train tab says (continuing from this checkpoint).
    StartTraining(Option<PathBuf>),
    /// Measure the training speed with a short warm-up.
    EstimateTraining,
    /// Switch the device to the CPU and load the model again there (offered when the GPU
    /// was lost).
    UseCpu,
}

/// The actions of one frame, in the order they were asked for.
#[derive(Debug, Default)]
pub struct Actions(Vec<Action>);

impl Actions {
    /// Asks for `action`.
    pub fn push(&mut self, action: Action) {
        self.0.push(action);
    }

    /// Asks the engine to run `command`.
    pub fn engine(&mut self, command: Command) {
        self.0.push(Action::Engine(command));
    }

    /// Every action asked for, emptying the queue.
    pub fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.0)
    }
}

/// A dismissible message.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Headline.
    pub title: String,
    /// Details.
    pub details: String,
    /// Error (red) or information.
    pub error: bool,
    /// A button beside it: its label and what it asks for (the notification goes when it is
    /// pressed).
    pub offer: Option<(String, Offer)>,
}

/// What a notification's button can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// [`Action::UseCpu`].
    UseCpu,
}

impl Offer {
    /// The action it asks for.
    pub fn action(self) -> Action {
        match self {
            Offer::UseCpu => Action::UseCpu,
        }
    }
}

impl Notification {
    /// A message; an error when `error`.
    pub fn new(title: impl Into<String>, details: impl Into<String>, error: bool) -> Self {
        Notification {
            title: title.into(),
            details: details.into(),
            error,
            offer: None,
        }
    }

    /// With a button labelled `label` that asks for `offer`.
    pub fn offering(mut self, label: impl Into<String>, offer: Offer) -> Self {
        self.offer = Some((label.into(), offer));
        self
    }
}
