//! Group commit of writes: the writes that arrive while earlier ones are still in flight
//! ride one log entry together (`Command::Batch`), so one append, one flush and one
//! replication round serve them all.
//!
//! Why drover does it and openraft does not: openraft 0.9's core runs the storage commands
//! after every message it takes in, so each `client_write` became its own append and its
//! own log flush, and the next write's flush waited for it. Under load the leader flushed
//! about once per client write (BENCHMARKS.md, issue 10). Here a single task takes the
//! writes in arrival order; while [`MAX_IN_FLIGHT`] entries are uncommitted, new writes
//! wait in the queue and the next entry takes all of them (up to the entry size limit).
//! A lone write is sent as it is: no batch, no added wait.
//!
//! The batch's requests keep everything a lone request has: its own request id
//! (exactly-once), its own result, and `apply` applies them one after the other in order
//! (see `store::apply_request`).

use std::sync::Arc;

use openraft::error::ClientWriteError;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::command::{ApplyResult, Command, Reply, Request};
use crate::network::MAX_COMMAND_BYTES;
use crate::node::WriteError;
use crate::Raft;

/// Uncommitted entries at a time. One would serialize the leader's flush with the
/// followers' round trip; two lets the next entry be appended and flushed while the
/// previous one replicates (measured: BENCHMARKS.md, issue 10, session 7).
pub const MAX_IN_FLIGHT: usize = 2;

/// Most requests in one entry.
pub const MAX_BATCH: usize = 1024;

/// Writes waiting for the batcher before `submit` itself waits (back-pressure).
const QUEUE: usize = 4096;

/// JSON bytes a batch adds around its requests: `{"id":null,"command":{"Batch":{"requests":[`
/// … `]}}}` and a comma per request.
const BATCH_OVERHEAD_BYTES: usize = 64;

type Reply1 = oneshot::Sender<Result<ApplyResult, WriteError>>;

struct Pending {
    req: Request,
    bytes: usize,
    reply: Reply1,
}

/// The handle writers submit through; the batching task ends when the last handle is
/// dropped.
#[derive(Clone)]
pub(crate) struct WriteBatcher {
    tx: mpsc::Sender<Pending>,
}

