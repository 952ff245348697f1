//! Exactly-once writes: the results of recently applied requests, by client request id.
//! A client that retries a write (its reply was lost in a leader change, say) sends the
//! same id again and gets the first result back instead of a second application.
//!
//! Replicated state like any other: eviction is by log index, the oldest first, so every
//! node keeps exactly the same entries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::ApplyResult;

/// How many request results are remembered. A retry arriving after this many newer
/// identified writes would be applied again; clients give up long before that.
pub const DEDUP_CAPACITY: usize = 10_000;

/// Longest accepted request id.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// One remembered result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    pub index: u64,
    /// The request's place in its entry: 0 for a lone request, its position in a
    /// `Command::Batch` otherwise (several requests share one log index there).
    #[serde(default)]
    pub slot: u32,
    pub result: ApplyResult,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    from = "BTreeMap<String, Remembered>",
    into = "BTreeMap<String, Remembered>"
)]
pub struct Dedup {
    by_id: BTreeMap<String, Remembered>,
    /// (log index, slot) → request id, for evicting the oldest.
    by_index: BTreeMap<(u64, u32), String>,
}

impl From<BTreeMap<String, Remembered>> for Dedup {
    fn from(by_id: BTreeMap<String, Remembered>) -> Self {
        let by_index = by_id
            .iter()
            .map(|(id, r)| ((r.index, r.slot), id.clone()))
            .collect();
        Self { by_id, by_index }
    }
}

impl From<Dedup> for BTreeMap<String, Remembered> {
    fn from(d: Dedup) -> Self {
        d.by_id
    }
}

impl Dedup {
    pub fn get(&self, id: &str) -> Option<&Remembered> {
        self.by_id.get(id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Remembers `result` for `id`, applied at `index` in `slot` of its entry; returns the
    /// ids evicted to stay within capacity.
    pub fn insert(
        &mut self,
        id: String,
        index: u64,
        slot: u32,
        result: ApplyResult,
    ) -> Vec<String> {
        let remembered = Remembered {
            index,
            slot,
            result,
        };
        if let Some(old) = self.by_id.insert(id.clone(), remembered) {
            self.by_index.remove(&(old.index, old.slot));
        }
        self.by_index.insert((index, slot), id);
        let mut evicted = Vec::new();
        while self.by_id.len() > DEDUP_CAPACITY {
            let Some((_, oldest)) = self.by_index.pop_first() else {
                break;
            };
            self.by_id.remove(&oldest);
            evicted.push(oldest);
        }
        evicted
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Remembered)> {
        self.by_id.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Reply;

    #[test]
    fn remembers_and_evicts_oldest_first() {
        let mut d = Dedup::default();
        for i in 0..(DEDUP_CAPACITY as u64 + 3) {
            let evicted = d.insert(format!("r{i}"), i + 1, 0, Ok(Reply::Nothing));
            if i < DEDUP_CAPACITY as u64 {
                assert!(evicted.is_empty());
            } else {
                assert_eq!(evicted, [format!("r{}", i - DEDUP_CAPACITY as u64)]);
            }
        }
        assert_eq!(d.len(), DEDUP_CAPACITY);
        assert!(d.get("r0").is_none());
        assert_eq!(d.get("r5").map(|r| r.index), Some(6));
    }

    #[test]
    fn serde_round_trip_rebuilds_the_index() {
        let mut d = Dedup::default();
        d.insert("a".into(), 7, 0, Ok(Reply::Nothing));
        d.insert("b".into(), 9, 0, Ok(Reply::Nothing));
        d.insert("c".into(), 9, 1, Ok(Reply::Nothing));
        let back: Dedup = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn requests_sharing_an_entry_are_evicted_one_by_one_in_order() {
        let mut d = Dedup::default();
        // Every slot of one batch entry, then one more entry: the batch's first request
        // goes first, and no two requests of the batch stand for each other.
        for slot in 0..DEDUP_CAPACITY as u32 {
            assert!(d
                .insert(format!("b{slot}"), 5, slot, Ok(Reply::Nothing))
                .is_empty());
        }
        assert_eq!(d.insert("late".into(), 6, 0, Ok(Reply::Nothing)), ["b0"]);
        assert_eq!(d.insert("later".into(), 7, 0, Ok(Reply::Nothing)), ["b1"]);
        assert_eq!(d.len(), DEDUP_CAPACITY);
        assert_eq!(d.get("b2").map(|r| (r.index, r.slot)), Some((5, 2)));
    }

    #[test]
    fn a_record_written_before_slots_existed_reads_as_slot_zero() {
        let r: Remembered =
            serde_json::from_str(r#"{"index":4,"result":{"Ok":"Nothing"}}"#).unwrap();
        assert_eq!((r.index, r.slot), (4, 0));
    }
}
