//! `kiln serve`: a local HTTP API that speaks AUTOMATIC1111's `/sdapi/v1`, so the clients
//! people already use (Open WebUI, SillyTavern, editors' plug-ins, Python scripts) drive Kiln
//! unchanged.
//!
//! - **Stack**: axum over tokio (HTTP/1), two async worker threads; handlers never block (file
//!   work goes to tokio's blocking pool). Behind them one runner thread drives one engine
//!   thread, as the window does ([`runner`]).
//! - **Jobs** run one at a time in arrival order; `progress.state.job_count` counts the
//!   waiting and running ones; `interrupt` stops the running job within one step and answers
//!   with the images made so far; `skip` drops the iteration under way; a client that
//!   disconnects takes its job out of the queue (or stops it).
//! - **Requests** are read as A1111's models ([`a1111`]): A1111's field names, labels and
//!   aliases; unknown fields ignored and logged once; fields Kiln cannot honour refused by
//!   name (422); FastAPI's error shapes ([`error`]). `<lora:NAME:W>` tags go through the
//!   engine's one resolver with the LoRA folder, so an API request and `kiln generate` with
//!   the same settings make the same pixels.
//! - **Security** ([`config`]): loopback unless told otherwise, and then only with
//!   credentials or `--insecure-listen`; Basic auth on every endpoint, compared in constant
//!   time; CORS off unless origins are given; models, LoRAs and output folders are looked up
//!   by name in the configured folders, never joined from a request.

pub mod a1111;
pub mod body;
pub mod catalog;
pub mod config;
pub mod error;
pub mod http;
pub mod images;
pub mod runner;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

pub use config::{Credential, Limits, ServeConfig, parse_credentials};
pub use error::{ApiError, ServeError};

/// Serves `config` until `stop` resolves: binds, tells `on_listening` the address (the port
/// when 0 was asked) and the shared status, loads the model (on its own engine; with `host`,
/// the window's engine and model), answers requests. Blocks the calling thread.
pub fn serve_until(
    config: ServeConfig,
    host: Option<runner::HostLink>,
    on_listening: impl FnOnce(SocketAddr, Arc<runner::Shared>),
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr = config.bind_address()?;
    if !config.host.is_loopback() && config.auth.is_empty() {
        tracing::warn!(%addr, "listening beyond this machine with no authentication (--insecure-listen)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kiln-serve-http")
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let bound = listener.local_addr()?;
        let config = Arc::new(config);
        let (shared, runner) = runner::spawn(config.clone(), host);
        on_listening(bound, shared.clone());
        let served = axum::serve(listener, http::router(config, shared.clone()))
            .with_graceful_shutdown(stop)
            .await;
        shared.close();
        let _ = tokio::task::spawn_blocking(move || runner.join()).await;
        served.map_err(ServeError::from)
    })
}

/// Resolves on Ctrl+C, or SIGTERM on Unix (a service manager stopping the server).
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("stopping: the running job is interrupted, queued ones answered 503");
}

/// A server running on a thread of its own (the window's "Serve API" switch, tests).
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    shared: Arc<runner::Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), ServeError>>>,
}

impl Server {
    /// Starts serving `config` (on the window's engine with `host`); returns once it listens
    /// (or failed to).
    pub fn start(
        config: ServeConfig,
        host: Option<runner::HostLink>,
    ) -> Result<Server, ServeError> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (bound, listening) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("kiln-serve".into())
            .spawn(move || {
                serve_until(
                    config,
                    host,
                    |addr, shared| {
                        let _ = bound.send((addr, shared));
                    },
                    async move {
                        let _ = stopped.await;
                    },
                )
            })?;
        match listening.recv() {
            Ok((addr, shared)) => Ok(Server {
                addr,
                shared,
                stop: Some(stop),
                thread: Some(thread),
            }),
            Err(_) => Err(thread
                .join()
                .ok()
                .and_then(Result::err)
                .unwrap_or_else(|| ServeError::Config("the server stopped at start-up".into()))),
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The queue and status (a hosted server's window tells it its model and embeddings).
    pub fn shared(&self) -> &Arc<runner::Shared> {
        &self.shared
    }

    /// Stops it: the running job is interrupted, queued ones are answered 503.
    pub fn stop(mut self) -> Result<(), ServeError> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(ServeError::Config("the server thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shut_down();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A configuration for unit tests (nothing is loaded from it).
    pub fn config() -> ServeConfig {
        ServeConfig {
            model: std::path::PathBuf::from("/nonexistent/model"),
            models_dir: None,
            host: "127.0.0.1".parse().expect("ip"),
            port: 0,
            auth: Vec::new(),
            insecure_listen: false,
            lora_dir: None,
            embeddings_dir: None,
            outputs: std::env::temp_dir(),
            device: kiln_engine::device::DeviceSpec::default(),
            cors_allow_origins: Vec::new(),
            cache_dir: None,
            limits: Limits::default(),
        }
    }
}
