//! Several real, isolated libvirt "hosts" on this one machine, so that tests can do real live
//! migration between them (recipe, measurements and pitfalls:
//! `/work/shared/notes/libvirt-multihost.md`).
//!
//! [`LibvirtHosts`] owns, for each host `hN`:
//! - a state directory with private copies of the five libvirt directories (`/run/libvirt`,
//!   `/var/lib/libvirt`, `/etc/libvirt`, `/var/log/libvirt`, `/var/cache/libvirt`),
//!   bind-mounted over the real ones inside the host's own mount namespace;
//! - its own `virtlogd`, `virtlockd` (QEMU's `lock_manager = "lockd"`: disk locks) and
//!   `libvirtd`, the latter listening without authentication on
//!   `127.0.0.(40+N):16510`, with its own host UUID and migration port range;
//! - the child subreaper (`scripts/subreaper.py`) they run under, so that QEMU processes are
//!   reaped at once.
//!
//! All hosts share the network namespace, unless started with
//! [`LibvirtHosts::start_in_netns`]: then each host `hN` has its own
//! (`crate::netns::Underlay`), libvirtd listens on its underlay address `10.99.0.N`,
//! migration streams and VXLAN tunnels run over the underlay, and the test reaches
//! libvirtd through its Unix socket. The system libvirtd (`qemu:///system`, root
//! namespace) is never touched. Dropping [`LibvirtHosts`] destroys every domain and stops
//! every process it started, by PID. The addresses are fixed, so a machine-wide lock makes a
//! second instance (another test, another process) wait instead of colliding.

use std::fs::{self, File, OpenOptions};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use nix::fcntl::Flock;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Every host's libvirtd port (each host has its own address); 16509 stays the system's.
pub const LIBVIRTD_PORT: u16 = 16510;
/// Addresses 127.0.0.41..=49: the rest of the harness uses .1, .2, .10-.13 and .20-.29.
pub const MAX_HOSTS: usize = 9;
const LOCK_FILE: &str = "/tmp/drover-libvirt-hosts.lock";
/// (directory in the state dir, the libvirt directory it replaces inside the namespace)
const LIBVIRT_DIRS: [(&str, &str); 5] = [
    ("run", "/run/libvirt"),
    ("lib", "/var/lib/libvirt"),
    ("etc", "/etc/libvirt"),
    ("log", "/var/log/libvirt"),
    ("cache", "/var/cache/libvirt"),
];
/// The daemons libvirtd needs beside it on each host: logs, and the disk locks.
const HELPERS: [&str; 2] = ["virtlogd", "virtlockd"];
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Per `virsh` call: a wedged daemon must fail the test, not hang it.
const VIRSH_TIMEOUT_SECS: &str = "60";
const POLL: Duration = Duration::from_millis(50);

/// The running hosts; dropping this tears them all down.
#[derive(Debug)]
pub struct LibvirtHosts {
    hosts: Vec<LibvirtHost>,
    // Deleted, then released, only after `drop` has stopped everything (fields drop
    // after `Drop::drop`, in order).
    _underlay: Option<crate::netns::Underlay>,
    _lock: Flock<File>,
}

/// One libvirt host: its own mount namespace, loopback address and daemons.
#[derive(Debug)]
pub struct LibvirtHost {
    /// `h1`, `h2`, ...
    pub name: String,
    /// libvirtd's listen address and the host's migration address: `127.0.0.(40+N)`, or
    /// in its own network namespace its underlay address `10.99.0.N`.
    pub address: String,
    /// Its network namespace's name (`drover-hN`), if it has its own.
    pub netns: Option<String>,
    /// Holds the private libvirt directories, the pid files and `host.log` (the
    /// subreaper's output); libvirtd's own log is `log/libvirtd.log`.
    pub state_dir: PathBuf,
    number: usize,
    /// (this host's own directory, the path it is mounted at in the host's namespace): a
    /// directory every host has at the same path with its own files, as a local pool is.
    local: Option<(PathBuf, PathBuf)>,
    // Every subreaper started for this host: `start_libvirtd` adds one, and an earlier one
    // lives on as long as the virtlogd or QEMU processes it adopted.
    subreapers: Vec<Child>,
}

impl LibvirtHosts {
    /// Starts `n` hosts (`h1`.. on 127.0.0.41..) with their state under `dir` (e.g. a
    /// tempdir, which must outlive this); returns once every libvirtd answers over TCP.
    /// Waits first for any other `LibvirtHosts` on this machine to be dropped.
    pub fn start(dir: &Path, n: usize) -> anyhow::Result<LibvirtHosts> {
        Self::start_with_local(dir, n, None)
    }

