//! Snapshot data in files of their own, beside sled, as etcd keeps its `.snap` files beside
//! its bbolt database. The store's `snapshots/` directory holds the current snapshot as
//! `<id>.snap` and, while one is written or received, a `.partial` file; sled keeps only the
//! metadata naming the current one.
//!
//! Why not a sled value: a snapshot of millions of VMs is most of a gigabyte, and sled 0.34
//! writes a value inline through the same log every tree of the `Db` appends to. A Raft log
//! append beside such an insert stalled for seconds (issue 10, session 8: 3 s in the same
//! `Db`, 95–112 ms in a second `Db`, 53 ms beside a plain file write), and the three
//! controllers took their snapshots at the same log position and then called elections.
//! A file is also streamed: a build serializes into it and a send reads chunks from it, so no
//! gigabyte-sized buffer exists besides the state itself.
//!
//! Crash safety: data goes to a `.partial` file, is fsynced, renamed to its final name, and
//! the directory fsynced, before the metadata naming it is stored; a crash in between leaves
//! a file nothing names, removed at the next open or snapshot.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

const SUFFIX: &str = "snap";
const PARTIAL: &str = "partial";

/// Tells apart the partial files of one process's concurrent writes and receives.
static NEXT_PARTIAL: AtomicU64 = AtomicU64::new(0);

/// The store's snapshot directory.
#[derive(Debug, Clone)]
pub(super) struct SnapshotDir {
    dir: PathBuf,
}

/// Snapshot data written and fsynced under a temporary name, not yet current.
#[derive(Debug)]
pub(super) struct Partial {
    path: PathBuf,
    pub(super) len: u64,
}

