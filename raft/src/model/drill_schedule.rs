//! Scheduled host-failure drills (`drover drill schedule host-failure --every 7d`): one
//! host at a time, round robin over the schedule's hosts, inside an optional daily
//! maintenance window (UTC), each run an ordinary drill whose verdict the schedule
//! remembers. [`DrillSchedule::due`] is the pure decision the leader's cadence acts on.

use serde::{Deserialize, Serialize};

use super::drill::DrillMode;

/// A daily window, in minutes after midnight UTC; `start > end` wraps past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start_min: u32,
    pub end_min: u32,
}

impl Window {
    /// Parses `HH:MM-HH:MM`.
    pub fn parse(s: &str) -> Result<Window, String> {
        let minutes = |t: &str| -> Result<u32, String> {
            let (h, m) = t
                .split_once(':')
                .ok_or_else(|| format!("{t:?} is not HH:MM"))?;
            let (h, m): (u32, u32) = (
                h.parse().map_err(|_| format!("{t:?} is not HH:MM"))?,
                m.parse().map_err(|_| format!("{t:?} is not HH:MM"))?,
            );
            if h > 23 || m > 59 {
                return Err(format!("{t:?} is not a time of day"));
            }
            Ok(h * 60 + m)
        };
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("window {s:?} is not HH:MM-HH:MM"))?;
        let w = Window {
            start_min: minutes(a.trim())?,
            end_min: minutes(b.trim())?,
        };
        if w.start_min == w.end_min {
            return Err(format!("window {s:?} is empty"));
        }
        Ok(w)
    }

    pub fn contains(&self, unix_ms: u64) -> bool {
        let min = ((unix_ms / 60_000) % (24 * 60)) as u32;
        if self.start_min < self.end_min {
            (self.start_min..self.end_min).contains(&min)
        } else {
            min >= self.start_min || min < self.end_min
        }
    }

    pub fn to_text(self) -> String {
        format!(
            "{:02}:{:02}-{:02}:{:02}",
            self.start_min / 60,
            self.start_min % 60,
            self.end_min / 60,
            self.end_min % 60
        )
    }
}

/// One drill a schedule started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledRun {
    pub op: u64,
    pub host: String,
    pub at_ms: u64,
}

/// Runs remembered per schedule (their reports live in the operations).
pub const MAX_SCHEDULED_RUNS: usize = 20;
/// Shortest period between two runs of one schedule.
pub const MIN_EVERY_MS: u64 = 3_600_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillSchedule {
    pub name: String,
    pub mode: DrillMode,
    pub every_ms: u64,
    /// The hosts drilled in turn; empty: every host, by name.
    pub hosts: Vec<String>,
    pub window: Option<Window>,
    /// How many runs have started (picks the next host).
    pub started: u64,
    pub last_started_ms: Option<u64>,
    pub runs: Vec<ScheduledRun>,
    pub created_at_ms: u64,
}

impl DrillSchedule {
    /// Pure: when the schedule is due at `now_ms` (its period has passed since the last
    /// run, or it never ran, and `now_ms` is inside its window), the hosts it may drill,
    /// in turn: the next one in the rotation first, then the others, so that a host the
    /// plan keeps refusing does not stall the rest. `all_hosts`: the cluster's, by name.
    pub fn due(&self, now_ms: u64, all_hosts: &[String]) -> Option<Vec<String>> {
        if let Some(last) = self.last_started_ms {
            if now_ms < last + self.every_ms {
                return None;
            }
        }
        if self.window.is_some_and(|w| !w.contains(now_ms)) {
            return None;
        }
        let hosts = if self.hosts.is_empty() {
            all_hosts
        } else {
            &self.hosts
        };
        if hosts.is_empty() {
            return None;
        }
        let first = (self.started % hosts.len() as u64) as usize;
        Some(
            hosts[first..]
                .iter()
                .chain(&hosts[..first])
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 24 * 3_600_000;

    fn schedule(window: Option<Window>) -> DrillSchedule {
        DrillSchedule {
            name: "weekly".into(),
            mode: DrillMode::Isolate,
            every_ms: 7 * DAY,
            hosts: vec!["h1".into(), "h2".into()],
            window,
            started: 0,
            last_started_ms: None,
            runs: Vec::new(),
            created_at_ms: 0,
        }
    }

    #[test]
    fn windows_parse_and_wrap_past_midnight() {
        let w = Window::parse("02:00-04:30").unwrap();
        assert_eq!((w.start_min, w.end_min), (120, 270));
        assert!(w.contains(3 * 3_600_000));
        assert!(!w.contains(5 * 3_600_000));
        let night = Window::parse("23:00-01:00").unwrap();
        assert!(night.contains(23 * 3_600_000 + 1));
        assert!(night.contains(DAY + 1_800_000));
        assert!(!night.contains(DAY + 2 * 3_600_000));
        for bad in ["2-4", "25:00-01:00", "01:00-01:00", "01:00"] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(w.to_text(), "02:00-04:30");
    }

    #[test]
    fn a_schedule_takes_its_hosts_in_turn_once_per_period_inside_its_window() {
        let mut s = schedule(Window::parse("02:00-04:00").ok());
        let all = vec!["h1".into(), "h2".into(), "h3".into()];
        assert_eq!(s.due(3_600_000, &all), None, "01:00 is outside the window");
        let v = |hs: &[&str]| Some(hs.iter().map(|h| h.to_string()).collect::<Vec<_>>());
        assert_eq!(s.due(3 * 3_600_000, &all), v(&["h1", "h2"]));
        s.started = 1;
        s.last_started_ms = Some(3 * 3_600_000);
        assert_eq!(
            s.due(DAY + 3 * 3_600_000, &all),
            None,
            "a week has not passed"
        );
        // h2's turn, then h1 should the plan refuse h2.
        assert_eq!(s.due(7 * DAY + 3 * 3_600_000, &all), v(&["h2", "h1"]));
        s.hosts.clear();
        s.started = 2;
        assert_eq!(s.due(7 * DAY + 3 * 3_600_000, &all), v(&["h3", "h1", "h2"]));
        let mut any = schedule(None);
        any.hosts.clear();
        assert_eq!(any.due(0, &[]), None, "no host to drill");
    }
}
