//! # kiln-engine
//!
//! Kiln's Stable Diffusion 1.x engine on Burn, matching Hugging Face diffusers numerically.
//! From the bottom up (no module uses one above it):
//!
//! - leaves: [`error`], [`family`], [`job`] (cancel/pause tokens, precision, latents), [`fs`],
//!   [`device`], [`tensors`], [`tokenizer`], [`prompt`];
//! - [`loader`] (parameters by diffusers name), [`models`] (`CLIPTextModel`,
//!   `UNet2DConditionModel`, `AutoencoderKL`), [`schedulers`];
//! - [`weights`]: open diffusers folders and single-file checkpoints, strictly;
//!   [`adapters`]: LoRA stacks and textual inversion; [`inspect`]: what a file is;
//! - [`image`], [`diff`], [`preview`], [`metadata`] (recipes and other tools' PNG metadata);
//! - [`pipeline`]: txt2img/img2img, pure; [`session`]: a model with its adapters;
//!   [`resolve`]: what a user asked → the exact job; [`recipe`]: what an image records;
//! - [`training`]: LoRA, textual inversion and whole models;
//! - [`protocol`] and [`worker`]: the engine thread the window (and the HTTP API) drive.
//!
//! The CLI (`kiln generate`, `kiln inspect`, `kiln tokenize`) and the desktop app use this API.

pub mod adapters;
pub mod device;
pub mod diff;
pub mod error;
pub mod family;
pub mod fs;
pub mod image;
pub mod inspect;
pub mod job;
pub mod loader;
pub mod metadata;
pub mod models;
pub mod pipeline;
pub mod preview;
pub mod prompt;
pub mod protocol;
pub mod recipe;
pub mod resolve;
pub mod schedulers;
pub mod session;
pub mod tensors;
pub mod tokenizer;
pub mod training;
pub mod weights;
pub mod worker;

/// The Burn version the engine is built on, re-exported so callers use the same types.
pub use burn;
pub use error::{Error, ErrorKind, Result};
