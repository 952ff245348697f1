//! `apply` for drill schedules: create (a valid name, a period of at least an hour and at
//! most a year, known hosts), delete, and the start of a due run — an ordinary drill, with
//! the run recorded in the schedule in the same entry.

use crate::command::{ApplyError, ApplyResult, Reply};
use crate::model::{
    validate_name, ClusterState, DrillMode, DrillSchedule, ScheduledRun, Window,
    MAX_SCHEDULED_RUNS, MIN_EVERY_MS,
};

const MAX_EVERY_MS: u64 = 366 * 24 * 3_600_000;

impl ClusterState {
    pub(crate) fn create_drill_schedule(
        &mut self,
        name: &str,
        mode: DrillMode,
        every_ms: u64,
        hosts: &[String],
        window: Option<Window>,
        at_ms: u64,
    ) -> ApplyResult {
        validate_name(name)
            .map_err(|why| ApplyError::InvalidDrill(format!("schedule name {name:?}: {why}")))?;
        if self.drill_schedules.contains_key(name) {
            return Err(ApplyError::ScheduleExists(name.to_string()));
        }
        if !(MIN_EVERY_MS..=MAX_EVERY_MS).contains(&every_ms) {
            return Err(ApplyError::InvalidDrill(format!(
                "a schedule runs at most every hour and at least once a year, not every {every_ms} ms"
            )));
        }
        for h in hosts {
            if !self.hosts.contains_key(h) {
                return Err(ApplyError::UnknownHost(h.clone()));
            }
        }
        let unique: std::collections::BTreeSet<&String> = hosts.iter().collect();
        if unique.len() != hosts.len() {
            return Err(ApplyError::InvalidDrill("a host is listed twice".into()));
        }
        self.drill_schedules.insert(
            name.to_string(),
            DrillSchedule {
                name: name.to_string(),
                mode,
                every_ms,
                hosts: hosts.to_vec(),
                window,
                started: 0,
                last_started_ms: None,
                runs: Vec::new(),
                created_at_ms: at_ms,
            },
        );
        Ok(Reply::Nothing)
    }

    pub(crate) fn start_scheduled_drill(
        &mut self,
        schedule: &str,
        host: &str,
        max_duration_ms: u64,
        at_ms: u64,
    ) -> ApplyResult {
        let s = self
            .drill_schedules
            .get(schedule)
            .ok_or_else(|| ApplyError::UnknownSchedule(schedule.to_string()))?;
        let all: Vec<String> = self.hosts.keys().cloned().collect();
        if !s
            .due(at_ms, &all)
            .is_some_and(|c| c.iter().any(|h| h == host))
        {
            return Err(ApplyError::ScheduleNotDue {
                name: schedule.to_string(),
                host: host.to_string(),
            });
        }
        let mode = s.mode;
        let started = self.start_drill(host, mode, max_duration_ms, at_ms)?;
        let Reply::Operation(op) = &started else {
            return Err(ApplyError::InvalidDrill(
                "a drill started no operation".into(),
            ));
        };
        if let Some(s) = self.drill_schedules.get_mut(schedule) {
            s.started += 1;
            s.last_started_ms = Some(at_ms);
            s.runs.push(ScheduledRun {
                op: op.id,
                host: host.to_string(),
                at_ms,
            });
            if s.runs.len() > MAX_SCHEDULED_RUNS {
                s.runs.remove(0);
            }
        }
        Ok(started)
    }
}
