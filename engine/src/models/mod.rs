//! The SD 1.x networks, one file per diffusers component, built from configs.

pub mod attention;
pub mod clip_text;
pub mod config;
pub mod cpu_attention;
pub mod embeddings;
pub mod layers;
pub mod paths;
pub mod resnet;
pub mod unet_2d_blocks;
pub mod unet_2d_condition;
pub mod vae;
