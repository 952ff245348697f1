//! How hostd's binaries log: `tracing` to stderr, filtered by `RUST_LOG` (default `info`).
//! stdout is kept for the one line harnesses wait for (`listening on …`, `watching …`).

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

pub fn init_stderr() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Harnesses capture stderr into files; colour codes would only clutter them.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
