//! One quorum round confirms leadership for every lease request pending at that moment,
//! across all hosts (issue 10, point 5). A grant may only be sent after a round that
//! *started* after the request arrived (DESIGN.md, lease protocol step 2): otherwise a
//! deposed leader could extend a lease on the strength of an old confirmation. So requests
//! that arrive while a round is in flight wait for the next one, and that next one serves
//! all of them, whichever hosts they came from: with 5,000 hosts beating every second the
//! leader runs a handful of rounds a second, not 5,000.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

/// The outcome of one round: `Err` carries why leadership was not confirmed.
pub type RoundResult = Result<(), String>;

type Round = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = RoundResult> + Send>> + Send + Sync>;

/// Coalesces leadership confirmations; cheap to clone (one per leader term, shared by
/// every host actor).
#[derive(Clone)]
pub struct LeadershipRounds {
    round: Round,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// A round is running (a task owns the loop below).
    running: bool,
    /// Waiting for the next round to start.
    next: Vec<oneshot::Sender<RoundResult>>,
}

impl LeadershipRounds {
    /// `round` runs one quorum round (the Raft node's `ensure_linearizable`).
    pub fn new<F, Fut>(round: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = RoundResult> + Send + 'static,
    {
        Self {
            round: Arc::new(move || Box::pin(round())),
            state: Arc::default(),
        }
    }

    /// Rounds on the Raft node itself.
    pub fn on(node: &drover_raft::RaftNode) -> Self {
        let raft = node.raft().clone();
        Self::new(move || {
            let raft = raft.clone();
            async move {
                raft.ensure_linearizable()
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        })
    }

    /// Completes with the result of the first round that starts after this call.
    pub async fn confirm(&self) -> RoundResult {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.next.push(tx);
            !std::mem::replace(&mut state.running, true)
        };
        if start {
            tokio::spawn(run(self.round.clone(), Arc::clone(&self.state)));
        }
        rx.await
            .unwrap_or_else(|_| Err("the leadership round was dropped".into()))
    }
}

/// Runs rounds while anyone waits; each round answers exactly those who were waiting
/// when it started.
async fn run(round: Round, state: Arc<Mutex<State>>) {
    loop {
        let waiting = {
            let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
            if s.next.is_empty() {
                s.running = false;
                return;
            }
            std::mem::take(&mut s.next)
        };
        let result = round().await;
        metrics::counter!("drover_leadership_rounds_total").increment(1);
        for w in waiting {
            // The waiter may have gone (its actor stopped): nothing to tell it.
            let _ = w.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    fn counting(rounds: Arc<AtomicU64>) -> LeadershipRounds {
        LeadershipRounds::new(move || {
            let rounds = Arc::clone(&rounds);
            async move {
                rounds.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(())
            }
        })
    }

    #[tokio::test]
    async fn many_requests_at_once_share_a_round_or_two() {
        let rounds = Arc::new(AtomicU64::new(0));
        let r = counting(Arc::clone(&rounds));
        let all = (0..500).map(|_| {
            let r = r.clone();
            tokio::spawn(async move { r.confirm().await })
        });
        for h in futures::future::join_all(all).await {
            assert_eq!(h.expect("task"), Ok(()));
        }
        // The first caller starts a round; everyone else arrives during it and shares the
        // second. 500 separate rounds before this change.
        assert!(rounds.load(Ordering::SeqCst) <= 2, "{rounds:?}");
    }

    #[tokio::test]
    async fn a_request_during_a_round_waits_for_the_next_one() {
        let rounds = Arc::new(AtomicU64::new(0));
        let r = counting(Arc::clone(&rounds));
        let first = tokio::spawn({
            let r = r.clone();
            async move { r.confirm().await }
        });
        // Wait until the first round is under way, then ask again.
        while rounds.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(r.confirm().await, Ok(()));
        assert_eq!(
            rounds.load(Ordering::SeqCst),
            2,
            "served by a round started after it"
        );
        assert_eq!(first.await.expect("task"), Ok(()));
    }

    #[tokio::test]
    async fn a_failed_round_is_reported_to_its_waiters() {
        let r = LeadershipRounds::new(|| async { Err("not the leader".to_string()) });
        assert_eq!(r.confirm().await, Err("not the leader".into()));
        // And the next caller gets a round of its own.
        assert_eq!(r.confirm().await, Err("not the leader".into()));
    }
}
