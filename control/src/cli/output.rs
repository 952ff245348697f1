//! Rendering API objects for humans (`-o table`) and scripts (`-o json`). JSON field names
//! are part of the CLI's contract.

use drover_proto::v1 as pb;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

pub fn desired(v: i32) -> &'static str {
    match pb::DesiredState::try_from(v).unwrap_or(pb::DesiredState::Unspecified) {
        pb::DesiredState::Running => "running",
        pb::DesiredState::Stopped => "stopped",
        pb::DesiredState::Deleted => "deleted",
        pb::DesiredState::Unspecified => "unspecified",
    }
}

pub fn observed(v: i32) -> &'static str {
    match pb::ObservedState::try_from(v).unwrap_or(pb::ObservedState::Unspecified) {
        pb::ObservedState::Running => "running",
        pb::ObservedState::Paused => "paused",
        pb::ObservedState::ShutOff => "shut off",
        pb::ObservedState::Crashed => "crashed",
        pb::ObservedState::Missing => "missing",
        pb::ObservedState::Starting => "starting",
        pb::ObservedState::Unknown | pb::ObservedState::Unspecified => "unknown",
    }
}

pub fn health(v: i32) -> &'static str {
    match pb::HostHealth::try_from(v).unwrap_or(pb::HostHealth::Unspecified) {
        pb::HostHealth::Up => "up",
        pb::HostHealth::Suspect => "suspect",
        pb::HostHealth::Dead => "dead",
        pb::HostHealth::Unknown | pb::HostHealth::Unspecified => "unknown",
    }
}

pub fn vm_json(vm: &pb::Vm) -> Value {
    let spec = vm.spec.unwrap_or_default();
    json!({
        "name": vm.name,
        "vcpus": spec.vcpus,
        "memory_mib": spec.memory_mib,
        "desired_state": desired(vm.desired_state),
        "observed_state": observed(vm.observed_state),
        "host": if vm.host.is_empty() { Value::Null } else { json!(vm.host) },
        "generation": vm.generation,
        "reason": vm.reason,
        "ha": vm.ha,
        "ha_priority": vm.ha_priority,
        "require_labels": vm.require_labels,
        "anti_affinity": if vm.anti_affinity.is_empty() { Value::Null } else { json!(vm.anti_affinity) },
        "migration_op": if vm.migration_op == 0 { Value::Null } else { json!(vm.migration_op) },
        "placement_refusals": vm.placement_refusals,
        "disks": vm.disks.iter().map(|d| json!({
            "pool": d.pool,
            "volume": d.volume,
            "size_bytes": d.size_bytes,
            "format": d.format,
            "image": if d.image.is_empty() { Value::Null } else { json!(d.image) },
        })).collect::<Vec<_>>(),
        "nics": vm.nics.iter().map(|n| json!({
            "network": n.network,
            "mac": n.mac,
            "ip": if n.ip.is_empty() { Value::Null } else { json!(n.ip) },
        })).collect::<Vec<_>>(),
        "security_groups": vm.security_groups,
        "cloud_init": vm.cloud_init.as_ref().map(|c| json!({
            "hostname": c.hostname,
            "instance_id": c.instance_id,
            "ssh_keys": c.ssh_keys,
            "user_data_bytes": c.user_data_bytes,
        })),
    })
}

pub fn op_json(op: &pb::Operation) -> Value {
    let mut v = json!({
        "id": op.id,
        "kind": op.kind,
        "state": op.state,
        "started_at_ms": op.started_at_ms,
        "finished_at_ms": op.finished_at_ms,
        "cancel_requested": op.cancel_requested,
        "message": op.message,
    });
    if op.kind == "migrate" {
        v["vm"] = json!(op.vm);
        v["src"] = json!(op.src);
        v["dst"] = json!(op.dst);
    } else {
        v["host"] = json!(op.host);
    }
    if let Some(m) = &op.migration {
        v["migration"] = json!({
            "data_total": m.data_total,
            "data_processed": m.data_processed,
            "data_remaining": m.data_remaining,
            "dirty_rate": m.dirty_rate,
            "iteration": m.iteration,
            "elapsed_ms": m.elapsed_ms,
            "downtime_ms": m.downtime_ms,
        });
    }
    if op.drill.is_some() {
        v["drill"] = super::drills::report_json(op);
    }
    if let Some(d) = &op.drain {
        v["drain"] = json!({
            "total": d.total,
            "remaining": d.remaining,
            "blocked": d.blocked,
        });
    }
    v
}

