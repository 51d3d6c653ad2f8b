//! One file per panel; each has `fn ui(ui, app)` and changes the app only through its
//! methods or settings.

pub mod canvas;
pub mod embeddings;
pub mod gallery;
pub mod lora;
pub mod notifications;
pub mod prompt;
pub mod sampler;
pub mod top_bar;
