//! Where did the migrating domain end up? Pure: the answer comes from the source's and the
//! destination's domain lists (`None` when that host could not be asked).
//!
//! The destination copy carries the generation the VM gets when the migration completes
//! (`new_generation`), and libvirt resumes it only after the source has handed over; so a
//! *running* copy at the destination with that generation means the move is done, whatever
//! the source still shows for the moment.

use drover_proto::agent::v1::{Domain, DomainState};
use drover_raft::model::OpState;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Running at the destination: record the migration as completed.
    Destination,
    /// Still at the source and not running at the destination: record it as failed (the
    /// VM keeps running at the source).
    Source,
    /// On neither host: nothing runs, record it as failed.
    Neither,
    /// Cannot tell yet (a host did not answer, or the handover is under way): ask again.
    Unknown,
}

/// How a migration hostd reported failed (or aborted) ends, once the VM is located:
/// `None` means locate again. Never `Failed` while the destination's state is unknown: a
/// destination that was unreachable may have taken the VM after all (libvirt went on), and
/// recording "failed" would leave that copy running beside the source's.
pub fn after_failure(location: &Location, code: tonic::Code, cancelled: bool) -> Option<OpState> {
    match location {
        Location::Destination => Some(OpState::Succeeded),
        Location::Unknown => None,
        Location::Source | Location::Neither => {
            Some(if cancelled && code == tonic::Code::Aborted {
                OpState::Cancelled
            } else {
                OpState::Failed
            })
        }
    }
}

fn active(d: &Domain) -> bool {
    matches!(d.state(), DomainState::Running | DomainState::Paused)
}

/// Locates `name` after a migration to `new_generation`. `src_gone`: the source host is
/// dead (its lease lapsed or it was fenced), so whatever it ran is no longer running.
pub fn locate(
    name: &str,
    new_generation: u64,
    src: Option<&[Domain]>,
    dst: Option<&[Domain]>,
    src_gone: bool,
) -> Location {
    let at_dst = dst.map(|ds| ds.iter().find(|d| d.name == name && active(d)));
    if let Some(Some(d)) = at_dst {
        if d.state() == DomainState::Running && d.generation >= new_generation {
            return Location::Destination;
        }
        // A paused incoming copy: the handover is not finished.
        return Location::Unknown;
    }
    let at_src = if src_gone {
        Some(false)
    } else {
        src.map(|ds| ds.iter().any(|d| d.name == name && active(d)))
    };
    match (at_src, at_dst) {
        (Some(true), Some(None)) => Location::Source,
        (Some(false), Some(None)) => Location::Neither,
        _ => Location::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(name: &str, generation: u64, state: DomainState) -> Domain {
        Domain {
            name: name.into(),
            state: state as i32,
            generation,
            vcpus: 1,
            memory_mib: 64,
            ha: true,
            busy: false,
        }
    }

    #[test]
    fn running_at_the_destination_with_the_new_generation_is_done() {
        let dst = [d("a", 5, DomainState::Running)];
        // Even while the source still lists its copy (paused, about to go).
        let src = [d("a", 4, DomainState::Paused)];
        assert_eq!(
            locate("a", 5, Some(&src), Some(&dst), false),
            Location::Destination
        );
        assert_eq!(
            locate("a", 5, None, Some(&dst), false),
            Location::Destination
        );
    }

    #[test]
    fn a_paused_incoming_copy_or_an_old_generation_is_not_done() {
        let src = [d("a", 4, DomainState::Running)];
        let paused = [d("a", 5, DomainState::Paused)];
        assert_eq!(
            locate("a", 5, Some(&src), Some(&paused), false),
            Location::Unknown
        );
        let old = [d("a", 3, DomainState::Running)];
        assert_eq!(
            locate("a", 5, Some(&src), Some(&old), false),
            Location::Unknown
        );
    }

    #[test]
    fn source_neither_and_unknown() {
        let src = [d("a", 4, DomainState::Running)];
        let other = [d("b", 1, DomainState::Running)];
        assert_eq!(
            locate("a", 5, Some(&src), Some(&other), false),
            Location::Source
        );
        assert_eq!(
            locate("a", 5, Some(&other), Some(&other), false),
            Location::Neither
        );
        // The destination did not answer: it might have the VM.
        assert_eq!(locate("a", 5, Some(&src), None, false), Location::Unknown);
        // The source did not answer and is not known dead.
        assert_eq!(locate("a", 5, None, Some(&other), false), Location::Unknown);
        // The source is dead: whatever it ran has stopped.
        assert_eq!(locate("a", 5, None, Some(&other), true), Location::Neither);
    }

    #[test]
    fn a_failure_is_recorded_only_once_the_destination_answered() {
        use tonic::Code;
        // Issue 9, point 2: the source said "failed" while the destination was unreachable.
        let src = [d("a", 4, DomainState::Running)];
        let unknown = locate("a", 5, Some(&src), None, false);
        assert_eq!(after_failure(&unknown, Code::Internal, false), None);
        // The destination answered without the VM: failed, or cancelled when asked to.
        let known = locate("a", 5, Some(&src), Some(&[]), false);
        assert_eq!(
            after_failure(&known, Code::Internal, false),
            Some(OpState::Failed)
        );
        assert_eq!(
            after_failure(&known, Code::Aborted, true),
            Some(OpState::Cancelled)
        );
        // It took the VM after all.
        let dst = [d("a", 5, DomainState::Running)];
        let there = locate("a", 5, Some(&src), Some(&dst), false);
        assert_eq!(
            after_failure(&there, Code::Internal, false),
            Some(OpState::Succeeded)
        );
    }
}
