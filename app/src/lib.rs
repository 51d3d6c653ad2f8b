//! Kiln's application crate: the desktop studio ([`gui`]) and the command line ([`cli`]),
//! both driving `kiln-engine`. The `kiln` binary (`main.rs`) opens the window when run without
//! a subcommand.

pub mod cli;
pub mod gui;
pub mod paths;