fn op_subject(op: &pb::Operation) -> String {
    if op.kind == "migrate" {
        format!("{} {} -> {}", op.vm, op.src, op.dst)
    } else if let Some(l) = &op.leader_drill {
        format!("leader {} ({})", l.leader, l.mode)
    } else if let Some(m) = &op.migration_drill {
        format!("VM {} ({} round trip)", m.vm, m.home)
    } else {
        op.host.clone()
    }
}

fn op_progress(op: &pb::Operation) -> String {
    if let Some(m) = &op.migration {
        return match m.downtime_ms {
            Some(d) => format!("downtime {d} ms"),
            None if m.data_total > 0 => {
                format!("{}/{} MiB", m.data_processed >> 20, m.data_total >> 20)
            }
            None => "-".into(),
        };
    }
    if let Some(r) = &op.drill {
        let restarted = r.vms.iter().filter(|v| !v.restarted_on.is_empty()).count();
        let verdict = if r.verdict.is_empty() {
            &r.phase
        } else {
            &r.verdict
        };
        return format!("{verdict}, {restarted} restarted, {} samples", r.samples);
    }
    if let Some(l) = &op.leader_drill {
        let verdict = if l.verdict.is_empty() {
            "running"
        } else {
            &l.verdict
        };
        return match l.unavailable_ms {
            Some(u) => format!("{verdict}, writes unavailable {u} ms"),
            None => verdict.to_string(),
        };
    }
    if let Some(m) = &op.migration_drill {
        let downtimes: Vec<String> = m
            .legs
            .iter()
            .map(|l| l.downtime_ms.map_or("?".into(), |d| format!("{d} ms")))
            .collect();
        return format!("{} legs, downtime {}", m.legs.len(), downtimes.join("/"));
    }
    if let Some(d) = &op.drain {
        let moved = d.total.saturating_sub(d.remaining.len() as u32);
        return format!("{moved}/{} moved, {} blocked", d.total, d.blocked.len());
    }
    "-".into()
}

pub fn op_rows(ops: &[pb::Operation]) -> String {
    table(
        &[
            "ID",
            "KIND",
            "STATE",
            "SUBJECT",
            "STARTED (UTC)",
            "PROGRESS",
            "MESSAGE",
        ],
        ops.iter()
            .map(|op| {
                vec![
                    op.id.to_string(),
                    op.kind.clone(),
                    if op.cancel_requested && op.state == "running" {
                        "cancelling".into()
                    } else {
                        op.state.clone()
                    },
                    op_subject(op),
                    utc(op.started_at_ms),
                    op_progress(op),
                    op.message.clone(),
                ]
            })
            .collect(),
    )
}

/// One operation in full, for `drover op get`.
pub fn op_text(op: &pb::Operation) -> String {
    if op.drill.is_some() {
        return super::drills::report_text(op);
    }
    let mut out = op_rows(std::slice::from_ref(op));
    if let Some(d) = &op.drain {
        if !d.remaining.is_empty() {
            out.push_str(&format!("\nstill on the host: {}", d.remaining.join(", ")));
        }
        for (vm, why) in &d.blocked {
            out.push_str(&format!("\nblocked {vm}: {why}"));
        }
    }
    out
}

pub fn host_json(h: &pb::Host) -> Value {
    json!({
        "name": h.name,
        "address": h.address,
        "health": health(h.health),
        "vcpus": h.vcpus,
        "memory_mib": h.memory_mib,
        "allocated_vcpus": h.allocated_vcpus,
        "allocated_memory_mib": h.allocated_memory_mib,
        "vm_count": h.vm_count,
        "lease_granted_ms_ago": h.lease_granted_ms_ago,
        "dead_reason": if h.dead_reason.is_empty() { Value::Null } else { json!(h.dead_reason) },
        "labels": h.labels,
        "admin_state": h.admin_state,
        "migration_uri": if h.migration_uri.is_empty() { Value::Null } else { json!(h.migration_uri) },
        "underlay": if h.underlay.is_empty() { Value::Null } else { json!(h.underlay) },
        "links": h.links,
        "vlan_links": h.vlan_links,
    })
}

