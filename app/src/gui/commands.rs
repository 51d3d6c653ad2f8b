//! Every user action with its label, tooltip and shortcut, in one table that menus, buttons
//! and the keyboard handler read.

use egui::{Key, KeyboardShortcut, Modifiers};

/// A user action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UiCommand {
    /// Generate with the current settings.
    Generate,
    /// Stop the running job.
    Cancel,
    /// Save the shown image elsewhere.
    SaveImage,
    /// Copy the shown image's parameters (A1111 text).
    CopyParameters,
    /// Restore every setting from the shown/selected image.
    ReuseParameters,
    /// Pick a checkpoint.
    OpenModel,
    /// Pick a LoRA to add.
    AddLora,
    /// Pick an embedding to load.
    AddEmbedding,
    /// Pick an img2img source.
    PickInitImage,
    /// Pick a diffusers model folder.
    OpenModelFolder,
    /// Pick a folder of training images.
    PickDataset,
    /// Restore every setting from a PNG on disk.
    RestoreFromImage,
    /// Draw a new random seed.
    RandomSeed,
    /// Use the last image's seed.
    ReuseSeed,
    /// Swap width and height.
    SwapSize,
    /// Same seed with every adapter off and with the stack, side by side.
    CompareWithBaseline,
}

/// Label, tooltip and shortcut of a command.
#[derive(Debug, Clone, Copy)]
pub struct CommandInfo {
    /// Button/menu label.
    pub label: &'static str,
    /// What it does.
    pub tooltip: &'static str,
    /// Keyboard shortcut.
    pub shortcut: Option<KeyboardShortcut>,
}

const fn key(modifiers: Modifiers, key: Key) -> Option<KeyboardShortcut> {
    Some(KeyboardShortcut::new(modifiers, key))
}

impl UiCommand {
    /// Every command, for the keyboard handler and menus.
    pub const ALL: [UiCommand; 16] = [
        UiCommand::Generate,
        UiCommand::Cancel,
        UiCommand::SaveImage,
        UiCommand::CopyParameters,
        UiCommand::ReuseParameters,
        UiCommand::OpenModel,
        UiCommand::AddLora,
        UiCommand::AddEmbedding,
        UiCommand::PickInitImage,
        UiCommand::OpenModelFolder,
        UiCommand::PickDataset,
        UiCommand::RestoreFromImage,
        UiCommand::RandomSeed,
        UiCommand::ReuseSeed,
        UiCommand::SwapSize,
        UiCommand::CompareWithBaseline,
    ];

    /// Its label, tooltip and shortcut.
    pub fn info(self) -> CommandInfo {
        let (label, tooltip, shortcut) = match self {
            UiCommand::Generate => (
                "Generate",
                "Generate with the current settings",
                key(Modifiers::COMMAND, Key::Enter),
            ),
            UiCommand::Cancel => (
                "Cancel",
                "Stop the running generation (within one step)",
                key(Modifiers::NONE, Key::Escape),
            ),
            UiCommand::SaveImage => (
                "Save as…",
                "Save the shown image (PNG with its recipe) to another place",
                key(Modifiers::COMMAND, Key::S),
            ),
            UiCommand::CopyParameters => (
                "Copy parameters",
                "Copy the image's generation parameters (AUTOMATIC1111 text)",
                key(Modifiers::COMMAND.plus(Modifiers::SHIFT), Key::C),
            ),
            UiCommand::ReuseParameters => (
                "Reuse parameters",
                "Restore prompt, sampler, seed, size, LoRAs and embeddings from this image",
                key(Modifiers::COMMAND, Key::R),
            ),
            UiCommand::OpenModel => (
                "Open model…",
                "Open an SD 1.x checkpoint (.safetensors) or diffusers folder",
                key(Modifiers::COMMAND, Key::O),
            ),
            UiCommand::AddLora => (
                "Add LoRA…",
                "Add a LoRA file (kohya/A1111, diffusers/PEFT) to the stack",
                None,
            ),
            UiCommand::AddEmbedding => (
                "Add embedding…",
                "Load a textual-inversion embedding (.pt, .safetensors, .bin)",
                None,
            ),
            UiCommand::PickInitImage => ("Init image…", "Start from an image (img2img)", None),
            UiCommand::OpenModelFolder => (
                "Open folder…",
                "Open a model in diffusers layout (a folder with model_index.json)",
                None,
            ),
            UiCommand::PickDataset => (
                "Choose dataset folder…",
                "A folder of images (png, jpg, webp) with optional same-name .txt captions",
                None,
            ),
            UiCommand::RestoreFromImage => (
                "Restore from image…",
                "Restore prompt, sampler, seed, size, LoRAs and embeddings from a PNG made by Kiln or AUTOMATIC1111",
                None,
            ),
            UiCommand::RandomSeed => ("Random", "Draw a new random seed", None),
            UiCommand::ReuseSeed => ("Last seed", "Use the last image's seed", None),
            UiCommand::SwapSize => ("Swap", "Swap width and height", None),
            UiCommand::CompareWithBaseline => (
                "Compare with baseline",
                "Generate the current recipe twice at the same seed - every LoRA off, then the stack - and compare",
                key(Modifiers::COMMAND.plus(Modifiers::SHIFT), Key::Enter),
            ),
        };
        CommandInfo {
            label,
            tooltip,
            shortcut,
        }
    }

    /// A button for this command (label, tooltip with the shortcut), enabled or not.
    pub fn button(self, ui: &mut egui::Ui, enabled: bool) -> bool {
        self.button_unless(ui, (!enabled).then_some(""))
    }

    /// A button for this command, disabled when there is a reason it cannot run now (shown
    /// when the pointer rests on it).
    pub fn button_unless(self, ui: &mut egui::Ui, why_not: Option<&str>) -> bool {
        let info = self.info();
        let tip = match info.shortcut {
            Some(s) => format!("{} ({})", info.tooltip, ui.ctx().format_shortcut(&s)),
            None => info.tooltip.to_owned(),
        };
        let r = ui
            .add_enabled(why_not.is_none(), egui::Button::new(info.label))
            .on_hover_text(tip);
        match why_not {
            Some(why) if !why.is_empty() => r.on_disabled_hover_text(why).clicked(),
            _ => r.clicked(),
        }
    }
}