impl WriteBatcher {
    pub fn start(raft: Raft) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(raft, rx));
        Self { tx }
    }

    /// Commits `req` (`bytes`: its encoded size) in the next entry that has room.
    pub async fn submit(&self, req: Request, bytes: usize) -> Result<ApplyResult, WriteError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || WriteError::Raft("the write path has stopped".into());
        self.tx
            .send(Pending { req, bytes, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The requests of the entry being formed and their size once encoded.
#[derive(Default)]
struct Batch {
    pending: Vec<Pending>,
    bytes: usize,
}

impl Batch {
    fn push(&mut self, p: Pending) {
        self.bytes += p.bytes;
        self.pending.push(p);
    }

    fn fits(&self, next: usize) -> bool {
        fits(self.pending.len(), self.bytes, next)
    }
}

/// Whether a request of `next` bytes may join a batch of `len` requests and `bytes` bytes:
/// the entry must stay within the limit of a single command, which is what bounds an
/// AppendEntries message (`network::MAX_COMMAND_BYTES`).
fn fits(len: usize, bytes: usize, next: usize) -> bool {
    len == 0 || (len < MAX_BATCH && BATCH_OVERHEAD_BYTES + bytes + len + next <= MAX_COMMAND_BYTES)
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut carried: Option<Pending> = None;
    loop {
        // Wait for room first: writes arriving meanwhile pile up and go together.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut batch = Batch::default();
        batch.push(first);
        while let Ok(p) = rx.try_recv() {
            if !batch.fits(p.bytes) {
                carried = Some(p);
                break;
            }
            batch.push(p);
        }
        metrics::histogram!("drover_raft_batch_requests").record(batch.pending.len() as f64);
        let (req, replies) = into_entry(batch.pending);
        // Sent here, in order, so entries keep the order the writes arrived in; only the
        // wait for the answer runs apart.
        match raft.client_write_ff(req).await {
            Ok(answer) => {
                tokio::spawn(async move {
                    let result = match answer.await {
                        Ok(Ok(resp)) => Ok(resp.data),
                        Ok(Err(e)) => Err(write_error(e)),
                        Err(_) => Err(WriteError::Raft("Raft stopped before answering".into())),
                    };
                    drop(permit);
                    answer_all(replies, result);
                });
            }
            Err(fatal) => answer_all(replies, Err(WriteError::Raft(fatal.to_string()))),
        }
    }
}

/// One pending write goes as it is; several go as one `Command::Batch`.
fn into_entry(mut pending: Vec<Pending>) -> (Request, Vec<Reply1>) {
    if pending.len() == 1 {
        let p = pending.remove(0);
        return (p.req, vec![p.reply]);
    }
    let (requests, replies) = pending.into_iter().map(|p| (p.req, p.reply)).unzip();
    (Request::anonymous(Command::Batch { requests }), replies)
}

/// Hands each writer its own result: a batch's reply is split by position, an error (no
/// leader, Raft stopped) goes to all.
fn answer_all(replies: Vec<Reply1>, result: Result<ApplyResult, WriteError>) {
    let n = replies.len();
    let results: Vec<Result<ApplyResult, WriteError>> = match result {
        Ok(Ok(Reply::Batch(each))) if n > 1 && each.len() == n => {
            each.into_iter().map(Ok).collect()
        }
        Ok(one) if n == 1 => vec![Ok(one)],
        Ok(other) => {
            tracing::error!(writes = n, reply = ?other, "a batch's reply does not match its requests");
            let e = WriteError::Raft("the batch's reply does not match its requests".into());
            vec![Err(e); n]
        }
        Err(e) => vec![Err(e); n],
    };
    for (reply, result) in replies.into_iter().zip(results) {
        // A writer that gave up no longer listens; its write stands regardless.
        let _ = reply.send(result);
    }
}

fn write_error(e: ClientWriteError<crate::NodeId, openraft::BasicNode>) -> WriteError {
    match e {
        ClientWriteError::ForwardToLeader(f) => WriteError::NotLeader {
            leader_id: f.leader_id,
            leader_addr: f.leader_node.map(|n| n.addr),
        },
        other => WriteError::Raft(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(name: &str) -> (Pending, oneshot::Receiver<Result<ApplyResult, WriteError>>) {
        let (reply, rx) = oneshot::channel();
        let req = Request {
            id: Some(name.into()),
            command: Command::RemoveHost { name: name.into() },
        };
        (
            Pending {
                req,
                bytes: 10,
                reply,
            },
            rx,
        )
    }

    #[test]
    fn a_batch_stays_within_one_command_and_max_batch() {
        assert!(
            fits(0, 0, MAX_COMMAND_BYTES * 2),
            "a lone request always goes"
        );
        assert!(fits(1, 100, 100));
        assert!(!fits(1, MAX_COMMAND_BYTES - 100, 100));
        assert!(!fits(MAX_BATCH, MAX_BATCH, 1));
        assert!(fits(MAX_BATCH - 1, MAX_BATCH - 1, 1));
    }

    #[test]
    fn a_lone_write_is_sent_as_it_is() {
        let (p, _rx) = pending("a");
        let (req, replies) = into_entry(vec![p]);
        assert_eq!(req.id.as_deref(), Some("a"));
        assert_eq!(replies.len(), 1);
    }

    #[test]
    fn writes_together_become_one_batch_in_arrival_order() {
        let (a, _ra) = pending("a");
        let (b, _rb) = pending("b");
        let (req, replies) = into_entry(vec![a, b]);
        assert_eq!(req.id, None);
        let Command::Batch { requests } = req.command else {
            panic!("not a batch: {req:?}");
        };
        let ids: Vec<_> = requests.iter().map(|r| r.id.clone().unwrap()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(replies.len(), 2);
    }

    #[tokio::test]
    async fn each_writer_gets_its_own_result_and_errors_reach_all() {
        let (a, ra) = pending("a");
        let (b, rb) = pending("b");
        let (_, replies) = into_entry(vec![a, b]);
        let each = vec![
            Ok(Reply::Nothing),
            Err(crate::ApplyError::UnknownHost("b".into())),
        ];
        answer_all(replies, Ok(Ok(Reply::Batch(each))));
        assert_eq!(ra.await.unwrap(), Ok(Ok(Reply::Nothing)));
        assert_eq!(
            rb.await.unwrap(),
            Ok(Err(crate::ApplyError::UnknownHost("b".into())))
        );

        let (a, ra) = pending("a");
        let (b, rb) = pending("b");
        let (_, replies) = into_entry(vec![a, b]);
        let no_leader = WriteError::NotLeader {
            leader_id: None,
            leader_addr: None,
        };
        answer_all(replies, Err(no_leader.clone()));
        assert_eq!(ra.await.unwrap(), Err(no_leader.clone()));
        assert_eq!(rb.await.unwrap(), Err(no_leader));
    }

    #[tokio::test]
    async fn a_reply_that_does_not_match_the_batch_is_an_error_for_all() {
        let (a, ra) = pending("a");
        let (b, rb) = pending("b");
        let (_, replies) = into_entry(vec![a, b]);
        answer_all(replies, Ok(Ok(Reply::Batch(vec![Ok(Reply::Nothing)]))));
        assert!(matches!(ra.await.unwrap(), Err(WriteError::Raft(_))));
        assert!(matches!(rb.await.unwrap(), Err(WriteError::Raft(_))));
    }
}