pub fn event_json(e: &pb::Event) -> Value {
    json!({
        "seq": e.seq,
        "at_ms": e.at_ms,
        "kind": e.kind,
        "host": if e.host.is_empty() { Value::Null } else { json!(e.host) },
        "vm": if e.vm.is_empty() { Value::Null } else { json!(e.vm) },
        "message": e.message,
    })
}

pub fn event_rows(events: &[pb::Event]) -> String {
    table(
        &["SEQ", "TIME (UTC)", "KIND", "HOST", "VM", "MESSAGE"],
        events
            .iter()
            .map(|e| {
                vec![
                    e.seq.to_string(),
                    utc(e.at_ms),
                    e.kind.clone(),
                    dash(&e.host),
                    dash(&e.vm),
                    e.message.clone(),
                ]
            })
            .collect(),
    )
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

/// `YYYY-MM-DD HH:MM:SS.mmm` from Unix milliseconds (civil-from-days, no time crate).
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

pub fn ha_json(s: &pb::HaStatus) -> Value {
    let lease = |l: &pb::LeaseSettings| json!({"heartbeat_ms": l.heartbeat_ms, "ttl_ms": l.ttl_ms, "margin_ms": l.margin_ms});
    json!({
        "armed": !s.disarmed,
        "hosts_not_armed": s.hosts_not_armed,
        "lease": s.lease.as_ref().map(lease),
        "previous_lease": s.previous_lease.as_ref().map(lease),
    })
}

/// Loud on purpose when disarmed: it is easy to forget to re-arm after maintenance.
pub fn ha_text(s: &pb::HaStatus) -> String {
    let mut out = if s.disarmed {
        "HA DISARMED: no failover, no self-fencing. Run `drover ha arm` after maintenance."
            .to_string()
    } else {
        "HA armed".to_string()
    };
    if !s.hosts_not_armed.is_empty() {
        out.push_str(&format!(
            "\nhosts not (yet) armed, never failed over by lease: {}",
            s.hosts_not_armed.join(", ")
        ));
    }
    if let Some(l) = &s.lease {
        out.push_str(&format!(
            "\nlease: heartbeat {} ms, ttl {} ms, margin {} ms",
            l.heartbeat_ms, l.ttl_ms, l.margin_ms
        ));
    }
    if let Some(p) = &s.previous_lease {
        out.push_str(&format!(
            " (settling: grants under the previous ttl {} ms may still be live)",
            p.ttl_ms
        ));
    }
    out
}

pub fn status_json(s: &pb::ClusterStatusResponse) -> Value {
    json!({
        "leader_id": if s.leader_id == 0 { Value::Null } else { json!(s.leader_id) },
        "members": s.members.iter().map(|m| json!({
            "id": m.id,
            "address": m.address,
            "role": m.role,
            "term": m.term,
            "last_applied": m.last_applied,
            "voter": m.voter,
            "leader_id": m.leader_id,
            "last_log_index": m.last_log_index,
            "snapshot_index": m.snapshot_index,
            "purged_index": m.purged_index,
            "insecure": m.insecure,
            "error": if m.error.is_empty() { Value::Null } else { json!(m.error) },
        })).collect::<Vec<_>>(),
    })
}

/// A plain left-aligned table; the columns are as wide as their widest cell.
/// A byte count for people: `512 B`, `1.5 KiB`, `20.0 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row));
    }
    out
}

