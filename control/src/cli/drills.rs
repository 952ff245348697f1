//! `drover drill …`: failover drills. So far `host-failure HOST --dry-run`, the plan:
//! which VMs would restart where, which would stay down and why, and whether the cluster
//! could survive the failure now.

use drover_proto::v1 as pb;
use serde_json::json;

use super::commands::{client, json, Printed, Target};
use super::output::Format;
use super::DrillCmd;

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
        DrillCmd::HostFailure { host, dry_run } => {
            if !dry_run {
                anyhow::bail!(
                    "running a host-failure drill is not implemented yet; --dry-run shows \
                     what it would do"
                );
            }
            let plan = c.plan_host_failure(&host).await?;
            Ok(match format {
                Format::Json => json(&json!({
                    "host": plan.host,
                    "moves": plan.moves.iter().map(|m| json!({"vm": m.vm, "host": m.host})).collect::<Vec<_>>(),
                    "stay_down": plan.stay_down,
                    "refusals": plan.refusals,
                    "voters": plan.voters,
                    "healthy_voters": plan.healthy_voters,
                }))?,
                Format::Table => plan_text(&plan),
            }
            .into())
        }
    }
}
