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
/// reads, and writes without an answer (pending for ever); refused ones did not happen.
pub fn register_events(ops: &[Op]) -> Vec<Event> {
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
                (Some(Outcome::Unknown(_)) | None, RegOp::Write(_)) => Some(Event {
                    client: o.client,
                    op,
                    invoke: o.invoke_us,
                    complete: None,
                }),
                _ => None,
            }
        })
        .collect()
}
