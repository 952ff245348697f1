//! Network namespaces for test hosts, so that what runs between real hosts (VXLAN tunnels,
//! migration streams) runs between namespaces here:
//! - [`Underlay`]: one namespace `drover-ul` holding a bridge, and per host `hN` a
//!   namespace `drover-hN` joined to that bridge by a veth pair, its end `eth0` at
//!   [`underlay_ip`] `10.99.0.N/24`. Nothing is added to the test's own namespace: no
//!   traffic can leave the namespaces the test made.
//! - [`Forwarder`]: a TCP port on the test's loopback that forwards each connection to an
//!   address inside one of those namespaces (hostd there listens on that namespace's own
//!   loopback), so controllers and CLI reach it as they reach any other hostd.
//!
//! The names are fixed: the caller holds the machine-wide lock of the libvirt hosts, and
//! leftovers of a crashed run are deleted first. Dropping [`Underlay`] deletes the
//! namespaces (and with them the veths and the bridge), once their processes are gone.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};

const UNDERLAY_NS: &str = "drover-ul";
const UNDERLAY_BRIDGE: &str = "ul0";

/// Host `hN`'s namespace name.
pub fn host_ns(number: usize) -> String {
    format!("drover-h{number}")
}

/// Where a named namespace is pinned (what `nsenter --net=` and `setns` take).
pub fn ns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Host `hN`'s underlay address.
pub fn underlay_ip(number: usize) -> Ipv4Addr {
    let n = u8::try_from(number).unwrap_or(u8::MAX);
    Ipv4Addr::new(10, 99, 0, n)
}

/// The namespaces of `n` hosts and their underlay; deleted on drop.
#[derive(Debug)]
pub struct Underlay {
    names: Vec<String>,
}

impl Underlay {
    pub fn create(n: usize) -> anyhow::Result<Underlay> {
        let mut names = vec![UNDERLAY_NS.to_string()];
        names.extend((1..=n).map(host_ns));
        for name in &names {
            if ns_path(name).exists() {
                // A crashed run's (we hold the machine-wide lock): whatever still runs in
                // it (libvirtd, dnsmasq, QEMU, hostd) goes first, by PID.
                let pids = Command::new("ip").args(["netns", "pids", name]).output()?;
                for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        eprintln!("{name}: killing leftover process {pid}");
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
                ip(&["netns", "del", name])?;
            }
        }
        // Built before anything is made, so that a failure part-way deletes what was.
        let mut this = Underlay { names: Vec::new() };
        for name in &names {
            ip(&["netns", "add", name])?;
            this.names.push(name.clone());
            ip(&["-n", name, "link", "set", "lo", "up"])?;
        }
        let ul = UNDERLAY_NS;
        ip(&["-n", ul, "link", "add", UNDERLAY_BRIDGE, "type", "bridge"])?;
        ip(&["-n", ul, "link", "set", UNDERLAY_BRIDGE, "up"])?;
        for number in 1..=n {
            let host = host_ns(number);
            let port = format!("ulh{number}");
            ip(&[
                "-n", ul, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &host,
            ])?;
            ip(&[
                "-n",
                ul,
                "link",
                "set",
                &port,
                "master",
                UNDERLAY_BRIDGE,
                "up",
            ])?;
            let cidr = format!("{}/24", underlay_ip(number));
            ip(&["-n", &host, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &host, "link", "set", "eth0", "up"])?;
        }
        Ok(this)
    }
}

impl Drop for Underlay {
    fn drop(&mut self) {
        for name in self.names.iter().rev() {
            if let Err(e) = ip(&["netns", "del", name]) {
                eprintln!("{e:#}");
            }
        }
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run ip (apt-get install -y iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A listener on the test's loopback forwarding to `target` inside namespace `ns`;
/// stops accepting on drop (open connections end with either side).
#[derive(Debug)]
pub struct Forwarder {
    pub addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    pub async fn start(ns: PathBuf, target: SocketAddr) -> anyhow::Result<Forwarder> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let ns = ns.clone();
                tokio::spawn(async move {
                    match connect_in(ns, target).await {
                        Ok(mut outbound) => {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                        // The client sees its connection close, as it would a refused
                        // one; hostd down (killed by the test) is no news.
                        Err(e) => {
                            let refused = e
                                .downcast_ref::<std::io::Error>()
                                .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
                            if !refused {
                                eprintln!("forwarder to {target}: {e:#}");
                            }
                        }
                    }
                });
            }
        });
        Ok(Forwarder { addr, accept })
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Connects to `target` from inside namespace `ns`. `setns` moves only the calling thread,
/// so a thread of its own does it and ends: a pooled thread would stay in the namespace.
async fn connect_in(ns: PathBuf, target: SocketAddr) -> anyhow::Result<tokio::net::TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let connect = || -> anyhow::Result<std::net::TcpStream> {
            let file = std::fs::File::open(&ns).with_context(|| format!("{}", ns.display()))?;
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .context("setns")?;
            let stream =
                std::net::TcpStream::connect_timeout(&target, std::time::Duration::from_secs(5))?;
            stream.set_nonblocking(true)?;
            Ok(stream)
        };
        let _ = tx.send(connect());
    });
    let stream = rx.await.context("the connecting thread died")??;
    Ok(tokio::net::TcpStream::from_std(stream)?)
}
