//! `drover drill leader-failover` and the rendering of a leader drill's report (JSON and
//! text); host-failure drills are in [`super::drills`].

use drover_proto::v1 as pb;
use serde_json::{json, Value};

use super::output::utc;

/// A leader drill operation and its report as JSON (`-o json`).
pub fn report_json(op: &pb::Operation) -> Value {
    let r = op.leader_drill.clone().unwrap_or_default();
    json!({
        "id": op.id,
        "kind": "leader-failover",
        "state": op.state,
        "message": op.message,
        "started_at_ms": op.started_at_ms,
        "finished_at_ms": op.finished_at_ms,
        "mode": r.mode,
        "leader": r.leader,
        "observer": r.observer,
        "new_leader": (r.new_leader > 0).then_some(r.new_leader),
        "max_duration_ms": r.max_duration_ms,
        "unavailable_ms": r.unavailable_ms,
        "time_to_leader_ms": r.time_to_leader_ms,
        "probes": {
            "sent": r.probes_sent,
            "acked": r.probes_acked,
            "failed": r.probes_failed,
            "unknown": r.probes_unknown,
            "applied": r.probes_applied,
        },
        "lost": r.lost,
        "verdict": (!r.verdict.is_empty()).then_some(&r.verdict),
        "failures": r.failures,
    })
}

fn ms(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| format!("{v} ms"))
}

/// A leader drill's report for humans.
pub fn report_text(op: &pb::Operation) -> String {
    let r = op.leader_drill.clone().unwrap_or_default();
    let mut out = format!(
        "drill {} on leader {} ({}), {}: {}\n",
        op.id, r.leader, r.mode, op.state, op.message
    );
    out.push_str(&format!(
        "  started {} UTC; observer: controller {}\n",
        utc(op.started_at_ms),
        r.observer
    ));
    out.push_str(&format!(
        "  new leader: {}\n",
        if r.new_leader > 0 {
            format!("controller {}", r.new_leader)
        } else {
            "-".into()
        }
    ));
    out.push_str(&format!(
        "  writes unavailable (as the observer's client saw it): {}\n",
        ms(r.unavailable_ms)
    ));
    out.push_str(&format!(
        "  time to a working leader (cut → first write a new leader acknowledged): {}\n",
        ms(r.time_to_leader_ms)
    ));
    out.push_str(&format!(
        "  probes: {} sent, {} acknowledged, {} refused, {} unknown; {} applied\n",
        r.probes_sent, r.probes_acked, r.probes_failed, r.probes_unknown, r.probes_applied
    ));
    out.push_str(&format!(
        "  acknowledged writes lost: {}\n",
        if r.lost.is_empty() {
            "none".to_string()
        } else {
            format!("{:?}", r.lost)
        }
    ));
    out.push_str(&super::drills::verdict_lines(&r.verdict, &r.failures));
    out
}
