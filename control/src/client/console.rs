//! The client's console call (`VmService/VmConsole`).

use std::time::Duration;

use drover_proto::v1 as pb;
use drover_proto::v1::vm_service_client::VmServiceClient;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::{Client, ClientError};

/// Input chunks buffered towards the controller.
const INPUT_IN_FLIGHT: usize = 64;
/// How long opening may take; the session itself has no deadline (the channel's timeout
/// covers the call until the controller answers, not the stream after it).
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);

/// An attached console: bytes sent on `input` go to the guest (dropping it detaches);
/// `output` carries the guest's bytes until the console closes.
#[derive(Debug)]
pub struct ConsoleSession {
    pub input: mpsc::Sender<Vec<u8>>,
    pub output: Streaming<pb::VmConsoleOutput>,
}

impl Client {
    /// Attaches to VM `name`'s serial console (on the leader: a follower's redirect is
    /// followed like any other call's).
    pub async fn console(&self, name: &str) -> Result<ConsoleSession, ClientError> {
        self.call_within(OPEN_TIMEOUT, |c| async move {
            // A fresh channel per attempt: a refused attempt consumed its receiver.
            let (input, rx) = mpsc::channel::<Vec<u8>>(INPUT_IN_FLIGHT);
            let first = pb::VmConsoleInput {
                name: name.to_string(),
                data: Vec::new(),
            };
            let rest = ReceiverStream::new(rx).map(|data| pb::VmConsoleInput {
                name: String::new(),
                data,
            });
            let output = VmServiceClient::new(c)
                .vm_console(futures::stream::iter([first]).chain(rest))
                .await?
                .into_inner();
            Ok(ConsoleSession { input, output })
        })
        .await
    }
}