    /// [`LibvirtHosts::start`], and with `local` (a directory QEMU can use) each host gets
    /// a private directory at the same path, [`LibvirtHosts::local_path`]: host `hN`'s
    /// files are in `local/hN`, mounted at `local/pool` in its namespace. A dir pool there
    /// is a local pool, as on real hosts with their own disks.
    pub fn start_with_local(
        dir: &Path,
        n: usize,
        local: Option<&Path>,
    ) -> anyhow::Result<LibvirtHosts> {
        Self::start_inner(dir, n, local, false)
    }

    /// [`LibvirtHosts::start_with_local`], each host in its own network namespace on a
    /// shared underlay (see the module's documentation).
    pub fn start_in_netns(
        dir: &Path,
        n: usize,
        local: Option<&Path>,
    ) -> anyhow::Result<LibvirtHosts> {
        Self::start_inner(dir, n, local, true)
    }

    fn start_inner(
        dir: &Path,
        n: usize,
        local: Option<&Path>,
        netns: bool,
    ) -> anyhow::Result<LibvirtHosts> {
        available().map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            (1..=MAX_HOSTS).contains(&n),
            "between 1 and {MAX_HOSTS} hosts, not {n}"
        );
        let lock = lock_machine_wide()?;
        let dir = std::path::absolute(dir)?;
        let hosts = (1..=n)
            .map(|number| LibvirtHost {
                name: format!("h{number}"),
                address: if netns {
                    crate::netns::underlay_ip(number).to_string()
                } else {
                    format!("127.0.0.{}", 40 + number)
                },
                netns: netns.then(|| crate::netns::host_ns(number)),
                state_dir: dir.join(format!("h{number}")),
                number,
                local: local.map(|l| (l.join(format!("h{number}")), Self::local_path(l))),
                subreapers: Vec::new(),
            })
            .collect::<Vec<_>>();
        // We hold the lock, so a listener here is not a concurrent test but a leftover.
        for host in hosts.iter().filter(|h| h.netns.is_none()) {
            let addr: SocketAddr = format!("{}:{LIBVIRTD_PORT}", host.address).parse()?;
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                bail!(
                    "something already listens on {addr}, probably the libvirtd of an earlier \
                     run that crashed; find its PID with `ss -ltnp 'sport = :{LIBVIRTD_PORT}'` \
                     and kill it (and its QEMU processes) by PID"
                );
            }
        }
        // Built before anything starts, so that a failure part-way still tears down (Drop)
        // what did start.
        let underlay = netns
            .then(|| crate::netns::Underlay::create(n))
            .transpose()?;
        let mut this = LibvirtHosts {
            hosts,
            _underlay: underlay,
            _lock: lock,
        };
        for host in &mut this.hosts {
            host.prepare()
                .with_context(|| format!("preparing {}", host.name))?;
            host.spawn(&HELPERS)?;
        }
        for host in &mut this.hosts {
            host.wait_ready()?;
        }
        Ok(this)
    }

    /// Where every host sees its own files under `local` (see
    /// [`LibvirtHosts::start_with_local`]).
    pub fn local_path(local: &Path) -> PathBuf {
        local.join("pool")
    }

    /// Host `i`, 0-based (`host(0)` is `h1`). Panics if out of range.
    pub fn host(&self, i: usize) -> &LibvirtHost {
        &self.hosts[i]
    }

    /// Host `i`, 0-based, to stop or start its libvirtd. Panics if out of range.
    pub fn host_mut(&mut self, i: usize) -> &mut LibvirtHost {
        &mut self.hosts[i]
    }

    /// All hosts, `h1` first.
    pub fn hosts(&self) -> &[LibvirtHost] {
        &self.hosts
    }

    /// Why this machine cannot run libvirt hosts, if it cannot: for
    /// [`crate::require::prerequisite`].
    pub fn available() -> Result<(), String> {
        available()
    }
}

impl Drop for LibvirtHosts {
    fn drop(&mut self) {
        for host in &mut self.hosts {
            host.teardown();
        }
    }
}

impl LibvirtHost {
    /// What peers (and drover) use: `qemu+tcp://127.0.0.4N:16510/system`.
    pub fn tcp_uri(&self) -> String {
        format!("qemu+tcp://{}:{LIBVIRTD_PORT}/system", self.address)
    }

