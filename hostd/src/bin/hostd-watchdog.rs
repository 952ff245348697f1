//! `hostd-watchdog`: fences this host's HA guests when the lease hostd records lapses,
//! even if hostd itself is frozen. A thin binary over [`drover_hostd::watchdog`]. Prints
//! one line to stdout once running, `watching <lease file>`, for harnesses to wait on.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use drover_hostd::watchdog::{self, WatchdogConfig};

/// Destroys this host's HA guests when hostd's lease lapses.
#[derive(Debug, Parser)]
#[command(name = "hostd-watchdog", version)]
struct Flags {
    /// The libvirt URI hostd uses.
    #[arg(long)]
    libvirt_uri: String,
    /// hostd's --data-dir (the lease file is read from there).
    #[arg(long)]
    data_dir: PathBuf,
    /// How often to check, in milliseconds.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// Pet this kernel watchdog device (e.g. /dev/watchdog with softdog loaded) while the
    /// fence works; if this process stops or cannot fence, the kernel resets the host.
    #[arg(long)]
    device: Option<PathBuf>,
    /// The reset timeout to set on --device, in whole seconds. Keep it at or below the
    /// cluster's lease margin (`drover ha lease`), so that the host is reset before its
    /// guests are restarted elsewhere.
    #[arg(long, default_value_t = 1)]
    device_timeout_s: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    drover_hostd::logging::init_stderr();
    let flags = Flags::parse();
    if flags.interval_ms == 0 {
        eprintln!("hostd-watchdog: --interval-ms must be at least 1");
        return ExitCode::FAILURE;
    }
    let lease = drover_hostd::lease_file::path_in(&flags.data_dir);
    let config = WatchdogConfig {
        libvirt_uri: flags.libvirt_uri,
        data_dir: flags.data_dir,
        interval: Duration::from_millis(flags.interval_ms),
        device: flags.device,
        device_timeout: Duration::from_secs(flags.device_timeout_s),
    };
    let announce = || {
        // Harnesses wait for this line: libvirt is open and the loop starts.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "watching {}", lease.display());
        let _ = out.flush();
    };
    match watchdog::run(config, announce, drover_hostd::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostd-watchdog: {e}");
            ExitCode::FAILURE
        }
    }
}
