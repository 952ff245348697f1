//! `drover dev`: a whole local cluster for trying drover — controllers and hostd agents
//! (on libvirt's `test:///default` driver) as child processes on loopback, bootstrapped,
//! with the hosts registered, and mutual TLS everywhere (a fresh CA and certificates in
//! `<dir>/certs`). Stopping it stops every child by PID; killing it (SIGKILL, a closed
//! terminal) kills them too, through the kernel's parent-death signal.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use drover_proto::identity::{Peer, Role};
use drover_proto::v1::HostHealth;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::certs::{self, Issued};
use crate::cli::DevArgs;
use crate::client::Client;

/// `--ca/--cert/--key` for a child process.
fn tls_flags(tls: &Issued) -> Vec<std::ffi::OsString> {
    vec![
        "--ca".into(),
        tls.ca.clone().into(),
        "--cert".into(),
        tls.cert.clone().into(),
        "--key".into(),
        tls.key.clone().into(),
    ]
}

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes the child `cmd` starts die with this process. `drover dev` killed by SIGKILL (or
/// by a closed terminal) cannot stop its children itself, and they would run on as
/// orphans, still holding their ports. `PR_SET_PDEATHSIG` has the kernel SIGKILL the child
/// when its parent goes: a dev cluster's state is thrown away at the next start anyway, and
/// a child that handled SIGTERM slowly would outlive us. The signal fires when the
/// *thread* that forked the child ends; `drover dev` spawns from the main thread (the
/// runtime's `block_on`), which lives as long as the process.
fn dies_with_this_process(cmd: &mut Command) -> &mut Command {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed: prctl and getppid are plain system calls, and
    // the errors are built from raw errno values, without allocating.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)?;
            // If the parent died before the prctl, no signal will ever come (the child
            // now has another parent): do not start at all.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::from(nix::errno::Errno::ESRCH));
            }
            Ok(())
        })
    }
}

pub struct DevCluster {
    pub dir: PathBuf,
    /// The client certificate for the operator's CLI (user `admin`, role admin).
    pub client_tls: Issued,
    pub endpoints: Vec<String>,
    /// (name, hostd address)
    pub hosts: Vec<(String, String)>,
    children: Vec<DevChild>,
}

/// One child process and how to start it again: `drover dev` is the service manager of
/// its controllers and agents, and starts one again when a drill stops it (exit code 75),
/// as systemd's `Restart=` would.
struct DevChild {
    name: String,
    program: PathBuf,
    args: Vec<std::ffi::OsString>,
    child: Child,
}

impl DevChild {
    /// Starts `program` with `args`, stdout and stderr appended to the child's log.
    fn spawn(
        dir: &Path,
        name: &str,
        program: &Path,
        args: Vec<std::ffi::OsString>,
        stdout_piped: bool,
    ) -> anyhow::Result<DevChild> {
        let log = log_file(dir, name)?;
        let stdout = if stdout_piped {
            Stdio::piped()
        } else {
            Stdio::from(log.try_clone()?)
        };
        let child = dies_with_this_process(&mut Command::new(program))
            .args(&args)
            .stdout(stdout)
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(DevChild {
            name: name.to_string(),
            program: program.to_path_buf(),
            args,
            child,
        })
    }
}

impl std::fmt::Debug for DevCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCluster")
            .field("endpoints", &self.endpoints)
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

/// The `hostd` binary: next to this executable (cargo puts both in `target/<profile>`).
fn hostd_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name("hostd");
    if !path.exists() {
        bail!(
            "hostd not found at {} (build it with `cargo build --bins`)",
            path.display()
        );
    }
    Ok(path)
}

