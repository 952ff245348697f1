//! Serial consoles through libvirt: `virDomainOpenConsole` on a libvirt stream. hostd runs
//! no libvirt event loop, so the stream is blocking: one thread sits in `recv` while
//! another `send`s (libvirt's client hands the socket between such threads), and closing
//! aborts the stream, which wakes the blocked `recv`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use virt::connect::Connect;
use virt::stream::Stream;
use virt::sys;

use super::Console;
use crate::error::HostdError;

pub(super) struct LibvirtConsole {
    stream: Stream,
    /// Set by `close`: the error a blocked `recv` then gets is expected.
    closed: Arc<AtomicBool>,
}

/// Opens the first serial console of `dom`, taking it over from any earlier session.
pub(super) fn open(
    conn: &Connect,
    dom: &virt::domain::Domain,
) -> Result<LibvirtConsole, HostdError> {
    let stream = Stream::new(conn, 0).map_err(HostdError::libvirt("stream_new"))?;
    // FORCE: a session whose client went away must not keep the console; SAFE: refuse
    // rather than open a console the driver cannot hand over safely.
    let flags = sys::VIR_DOMAIN_CONSOLE_FORCE | sys::VIR_DOMAIN_CONSOLE_SAFE;
    dom.open_console(None, &stream, flags)
        .map_err(HostdError::libvirt("domain_open_console"))?;
    Ok(LibvirtConsole {
        stream,
        closed: Arc::default(),
    })
}

impl Console for LibvirtConsole {
    fn recv(&self, buf: &mut [u8]) -> Result<usize, HostdError> {
        match self.stream.recv(buf) {
            Ok(n) if n >= 0 => Ok(n as usize),
            // -2 (would block) cannot happen on a blocking stream; treat it as the end.
            Ok(_) => Ok(0),
            Err(_) if self.closed.load(Ordering::SeqCst) => Ok(0),
            // A session that took the console over (FORCE) leaves this one's stream with
            // an I/O failure: for the caller, the console closed.
            Err(e) => {
                tracing::info!(error = %e.message(), "console stream ended");
                Ok(0)
            }
        }
    }

    fn send(&self, data: &[u8]) -> Result<(), HostdError> {
        let mut rest = data;
        while !rest.is_empty() {
            match self.stream.send(rest) {
                Ok(n) if n > 0 => rest = &rest[n as usize..],
                Ok(_) => {
                    return Err(HostdError::InvalidArgument(
                        "the console accepted no more bytes".into(),
                    ))
                }
                Err(e) => return Err(HostdError::libvirt("stream_send")(e)),
            }
        }
        Ok(())
    }

    fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        // A clone shares the C stream; aborting it aborts this session's stream.
        let _ = self.stream.clone().abort();
    }

    fn handle(&self) -> Box<dyn Console> {
        Box::new(LibvirtConsole {
            stream: self.stream.clone(),
            closed: Arc::clone(&self.closed),
        })
    }
}
