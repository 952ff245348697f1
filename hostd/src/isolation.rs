//! A failover drill's isolation of this host: while it lasts, the controllers' session is
//! dropped and new ones are refused, so no lease grant arrives and the host fences itself
//! at the lapse exactly as on a real partition. Everything else hostd serves keeps
//! answering. It ends at its deadline by itself (so a host is never left cut off by a
//! controller that vanished mid-drill), or on `EndIsolation`.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// One isolation: which drill asked, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Isolated {
    pub(crate) drill: u64,
    pub(crate) until: Instant,
}

impl Isolated {
    pub(crate) fn remaining(&self) -> Duration {
        self.until.saturating_duration_since(Instant::now())
    }

    /// What a session is told when it is refused or dropped.
    pub(crate) fn refusal(&self) -> tonic::Status {
        tonic::Status::unavailable(format!(
            "host isolated by failover drill {} for {} ms more",
            self.drill,
            self.remaining().as_millis()
        ))
    }
}

pub(crate) struct Isolation {
    state: watch::Sender<Option<Isolated>>,
}

impl Default for Isolation {
    fn default() -> Self {
        Self {
            state: watch::channel(None).0,
        }
    }
}

impl Isolation {
    /// Isolates the host for `duration` from now (replacing a running isolation).
    pub(crate) fn isolate(&self, drill: u64, duration: Duration) -> Isolated {
        let isolated = Isolated {
            drill,
            until: Instant::now() + duration,
        };
        self.state.send_replace(Some(isolated));
        isolated
    }

    /// Ends the isolation; returns whether one was on.
    pub(crate) fn end(&self) -> bool {
        self.state
            .send_replace(None)
            .is_some_and(|i| i.until > Instant::now())
    }

    /// The isolation in force now, if any.
    pub(crate) fn current(&self) -> Option<Isolated> {
        let now = Instant::now();
        (*self.state.borrow()).filter(|i| i.until > now)
    }

    /// Completes when no isolation is in force (at once if none is).
    pub(crate) async fn ended(&self) {
        let mut rx = self.state.subscribe();
        while let Some(i) = self.current() {
            tokio::select! {
                () = tokio::time::sleep_until(i.until) => {}
                changed = rx.changed() => if changed.is_err() { std::future::pending::<()>().await },
            }
        }
    }

    /// Completes when an isolation is in force (at once if one is).
    pub(crate) async fn begun(&self) -> Isolated {
        let mut rx = self.state.subscribe();
        loop {
            if let Some(i) = self.current() {
                return i;
            }
            // The sender lives as long as `self`: a change always comes or never matters.
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn isolation_ends_at_its_deadline_or_when_ended() {
        let iso = Isolation::default();
        assert!(iso.current().is_none());
        iso.isolate(7, Duration::from_secs(10));
        assert_eq!(iso.current().map(|i| i.drill), Some(7));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(iso.current().is_none(), "the deadline lifts it by itself");
        assert!(!iso.end(), "nothing was in force any more");
        iso.isolate(8, Duration::from_secs(10));
        assert!(iso.end());
        assert!(iso.current().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn ended_wakes_at_the_deadline_or_on_end() {
        let iso = std::sync::Arc::new(Isolation::default());
        iso.ended().await;
        iso.isolate(3, Duration::from_secs(5));
        let waiter = {
            let iso = std::sync::Arc::clone(&iso);
            tokio::spawn(async move { iso.ended().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        tokio::time::advance(Duration::from_secs(6)).await;
        waiter.await.unwrap();
        iso.isolate(4, Duration::from_secs(5));
        let waiter = {
            let iso = std::sync::Arc::clone(&iso);
            tokio::spawn(async move { iso.ended().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        iso.end();
        waiter.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn begun_wakes_when_isolated() {
        let iso = std::sync::Arc::new(Isolation::default());
        let waiter = {
            let iso = std::sync::Arc::clone(&iso);
            tokio::spawn(async move { iso.begun().await.drill })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        iso.isolate(3, Duration::from_secs(5));
        assert_eq!(waiter.await.unwrap(), 3);
    }
}
