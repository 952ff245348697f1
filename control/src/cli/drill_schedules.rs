//! `drover drill schedule|schedules|unschedule`: periods in words, and schedules as JSON
//! and as a table.

use drover_proto::v1 as pb;
use serde_json::{json, Value};

use super::output::{table, utc};

/// `90m`, `12h`, `7d` → milliseconds.
pub fn period_ms(s: &str) -> anyhow::Result<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| anyhow::anyhow!("--every {s:?}: a number and m, h or d (7d)"))?;
    let unit_ms = match unit {
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => anyhow::bail!("--every {s:?}: the unit must be m, h or d (7d)"),
    };
    Ok(n.saturating_mul(unit_ms))
}

pub fn to_json(s: &pb::DrillSchedule) -> Value {
    json!({
        "name": s.name,
        "kind": s.kind,
        "mode": s.mode,
        "every_ms": s.every_ms,
        "hosts": s.hosts,
        "window": (!s.window.is_empty()).then_some(&s.window),
        "last_started_ms": (s.last_started_ms > 0).then_some(s.last_started_ms),
        "runs": s.runs.iter().map(|r| json!({
            "op": r.op, "host": r.host, "at_ms": r.at_ms, "state": r.state, "verdict": r.verdict,
        })).collect::<Vec<_>>(),
    })
}

pub fn rows(all: &[pb::DrillSchedule]) -> String {
    table(
        &[
            "NAME",
            "KIND",
            "EVERY",
            "HOSTS",
            "WINDOW (UTC)",
            "LAST RUN",
            "LAST VERDICTS",
        ],
        all.iter()
            .map(|s| {
                let verdicts: Vec<String> = s
                    .runs
                    .iter()
                    .rev()
                    .take(5)
                    .map(|r| {
                        let v = if r.verdict.is_empty() {
                            &r.state
                        } else {
                            &r.verdict
                        };
                        format!("{}:{v}", r.host)
                    })
                    .collect();
                vec![
                    s.name.clone(),
                    format!("{} ({})", s.kind, s.mode),
                    format!("{} h", s.every_ms / 3_600_000),
                    if s.hosts.is_empty() {
                        "all".into()
                    } else {
                        s.hosts.join(",")
                    },
                    if s.window.is_empty() {
                        "any".into()
                    } else {
                        s.window.clone()
                    },
                    if s.last_started_ms > 0 {
                        utc(s.last_started_ms)
                    } else {
                        "-".into()
                    },
                    verdicts.join(" "),
                ]
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_read_with_their_units() {
        assert_eq!(period_ms("7d").unwrap(), 7 * 86_400_000);
        assert_eq!(period_ms("12h").unwrap(), 12 * 3_600_000);
        assert_eq!(period_ms("90m").unwrap(), 90 * 60_000);
        assert!(period_ms("7").is_err());
        assert!(period_ms("d").is_err());
        assert!(period_ms("7w").is_err());
    }
}
