//! The rendering of a migration drill's report (`drover drill migration VM`): JSON and
//! text, one line per leg with its downtime.

use drover_proto::v1 as pb;
use serde_json::{json, Value};

use super::output::utc;

pub fn report_json(op: &pb::Operation) -> Value {
    let r = op.migration_drill.clone().unwrap_or_default();
    json!({
        "id": op.id,
        "kind": "migration",
        "state": op.state,
        "message": op.message,
        "started_at_ms": op.started_at_ms,
        "finished_at_ms": op.finished_at_ms,
        "vm": r.vm,
        "home": r.home,
        "legs": r.legs.iter().map(|l| json!({
            "op": l.op,
            "from": l.from,
            "to": l.to,
            "state": (!l.state.is_empty()).then_some(&l.state),
            "downtime_ms": l.downtime_ms,
            "elapsed_ms": l.elapsed_ms,
            "message": l.message,
        })).collect::<Vec<_>>(),
        "verdict": (!r.verdict.is_empty()).then_some(&r.verdict),
        "failures": r.failures,
    })
}

pub fn report_text(op: &pb::Operation) -> String {
    let r = op.migration_drill.clone().unwrap_or_default();
    let mut out = format!(
        "drill {} on VM {} (round trip from {}), {}: {}\n  started {} UTC\n",
        op.id,
        r.vm,
        r.home,
        op.state,
        op.message,
        utc(op.started_at_ms)
    );
    for (i, l) in r.legs.iter().enumerate() {
        let ms = |v: Option<u64>| v.map_or("-".into(), |v| format!("{v} ms"));
        out.push_str(&format!(
            "  leg {}: {} -> {} (migration {}): {}, downtime {}, took {}\n",
            i + 1,
            l.from,
            l.to,
            l.op,
            if l.state.is_empty() {
                "running"
            } else {
                &l.state
            },
            ms(l.downtime_ms),
            ms(l.elapsed_ms)
        ));
    }
    out.push_str(&super::drills::verdict_lines(&r.verdict, &r.failures));
    out
}
