//! Machine-wide locks for tests that share something one machine has only once: the
//! multi-host rig's fixed addresses, the system libvirt's `drover-*` pools. Taken by the
//! test, held while it lives (an flock: released when the process dies, too).

use std::fs::{File, OpenOptions};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// How long a test waits for another to let go.
const LOCK_TIMEOUT: Duration = Duration::from_secs(600);

/// Takes the lock at `path`, waiting (and saying so once) while another process holds it.
/// Blocking: from async code, call it in `spawn_blocking`.
pub fn lock(path: &str, what: &str) -> anyhow::Result<Flock<File>> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {path}"))?;
    let deadline = Instant::now() + LOCK_TIMEOUT;
    let mut said = false;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((f, Errno::EWOULDBLOCK)) => {
                file = f;
                if Instant::now() > deadline {
                    bail!("another {what} held {path} for {LOCK_TIMEOUT:?}");
                }
                if !said {
                    eprintln!("waiting for another {what} ({path})");
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err((_, e)) => bail!("cannot lock {path}: {e}"),
        }
    }
}