    /// The local socket, as an agent on the host would connect.
    pub fn local_uri(&self) -> String {
        format!(
            "qemu+unix:///system?socket={}",
            self.state_dir.join("run/libvirt-sock").display()
        )
    }

    /// Kills this host's libvirtd (SIGKILL, by the PID in its pid file: the crash fault) and
    /// returns once its TCP port refuses connections. Its QEMU guests keep running, as they
    /// would on a real host.
    pub fn stop_libvirtd(&mut self) -> anyhow::Result<()> {
        let pid = self
            .daemon_pid("libvirtd")
            .with_context(|| format!("{}: libvirtd is not running", self.name))?;
        kill(pid, Signal::SIGKILL)?;
        anyhow::ensure!(
            wait_gone(pid, EXIT_TIMEOUT),
            "{}: libvirtd {pid} still there after SIGKILL",
            self.name
        );
        let deadline = Instant::now() + EXIT_TIMEOUT;
        while self.accepts()? {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{}: libvirtd's socket still accepts after libvirtd died",
                self.name
            );
            std::thread::sleep(POLL);
        }
        Ok(())
    }

    /// Whether something accepts on libvirtd's TCP port, or (in a namespace of its own,
    /// which the test cannot reach by TCP) on its Unix socket.
    fn accepts(&self) -> anyhow::Result<bool> {
        if self.netns.is_some() {
            let socket = self.state_dir.join("run/libvirt-sock");
            return Ok(std::os::unix::net::UnixStream::connect(socket).is_ok());
        }
        let addr: SocketAddr = format!("{}:{LIBVIRTD_PORT}", self.address).parse()?;
        Ok(TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())
    }

    /// Starts libvirtd again (and virtlogd and virtlockd, if they are gone too), in a fresh mount namespace
    /// with the same private directories; returns once it answers. It reconnects to the
    /// guests that kept running.
    pub fn start_libvirtd(&mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.daemon_pid("libvirtd") {
            bail!("{}: libvirtd is already running as {pid}", self.name);
        }
        let helpers: Vec<&str> = HELPERS
            .into_iter()
            .filter(|h| self.daemon_pid(h).is_none())
            .collect();
        self.spawn(&helpers)?;
        self.wait_ready()
    }

    /// `virsh -c <uri> args...` (the TCP URI, or in a namespace of its own the local
    /// socket): its stdout, or an error with its stderr.
    pub fn virsh(&self, args: &[&str]) -> anyhow::Result<String> {
        let uri = if self.netns.is_some() {
            self.local_uri()
        } else {
            self.tcp_uri()
        };
        let out = Command::new(program("timeout"))
            .args(["-k", "5", VIRSH_TIMEOUT_SECS])
            .arg(program("virsh"))
            .args(["-c", &uri])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("cannot run virsh")?;
        if !out.status.success() {
            let why = if out.status.code() == Some(124) {
                format!("timed out after {VIRSH_TIMEOUT_SECS} s")
            } else {
                out.status.to_string()
            };
            bail!(
                "virsh -c {uri} {}: {why}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Names of the active domains (`virsh list --name`).
    pub fn running_domains(&self) -> anyhow::Result<Vec<String>> {
        Ok(names(&self.virsh(&["list", "--name"])?))
    }

    /// Creates the state directory with the private libvirt directories and this host's
    /// configuration.
    fn prepare(&self) -> anyhow::Result<()> {
        let dir = |sub: &str| self.state_dir.join(sub);
        for (sub, target) in LIBVIRT_DIRS {
            fs::create_dir_all(dir(sub))?;
            // The bind mounts need their mount points on the real file system.
            fs::create_dir_all(target)?;
        }
        fs::create_dir_all(dir("log/qemu"))?;
        if let Some((own, at)) = &self.local {
            for d in [own, at] {
                fs::create_dir_all(d)?;
                fs::set_permissions(d, fs::Permissions::from_mode(0o755))?;
            }
        }
        // Configuration files are small: copied whole, ownership and all.
        run(Command::new(program("cp"))
            .arg("-a")
            .arg("/etc/libvirt/.")
            .arg(dir("etc")))?;
        // Only the directory tree of /var/lib/libvirt, with its owners (QEMU runs as
        // libvirt-qemu and needs its directories): its files are the system instance's disk
        // images, saved guests and NVRAM, which can be large and are none of a test host's
        // business.
        copy_dir_tree(Path::new("/var/lib/libvirt"), &dir("lib"))?;
        // The capabilities cache spares each host a QEMU probe at start-up; libvirt
        // re-probes by itself if the cached entry is stale.
        if Path::new("/var/cache/libvirt").is_dir() {
            run(Command::new(program("cp"))
                .arg("-a")
                .arg("/var/cache/libvirt/.")
                .arg(dir("cache")))?;
        }
        forget_system_objects(&dir("etc"))?;
        fs::write(dir("etc/libvirtd.conf"), self.libvirtd_conf())?;
        fs::write(dir("etc/qemu.conf"), self.qemu_conf())?;
        Ok(())
    }

    fn libvirtd_conf(&self) -> String {
        let address = &self.address;
        // Pitfall 3 of the notes: hosts with one UUID refuse to migrate to each other.
        let uuid = format!("d7000000-0000-4000-8000-{:012}", self.number);
        format!(
            "# {name}, a drover test host (chaos-tests/src/libvirt_hosts.rs): no auth, tests only\n\
             listen_tls = 0\n\
             listen_tcp = 1\n\
             listen_addr = \"{address}\"\n\
             tcp_port = \"{LIBVIRTD_PORT}\"\n\
             auth_tcp = \"none\"\n\
             auth_unix_rw = \"none\"\n\
             host_uuid = \"{uuid}\"\n\
             log_outputs = \"3:file:/var/log/libvirt/libvirtd.log\"\n",
            name = self.name,
        )
    }

    fn qemu_conf(&self) -> String {
        let address = &self.address;
        // One network namespace for all hosts: each host its own range, well away from the
        // system instance's default 49152-49215.
        let min = 49400 + 20 * (self.number - 1);
        let max = min + 19;
        format!(
            "# {name}, a drover test host (chaos-tests/src/libvirt_hosts.rs)\n\
             migration_host = \"{address}\"\n\
             migration_address = \"{address}\"\n\
             migration_port_min = {min}\n\
             migration_port_max = {max}\n\
             # Without systemd, every daemon would put its domain 1 in the same cgroup.\n\
             cgroup_controllers = [ ]\n\
             # The disk lock layer drover asks of its hosts: this host's virtlockd takes\n\
             # an fcntl lock on every disk a guest opens read-write, so a second QEMU\n\
             # on the same file, from any host, fails to start.\n\
             lock_manager = \"lockd\"\n",
            name = self.name,
        )
    }

    /// Starts a subreaper running, in a new mount namespace with this host's directories
    /// bind-mounted, (virtlogd and) libvirtd as daemons.
    fn spawn(&mut self, helpers: &[&str]) -> anyhow::Result<()> {
        let mut script = String::from("set -eu\n");
        if self.netns.is_some() {
            // sysfs shows the namespace that mounted it: libvirt reads interfaces there.
            script += "mount -t sysfs sysfs /sys\n";
        }
        for (sub, target) in LIBVIRT_DIRS {
            script += &format!(
                "mount --bind {} {target}\n",
                sh_quote(&self.state_dir.join(sub))
            );
        }
        if let Some((own, at)) = &self.local {
            script += &format!("mount --bind {} {}\n", sh_quote(own), sh_quote(at));
        }
        // Each daemon gets its own pid file: the defaults in /run clash between instances.
        for helper in helpers {
            script += &format!(
                "{} -d -p {}\n",
                sh_quote(&program(helper)),
                sh_quote(&self.pid_file(helper))
            );
        }
        script += &format!(
            "{} -d --listen -p {}\n",
            sh_quote(&program("libvirtd")),
            sh_quote(&self.pid_file("libvirtd"))
        );
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state_dir.join("host.log"))?;
        // setsid, as scripts/libvirtd.sh does: out of the test's session and process group, so
        // signals aimed at the test runner's group (a terminal's Ctrl-C) do not kill the
        // Python subreaper and orphan its QEMU processes; teardown is by PID, in `Drop`.
        let mut command = Command::new(program("setsid"));
        command.arg(program("python3")).arg(subreaper());
        if let Some(ns) = &self.netns {
            command
                .arg(program("nsenter"))
                .arg(format!("--net={}", crate::netns::ns_path(ns).display()));
        }
        let child = command
            .arg(program("unshare"))
            .args(["-m", "--propagation", "private"])
            .arg(program("bash"))
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("{}: cannot start the subreaper", self.name))?;
        self.subreapers.push(child);
        Ok(())
    }

    /// Polls `virsh version` over TCP until it answers; fails early if the start script did.
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last;
        loop {
            match self.virsh(&["version"]) {
                Ok(_) => return Ok(()),
                Err(e) => last = format!("{e:#}"),
            }
            let log = || {
                fs::read_to_string(self.state_dir.join("host.log")).unwrap_or_default()
                    + &fs::read_to_string(self.state_dir.join("log/libvirtd.log"))
                        .unwrap_or_default()
            };
            if let Some(child) = self.subreapers.last_mut() {
                // The subreaper exits with the start script's status once nothing is left.
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "{}: libvirtd did not start ({status}); last: {last}; log:\n{}",
                        self.name,
                        log()
                    );
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: libvirtd did not answer within {READY_TIMEOUT:?}; last: {last}; log:\n{}",
                    self.name,
                    log()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    fn pid_file(&self, daemon: &str) -> PathBuf {
        self.state_dir.join(format!("{daemon}.pid"))
    }

    /// The live process named by `daemon`'s pid file. A process is trusted only if its
    /// command line names that same pid file, so a stale file whose PID was reused by
    /// something else is never acted on.
    fn daemon_pid(&self, daemon: &str) -> Option<Pid> {
        let file = self.pid_file(daemon);
        let pid = read_pid(&file)?;
        cmdline(pid)
            .iter()
            .any(|arg| Path::new(arg) == file)
            .then_some(pid)
    }

    /// The PID of this host's libvirtd: its mount namespace is the host's.
    pub fn libvirtd_pid(&self) -> Option<Pid> {
        self.daemon_pid("libvirtd")
    }

    /// The PID of this host's virtlockd, which holds its guests' disk locks.
    pub fn virtlockd_pid(&self) -> Option<Pid> {
        self.daemon_pid("virtlockd")
    }

    /// Destroys the guests, then kills QEMU, libvirtd, virtlogd and virtlockd by PID, then waits for the
    /// subreapers. Best effort: problems are reported, never panicked on (we may be
    /// unwinding already).
    fn teardown(&mut self) {
        if self.daemon_pid("libvirtd").is_some() {
            match self.running_domains() {
                Ok(domains) => {
                    for domain in domains {
                        if let Err(e) = self.virsh(&["destroy", &domain]) {
                            eprintln!("{}: {e:#}", self.name);
                        }
                    }
                }
                Err(e) => eprintln!("{}: cannot list domains: {e:#}", self.name),
            }
            // A network with DHCP has a dnsmasq, which libvirtd leaves running when it
            // is killed.
            match self.virsh(&["net-list", "--name"]) {
                Ok(list) => {
                    for network in names(&list) {
                        if let Err(e) = self.virsh(&["net-destroy", &network]) {
                            eprintln!("{}: {e:#}", self.name);
                        }
                    }
                }
                Err(e) => eprintln!("{}: cannot list networks: {e:#}", self.name),
            }
        }
        // Guests whose libvirtd was down (or failed to destroy them): by their pid files in
        // the private /run/libvirt/qemu.
        let mut victims = Vec::new();
        if let Ok(entries) = fs::read_dir(self.state_dir.join("run/qemu")) {
            for entry in entries.flatten() {
                let path = entry.path();
                let Some(domain) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".pid"))
                else {
                    continue;
                };
                let Some(pid) = read_pid(&path) else { continue };
                // Only a QEMU running this guest (`-name guest=<domain>,...`): the file may be
                // stale and its PID reused.
                let args = cmdline(pid);
                let guest = format!("guest={domain}");
                let is_guest = args
                    .windows(2)
                    .any(|w| w[0] == "-name" && w[1].split(',').next() == Some(guest.as_str()));
                if is_guest && args.first().is_some_and(|a| a.contains("qemu-system")) {
                    victims.push(pid);
                }
            }
        }
        victims.extend(self.daemon_pid("libvirtd"));
        victims.extend(self.daemon_pid("virtlogd"));
        victims.extend(self.daemon_pid("virtlockd"));
        for &pid in &victims {
            let _ = kill(pid, Signal::SIGKILL);
        }
        for &pid in &victims {
            if !wait_gone(pid, EXIT_TIMEOUT) {
                eprintln!("{}: process {pid} survived SIGKILL", self.name);
            }
        }
        // What is left was adopted by a subreaper (a helper libvirtd started and did not
        // stop): its children now, killed by PID.
        for child in &self.subreapers {
            let parent = Pid::from_raw(child.id() as i32);
            for pid in children(parent) {
                eprintln!("{}: killing leftover {pid} {:?}", self.name, cmdline(pid));
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
        // With all its descendants gone, each subreaper exits by itself.
        let deadline = Instant::now() + EXIT_TIMEOUT;
        for child in &mut self.subreapers {
            loop {
                match child.try_wait() {
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
                    Ok(None) => {
                        eprintln!(
                            "{}: subreaper {} still has descendants; killing it",
                            self.name,
                            child.id()
                        );
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(Some(_)) | Err(_) => break,
                }
            }
        }
        self.subreapers.clear();
    }
}

/// Why this machine cannot run libvirt hosts, if it cannot.
fn available() -> Result<(), String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("libvirt hosts need root (mount namespaces, libvirtd)".into());
    }
    for name in [
        "libvirtd",
        "virtlogd",
        "qemu-system-x86_64",
        "virsh",
        "unshare",
        "setsid",
        "python3",
        "timeout",
        "bash",
        "cp",
    ] {
        if find_program(name).is_none() {
            return Err(format!(
                "{name} not found (apt-get install -y libvirt-daemon-system libvirt-clients \
                 qemu-system-x86)"
            ));
        }
    }
    if !subreaper().is_file() {
        return Err(format!("{} is missing", subreaper().display()));
    }
    // libvirt-daemon-system creates this user; without it the QEMU driver does not load.
    if !matches!(nix::unistd::User::from_name("libvirt-qemu"), Ok(Some(_))) {
        return Err("no libvirt-qemu user (install libvirt-daemon-system)".into());
    }
    // Containers often forbid new mount namespaces even to root.
    match Command::new(program("unshare"))
        .args(["-m", "--propagation", "private", "true"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "cannot create a mount namespace: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run unshare: {e}")),
    }
}

