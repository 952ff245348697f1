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
use std::time::Duration;

use openraft::error::ClientWriteError;
use openraft::raft::ClientWriteResponse;
use openraft::BasicNode;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::command::{ApplyResult, Command, Reply, Request};
use crate::network::MAX_COMMAND_BYTES;
use crate::node::WriteError;
use crate::{NodeId, Raft, TypeConfig};

/// Uncommitted entries at a time. One would serialize the leader's flush with the
/// followers' round trip; two lets the next entry be appended and flushed while the
/// previous one replicates (measured: BENCHMARKS.md, issue 10, session 7).
pub const MAX_IN_FLIGHT: usize = 2;

/// Most requests in one entry.
pub const MAX_BATCH: usize = 1024;

/// How long an entry may hold its in-flight slot. openraft answers a write when it is
/// applied here or its entry is cut from the log, but not when a snapshot skips it (a
/// deposed leader that catches up by snapshot): a slot held until then would stall every
/// later write on this node. After this the slot is freed and the answer still awaited.
const SLOT_HOLD: Duration = Duration::from_secs(1);

/// How long a writer waits for openraft's answer at most. After that its write may or
/// may not be committed (`WriteError::Unknown`): a retry with the same request id is
/// safe.
const ANSWER_WAIT: Duration = Duration::from_secs(30);

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

/// openraft's answer to one entry.
type Answer = Result<ClientWriteResponse<TypeConfig>, ClientWriteError<NodeId, BasicNode>>;

/// Where the batcher hands its entries: the Raft node (a trait so that the batcher's
/// handling of answers that come late or never can be tested without one).
pub(crate) trait Submit: Send + Sync + 'static {
    /// Appends `req` (in call order) and returns where its answer will arrive.
    fn submit(
        &self,
        req: Request,
    ) -> impl std::future::Future<Output = Result<oneshot::Receiver<Answer>, String>> + Send;
}

impl Submit for Raft {
    async fn submit(&self, req: Request) -> Result<oneshot::Receiver<Answer>, String> {
        self.client_write_ff(req)
            .await
            .map_err(|fatal| fatal.to_string())
    }
}