/// A free loopback port, found by binding port 0. Another process could take it before the
/// controller binds it; on a dev machine that race is acceptable.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The child's log, appended to (a restarted child keeps its history).
fn log_file(dir: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    let path = dir.join("logs").join(format!("{name}.log"));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// Reads the child's `listening on ADDR` line.
async fn listening_addr(child: &mut Child) -> anyhow::Result<String> {
    let stdout = child.stdout.take().context("child stdout not captured")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(READY_TIMEOUT, lines.next_line())
        .await
        .context("child did not report its address in time")??
        .context("child exited before reporting its address")?;
    line.strip_prefix("listening on ")
        .map(str::to_string)
        .with_context(|| format!("unexpected first line from child: {line:?}"))
}

/// Polls `ready` every 100 ms until it says yes, or fails once `deadline` has passed.
async fn ready_by<F, Fut>(deadline: Instant, what: &str, mut ready: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    while !ready().await? {
        if Instant::now() > deadline {
            bail!("not ready in time: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

pub async fn start(args: &DevArgs) -> anyhow::Result<DevCluster> {
    if args.controllers == 0 || args.hosts == 0 {
        bail!("--controllers and --hosts must be at least 1");
    }
    let drover = std::env::current_exe()?;
    let hostd = hostd_binary()?;
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)
            .with_context(|| format!("cannot wipe {}", args.dir.display()))?;
    }
    std::fs::create_dir_all(args.dir.join("logs"))?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let certs = dir.join("certs");
    certs::init(&certs)?;
    let client_tls = certs::issue(
        &certs,
        &Peer::User {
            name: "admin".into(),
            role: Role::Admin,
        },
        &[],
    )?;
    let mut cluster = DevCluster {
        dir: dir.clone(),
        client_tls,
        endpoints: Vec::new(),
        hosts: Vec::new(),
        children: Vec::new(),
    };
    match cluster.spawn_all(args, &drover, &hostd).await {
        Ok(()) => Ok(cluster),
        Err(e) => {
            cluster.stop().await;
            Err(e.context(format!(
                "dev cluster failed to start; logs in {}/logs",
                dir.display()
            )))
        }
    }
}

impl DevCluster {
    async fn spawn_all(
        &mut self,
        args: &DevArgs,
        drover: &Path,
        hostd: &Path,
    ) -> anyhow::Result<()> {
        let members: Vec<(u64, String)> = (1..=args.controllers)
            .map(|id| Ok((id, format!("127.0.0.1:{}", free_port()?))))
            .collect::<anyhow::Result<_>>()?;
        let initial = members
            .iter()
            .map(|(id, a)| format!("{id}={a}"))
            .collect::<Vec<_>>()
            .join(",");
        for (id, addr) in &members {
            let name = format!("controller-{id}");
            let tls = certs::issue(&self.dir.join("certs"), &Peer::Controller(*id), &[])?;
            let mut args = tls_flags(&tls);
            args.extend(
                ["server", "--id", &id.to_string(), "--listen", addr]
                    .iter()
                    .map(Into::into),
            );
            args.push("--data-dir".into());
            args.push(self.dir.join(&name).into());
            args.extend(["--initial-cluster", &initial].iter().map(Into::into));
            let child = DevChild::spawn(&self.dir, &name, drover, args, false)?;
            self.children.push(child);
            self.endpoints.push(addr.clone());
        }
        for i in 1..=args.hosts {
            let name = format!("h{i}");
            let tls = certs::issue(&self.dir.join("certs"), &Peer::Host(name.clone()), &[])?;
            let mut hostd_args = tls_flags(&tls);
            hostd_args.extend(
                [
                    "--name",
                    &name,
                    "--listen",
                    "127.0.0.1:0",
                    "--libvirt-uri",
                    &args.libvirt_uri,
                ]
                .iter()
                .map(Into::into),
            );
            hostd_args.push("--data-dir".into());
            hostd_args.push(self.dir.join(format!("hostd-{name}")).into());
            let mut child =
                DevChild::spawn(&self.dir, &format!("hostd-{name}"), hostd, hostd_args, true)?;
            let addr = listening_addr(&mut child.child).await?;
            // Started again, it must listen where the cluster knows it.
            for a in &mut child.args {
                if a == "127.0.0.1:0" {
                    *a = addr.clone().into();
                }
            }
            self.children.push(child);
            self.hosts.push((name, addr));
        }

        let client = Client::new(&self.endpoints)?
            .with_deadline(READY_TIMEOUT)
            .with_tls(self.client_tls()?);
        let deadline = Instant::now() + READY_TIMEOUT;
        ready_by(deadline, "a leader elected", || async {
            let status = client.cluster_status().await?;
            Ok(status.leader_id != 0 && status.members.iter().all(|m| m.error.is_empty()))
        })
        .await?;
        for (name, addr) in &self.hosts {
            client.add_host(name, addr, &[]).await?;
        }
        ready_by(deadline, "every host up", || async {
            let hosts = client.hosts(false).await?.value;
            Ok(hosts.iter().all(|h| h.health == HostHealth::Up as i32))
        })
        .await?;
        Ok(())
    }

    /// What to tell the operator once the cluster is up.
    pub fn banner(&self) -> String {
        let hosts = self
            .hosts
            .iter()
            .map(|(n, a)| format!("{n} ({a})"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "drover dev cluster is up: {} controllers, hosts {hosts}; mutual TLS with the CA in \
             {}/certs; logs in {}/logs\n\
             In another shell:\n\n    export DROVER_ENDPOINTS={}\n    export DROVER_CA={} \
             DROVER_CERT={} DROVER_KEY={}\n\n\
             Press Ctrl-C to stop it.",
            self.endpoints.len(),
            self.dir.display(),
            self.dir.display(),
            self.endpoints.join(","),
            self.client_tls.ca.display(),
            self.client_tls.cert.display(),
            self.client_tls.key.display(),
        )
    }

    /// The operator's client identity, loaded.
    pub fn client_tls(&self) -> anyhow::Result<drover_proto::transport::TlsHandle> {
        let t = &self.client_tls;
        Ok(Some(std::sync::Arc::new(
            drover_proto::transport::Tls::load(&t.ca, &t.cert, &t.key)?,
        )))
    }

    /// Runs until `shutdown` completes, starting again every child a drill stopped (exit
    /// code 75). A child that exits otherwise stays down, and says so.
    pub async fn supervise(&mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let exited = {
                let waits = self
                    .children
                    .iter_mut()
                    .enumerate()
                    .filter(|(_, c)| c.child.id().is_some())
                    .map(|(i, c)| Box::pin(async move { (i, c.child.wait().await) }));
                let waits: Vec<_> = waits.collect();
                if waits.is_empty() {
                    (&mut shutdown).await;
                    return;
                }
                tokio::select! {
                    () = &mut shutdown => return,
                    ((i, status), _, _) = futures::future::select_all(waits) => (i, status),
                }
            };
            let (i, status) = exited;
            let c = &mut self.children[i];
            match status {
                Ok(s) if s.code() == Some(i32::from(crate::server::DRILL_EXIT_CODE)) => {
                    eprintln!("{} was stopped by a drill; starting it again", c.name);
                    match DevChild::spawn(&self.dir, &c.name, &c.program, c.args.clone(), false) {
                        Ok(again) => *c = again,
                        Err(e) => eprintln!("cannot start {} again: {e:#}", c.name),
                    }
                }
                Ok(s) => eprintln!("{} exited ({s}); see {}/logs", c.name, self.dir.display()),
                Err(e) => eprintln!("cannot wait for {}: {e}", c.name),
            }
        }
    }

    /// SIGTERM to every child (by PID), then SIGKILL to any still running after 10 s.
    pub async fn stop(mut self) {
        for DevChild { name, child, .. } in &self.children {
            if let Some(pid) = child.id() {
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                if let Err(e) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM) {
                    tracing::warn!(child = %name, error = %e, "cannot signal");
                }
            }
        }
        for DevChild { name, child, .. } in &mut self.children {
            match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!(child = %name, "did not stop after SIGTERM; killing it");
                    let _ = child.kill().await;
                }
            }
        }
    }
}
