//! The seeded fault schedule, pure: which fault when, held how long, with quiet gaps
//! between (one fault at a time, so that each one's effect can be told apart and the
//! cluster is never asked to survive more than it promises).

use std::time::Duration;

use serde::Serialize;

use super::rng::Rng;

/// A kind of fault. Targets that depend on the moment (the leader) are resolved when the
/// fault is injected; the rest are drawn here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Fault {
    /// SIGKILL a controller, start it again at the heal.
    KillController(u64),
    /// SIGSTOP a controller, SIGCONT at the heal.
    PauseController(u64),
    /// SIGSTOP a host's hostd (its watchdog fences its HA guests), SIGCONT at the heal.
    PauseHostd(usize),
    /// SIGSTOP a host's watchdog.
    PauseWatchdog(usize),
    /// Cut the leader off from the other controllers and the hosts.
    IsolateLeader,
    /// Cut one host's hostd off from the controllers.
    IsolateHost(usize),
    /// Cut one follower off from the rest (a minority of one; the majority goes on).
    IsolateFollower,
    /// Drop the leader's packets to one follower, one way only.
    OneWayFromLeader,
    /// Drop a share of the packets between all controllers (percent).
    Loss(u64),
    /// SIGKILL every controller, start them all again at the heal.
    FullRestart,
    /// Stop a host's libvirtd, start it again at the heal.
    LibvirtdRestart(usize),
    /// Fill a controller's disk (its data directory's filesystem); at the heal, free it
    /// and restart the controller, as an operator would.
    DiskFull(u64),
}

impl Fault {
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::KillController(_) => "kill-controller",
            Fault::PauseController(_) => "pause-controller",
            Fault::PauseHostd(_) => "pause-hostd",
            Fault::PauseWatchdog(_) => "pause-watchdog",
            Fault::IsolateLeader => "isolate-leader",
            Fault::IsolateHost(_) => "isolate-host",
            Fault::IsolateFollower => "isolate-follower",
            Fault::OneWayFromLeader => "one-way-from-leader",
            Fault::Loss(_) => "loss",
            Fault::FullRestart => "full-restart",
            Fault::LibvirtdRestart(_) => "libvirtd-restart",
            Fault::DiskFull(_) => "disk-full",
        }
    }
}

/// Which faults a run draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// The CI profile: kill, pause, partitions of the leader and of a host, full restart.
    Ci,
    /// Everything.
    All,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Planned {
    /// From the start of the run.
    pub at: Duration,
    pub fault: Fault,
    /// How long it is held before the heal.
    pub hold: Duration,
}

/// Pure: the schedule for `seed` over `duration` on `controllers` controllers and `hosts`
/// hosts (numbered from 1). A first quiet stretch lets the workload settle.
pub fn schedule(
    seed: u64,
    duration: Duration,
    mix: Mix,
    controllers: u64,
    hosts: usize,
) -> Vec<Planned> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    let mut t = Duration::from_secs(10);
    loop {
        let fault = draw(&mut rng, mix, controllers, hosts);
        let hold = Duration::from_millis(match fault {
            // Long enough for a lease to lapse and a failover to run.
            Fault::PauseHostd(_) | Fault::IsolateHost(_) => rng.range(8_000, 14_000),
            // A restart, not an outage: without libvirt the watchdog cannot fence, and
            // this rig has no kernel watchdog device to reset the host instead.
            Fault::LibvirtdRestart(_) => rng.range(300, 1_500),
            _ => rng.range(2_000, 8_000),
        });
        let gap = Duration::from_millis(rng.range(4_000, 10_000));
        if t + hold > duration {
            return out;
        }
        out.push(Planned { at: t, fault, hold });
        t += hold + gap;
    }
}

fn draw(rng: &mut Rng, mix: Mix, controllers: u64, hosts: usize) -> Fault {
    let c = rng.range(1, controllers);
    let h = rng.range(1, hosts as u64) as usize;
    let kinds: &[u8] = match mix {
        Mix::Ci => &[0, 1, 4, 5, 9],
        Mix::All => &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
    };
    match rng.pick(kinds) {
        0 => Fault::KillController(c),
        1 => Fault::PauseController(c),
        2 => Fault::PauseHostd(h),
        3 => Fault::PauseWatchdog(h),
        4 => Fault::IsolateLeader,
        5 => Fault::IsolateHost(h),
        6 => Fault::IsolateFollower,
        7 => Fault::OneWayFromLeader,
        8 => Fault::Loss(rng.range(10, 40)),
        9 => Fault::FullRestart,
        10 => Fault::LibvirtdRestart(h),
        _ => Fault::DiskFull(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_schedule_and_faults_never_overlap() {
        let a = schedule(7, Duration::from_secs(600), Mix::All, 3, 2);
        assert_eq!(a, schedule(7, Duration::from_secs(600), Mix::All, 3, 2));
        assert_ne!(a, schedule(8, Duration::from_secs(600), Mix::All, 3, 2));
        assert!(a.len() > 20, "{}", a.len());
        for w in a.windows(2) {
            assert!(w[0].at + w[0].hold < w[1].at, "{w:?}");
        }
        assert!(a
            .last()
            .is_some_and(|p| p.at + p.hold <= Duration::from_secs(600)));
    }

    #[test]
    fn the_ci_mix_draws_only_its_kinds() {
        let ci = schedule(1, Duration::from_secs(3600), Mix::Ci, 3, 2);
        let kinds: std::collections::BTreeSet<&str> = ci.iter().map(|p| p.fault.kind()).collect();
        assert_eq!(
            kinds,
            [
                "full-restart",
                "isolate-host",
                "isolate-leader",
                "kill-controller",
                "pause-controller"
            ]
            .into()
        );
    }
}
