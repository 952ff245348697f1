//! Notices when this process's async workers could not run a task on time, and says so.
//! A Raft node whose workers are all busy (or whose process is descheduled) misses
//! heartbeats, and its followers call elections; without this probe such a stall looks,
//! from the logs, exactly like a slow network (issue 10: elections with no other trace).

use std::time::{Duration, Instant};

/// How often the probe wakes.
const EVERY: Duration = Duration::from_millis(20);
/// A wake-up later than this is reported: the shortest election timeout is 80 ms.
const REPORT_LATE: Duration = Duration::from_millis(50);

/// Runs until the process ends; cheap (50 wake-ups a second).
pub(crate) async fn run(node: crate::NodeId) {
    let mut last = Instant::now();
    loop {
        tokio::time::sleep(EVERY).await;
        let now = Instant::now();
        let late = now.duration_since(last).saturating_sub(EVERY);
        last = now;
        metrics::histogram!("drover_runtime_wakeup_late_seconds").record(late.as_secs_f64());
        if late > REPORT_LATE {
            tracing::warn!(
                node,
                late_ms = late.as_millis() as u64,
                "async workers stalled: a 20 ms timer ran late"
            );
        }
    }
}
