//! The `Console` RPC: a running VM's serial console relayed both ways between the
//! controller's stream and libvirt. Two blocking threads hold the session (libvirt's
//! stream is blocking, see `hypervisor::libvirt_console`): one reads the guest's output
//! into the response stream, one writes the caller's input to the guest. The caller
//! ending its stream closes the console, which ends the reader, which ends the response.

use std::time::Duration;

use drover_proto::agent::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::{debug, info};

use super::AgentService;
use crate::error::HostdError;
use crate::hypervisor::Console;

/// The first message (naming the VM) must come this soon.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Output chunks buffered towards a slow reader before the guest's output waits.
const OUTPUT_IN_FLIGHT: usize = 64;

impl AgentService {
    pub(super) async fn console_inner(
        &self,
        mut input: Streaming<pb::ConsoleInput>,
    ) -> Result<ReceiverStream<Result<pb::ConsoleOutput, Status>>, Status> {
        let op = "Console";
        let first = match tokio::time::timeout(OPEN_TIMEOUT, input.message()).await {
            Ok(Ok(Some(first))) => first,
            Ok(Ok(None)) | Err(_) => {
                return Err(self.failed(op, "")(HostdError::InvalidArgument(
                    "the first message must name the VM".into(),
                )))
            }
            Ok(Err(status)) => return Err(status),
        };
        let name = first.name.clone();
        super::validate_name(&name).map_err(self.failed(op, &name))?;
        self.admit_pool_term(op, &name, first.term).await?;
        info!(host = %self.host(), vm = %name, term = first.term, "Console attached");
        let vm = name.clone();
        let console = self
            .shared
            .blocking(move |hv| hv.open_console(&vm))
            .await
            .map_err(self.failed(op, &name))?;

        let (out_tx, out_rx) = mpsc::channel(OUTPUT_IN_FLIGHT);
        let reader = console.handle();
        let host = self.host().to_string();
        let vm = name.clone();
        tokio::task::spawn_blocking(move || relay_output(reader.as_ref(), &out_tx, &host, &vm));

        let (in_tx, in_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        if !first.data.is_empty() {
            let _ = in_tx.send(first.data);
        }
        tokio::task::spawn_blocking(move || relay_input(console.as_ref(), &in_rx));
        tokio::spawn(async move {
            // Ends when the caller ends its stream or the connection drops: dropping the
            // sender then closes the console.
            while let Ok(Some(msg)) = input.message().await {
                if in_tx.send(msg.data).is_err() {
                    break;
                }
            }
        });
        Ok(ReceiverStream::new(out_rx))
    }
}

/// The guest's output, until the console closes or nobody reads the response.
fn relay_output(
    console: &dyn Console,
    out: &mpsc::Sender<Result<pb::ConsoleOutput, Status>>,
    host: &str,
    vm: &str,
) {
    let mut buf = vec![0u8; 4096];
    loop {
        match console.recv(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let chunk = pb::ConsoleOutput {
                    data: buf[..n].to_vec(),
                };
                if out.blocking_send(Ok(chunk)).is_err() {
                    break;
                }
            }
            Err(e) => {
                let _ = out.blocking_send(Err(Status::from(e)));
                break;
            }
        }
    }
    // Also when the guest's side ended first: the writer must not wait on a dead console.
    console.close();
    info!(host, vm, "Console detached");
}

/// The caller's input, until the caller is gone; then the console is closed.
fn relay_input(console: &dyn Console, input: &std::sync::mpsc::Receiver<Vec<u8>>) {
    while let Ok(data) = input.recv() {
        if data.is_empty() {
            continue;
        }
        if let Err(e) = console.send(&data) {
            debug!(error = %e, "console input stops");
            break;
        }
    }
    console.close();
}
