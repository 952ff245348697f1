//! Following an operation to its end from the CLI: `drover vm migrate` draws a progress
//! bar from the migration's committed job statistics, `drover host drain` one of VMs
//! moved. Both poll `GetOperation` (stale reads: any controller, no quorum round), and both
//! end with the operation's final record. The bar goes to stderr, so JSON output on stdout
//! stays clean.

use std::time::Duration;

use drover_proto::v1 as pb;
use indicatif::{ProgressBar, ProgressStyle};

use crate::client::Client;

const POLL: Duration = Duration::from_millis(300);

/// Polls operation `id` until it is no longer running, drawing progress.
pub async fn follow(c: &Client, mut op: pb::Operation) -> anyhow::Result<pb::Operation> {
    let bar = ProgressBar::new(0);
    let style = if op.kind == "drain" {
        "{spinner} drain {prefix} [{bar:30}] {pos}/{len} VMs moved  {msg}"
    } else if op.kind == "drill" {
        "{spinner} drill {prefix}  {msg}"
    } else {
        "{spinner} migrate {prefix} [{bar:30}] {bytes}/{total_bytes}  {msg}"
    };
    bar.set_style(ProgressStyle::with_template(style)?.progress_chars("=> "));
    bar.set_prefix(if op.kind == "drain" || op.kind == "drill" {
        op.host.clone()
    } else {
        format!("{} {} -> {}", op.vm, op.src, op.dst)
    });
    while op.state == "running" {
        draw(&bar, &op);
        tokio::time::sleep(POLL).await;
        // A failed poll (leader change, say) is retried; the operation goes on regardless.
        if let Ok(read) = c.operation(op.id, true).await {
            op = read.value;
        }
    }
    draw(&bar, &op);
    bar.finish_and_clear();
    Ok(op)
}

fn draw(bar: &ProgressBar, op: &pb::Operation) {
    if let Some(m) = &op.migration {
        bar.set_length(m.data_total.max(1));
        bar.set_position(m.data_processed.min(m.data_total));
        bar.set_message(format!(
            "remaining {} MiB, dirty {} MiB/s, pass {}",
            m.data_remaining >> 20,
            m.dirty_rate >> 20,
            m.iteration
        ));
    }
    if let Some(d) = &op.drain {
        bar.set_length(u64::from(d.total));
        bar.set_position(u64::from(d.total).saturating_sub(d.remaining.len() as u64));
        let blocked: Vec<String> = d
            .blocked
            .iter()
            .map(|(vm, why)| format!("{vm}: {why}"))
            .collect();
        bar.set_message(if blocked.is_empty() {
            String::new()
        } else {
            format!("blocked: {}", blocked.join("; "))
        });
    }
    if let Some(r) = &op.drill {
        let restarted = r.vms.iter().filter(|v| !v.restarted_on.is_empty()).count();
        let ha = r.vms.iter().filter(|v| v.ha).count();
        bar.set_message(format!(
            "{}: {restarted}/{ha} HA VMs running elsewhere, {} never-twice rounds",
            r.phase, r.samples
        ));
    }
    bar.tick();
}

/// One line saying how an operation ended, for humans.
pub fn summary(op: &pb::Operation) -> String {
    let took = op
        .finished_at_ms
        .map(|f| {
            format!(
                " in {:.2} s",
                f.saturating_sub(op.started_at_ms) as f64 / 1000.0
            )
        })
        .unwrap_or_default();
    let downtime = op
        .migration
        .as_ref()
        .and_then(|m| m.downtime_ms)
        .map(|d| format!(", downtime {d} ms"))
        .unwrap_or_default();
    match op.kind.as_str() {
        "migrate" => format!(
            "operation {}: migration of {} from {} to {} {}{took}{downtime}{}",
            op.id,
            op.vm,
            op.src,
            op.dst,
            op.state,
            if op.state == "succeeded" {
                String::new()
            } else {
                format!(": {}", op.message)
            }
        ),
        _ => format!(
            "operation {}: drain of {} {}{took}: {}",
            op.id, op.host, op.state, op.message
        ),
    }
}
