//! What `kiln serve` is told: where it listens, who may call it, which folders it may read and
//! write, and the limits on a request.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use kiln_engine::device::DeviceSpec;

use crate::error::ServeError;

/// One `USER:PASS` pair of `--api-auth`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Parses `--api-auth`: `USER:PASS[,USER:PASS…]` (a password may contain `:`; none may be
/// empty).
pub fn parse_credentials(text: &str) -> Result<Vec<Credential>, ServeError> {
    text.split(',')
        .map(|pair| match pair.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => Ok(Credential {
                user: user.to_owned(),
                password: password.to_owned(),
            }),
            _ => Err(ServeError::Config(
                "--api-auth takes USER:PASS[,USER:PASS…] with neither part empty".into(),
            )),
        })
        .collect()
}

/// Limits on one request. A request over one is refused (413 for the body, 422 for a field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body in bytes (an img2img request carries its image in base64).
    pub max_body_bytes: usize,
    /// Largest width or height in pixels (sizes are multiples of 8).
    pub max_side: usize,
    /// Most denoising steps.
    pub max_steps: usize,
    /// Most images in one request (`batch_size × n_iter`).
    pub max_images: usize,
}

impl Default for Limits {
    /// 32 MiB bodies, 4096 pixels a side, 500 steps, 64 images a request.
    fn default() -> Self {
        Limits {
            max_body_bytes: 32 << 20,
            max_side: 4096,
            max_steps: 500,
            max_images: 64,
        }
    }
}

/// Everything `kiln serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The model loaded at start-up (a file or diffusers folder).
    pub model: PathBuf,
    /// More checkpoints to offer in `sd-models` (Kiln's models folder), besides `model`.
    pub models_dir: Option<PathBuf>,
    /// The address to listen on (loopback by default).
    pub host: IpAddr,
    /// The port (0: any free port; the bound address is reported).
    pub port: u16,
    /// Basic-auth users; empty: no authentication.
    pub auth: Vec<Credential>,
    /// Allow a non-loopback address without `auth`.
    pub insecure_listen: bool,
    /// Where `<lora:NAME:W>` finds `NAME.safetensors` (and `loras` lists).
    pub lora_dir: Option<PathBuf>,
    /// Embeddings loaded with every model (their tokens are the file stems).
    pub embeddings_dir: Option<PathBuf>,
    /// Where `save_images` writes (txt2img and img2img subfolders) and img2img's init images
    /// are kept for the recipes.
    pub outputs: PathBuf,
    /// The compute device.
    pub device: DeviceSpec,
    /// Origins allowed by CORS; empty: no CORS headers at all.
    pub cors_allow_origins: Vec<String>,
    /// Kiln's cache folder (model hashes).
    pub cache_dir: Option<PathBuf>,
    /// Request limits.
    pub limits: Limits,
}

impl ServeConfig {
    /// The socket address to bind, after the security rule: a non-loopback host needs
    /// credentials or `insecure_listen` (then the caller warns).
    pub fn bind_address(&self) -> Result<SocketAddr, ServeError> {
        if !self.host.is_loopback() && self.auth.is_empty() && !self.insecure_listen {
            return Err(ServeError::Config(format!(
                "listening on {} would let anyone on the network use this machine: give \
                 --api-auth USER:PASS, or --insecure-listen if that is what you want",
                self.host
            )));
        }
        Ok(SocketAddr::new(self.host, self.port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_pairs_and_a_password_may_hold_a_colon() {
        let c = parse_credentials("ann:secret,bob:a:b").expect("parse");
        assert_eq!(c[0].user, "ann");
        assert_eq!(c[1].password, "a:b");
        for bad in ["", "ann", ":x", "ann:", "ann:x,"] {
            assert!(parse_credentials(bad).is_err(), "{bad:?}");
        }
        assert!(!format!("{:?}", c[0]).contains("secret"));
    }

    #[test]
    fn a_public_address_needs_auth_or_an_explicit_insecure_listen() {
        let mut config = ServeConfig {
            model: PathBuf::new(),
            models_dir: None,
            host: "0.0.0.0".parse().expect("ip"),
            port: 7860,
            auth: Vec::new(),
            insecure_listen: false,
            lora_dir: None,
            embeddings_dir: None,
            outputs: PathBuf::new(),
            device: DeviceSpec::default(),
            cors_allow_origins: Vec::new(),
            cache_dir: None,
            limits: Limits::default(),
        };
        assert!(config.bind_address().is_err());
        config.insecure_listen = true;
        assert!(config.bind_address().is_ok());
        config.insecure_listen = false;
        config.auth = parse_credentials("a:b").expect("auth");
        assert!(config.bind_address().is_ok());
        config.auth.clear();
        config.host = "127.0.0.1".parse().expect("ip");
        assert!(config.bind_address().is_ok());
    }
}
