//! `GrantMarks`: for the recent lease grants of one session, how many placements the state
//! had counted when each was sent (`ClusterState::placements`). A heartbeat names the
//! newest grant its host had received when it began to list its domains; the mark of that
//! grant bounds which placements the listing can know of. A migration's destination has
//! the domain before the state places the VM there, so an older listing shows it missing,
//! and only the mark tells that listing from a true "missing". Pure: no clock, no I/O.

use std::collections::VecDeque;

/// Marks kept per session: a heartbeat names a grant at most a few intervals old (one
/// built while libvirt was slow); older ones fall back to a lower bound.
const KEEP: usize = 64;

#[derive(Debug, Default)]
pub struct GrantMarks {
    /// `(grant seq, placements)`, oldest first; both only grow within a session.
    sent: VecDeque<(u64, u64)>,
}

impl GrantMarks {
    /// Notes that the grant `seq` left while the state had counted `placements`.
    pub fn sent(&mut self, seq: u64, placements: u64) {
        if self.sent.back().is_some_and(|&(s, _)| s >= seq) {
            return;
        }
        if self.sent.len() == KEEP {
            self.sent.pop_front();
        }
        self.sent.push_back((seq, placements));
    }

    /// The placements a listing made after grant `after_grant` arrived knew of at least:
    /// the mark of the newest grant sent up to it (0 when none is known, which proves
    /// nothing about any placement).
    pub fn listed_after(&self, after_grant: u64) -> u64 {
        self.sent
            .iter()
            .rev()
            .find(|&&(seq, _)| seq <= after_grant)
            .map_or(0, |&(_, placements)| placements)
    }

    /// A new session numbers its grants from 1 again.
    pub fn clear(&mut self) {
        self.sent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_knows_the_placements_of_the_grant_it_followed() {
        let mut m = GrantMarks::default();
        assert_eq!(m.listed_after(0), 0, "no grant yet: proves nothing");
        m.sent(1, 10);
        m.sent(2, 10);
        m.sent(4, 12);
        assert_eq!(m.listed_after(0), 0);
        assert_eq!(m.listed_after(1), 10);
        // Grant 3 was never sent (its request was answered by 4): 2's mark holds.
        assert_eq!(m.listed_after(3), 10);
        assert_eq!(m.listed_after(4), 12);
        // A seq from the future (another session's) gets no more than the newest mark.
        assert_eq!(m.listed_after(99), 12);
        // Out-of-order notes are ignored: marks only grow.
        m.sent(3, 50);
        assert_eq!(m.listed_after(3), 10);
        m.clear();
        assert_eq!(m.listed_after(4), 0);
    }

    #[test]
    fn old_grants_fall_back_to_a_lower_bound() {
        let mut m = GrantMarks::default();
        for seq in 1..=(KEEP as u64 + 10) {
            m.sent(seq, seq * 2);
        }
        assert_eq!(m.listed_after(KEEP as u64 + 10), (KEEP as u64 + 10) * 2);
        // Forgotten: nothing is claimed for them.
        assert_eq!(m.listed_after(5), 0);
        assert_eq!(m.listed_after(11), 22);
    }
}
