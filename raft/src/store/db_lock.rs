//! Waiting for sled to let go of a `Db` this process dropped.
//!
//! sled 0.34 holds an exclusive `flock` on its `db` file for as long as the `Db` lives, and a
//! dropped `Db` is not gone when `drop` returns: its final flush runs on sled's I/O thread
//! pool, whose tasks hold the file until they end (under load, well after the drop). Opening
//! the same files again in that window fails with "could not acquire lock". A `flock` has no
//! notification, so this polls, bounded.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::OpenError;

/// How long a dropped `Db` may take to release its lock before opening again is refused.
pub const RELEASE_WITHIN: Duration = Duration::from_secs(30);

/// Returns once no one holds sled's lock on `file` (a `Db`'s `db` file), taking and
/// releasing that lock the way sled takes it. Errs when it is still held after `within`.
pub fn wait_released(file: &Path, within: Duration) -> Result<(), OpenError> {
    let deadline = Instant::now() + within;
    let failed = |e: std::io::Error| OpenError::Sled {
        path: file.display().to_string(),
        source: sled::Error::Io(e),
    };
    loop {
        let handle = std::fs::File::open(file).map_err(failed)?;
        match Flock::lock(handle, FlockArg::LockExclusiveNonblock) {
            // Released when dropped here, before sled takes it.
            Ok(_free) => return Ok(()),
            Err((_, Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err((_, e)) => return Err(failed(std::io::Error::from(e))),
        }
    }
}
