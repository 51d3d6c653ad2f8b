//! # kiln-hub
//!
//! Where Kiln's models come from, apart from the engine that runs them:
//!
//! - [`download`]: the Hugging Face Hub client (any server with the Hub's layout): resumable,
//!   SHA-256-checked, cancellable, with a stall timeout;
//! - [`catalog`]: the models Kiln knows how to get (Stable Diffusion 1.5) and what a models
//!   folder holds;
//! - [`install`]: where the model Kiln ships (`kiln-tiny`) is found on an installed system
//!   and in the source tree.

pub mod catalog;
pub mod download;
pub mod error;
pub mod install;

pub use error::{Error, Result};
