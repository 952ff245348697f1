//! The hostd binary: parses flags, sets up logging, binds the listener and hands over to
//! [`drover_hostd::run`]. Prints exactly one line to stdout, `listening on <addr>`, which
//! test harnesses read to learn the port when `--listen` asks for port 0.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use drover_hostd::hypervisor::domain_type::DomainTypeChoice;
use drover_hostd::Config;
use tokio::net::TcpListener;

/// drover's host agent.
#[derive(Debug, Parser)]
#[command(name = "hostd", version)]
struct Flags {
    /// This host's name in the cluster.
    #[arg(long)]
    name: String,
    /// Address to serve HostAgent on; port 0 picks a free one.
    #[arg(long)]
    listen: SocketAddr,
    /// libvirt connection URI, e.g. qemu:///system or test:///default.
    #[arg(long)]
    libvirt_uri: String,
    /// Guests under KVM or TCG (`qemu`). `auto` uses KVM when the user QEMU runs as may
    /// open /dev/kvm read-write, and logs which it chose and why. Ignored on the test driver.
    #[arg(long, default_value = "auto")]
    domain_type: DomainTypeChoice,
    /// How peers' libvirt reaches this host's libvirt for live migration, e.g.
    /// qemu+tls://h1.example/system. Defaults to --libvirt-uri when that is remote.
    #[arg(long, default_value = "")]
    migration_uri: String,
    /// This host's underlay address for VXLAN overlays (the address it is registered with
    /// in the cluster). Defaults to --listen's address unless that is unspecified
    /// (0.0.0.0); without one, VXLAN networks are refused here.
    #[arg(long)]
    vtep_address: Option<std::net::Ipv4Addr>,
    /// Directory for state that must survive restarts; created if missing.
    #[arg(long)]
    data_dir: PathBuf,
    /// Heartbeat interval when the controller's Hello does not set one.
    #[arg(long, default_value_t = 1000)]
    heartbeat_interval_ms: u64,
    /// The longest lease a controller's grant may give; longer grants are refused (and
    /// logged). Keep it at or above the controllers' --lease-ttl-ms.
    #[arg(long, default_value_t = drover_hostd::DEFAULT_MAX_LEASE_TTL.as_millis() as u64)]
    max_lease_ttl_ms: u64,
    /// Serve plaintext, without TLS or authentication (only on a loopback address unless
    /// --allow-insecure-non-loopback). Without it, hostd with no --ca/--cert/--key
    /// refuses to start.
    #[arg(long)]
    insecure: bool,
    /// With --insecure: listen on a non-loopback address anyway.
    #[arg(long, requires = "insecure")]
    allow_insecure_non_loopback: bool,
    /// Mutual TLS: the cluster CA, and this host's certificate and key (PEM). Only
    /// clients with a certificate from that CA are served.
    #[arg(long, env = "DROVER_CA")]
    ca: Option<PathBuf>,
    #[arg(long, env = "DROVER_CERT")]
    cert: Option<PathBuf>,
    #[arg(long, env = "DROVER_KEY")]
    key: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    drover_hostd::logging::init_stderr();
    match hostd(Flags::parse()).await {
        Ok(drover_hostd::Ended::Shutdown) => ExitCode::SUCCESS,
        // The service manager starts hostd again (`Restart=always`); the drill's record
        // keeps it cut off until the drill ends.
        Ok(drover_hostd::Ended::StoppedByDrill { .. }) => {
            ExitCode::from(drover_hostd::drill_stop::EXIT_CODE)
        }
        Err(error) => {
            eprintln!("hostd: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn hostd(flags: Flags) -> anyhow::Result<drover_hostd::Ended> {
    let mut config = Config::new(flags.name, flags.libvirt_uri, flags.data_dir);
    config.migration_uri = flags.migration_uri;
    config.domain_type = flags.domain_type;
    config.vtep_address = flags.vtep_address.or(match flags.listen.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
        _ => None,
    });
    if flags.heartbeat_interval_ms == 0 {
        anyhow::bail!("--heartbeat-interval-ms must be at least 1");
    }
    config.heartbeat_interval = Duration::from_millis(flags.heartbeat_interval_ms);
    if flags.max_lease_ttl_ms == 0 {
        anyhow::bail!("--max-lease-ttl-ms must be at least 1");
    }
    config.max_lease_ttl = Duration::from_millis(flags.max_lease_ttl_ms);
    config.tls = drover_proto::transport::Tls::from_flags(
        flags.ca.as_deref(),
        flags.cert.as_deref(),
        flags.key.as_deref(),
    )?;

    let listener = TcpListener::bind(flags.listen)
        .await
        .with_context(|| format!("Cannot listen on {}", flags.listen))?;
    let addr = listener.local_addr().context("Cannot read bound address")?;
    drover_proto::transport::check_plaintext(
        config.tls.is_some(),
        flags.insecure,
        flags.allow_insecure_non_loopback,
        addr,
    )?;
    if flags.insecure {
        tracing::warn!("{}", drover_proto::transport::PLAINTEXT_WARNING);
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {addr}").context("Cannot write to stdout")?;
    stdout.flush().context("Cannot flush stdout")?;
    drop(stdout);

    Ok(drover_hostd::run(config, listener, drover_hostd::shutdown_signal()).await?)
}
