//! One request's way through the state machine: the exactly-once check, `apply`, and what
//! it touched (for the leader's actors). A log entry holds one request or a
//! `Command::Batch` of them; both come here one request at a time, so a batched write is
//! applied exactly as if it had had an entry of its own.

use crate::apply::Touched;
use crate::command::{ApplyResult, Request};

use super::state_machine::SmData;

/// Where a request sits in the log: its entry's index and its place in that entry (0 for a
/// lone request). The exactly-once table orders and evicts requests by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slot {
    pub index: u64,
    pub slot: u32,
}

impl Slot {
    pub fn new(index: u64, slot: usize) -> Self {
        // A batch is bounded far below u32::MAX requests (`write_batch::MAX_BATCH`).
        Self {
            index,
            slot: u32::try_from(slot).unwrap_or(u32::MAX),
        }
    }
}

/// What the applied requests of one `apply` call changed, for the leader's actors.
#[derive(Debug, Default)]
pub(super) struct Applied {
    pub touched: Vec<Touched>,
}

impl SmData {
    /// Applies `req` unless its id was applied before, in which case it returns the first
    /// result and changes nothing.
    pub(super) fn apply_request(
        &mut self,
        at: Slot,
        req: Request,
        applied: &mut Applied,
    ) -> ApplyResult {
        if let Some(prev) = req.id.as_deref().and_then(|id| self.requests.get(id)) {
            tracing::debug!(index = at.index, %req, first = prev.index, "duplicate request");
            return prev.result.clone();
        }
        let (result, touched) = self.state.apply(&req.command);
        if let Err(e) = &result {
            tracing::debug!(index = at.index, %req, error = %e, "command refused");
        }
        if let Some(id) = req.id {
            self.requests.insert(id, at.index, at.slot, result.clone());
        }
        applied.touched.extend(touched.flatten());
        result
    }
}
