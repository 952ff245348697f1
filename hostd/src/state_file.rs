//! Small JSON files hostd and `hostd-watchdog` leave each other in hostd's data directory
//! (the lease, the watchdog's status, a drill's stop record): replaced atomically (write, then
//! rename) and read whole. Not fsynced: like the lease file they must survive a process
//! crash, and a machine crash ends what they describe anyway.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::HostdError;

fn unusable(path: &Path, reason: impl ToString) -> HostdError {
    HostdError::StateFile {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Replaces the file at `path` with `value`.
pub(crate) fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), HostdError> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(value).map_err(|e| unusable(path, e))?;
    std::fs::write(&tmp, bytes).map_err(|e| unusable(path, e))?;
    std::fs::rename(&tmp, path).map_err(|e| unusable(path, e))
}

/// Reads the file; `None` when there is none.
pub(crate) fn read<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, HostdError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| unusable(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(unusable(path, e)),
    }
}

/// Removes the file; fine when there is none.
pub(crate) fn remove(path: &Path) -> Result<(), HostdError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(unusable(path, e)),
    }
}
