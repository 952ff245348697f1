//! `drover vm console NAME`: the terminal attached to a VM's serial console, as `virsh
//! console` does it. Keystrokes go to the guest raw (the terminal is put in raw mode when
//! it is one); Ctrl-] detaches, and so does the end of a piped input.

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use nix::sys::termios::{self, SetArg, Termios};
use tokio::sync::{mpsc, oneshot};

use crate::client::{Client, ConsoleSession};

/// Ctrl-]: detaches, as in `virsh console` and telnet.
pub const ESCAPE: u8 = 0x1d;
/// After a detach, how long the guest's last output may still take to arrive.
const DRAIN: Duration = Duration::from_secs(2);

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The operator typed the escape character or the input ended.
    Detached,
    /// The console closed: the guest stopped, or another session took it over.
    Closed,
}

/// Attaches to `name`'s console until it ends; the terminal is restored in every case.
pub async fn run(c: &Client, name: &str) -> anyhow::Result<Ended> {
    let ConsoleSession { input, mut output } = c.console(name).await?;
    let _raw = RawMode::enter()?;
    eprint!("Connected to {name}; escape character is ^]\r\n");
    let (detached_tx, mut detached) = oneshot::channel();
    std::thread::spawn(move || {
        forward_stdin(&mut std::io::stdin().lock(), &input);
        // Dropping `input` (with this thread's end) ends the stream: the host lets go.
        let _ = detached_tx.send(());
    });
    let mut stdout = std::io::stdout();
    let ended = loop {
        tokio::select! {
            msg = output.message() => match msg? {
                Some(out) => {
                    stdout.write_all(&out.data)?;
                    stdout.flush()?;
                }
                None => break Ended::Closed,
            },
            _ = &mut detached => break Ended::Detached,
        }
    };
    if ended == Ended::Detached {
        // What the guest printed before the detach reached the host still shows.
        let _ = tokio::time::timeout(DRAIN, async {
            while let Ok(Some(out)) = output.message().await {
                let _ = stdout.write_all(&out.data);
            }
        })
        .await;
        let _ = stdout.flush();
    }
    eprint!(
        "\r\n{}\r\n",
        match ended {
            Ended::Detached => "Detached.",
            Ended::Closed =>
                "The console closed (the guest stopped or another session took it over).",
        }
    );
    Ok(ended)
}

/// Sends what `from` yields to the guest, up to the escape character or the end of input.
fn forward_stdin(from: &mut impl Read, to: &mpsc::Sender<Vec<u8>>) {
    let mut buf = [0u8; 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let (data, escape) = split_at_escape(&buf[..n]);
        if !data.is_empty() && to.blocking_send(data.to_vec()).is_err() {
            return;
        }
        if escape {
            return;
        }
    }
}

/// The bytes before the escape character, and whether it came.
pub fn split_at_escape(data: &[u8]) -> (&[u8], bool) {
    match data.iter().position(|&b| b == ESCAPE) {
        Some(i) => (&data[..i], true),
        None => (data, false),
    }
}

/// The terminal in raw mode while it lives (nothing when stdin is not a terminal).
struct RawMode(Option<Termios>);

impl RawMode {
    fn enter() -> anyhow::Result<Self> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(RawMode(None));
        }
        let saved = termios::tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw)?;
        Ok(RawMode(Some(saved)))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, saved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_escape_character_ends_the_input_and_is_not_sent() {
        assert_eq!(split_at_escape(b"ls\r"), (&b"ls\r"[..], false));
        assert_eq!(split_at_escape(b"ab\x1dcd"), (&b"ab"[..], true));
        assert_eq!(split_at_escape(b"\x1d"), (&b""[..], true));
    }

    #[test]
    fn input_is_forwarded_up_to_the_escape() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut input: &[u8] = b"echo hi\r\x1dnot this";
        forward_stdin(&mut input, &tx);
        drop(tx);
        let mut got = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            got.extend(chunk);
        }
        assert_eq!(got, b"echo hi\r");
    }
}
