//! # kiln-engine
//!
//! Kiln's Stable Diffusion 1.x engine on Burn, matching Hugging Face diffusers numerically.
//!
//! - [`weights`]: open diffusers folders and single-file checkpoints, strictly;
//! - [`models`]: `CLIPTextModel`, `UNet2DConditionModel`, `AutoencoderKL`, named as in diffusers;
//! - [`schedulers`]: samplers, separate from the models;
//! - [`pipeline`]: txt2img with classifier-free guidance, cancel token and step callback;
//! - [`tokenizer`], [`image`], [`device`].
//!
//! The CLI (`kiln generate`, `kiln inspect`, `kiln tokenize`) and the desktop app use this API.

pub mod adapters;
pub mod bundled;
pub mod device;
pub mod diff;
pub mod download;
pub mod error;
pub mod image;
pub mod metadata;
pub mod models;
pub mod pipeline;
pub mod preview;
pub mod prompt;
pub mod protocol;
pub mod schedulers;
pub mod shapes;
pub mod tokenizer;
pub mod training;
pub mod weights;
pub mod worker;

/// The Burn version the engine is built on, re-exported so callers use the same types.
pub use burn;
pub use error::{Error, Result};
