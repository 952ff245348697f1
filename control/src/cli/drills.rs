//! `drover drill …`: failover drills. `host-failure HOST --dry-run` prints the plan (which
//! VMs would restart where, which would stay down and why, whether the cluster could
//! survive the failure now); without it the drill runs and its report is printed;
//! `history` and `report ID` read the drills kept.

use drover_proto::v1 as pb;
use serde_json::{json, Value};

use super::commands::{client, json, read, Printed, Target};
use super::follow::follow;
use super::output::{op_rows, utc, Format};
use super::{drill_schedules, leader_drills, migration_drills, DrillCmd, ReadOpts};

fn plan_text(p: &pb::HostFailurePlan) -> String {
    let mut out = format!("If host {} failed now:\n", p.host);
    if p.moves.is_empty() {
        out.push_str("  no HA VM would restart elsewhere\n");
    }
    for (i, m) in p.moves.iter().enumerate() {
        out.push_str(&format!("  {}. {} restarts on {}\n", i + 1, m.vm, m.host));
    }
    let mut down: Vec<_> = p.stay_down.iter().collect();
    down.sort();
    for (vm, why) in down {
        out.push_str(&format!("  {vm} stays down: {why}\n"));
    }
    out.push_str(&format!(
        "controllers: {} of {} voters answer\n",
        p.healthy_voters, p.voters
    ));
    if p.refusals.is_empty() {
        out.push_str("verdict: the cluster would survive it; a drill may run");
    } else {
        out.push_str("verdict: a drill would be refused now:");
        for r in &p.refusals {
            out.push_str(&format!("\n  - {r}"));
        }
    }
    out
}

/// Runs a `drover drill …` command.
pub async fn drill(target: &Target, format: Format, cmd: DrillCmd) -> anyhow::Result<Printed> {
    let c = client(target)?;
    match cmd {
        DrillCmd::HostFailure {
            host,
            dry_run: false,
            mode,
            max_duration,
            detach,
        } => {
            let ms = max_duration.saturating_mul(1000);
            let op = c.start_host_failure(&host, &mode, ms).await?;
            follow_report(&c, format, op, detach).await
        }
        DrillCmd::LeaderFailover {
            mode,
            max_duration,
            detach,
        } => {
            let ms = max_duration.saturating_mul(1000);
            let op = c.start_leader_failover(&mode, ms).await?;
            follow_report(&c, format, op, detach).await
        }
        DrillCmd::Schedule {
            kind,
            every,
            hosts,
            window,
            mode,
            name,
        } => {
            let req = pb::CreateDrillScheduleRequest {
                name: name.unwrap_or_else(|| kind.clone()),
                kind,
                mode,
                every_ms: drill_schedules::period_ms(&every)?,
                hosts: hosts
                    .map(|h| h.split(',').map(|s| s.trim().to_string()).collect())
                    .unwrap_or_default(),
                window: window.unwrap_or_default(),
            };
            let s = c.create_drill_schedule(req).await?;
            Ok(match format {
                Format::Json => json(&drill_schedules::to_json(&s))?,
                Format::Table => drill_schedules::rows(std::slice::from_ref(&s)),
            }
            .into())
        }
        DrillCmd::Schedules {
            read: ReadOpts { stale },
        } => read(c.drill_schedules(stale).await?, stale, |all| {
            Ok(match format {
                Format::Json => json(&Value::Array(
                    all.iter().map(drill_schedules::to_json).collect(),
                ))?,
                Format::Table => drill_schedules::rows(all),
            })
        }),
        DrillCmd::Unschedule { name } => {
            c.delete_drill_schedule(&name).await?;
            Ok(format!("drill schedule {name} removed").into())
        }
        DrillCmd::Migration { vm, detach } => {
            let op = c.start_migration_round_trip(&vm).await?;
            follow_report(&c, format, op, detach).await
        }
        DrillCmd::History {
            read: ReadOpts { stale },
        } => read(c.drills(stale).await?, stale, |ops| {
            Ok(match format {
                Format::Json => json(&Value::Array(ops.iter().map(report_json).collect()))?,
                Format::Table => op_rows(ops),
            })
        }),
        DrillCmd::Report {
            id,
            read: ReadOpts { stale },
        } => {
            let r = c.operation(id, stale).await?;
            if r.value.kind != "drill" {
                anyhow::bail!("operation {id} is a {}, not a drill", r.value.kind);
            }
            read(r, stale, |op| {
                Ok(match format {
                    Format::Json => json(&report_json(op))?,
                    Format::Table => report_text(op),
                })
            })
        }
        DrillCmd::HostFailure { host, mode, .. } => {
            let plan = c.plan_host_failure(&host).await?;
            // What only the host can tell is checked when the drill starts.
            let note = (mode == "stop-agent").then(|| {
                format!(
                    "stop-agent: {host}'s hostd stops only if hostd-watchdog runs beside it \
                     (checked when the drill starts)"
                )
            });
            let stdout = match format {
                Format::Json => json(&json!({
                    "host": plan.host,
                    "moves": plan.moves.iter().map(|m| json!({"vm": m.vm, "host": m.host})).collect::<Vec<_>>(),
                    "stay_down": plan.stay_down,
                    "refusals": plan.refusals,
                    "voters": plan.voters,
                    "healthy_voters": plan.healthy_voters,
                }))?,
                Format::Table => plan_text(&plan),
            };
            Ok(Printed {
                stdout,
                note,
                ..Printed::default()
            })
        }
    }
}