/// Takes the machine-wide lock, waiting (up to [`LOCK_TIMEOUT`]) for another instance.
fn lock_machine_wide() -> anyhow::Result<Flock<File>> {
    crate::machine_lock::lock(LOCK_FILE, "LibvirtHosts")
}

/// `scripts/subreaper.py` of this repository.
fn subreaper() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/subreaper.py")
}

/// `name` on `$PATH` or in the sbin directories (a test's `$PATH` may lack them).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn program(name: &str) -> PathBuf {
    find_program(name).unwrap_or_else(|| PathBuf::from(name))
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Recreates the directories under `from` (not the files) in `to`, with modes and owners.
fn copy_dir_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    let meta = fs::metadata(from)?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(meta.mode() & 0o7777)
        .create(to)?;
    fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    std::os::unix::fs::chown(to, Some(meta.uid()), Some(meta.gid()))?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            copy_dir_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// Removes from a copy of /etc/libvirt what belongs to the system instance: its persistent
/// guests, and every `autostart` directory (an autostarted network would create bridges and
/// firewall rules in the shared network namespace).
fn forget_system_objects(etc: &Path) -> anyhow::Result<()> {
    if let Ok(entries) = fs::read_dir(etc.join("qemu")) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "xml") && path.is_file() {
                fs::remove_file(&path)?;
            }
        }
    }
    remove_autostart(etc)
}

fn remove_autostart(dir: &Path) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        if entry.file_name() == "autostart" {
            fs::remove_dir_all(entry.path())?;
        } else {
            remove_autostart(&entry.path())?;
        }
    }
    Ok(())
}

fn read_pid(file: &Path) -> Option<Pid> {
    let text = fs::read_to_string(file).ok()?;
    text.trim().parse().ok().map(Pid::from_raw)
}

/// The process's arguments; empty if it is gone.
fn cmdline(pid: Pid) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The processes whose parent is `parent` (from `/proc/*/stat`).
fn children(parent: Pid) -> Vec<Pid> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            // `pid (comm) state ppid ...`: comm may hold spaces, so split after its `)`.
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat.rsplit_once(')')?.1;
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(parent.as_raw())
        })
        .map(Pid::from_raw)
        .collect()
}

/// Waits until `pid` is gone and reaped (the subreaper reaps at once); `false` on timeout.
fn wait_gone(pid: Pid, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Path::new(&format!("/proc/{pid}")).exists() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

fn names(list: &str) -> Vec<String> {
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

fn sh_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}
