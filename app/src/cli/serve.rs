//! `kiln serve`: the AUTOMATIC1111-compatible HTTP API ([`kiln_serve`]) on this machine.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use kiln_engine::device::DeviceSpec;
use kiln_serve::{Limits, ServeConfig, parse_credentials};

/// Options of `kiln serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Checkpoint loaded at start-up (a diffusers folder or single-file .safetensors)
    /// [default: the built-in kiln-tiny]; others in the models folder can be switched to with
    /// `options`.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Address to listen on. Anything but loopback needs --api-auth or --insecure-listen.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port (0: any free port; the address is printed).
    #[arg(long, default_value_t = 7860)]
    port: u16,
    /// Require HTTP Basic auth: USER:PASS, or several separated by commas.
    #[arg(long, value_name = "USER:PASS[,USER:PASS…]")]
    api_auth: Option<String>,
    /// Listen beyond loopback without --api-auth (anyone who can reach the port can use it).
    #[arg(long)]
    insecure_listen: bool,
    /// Folder where `<lora:NAME:W>` finds NAME.safetensors (and `loras` lists).
    #[arg(long)]
    lora_dir: Option<PathBuf>,
    /// Folder of textual-inversion embeddings loaded with every model (token = file stem).
    #[arg(long)]
    embeddings_dir: Option<PathBuf>,
    /// Where `save_images` writes (txt2img-images/, img2img-images/) and img2img sources are
    /// kept for the recipes [default: ~/Pictures/Kiln/api].
    #[arg(long)]
    outputs: Option<PathBuf>,
    /// Folder of checkpoints offered by `sd-models` [default: Kiln's models folder].
    #[arg(long)]
    models_dir: Option<PathBuf>,
    /// Compute device: auto, cpu, cuda[:N], metal, vulkan or wgpu (what this build has).
    #[arg(long, default_value = "auto")]
    device: DeviceSpec,
    /// Browser origins allowed to call the API (comma-separated; `*` for any). CORS is off
    /// without it.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    cors_allow_origins: Vec<String>,
    /// Largest request body in MiB.
    #[arg(long, default_value_t = 32)]
    max_body_mib: usize,
}

/// Runs `kiln serve` until Ctrl+C.
pub fn serve(args: ServeArgs) -> Result<()> {
    let model = match args.model {
        Some(m) => m,
        None => crate::paths::bundled_or_error()?,
    };
    // A file that is no model is refused here, before the port is taken.
    kiln_engine::weights::Checkpoint::open(&model, None)
        .with_context(|| format!("{}: cannot serve this model", model.display()))?;
    let auth = match &args.api_auth {
        Some(text) => parse_credentials(text)?,
        None => Vec::new(),
    };
    let config = ServeConfig {
        model,
        models_dir: Some(
            args.models_dir
                .unwrap_or_else(crate::paths::default_models_dir),
        ),
        host: args.host,
        port: args.port,
        auth,
        insecure_listen: args.insecure_listen,
        lora_dir: args.lora_dir,
        embeddings_dir: args.embeddings_dir,
        outputs: args
            .outputs
            .unwrap_or_else(|| crate::paths::default_output_dir().join("api")),
        device: args.device,
        cors_allow_origins: args.cors_allow_origins,
        cache_dir: crate::paths::cache_dir(),
        limits: Limits {
            max_body_bytes: args.max_body_mib << 20,
            ..Limits::default()
        },
    };
    kiln_serve::serve_until(
        config,
        None,
        |addr, _| {
            // Scripts (and the tests) read this line to find the port.
            println!("Kiln API listening on http://{addr}/sdapi/v1/ (Ctrl+C stops it)");
        },
        kiln_serve::shutdown_signal(),
    )?;
    Ok(())
}
