//! `kiln`: the Kiln desktop studio and its command line.
//!
//! Subcommands drive the same engine the desktop app uses; errors end the process with a
//! one-line message and a non-zero exit code, never a panic backtrace.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // A bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = kiln_engine::error::panic_text(info.payload())
            .unwrap_or_else(|| "unknown panic".into());
        // Output cut short (`kiln diff a b | head -1`): `println!` panics on the closed pipe;
        // end quietly, as ripgrep does, not with an internal error.
        if is_broken_pipe(&msg) {
            std::process::exit(0);
        }
        // A GPU that ran out of memory or was lost panics inside Burn: say what happened
        // and what to try, as for any other named error.
        if let Some(named) = kiln_engine::device::classify_failure(&msg, "GPU", false) {
            eprintln!("kiln: {named}");
            return;
        }
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("kiln: internal error: {msg}{at} (please report this)");
    }));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
                .unwrap_or_else(|_| "warn,kiln_serve=info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours on a terminal only: a log file or a service's journal gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = kiln::cli::Cli::parse();
    match std::panic::catch_unwind(|| kiln::cli::run(args)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e))
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("kiln: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
        Err(panic) => {
            let msg = kiln_engine::error::panic_text(panic.as_ref()).unwrap_or_default();
            match kiln_engine::device::classify_failure(&msg, "GPU", false) {
                Some(_) => ExitCode::FAILURE,
                None => ExitCode::from(101),
            }
        }
    }
}

/// Whether a panic message is `print!`'s on a closed stdout (Rust ignores SIGPIPE, so a write
/// to a pipe whose reader has gone fails with EPIPE, and `print!` panics on it).
fn is_broken_pipe(panic_message: &str) -> bool {
    panic_message.starts_with("failed printing to stdout")
        && (panic_message.contains("Broken pipe") || panic_message.contains("os error 32"))
}
