//! A linearizability checker for one register (Wing & Gong's search with Lowe's
//! memoisation, as Porcupine and Knossos do it): is there an order of the operations,
//! consistent with real time (an operation that returned before another was invoked comes
//! first) and with a register's meaning (a read returns the last write before it)?
//!
//! Operations whose outcome the client does not know (no answer) have no return: they may
//! take effect at any point after their invocation, or never. Refused operations did not
//! happen and must be left out by the caller, as must reads without a value.

use std::collections::HashSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegOp {
    Write(u64),
    Read(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub client: usize,
    pub op: RegOp,
    /// Microseconds from the run's start.
    pub invoke: u64,
    /// `None`: no answer; it may or may not have taken effect.
    pub complete: Option<u64>,
}

fn apply(state: u64, op: RegOp) -> Option<u64> {
    match op {
        RegOp::Write(v) => Some(v),
        RegOp::Read(r) => (r == state).then_some(state),
    }
}

/// One end of an operation in the time-ordered list.
#[derive(Debug, Clone, Copy)]
struct Entry {
    op: usize,
    is_call: bool,
}

/// Ok when `history`, starting from `initial`, is linearizable; otherwise the operation
/// the search could get no further than, in words.
pub fn check(initial: u64, history: &[Event]) -> Result<(), String> {
    let n = history.len();
    let mut entries: Vec<(u64, u8, Entry)> = Vec::with_capacity(2 * n);
    for (i, e) in history.iter().enumerate() {
        entries.push((
            e.invoke,
            0,
            Entry {
                op: i,
                is_call: true,
            },
        ));
        let ret = e.complete.unwrap_or(u64::MAX);
        entries.push((
            ret,
            1,
            Entry {
                op: i,
                is_call: false,
            },
        ));
    }
    // Calls before returns at the same instant: the more permissive reading.
    entries.sort_by_key(|(t, kind, e)| (*t, *kind, e.op));
    let m = entries.len();
    // A doubly linked list over the entries; index m is the head sentinel.
    let mut next: Vec<usize> = (1..=m).collect();
    next.push(0);
    let mut prev: Vec<usize> = (0..=m)
        .map(|i| if i == 0 || i == m { m } else { i - 1 })
        .collect();
    next[m] = if m > 0 { 0 } else { usize::MAX };
    if m > 0 {
        prev[0] = m;
        next[m - 1] = usize::MAX;
    }
    let mut call_at = vec![0; n];
    let mut ret_at = vec![0; n];
    for (i, (_, _, e)) in entries.iter().enumerate() {
        if e.is_call {
            call_at[e.op] = i;
        } else {
            ret_at[e.op] = i;
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, i: usize| {
        let (p, nx) = (prev[i], next[i]);
        next[p] = nx;
        if nx != usize::MAX {
            prev[nx] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, i: usize| {
        let (p, nx) = (prev[i], next[i]);
        next[p] = i;
        if nx != usize::MAX {
            prev[nx] = i;
        }
    };

    let words = n.div_ceil(64).max(1);
    let mut done = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, u64)> = HashSet::new();
    let mut stack: Vec<(usize, u64)> = Vec::new();
    let mut state = initial;
    let mut deepest = (0usize, usize::MAX);
    let mut at = next[m];
    while next[m] != usize::MAX {
        if at == usize::MAX {
            // Cannot happen: the list ends with returns, which backtrack.
            return Err("internal: ran off the list".into());
        }
        let e = entries[at].2;
        if e.is_call {
            if let Some(after) = apply(state, history[e.op].op) {
                done[e.op / 64] |= 1 << (e.op % 64);
                if cache.insert((done.clone(), after)) {
                    stack.push((e.op, state));
                    state = after;
                    unlink(&mut next, &mut prev, call_at[e.op]);
                    unlink(&mut next, &mut prev, ret_at[e.op]);
                    at = next[m];
                    continue;
                }
                done[e.op / 64] &= !(1 << (e.op % 64));
            }
            at = next[at];
        } else {
            if stack.len() >= deepest.0 {
                deepest = (stack.len(), e.op);
            }
            let Some((op, before)) = stack.pop() else {
                let stuck = &history[deepest.1.min(n - 1)];
                return Err(format!(
                    "not linearizable: after {} operations in order, none explains {:?} by client {} (invoked at {} µs, answered at {:?} µs)",
                    deepest.0, stuck.op, stuck.client, stuck.invoke, stuck.complete
                ));
            };
            state = before;
            done[op / 64] &= !(1 << (op % 64));
            relink(&mut next, &mut prev, ret_at[op]);
            relink(&mut next, &mut prev, call_at[op]);
            at = next[call_at[op]];
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(client: usize, op: RegOp, invoke: u64, complete: Option<u64>) -> Event {
        Event {
            client,
            op,
            invoke,
            complete,
        }
    }
    use RegOp::{Read, Write};

    #[test]
    fn sequential_and_overlapping_histories_pass() {
        let h = vec![
            ev(0, Write(1), 0, Some(10)),
            ev(0, Read(1), 20, Some(30)),
            ev(1, Write(2), 40, Some(60)),
            // Overlaps the write of 2: may see either.
            ev(0, Read(1), 45, Some(50)),
            ev(0, Read(2), 70, Some(80)),
        ];
        assert_eq!(check(0, &h), Ok(()));
        assert_eq!(check(7, &[]), Ok(()));
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_write_is_caught() {
        // The planted violation: write 2 returned before the read began, yet it saw 1.
        let h = vec![
            ev(0, Write(1), 0, Some(10)),
            ev(1, Write(2), 20, Some(30)),
            ev(0, Read(1), 40, Some(50)),
        ];
        let err = check(0, &h).unwrap_err();
        assert!(err.contains("not linearizable"), "{err}");
    }

    #[test]
    fn a_value_nobody_wrote_is_caught() {
        let h = vec![ev(0, Write(1), 0, Some(10)), ev(1, Read(9), 20, Some(30))];
        assert!(check(0, &h).is_err());
    }

    #[test]
    fn a_write_without_an_answer_may_or_may_not_have_happened() {
        // Its value is read later: it happened.
        let seen = vec![
            ev(0, Write(5), 0, None),
            ev(1, Read(0), 5, Some(8)),
            ev(1, Read(5), 100, Some(110)),
        ];
        assert_eq!(check(0, &seen), Ok(()));
        // Never read: it may just as well not have happened.
        let unseen = vec![ev(0, Write(5), 0, None), ev(1, Read(0), 100, Some(110))];
        assert_eq!(check(0, &unseen), Ok(()));
        // But it cannot take effect before it was invoked.
        let early = vec![ev(1, Read(5), 0, Some(10)), ev(0, Write(5), 20, None)];
        assert!(check(0, &early).is_err());
    }

    #[test]
    fn reads_cannot_go_back_in_time() {
        // Two reads in real-time order see 2 then 1 while the writes were ordered 1, 2.
        let h = vec![
            ev(0, Write(1), 0, Some(10)),
            ev(0, Write(2), 20, Some(100)),
            ev(1, Read(2), 30, Some(40)),
            ev(2, Read(1), 50, Some(60)),
        ];
        assert!(check(0, &h).is_err());
    }

    #[test]
    fn a_long_sequential_history_is_checked_quickly() {
        let mut h = Vec::new();
        for i in 0..5000u64 {
            h.push(ev(0, Write(i + 1), i * 10, Some(i * 10 + 3)));
            h.push(ev(1, Read(i + 1), i * 10 + 5, Some(i * 10 + 8)));
        }
        assert_eq!(check(0, &h), Ok(()));
    }
}
