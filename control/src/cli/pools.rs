//! `drover pool create|list|get|delete`.

use std::time::{Duration, Instant};

use drover_proto::v1 as pb;
use serde_json::{json, Value};

use super::commands::{client, json, read, Printed, Target};
use super::output::{bytes, table, Format};
use super::{PoolCmd, ReadOpts};

/// How often `pool create --wait` looks at the hosts' reports.
const WAIT_POLL: Duration = Duration::from_millis(500);

fn pool_json(p: &pb::Pool) -> Value {
    json!({
        "name": p.name,
        "type": p.r#type,
        "path": p.path,
        "shared": p.shared,
        "hosts": if p.all_hosts { json!("all") } else { json!(p.hosts) },
        "on_hosts": p.on_hosts.iter().map(|h| json!({
            "host": h.host,
            "state": h.state,
            "capacity_bytes": h.capacity_bytes,
            "available_bytes": h.available_bytes,
            "reason": h.reason,
        })).collect::<Vec<_>>(),
    })
}

fn hosts_text(p: &pb::Pool) -> String {
    if p.all_hosts {
        "all".into()
    } else {
        p.hosts.join(",")
    }
}

/// One line per pool: where it is, and how many of its hosts have it.
fn pool_rows(pools: &[pb::Pool]) -> String {
    table(
        &[
            "NAME",
            "TYPE",
            "PATH",
            "SHARED",
            "HOSTS",
            "ACTIVE",
            "FREE (MIN)",
        ],
        pools
            .iter()
            .map(|p| {
                let active: Vec<&pb::PoolOnHost> =
                    p.on_hosts.iter().filter(|h| h.state == "active").collect();
                let free = active.iter().map(|h| h.available_bytes).min();
                vec![
                    p.name.clone(),
                    p.r#type.clone(),
                    p.path.clone(),
                    if p.shared { "yes" } else { "no" }.into(),
                    hosts_text(p),
                    format!("{}/{}", active.len(), p.on_hosts.len()),
                    free.map_or("-".into(), bytes),
                ]
            })
            .collect(),
    )
}

/// The pool and, per host, its state and space or why it failed.
fn pool_text(p: &pb::Pool) -> String {
    let mut out = pool_rows(std::slice::from_ref(p));
    out.push_str("\n\n");
    out.push_str(&table(
        &["HOST", "STATE", "CAPACITY", "FREE", "REASON"],
        p.on_hosts
            .iter()
            .map(|h| {
                let active = h.state == "active";
                vec![
                    h.host.clone(),
                    h.state.clone(),
                    if active {
                        bytes(h.capacity_bytes)
                    } else {
                        "-".into()
                    },
                    if active {
                        bytes(h.available_bytes)
                    } else {
                        "-".into()
                    },
                    h.reason.clone(),
                ]
            })
            .collect(),
    ));
    out
}

fn show(format: Format, p: &pb::Pool) -> anyhow::Result<String> {
    match format {
        Format::Json => json(&pool_json(p)),
        Format::Table => Ok(pool_text(p)),
    }
}

/// Runs a `drover pool …` command.
pub async fn pool(target: &Target, format: Format, cmd: PoolCmd) -> anyhow::Result<Printed> {
    let c = client(target)?;
    match cmd {
        PoolCmd::Create {
            name,
            r#type,
            path,
            shared,
            hosts,
            wait,
        } => {
            let hosts = match hosts.as_deref() {
                None | Some("all") => Vec::new(),
                Some(list) => list.split(',').map(|h| h.trim().to_string()).collect(),
            };
            let mut pool = c
                .create_pool(pb::CreatePoolRequest {
                    name: name.clone(),
                    r#type,
                    path,
                    shared,
                    hosts,
                })
                .await?;
            if let Some(within) = wait {
                // Until every host has answered: set up, or why not.
                let end = Instant::now() + within;
                while pool.on_hosts.iter().any(|h| h.state == "pending") && Instant::now() < end {
                    tokio::time::sleep(WAIT_POLL).await;
                    pool = c.pool(&name, false).await?.value;
                }
                let out = show(format, &pool)?;
                let pending: Vec<&str> = pool
                    .on_hosts
                    .iter()
                    .filter(|h| h.state != "active")
                    .map(|h| h.host.as_str())
                    .collect();
                if !pending.is_empty() {
                    anyhow::bail!(
                        "{out}\npool {name} was created, but is not set up on: {}",
                        pending.join(", ")
                    );
                }
                return Ok(out.into());
            }
            Ok(show(format, &pool)?.into())
        }
        PoolCmd::List {
            read: ReadOpts { stale },
        } => read(c.pools(stale).await?, stale, |pools| {
            Ok(match format {
                Format::Json => json(&pools.iter().map(pool_json).collect())?,
                Format::Table => pool_rows(pools),
            })
        }),
        PoolCmd::Get {
            name,
            read: ReadOpts { stale },
        } => read(c.pool(&name, stale).await?, stale, |p| show(format, p)),
        PoolCmd::Delete { name } => {
            c.delete_pool(&name).await?;
            Ok(match format {
                Format::Json => json(&json!({ "deleted": name }))?,
                Format::Table => format!("deleted pool {name} (its hosts keep the files)"),
            }
            .into())
        }
    }
}