pub fn vm_rows(vms: &[pb::Vm]) -> String {
    table(
        &[
            "NAME", "DESIRED", "OBSERVED", "HOST", "GEN", "HA", "VCPUS", "MEMORY", "REASON",
        ],
        vms.iter()
            .map(|vm| {
                let spec = vm.spec.unwrap_or_default();
                vec![
                    vm.name.clone(),
                    desired(vm.desired_state).into(),
                    observed(vm.observed_state).into(),
                    if vm.host.is_empty() {
                        "-".into()
                    } else {
                        vm.host.clone()
                    },
                    vm.generation.to_string(),
                    if vm.ha {
                        format!("yes ({})", vm.ha_priority)
                    } else {
                        "no".into()
                    },
                    spec.vcpus.to_string(),
                    format!("{} MiB", spec.memory_mib),
                    if vm.migration_op != 0 {
                        format!("migrating (operation {})", vm.migration_op)
                    } else {
                        vm.reason.clone()
                    },
                ]
            })
            .collect(),
    )
}

pub fn host_rows(hosts: &[pb::Host]) -> String {
    table(
        &[
            "NAME", "ADDRESS", "HEALTH", "ADMIN", "LEASE", "VMS", "VCPUS", "MEMORY", "LABELS",
        ],
        hosts
            .iter()
            .map(|h| {
                vec![
                    h.name.clone(),
                    h.address.clone(),
                    match h.dead_reason.as_str() {
                        "" => health(h.health).into(),
                        why => format!("{} ({why})", health(h.health)),
                    },
                    h.admin_state.clone(),
                    lease_cell(h.lease_granted_ms_ago),
                    h.vm_count.to_string(),
                    format!("{}/{}", h.allocated_vcpus, h.vcpus),
                    format!("{}/{} MiB", h.allocated_memory_mib, h.memory_mib),
                    labels_cell(&h.labels),
                ]
            })
            .collect(),
    )
}

fn labels_cell(labels: &std::collections::HashMap<String, String>) -> String {
    let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    if pairs.is_empty() {
        "-".into()
    } else {
        pairs.join(",")
    }
}

/// How long ago the leader last granted the host a lease, as the table shows it.
fn lease_cell(ms_ago: Option<u64>) -> String {
    match ms_ago {
        Some(ms) => format!("granted {:.1}s ago", ms as f64 / 1000.0),
        None => "-".into(),
    }
}

pub fn status_rows(s: &pb::ClusterStatusResponse) -> String {
    let insecure: Vec<String> = s
        .members
        .iter()
        .filter(|m| m.insecure)
        .map(|m| m.id.to_string())
        .collect();
    let rows = table(
        &[
            "ID", "ADDRESS", "ROLE", "TERM", "APPLIED", "SNAPSHOT", "ERROR",
        ],
        s.members
            .iter()
            .map(|m| {
                vec![
                    m.id.to_string(),
                    m.address.clone(),
                    m.role.clone(),
                    m.term.to_string(),
                    m.last_applied.to_string(),
                    m.snapshot_index.to_string(),
                    m.error.clone(),
                ]
            })
            .collect(),
    );
    if insecure.is_empty() {
        return rows;
    }
    format!(
        "{rows}\nINSECURE: controller(s) {} serve plaintext (--insecure): no TLS, no \
         authentication",
        insecure.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000");
        // 2026-11-22 19:40:09.123 UTC
        assert_eq!(utc(1_795_376_409_123), "2026-11-22 19:40:09.123");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00.000");
    }

    #[test]
    fn vm_json_has_the_contract_fields() {
        let vm = pb::Vm {
            name: "web".into(),
            spec: Some(pb::VmSpec {
                vcpus: 2,
                memory_mib: 512,
            }),
            desired_state: pb::DesiredState::Stopped as i32,
            observed_state: pb::ObservedState::ShutOff as i32,
            host: "h1".into(),
            generation: 3,
            reason: String::new(),
            ha: true,
            ha_priority: 5,
            anti_affinity: "db".into(),
            migration_op: 4,
            ..Default::default()
        };
        let v = vm_json(&vm);
        assert_eq!(v["anti_affinity"], "db");
        assert_eq!(v["migration_op"], 4);
        assert_eq!(v["ha"], true);
        assert_eq!(v["ha_priority"], 5);
        assert_eq!(v["name"], "web");
        assert_eq!(v["desired_state"], "stopped");
        assert_eq!(v["observed_state"], "shut off");
        assert_eq!(v["host"], "h1");
        assert_eq!(v["generation"], 3);
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(&["A", "BB"], vec![vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y");
    }
}