/// Follows a drill just started to its end (unless `detach`) and prints its report; a
/// drill that did not pass makes the command fail after printing.
async fn follow_report(
    c: &crate::client::Client,
    format: Format,
    op: pb::Operation,
    detach: bool,
) -> anyhow::Result<Printed> {
    if detach {
        return Ok(match format {
            Format::Json => json(&report_json(&op))?,
            Format::Table => format!(
                "drill {} started; `drover drill report {}` follows it",
                op.id, op.id
            ),
        }
        .into());
    }
    let op = follow(c, op).await?;
    let stdout = match format {
        Format::Json => json(&report_json(&op))?,
        Format::Table => report_text(&op),
    };
    let passed = op.state == "succeeded";
    Ok(Printed {
        stdout,
        failure: (!passed).then(|| format!("drill {} {}: {}", op.id, op.state, op.message)),
        ..Printed::default()
    })
}

/// Milliseconds from `from` to `to`, when both happened.
fn after(from: u64, to: u64) -> Option<u64> {
    (from > 0 && to > 0).then(|| to.saturating_sub(from))
}

fn opt(v: Option<u64>) -> Value {
    v.map_or(Value::Null, |v| json!(v))
}

/// A drill operation and its report as JSON (`-o json`): times relative to the isolation.
pub fn report_json(op: &pb::Operation) -> Value {
    if op.leader_drill.is_some() {
        return leader_drills::report_json(op);
    }
    if op.migration_drill.is_some() {
        return migration_drills::report_json(op);
    }
    let r = op.drill.clone().unwrap_or_default();
    let t0 = r.isolated_at_ms;
    json!({
        "id": op.id,
        "state": op.state,
        "message": op.message,
        "started_at_ms": op.started_at_ms,
        "finished_at_ms": op.finished_at_ms,
        "host": r.host,
        "mode": r.mode,
        "phase": r.phase,
        "max_duration_ms": r.max_duration_ms,
        "isolated_at_ms": (t0 > 0).then_some(t0),
        "detection_ms": opt(after(t0, r.dead_at_ms)),
        "dead_reason": r.dead_reason,
        "fence_path": r.fence_path,
        "vms": r.vms.iter().map(|v| json!({
            "name": v.name,
            "ha": v.ha,
            "planned": (!v.planned.is_empty()).then_some(&v.planned),
            "restarted_on": (!v.restarted_on.is_empty()).then_some(&v.restarted_on),
            "restart_ms": opt(after(t0, v.running_at_ms)),
            "down_reason": (!v.down_reason.is_empty()).then_some(&v.down_reason),
        })).collect::<Vec<_>>(),
        "restored_after_ms": opt(after(t0, r.restored_at_ms)),
        "restore_reason": (!r.restore_reason.is_empty()).then_some(&r.restore_reason),
        "back_after_restore_ms": opt(after(r.restored_at_ms, r.back_at_ms)),
        "never_twice": { "samples": r.samples, "violations": r.violations },
        "verdict": (!r.verdict.is_empty()).then_some(&r.verdict),
        "failures": r.failures,
    })
}

fn ms(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| format!("{:.1} s", v as f64 / 1000.0))
}

/// A drill's report for humans.
pub fn report_text(op: &pb::Operation) -> String {
    if op.leader_drill.is_some() {
        return leader_drills::report_text(op);
    }
    if op.migration_drill.is_some() {
        return migration_drills::report_text(op);
    }
    let r = op.drill.clone().unwrap_or_default();
    let t0 = r.isolated_at_ms;
    let mut out = format!(
        "drill {} on host {} ({}), {}: {}\n",
        op.id, r.host, r.mode, op.state, op.message
    );
    out.push_str(&format!(
        "  started {} UTC, phase {}\n",
        utc(op.started_at_ms),
        r.phase
    ));
    out.push_str(&format!(
        "  detection: {} after isolation (declared dead by {})\n",
        ms(after(t0, r.dead_at_ms)),
        if r.dead_reason.is_empty() {
            "-"
        } else {
            &r.dead_reason
        }
    ));
    out.push_str("  fence path:");
    if r.fence_path.is_empty() {
        out.push_str(" no fence event recorded\n");
    } else {
        for f in &r.fence_path {
            out.push_str(&format!("\n    {f}"));
        }
        out.push('\n');
    }
    out.push_str("  VMs:\n");
    for v in &r.vms {
        let kind = if v.ha { "HA" } else { "not HA" };
        if v.restarted_on.is_empty() {
            out.push_str(&format!(
                "    {} ({kind}): stayed down: {}\n",
                v.name, v.down_reason
            ));
        } else {
            let planned = if v.planned.is_empty() || v.planned == v.restarted_on {
                String::new()
            } else {
                format!(" (planned {})", v.planned)
            };
            out.push_str(&format!(
                "    {} ({kind}): running on {}{planned} after {}\n",
                v.name,
                v.restarted_on,
                ms(after(t0, v.running_at_ms))
            ));
        }
    }
    out.push_str(&format!(
        "  restore: isolation lifted after {} ({}), host trusted again {} later\n",
        ms(after(t0, r.restored_at_ms)),
        if r.restore_reason.is_empty() {
            "-"
        } else {
            &r.restore_reason
        },
        ms(after(r.restored_at_ms, r.back_at_ms))
    ));
    out.push_str(&format!(
        "  never twice: {} rounds over every host, {} violations\n",
        r.samples,
        r.violations.len()
    ));
    for v in &r.violations {
        out.push_str(&format!("    VIOLATION: {v}\n"));
    }
    out.push_str(&verdict_lines(&r.verdict, &r.failures));
    out
}

/// A report's last lines: the verdict and every reason it failed.
pub fn verdict_lines(verdict: &str, failures: &[String]) -> String {
    let mut out = format!(
        "verdict: {}",
        if verdict.is_empty() {
            "(running)"
        } else {
            verdict
        }
    );
    for f in failures {
        out.push_str(&format!("\n  - {f}"));
    }
    out
}