impl SnapshotDir {
    /// Opens (creating) the directory and removes what interrupted writes left.
    pub(super) fn open(dir: PathBuf) -> io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == PARTIAL) {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(Self { dir })
    }

    /// Where the snapshot `id` lives once current. Ids are made by drover's leaders
    /// (`<leader>-<index>-<bytes>`); anything but letters, digits, `-` and `_` is replaced so
    /// that an id can never name a path outside the directory.
    pub(super) fn path(&self, id: &str) -> PathBuf {
        let stem: String = id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{stem}.{SUFFIX}"))
    }

    fn partial_path(&self) -> PathBuf {
        let n = NEXT_PARTIAL.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join(format!("{}-{n}.{PARTIAL}", std::process::id()))
    }

    /// Writes snapshot data through `write` into a partial file and fsyncs it. Blocking.
    pub(super) fn write_partial(
        &self,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<Partial> {
        let path = self.partial_path();
        let written = (|| {
            let file = SyncEvery::new(std::fs::File::create(&path)?);
            let mut out = BufWriter::with_capacity(1 << 20, file);
            write(&mut out)?;
            let file = out
                .into_inner()
                .map_err(io::IntoInnerError::into_error)?
                .file;
            file.sync_all()?;
            file.metadata().map(|m| m.len())
        })();
        match written {
            Ok(len) => Ok(Partial { path, len }),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// A partial file for a snapshot a leader sends in chunks.
    pub(super) async fn receive(&self) -> io::Result<SnapshotFile> {
        let path = self.partial_path();
        let file = tokio::fs::File::create(&path).await?;
        Ok(SnapshotFile { file, path })
    }

    /// Makes `partial` the data of snapshot `id`: renamed, and the rename on disk.
    /// Blocking.
    pub(super) fn commit(&self, partial: Partial, id: &str) -> io::Result<()> {
        std::fs::rename(&partial.path, self.path(id))?;
        std::fs::File::open(&self.dir)?.sync_all()
    }

    /// Drops a partial file that will not become current.
    pub(super) fn discard(&self, partial: Partial) {
        if let Err(e) = std::fs::remove_file(&partial.path) {
            tracing::warn!(path = %partial.path.display(), error = %e, "cannot remove a partial snapshot");
        }
    }

    /// Removes every snapshot but `keep`'s (all of them for `None`). Blocking.
    pub(super) fn remove_except(&self, keep: Option<&str>) -> io::Result<()> {
        let keep = keep.map(|id| self.path(id));
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == SUFFIX) && Some(&path) != keep.as_ref() {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }

    /// The snapshot `id`, opened for reading (an open file stays readable after a newer
    /// snapshot removes its name).
    pub(super) async fn open_file(&self, id: &str) -> io::Result<SnapshotFile> {
        let path = self.path(id);
        let file = tokio::fs::File::open(&path).await?;
        Ok(SnapshotFile { file, path })
    }
}

impl Partial {
    /// The whole data, for parsing. Blocking.
    pub(super) fn read(&self) -> io::Result<Vec<u8>> {
        std::fs::read(&self.path)
    }
}

/// Bytes written between two `fdatasync`s of a snapshot file.
const SYNC_EVERY_BYTES: u64 = 4 << 20;

/// A file written with its data pushed to disk every [`SYNC_EVERY_BYTES`], as RocksDB's
/// `bytes_per_sync` does. Written whole and fsynced at the end, a snapshot of a few hundred
/// MB sat in the page cache and then went to disk at once, and every log flush of every
/// controller on the machine waited behind it (ext4's ordered mode makes a journal commit
/// wait for dirty data): log flushes of 600–950 ms on all three controllers at the same
/// moment, each ending in an election (issue 10, session 9).
struct SyncEvery {
    file: std::fs::File,
    unsynced: u64,
}

impl SyncEvery {
    fn new(file: std::fs::File) -> Self {
        Self { file, unsynced: 0 }
    }
}

impl Write for SyncEvery {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.unsynced += n as u64;
        if self.unsynced >= SYNC_EVERY_BYTES {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Snapshot data as openraft moves it: a file, read in chunks to send and written in
/// chunks when received.
#[derive(Debug)]
pub struct SnapshotFile {
    file: tokio::fs::File,
    path: PathBuf,
}

impl SnapshotFile {
    /// `partial` opened for reading; readable after it is committed or discarded too.
    pub(super) async fn open_partial(partial: &Partial) -> io::Result<Self> {
        let file = tokio::fs::File::open(&partial.path).await?;
        Ok(Self {
            file,
            path: partial.path.clone(),
        })
    }

    /// The received data, fsynced, as a partial file ready to commit.
    pub(super) async fn finish(mut self) -> io::Result<Partial> {
        use tokio::io::AsyncWriteExt;
        // tokio's File writes in the background: flush waits for the last chunk.
        self.file.flush().await?;
        self.file.sync_all().await?;
        let len = self.file.metadata().await?.len();
        Ok(Partial {
            path: self.path,
            len,
        })
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.file).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(mut self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        Pin::new(&mut self.file).start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Pin::new(&mut self.file).poll_complete(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_never_names_a_path_outside_the_directory() {
        let d = SnapshotDir {
            dir: PathBuf::from("/s"),
        };
        assert_eq!(
            d.path("../../etc/passwd"),
            PathBuf::from("/s/______etc_passwd.snap")
        );
        assert_eq!(d.path("T1-N2-7-100"), PathBuf::from("/s/T1-N2-7-100.snap"));
    }

    #[test]
    fn a_crash_before_commit_leaves_nothing_current() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let d = SnapshotDir::open(tmp.path().join("s"))?;
        let p = d.write_partial(|w| w.write_all(b"{}"))?;
        assert_eq!(p.len, 2);
        // Reopening is what a restart does: the partial file is gone, no snapshot is.
        let d = SnapshotDir::open(tmp.path().join("s"))?;
        assert_eq!(std::fs::read_dir(tmp.path().join("s"))?.count(), 0);
        let p = d.write_partial(|w| w.write_all(b"[1]"))?;
        d.commit(p, "a")?;
        assert_eq!(std::fs::read(d.path("a"))?, b"[1]");
        Ok(())
    }
}
