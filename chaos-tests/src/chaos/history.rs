//! What the chaos workload's clients saw: every operation with its invocation and
//! completion times and outcome (ok, failed: certainly did not happen, unknown: may have),
//! written out as JSON lines when a run fails.

use std::sync::Mutex;
use std::time::Instant;

use drover_control::client::ClientError;
use serde::Serialize;
use tonic::Code;

use super::linearizable::{Event, RegOp};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Outcome {
    Ok,
    Fail(String),
    Unknown(String),
}

impl Outcome {
    /// How a client error ends an operation: a definite refusal, or no answer.
    pub fn of(e: &ClientError) -> Outcome {
        match e {
            ClientError::Status(s)
                if matches!(
                    s.code(),
                    Code::FailedPrecondition
                        | Code::InvalidArgument
                        | Code::NotFound
                        | Code::AlreadyExists
                        | Code::PermissionDenied
                        | Code::OutOfRange
                ) =>
            {
                Outcome::Fail(s.message().to_string())
            }
            other => Outcome::Unknown(other.to_string()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Op {
    pub client: usize,
    /// create, start, stop, migrate, delete, write, read.
    pub kind: &'static str,
    pub vm: String,
    /// The register's value written, or read.
    pub value: Option<u64>,
    pub invoke_us: u64,
    pub complete_us: Option<u64>,
    pub outcome: Option<Outcome>,
}

pub struct History {
    start: Instant,
    ops: Mutex<Vec<Op>>,
}

impl History {
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            ops: Mutex::new(Vec::new()),
        }
    }

    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Records an invocation; returns its index for [`History::complete`].
    pub fn invoke(&self, client: usize, kind: &'static str, vm: &str, value: Option<u64>) -> usize {
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        ops.push(Op {
            client,
            kind,
            vm: vm.to_string(),
            value,
            invoke_us: self.now_us(),
            complete_us: None,
            outcome: None,
        });
        ops.len() - 1
    }

    pub fn complete(&self, i: usize, outcome: Outcome, value: Option<u64>) {
        let now = self.now_us();
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(op) = ops.get_mut(i) {
            if matches!(outcome, Outcome::Ok) {
                op.complete_us = Some(now);
            }
            if value.is_some() {
                op.value = value;
            }
            op.outcome = Some(outcome);
        }
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The register's operations for the linearizability checker: acknowledged writes and
/// reads, and writes without an answer (pending for ever) whose value some read saw;
/// refused ones did not happen. An unanswered write nobody read may as well not have
/// happened (values are unique), and leaving it out keeps the search small.
pub fn register_events(ops: &[Op]) -> Vec<Event> {
    let read_values: std::collections::BTreeSet<u64> = ops
        .iter()
        .filter(|o| o.kind == "read" && o.outcome == Some(Outcome::Ok))
        .filter_map(|o| o.value)
        .collect();
    ops.iter()
        .filter_map(|o| {
            let op = match (o.kind, o.value) {
                ("write", Some(v)) => RegOp::Write(v),
                ("read", Some(v)) => RegOp::Read(v),
                _ => return None,
            };
            match (&o.outcome, op) {
                (Some(Outcome::Ok), _) => Some(Event {
                    client: o.client,
                    op,
                    invoke: o.invoke_us,
                    complete: o.complete_us,
                }),
                (Some(Outcome::Unknown(_)) | None, RegOp::Write(v)) if read_values.contains(&v) => {
                    Some(Event {
                        client: o.client,
                        op,
                        invoke: o.invoke_us,
                        complete: None,
                    })
                }
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: &'static str, value: u64, outcome: Outcome) -> Op {
        Op {
            client: 0,
            kind,
            vm: String::new(),
            value: Some(value),
            invoke_us: 0,
            complete_us: matches!(outcome, Outcome::Ok).then_some(1),
            outcome: Some(outcome),
        }
    }

    #[test]
    fn refused_and_unread_unanswered_writes_are_left_out() {
        let ops = vec![
            op("write", 1, Outcome::Ok),
            op("write", 2, Outcome::Fail("refused".into())),
            op("write", 3, Outcome::Unknown("timeout".into())),
            op("write", 4, Outcome::Unknown("timeout".into())),
            op("read", 4, Outcome::Ok),
        ];
        let events = register_events(&ops);
        let writes: Vec<RegOp> = events.iter().map(|e| e.op).collect();
        assert_eq!(
            writes,
            vec![RegOp::Write(1), RegOp::Write(4), RegOp::Read(4)]
        );
        assert_eq!(events[1].complete, None, "unanswered: pending for ever");
    }
}
