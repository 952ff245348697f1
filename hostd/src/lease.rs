//! The host's side of the lease protocol (DESIGN.md): pure bookkeeping on the boot clock
//! ([`BootInstant`], which keeps counting while the machine is suspended). The session loop records when each `LeaseRequest{seq}` was sent and feeds
//! grants in; the fence timer asks whether the lease still holds.
//!
//! The rule that makes the lease safe: a grant extends the lease to `h0(seq) + ttl`, where
//! `h0(seq)` is when *this host sent* the request the grant answers — never the grant's
//! arrival, which would stretch the lease by the network delay. Grants from a term lower
//! than the highest seen are ignored.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::clock::BootInstant;

#[derive(Debug, Default, Clone)]
pub struct Lease {
    /// Requests sent and not yet answered: seq → when sent.
    pending: BTreeMap<u64, BootInstant>,
    expiry: Option<BootInstant>,
    highest_term: u64,
}

/// Why a grant did not extend the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// From a leader older than one already heard from.
    StaleTerm { term: u64, highest: u64 },
    /// Answers no request this host remembers sending (or one already answered).
    UnknownRequest { seq: u64 },
}

impl Lease {
    /// Records that request `seq` left at `sent`.
    pub fn request_sent(&mut self, seq: u64, sent: BootInstant) {
        self.pending.insert(seq, sent);
    }

    /// Applies a grant for request `seq` from `term` lasting `ttl`.
    pub fn granted(&mut self, seq: u64, term: u64, ttl: Duration) -> Result<BootInstant, Ignored> {
        if term < self.highest_term {
            return Err(Ignored::StaleTerm {
                term,
                highest: self.highest_term,
            });
        }
        let sent = self
            .pending
            .remove(&seq)
            .ok_or(Ignored::UnknownRequest { seq })?;
        self.highest_term = term;
        // Older requests can no longer matter: a grant for them would end earlier.
        self.pending.retain(|s, _| *s > seq);
        let until = sent + ttl;
        self.expiry = Some(self.expiry.map_or(until, |e| e.max(until)));
        Ok(until)
    }

    /// Takes over a lease an earlier process on this host held until `until`, granted in
    /// `term` (read back from the lease file).
    pub fn resume(&mut self, until: BootInstant, term: u64) {
        self.highest_term = self.highest_term.max(term);
        self.expiry = Some(self.expiry.map_or(until, |e| e.max(until)));
    }

    /// Whether the lease holds at `now`.
    pub fn holds(&self, now: BootInstant) -> bool {
        self.expiry.is_some_and(|e| now < e)
    }

    pub fn expiry(&self) -> Option<BootInstant> {
        self.expiry
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const TTL: Duration = Duration::from_secs(5);

    #[test]
    fn counts_from_the_request_not_the_grant() {
        let t0 = BootInstant::from_nanos(1_000_000_000);
        let mut lease = Lease::default();
        assert!(!lease.holds(t0));
        lease.request_sent(1, t0);
        // The grant arrives 2 s later; the lease still ends at t0 + ttl.
        assert_eq!(lease.granted(1, 3, TTL), Ok(t0 + TTL));
        assert!(lease.holds(t0 + (TTL - Duration::from_millis(1))));
        assert!(!lease.holds(t0 + TTL));
    }

    #[test]
    fn ignores_stale_terms_unknown_and_repeated_grants() {
        let t0 = BootInstant::from_nanos(1_000_000_000);
        let mut lease = Lease::default();
        lease.request_sent(1, t0);
        lease.request_sent(2, t0 + Duration::from_secs(1));
        lease.granted(2, 4, TTL).unwrap();
        assert_eq!(
            lease.granted(2, 4, TTL),
            Err(Ignored::UnknownRequest { seq: 2 })
        );
        // Request 1 was superseded by the answer to 2.
        assert_eq!(
            lease.granted(1, 4, TTL),
            Err(Ignored::UnknownRequest { seq: 1 })
        );
        lease.request_sent(3, t0 + Duration::from_secs(2));
        assert_eq!(
            lease.granted(3, 3, TTL),
            Err(Ignored::StaleTerm {
                term: 3,
                highest: 4
            })
        );
        assert_eq!(lease.expiry(), Some(t0 + Duration::from_secs(1) + TTL));
    }

    proptest! {
        /// The lease never extends past the latest granted request's send time + ttl,
        /// whatever the order and delay of grants.
        #[test]
        fn never_beyond_send_plus_ttl(
            sends in prop::collection::vec(0u64..10_000, 1..30),
            grants in prop::collection::vec((0usize..30, 1u64..5), 0..30),
        ) {
            let t0 = BootInstant::from_nanos(1_000_000_000);
            let mut lease = Lease::default();
            let mut sent_at = Vec::new();
            for (i, ms) in sends.iter().enumerate() {
                let at = t0 + Duration::from_millis(*ms);
                lease.request_sent(i as u64, at);
                sent_at.push(at);
            }
            let mut bound: Option<BootInstant> = None;
            for (i, term) in grants {
                if i >= sent_at.len() { continue; }
                if lease.granted(i as u64, term, TTL).is_ok() {
                    let until = sent_at[i] + TTL;
                    bound = Some(bound.map_or(until, |b: BootInstant| b.max(until)));
                }
                prop_assert_eq!(lease.expiry(), bound);
            }
        }
    }
}