impl WriteBatcher {
    pub fn start(raft: impl Submit) -> Self {
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

async fn run(raft: impl Submit, mut rx: mpsc::Receiver<Pending>) {
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
        // A writer that gave up while queued was told nothing: its write is dropped, not
        // committed behind its back.
        batch.pending.retain(|p| !p.reply.is_closed());
        if batch.pending.is_empty() {
            continue;
        }
        metrics::histogram!("drover_raft_batch_requests").record(batch.pending.len() as f64);
        let (req, replies) = into_entry(batch.pending);
        // Sent here, in order, so entries keep the order the writes arrived in; only the
        // wait for the answer runs apart.
        match raft.submit(req).await {
            Ok(mut answer) => {
                tokio::spawn(async move {
                    let answered = tokio::select! {
                        a = &mut answer => Some(a),
                        () = tokio::time::sleep(SLOT_HOLD) => None,
                    };
                    drop(permit);
                    let answered = match answered {
                        Some(a) => Some(a),
                        None => tokio::time::timeout(ANSWER_WAIT - SLOT_HOLD, answer)
                            .await
                            .ok(),
                    };
                    let result = match answered {
                        Some(Ok(Ok(resp))) => Ok(resp.data),
                        Some(Ok(Err(e))) => Err(write_error(e)),
                        Some(Err(_)) => {
                            Err(WriteError::Raft("Raft stopped before answering".into()))
                        }
                        None => Err(WriteError::Unknown {
                            secs: ANSWER_WAIT.as_secs(),
                        }),
                    };
                    answer_all(replies, result);
                });
            }
            Err(fatal) => answer_all(replies, Err(WriteError::Raft(fatal))),
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

fn write_error(e: ClientWriteError<NodeId, BasicNode>) -> WriteError {
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

    /// A stand-in for the Raft node that keeps every answer channel: the test decides
    /// which entries are ever answered.
    #[derive(Clone, Default)]
    struct Held(Arc<std::sync::Mutex<Vec<Handed>>>);

    /// An entry handed to the stand-in, and where its answer goes.
    type Handed = (Request, oneshot::Sender<Answer>);

    impl Submit for Held {
        async fn submit(&self, req: Request) -> Result<oneshot::Receiver<Answer>, String> {
            let (tx, rx) = oneshot::channel();
            self.0.lock().unwrap().push((req, tx));
            Ok(rx)
        }
    }

    fn create(name: &str) -> Request {
        Request::anonymous(Command::RemoveHost { name: name.into() })
    }

    impl Held {
        fn sent(&self) -> usize {
            self.0.lock().unwrap().len()
        }

        /// Waits (in paused time) until `n` entries were handed over.
        async fn wait_sent(&self, n: usize) {
            for _ in 0..10_000 {
                if self.sent() >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            panic!("{} entries sent, expected {n}", self.sent());
        }

        fn answer(&self, at: usize, index: u64) {
            let (_, tx) = self.0.lock().unwrap().remove(at);
            let log_id = crate::LogId::new(openraft::CommittedLeaderId::new(1, 1), index);
            let _ = tx.send(Ok(ClientWriteResponse {
                log_id,
                data: Ok(Reply::Nothing),
                membership: None,
            }));
        }
    }

    /// Submits `name` on its own task; each call takes a slot of its own because the
    /// previous one was handed over first.
    async fn submit_alone(
        batcher: &WriteBatcher,
        held: &Held,
        name: &str,
    ) -> tokio::task::JoinHandle<Result<ApplyResult, WriteError>> {
        let n = held.sent();
        let b = batcher.clone();
        let req = create(name);
        let task = tokio::spawn(async move { b.submit(req, 10).await });
        held.wait_sent(n + 1).await;
        task
    }

    /// Entries openraft never answers (a deposed leader that caught up by snapshot) must
    /// not stall the node's later writes; their writers learn the outcome is unknown.
    #[tokio::test(start_paused = true)]
    async fn entries_never_answered_do_not_stall_later_writes() {
        let held = Held::default();
        let batcher = WriteBatcher::start(held.clone());
        let mut lost = Vec::new();
        for i in 0..MAX_IN_FLIGHT {
            lost.push(submit_alone(&batcher, &held, &format!("lost{i}")).await);
        }
        // Both slots are taken by entries that will never be answered; the next write
        // still reaches Raft once SLOT_HOLD has passed, and gets its own answer.
        let later = submit_alone(&batcher, &held, "later").await;
        assert_eq!(held.sent(), MAX_IN_FLIGHT + 1);
        assert_eq!(held.0.lock().unwrap()[MAX_IN_FLIGHT].0, create("later"));
        held.answer(MAX_IN_FLIGHT, 3);
        assert_eq!(later.await.unwrap(), Ok(Ok(Reply::Nothing)));
        for w in lost {
            assert_eq!(w.await.unwrap(), Err(WriteError::Unknown { secs: 30 }));
        }
    }

    /// A writer that gave up while its write was queued is not committed behind its back.
    #[tokio::test(start_paused = true)]
    async fn a_write_whose_writer_gave_up_is_not_sent() {
        let held = Held::default();
        let batcher = WriteBatcher::start(held.clone());
        for i in 0..MAX_IN_FLIGHT {
            submit_alone(&batcher, &held, &format!("busy{i}")).await;
        }
        // Both slots busy: these two queue.
        let spawn = |name: &str| {
            let (b, req) = (batcher.clone(), create(name));
            tokio::spawn(async move { b.submit(req, 10).await })
        };
        let gave_up = spawn("gave-up");
        let kept = spawn("kept");
        tokio::task::yield_now().await;
        gave_up.abort();
        let _ = gave_up.await;
        held.answer(0, 1);
        held.wait_sent(MAX_IN_FLIGHT).await;
        let sent: Vec<Request> = held
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(r, _)| r.clone())
            .collect();
        assert_eq!(sent.last(), Some(&create("kept")), "{sent:?}");
        assert!(!sent.contains(&create("gave-up")), "{sent:?}");
        kept.abort();
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
