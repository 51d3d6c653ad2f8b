//! Kiln's integration tests — one binary, run with `cargo test`.
//!
//! - `parity`: every model component and the DDIM pipeline against diffusers references
//!   (`fixtures/ref/*`, made by `fixtures/make_fixtures.py`), from both checkpoint layouts;
//! - `tokenizer`: ids equal transformers' `CLIPTokenizer` on hard prompts;
//! - `cli`: the `kiln` binary's contract (generate, inspect, tokenize, exit codes);
//! - `bad_input`: every way a file can be wrong gives its named error;
//! - `samplers`, `prompts`, `lora`, `textual_inversion`: features against diffusers/PEFT;
//! - `recipes`: PNG metadata, `kiln info`, `kiln generate --from`, img2img from the CLI;
//! - `training`, `base_training`: adapter and whole-model training against diffusers/PEFT/torch;
//! - `serve`: `kiln serve`'s A1111-compatible HTTP API over real loopback HTTP;
//! - `kiln_tiny`: the shipped model — found, small, the same images as diffusers, paints the
//!   background the prompt names (and, ignored until it does, draws the shapes asked for).
//! - `writers`: every file Kiln writes goes through the atomic writer.
//! - `faults`: a full disk mid-write keeps the previous file and leaves no temporary.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;
mod fixture_store;
mod reference;

mod bad_input;
mod base_training;
mod cli;
mod download;
mod faults;
mod gui;
mod kiln_tiny;
mod lora;
mod parity;
mod prompts;
mod recipes;
mod samplers;
mod serve;
mod textual_inversion;
mod tokenizer;
mod training;
mod worker;
mod writers;
