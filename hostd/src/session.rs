//! The controller's session with this host: one bidirectional stream per controller, opened
//! with a Hello, answered every interval with a `LeaseRequest` and a heartbeat (the host is
//! alive, what it runs, its lease; built off the loop, since libvirt may be slow). The controller answers requests with `LeaseGrant`s,
//! which extend the lease from when the request was sent (see [`crate::lease`]).

use std::sync::Arc;
use std::time::Duration;

use drover_proto::agent::v1 as pb;
use pb::session_event::Kind as EventKind;
use pb::session_request::Kind as RequestKind;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::{debug, info, warn};

use crate::error::{error_chain, HostdError};
use crate::service::{domain_to_pb, pool_to_pb, Shared};

/// Heartbeats buffered for a slow reader. A heartbeat that cannot be queued is dropped: a
/// stale one is worth nothing, and blocking on it would stop the session noticing shutdown.
const OUTBOUND_BUFFER: usize = 8;

/// Bounds on the interval a Hello may ask for: below the minimum heartbeats would be a busy
/// loop of libvirt calls; above the maximum the timer arithmetic could overflow.
const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(10);
const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3600);

/// Starts a session on its own task and returns the stream of events it sends.
pub(crate) fn open(
    shared: Arc<Shared>,
    inbound: Streaming<pb::SessionRequest>,
) -> ReceiverStream<Result<pb::SessionEvent, Status>> {
    let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
    tokio::spawn(run(shared, inbound, tx));
    ReceiverStream::new(rx)
}

async fn run(
    shared: Arc<Shared>,
    mut inbound: Streaming<pb::SessionRequest>,
    tx: mpsc::Sender<Result<pb::SessionEvent, Status>>,
) {
    let host = shared.config.name.clone();
    let mut stop = shared.stop.clone();
    if let Some(isolated) = shared.isolation.current() {
        debug!(%host, drill = isolated.drill, "Session refused: isolated by a drill");
        let _ = tx.send(Err(isolated.refusal())).await;
        return;
    }

    let hello = tokio::select! {
        message = inbound.message() => match message {
            Ok(Some(request)) => match request.kind {
                Some(RequestKind::Hello(hello)) => hello,
                Some(RequestKind::Grant(_)) | None => {
                    let status = Status::invalid_argument("A session must open with Hello");
                    // The client may already be gone; nothing more to do either way.
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            },
            Ok(None) => return,
            Err(status) => {
                debug!(%host, %status, "Session ended before Hello");
                return;
            }
        },
        () = stopping(&mut stop) => return,
    };

    let interval = match hello.heartbeat_interval_ms {
        0 => shared.config.heartbeat_interval,
        ms => Duration::from_millis(ms),
    }
    .clamp(MIN_HEARTBEAT_INTERVAL, MAX_HEARTBEAT_INTERVAL);
    // A session from a deposed leader is refused; a newer leader's term is persisted.
    if let Err(e) = shared.fencing.admit(hello.term).await {
        warn!(%host, term = hello.term, error = %e, "Session refused");
        let _ = tx.send(Err(Status::from(e))).await;
        return;
    }
    info!(
        %host, term = hello.term, leader_id = hello.leader_id, ?interval, "Session opened"
    );

    // The first tick completes at once: the controller gets a heartbeat right after Hello.
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut seq, mut lease_seq) = (0u64, 0u64);
    // Heartbeats are built on a task of their own: listing domains is a libvirt call that
    // can take seconds (a guest starting under TCG), and neither the lease request nor the
    // grants coming back may wait for it — a lease lapsing because libvirt was slow would
    // fence guests for nothing. At most one is built at a time.
    let (built_tx, mut built) = mpsc::channel::<Result<pb::Heartbeat, HostdError>>(1);
    let mut building = false;
    // The newest grant this session brought; a heartbeat names the one it was listed after.
    let mut after_grant = 0u64;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                // A lease promises a fence at its lapse: none is asked for while libvirt
                // cannot destroy a guest (see `fence_ready`).
                if shared.fence_ready.can_fence() {
                    // The send time is noted first: the lease counts from it, never later.
                    lease_seq += 1;
                    shared.lease.request_sent(lease_seq);
                    let request = pb::SessionEvent {
                        kind: Some(EventKind::LeaseRequest(pb::LeaseRequest { seq: lease_seq })),
                    };
                    if let Err(TrySendError::Closed(_)) = tx.try_send(Ok(request)) {
                        break;
                    }
                }
                if !building {
                    building = true;
                    let (shared, built_tx) = (Arc::clone(&shared), built_tx.clone());
                    tokio::spawn(async move {
                        let beat = heartbeat(&shared, seq + 1, after_grant).await;
                        let _ = built_tx.send(beat).await;
                    });
                }
            }
            Some(result) = built.recv() => {
                building = false;
                let heartbeat = match result {
                    Ok(heartbeat) => heartbeat,
                    Err(error) => {
                        // Skip the beat: a missing heartbeat tells the controller the truth
                        // (this host cannot see its guests); a made-up one would not.
                        warn!(%host, error = %error_chain(&error), "Cannot build heartbeat");
                        continue;
                    }
                };
                let event = pb::SessionEvent { kind: Some(EventKind::Heartbeat(heartbeat)) };
                match tx.try_send(Ok(event)) {
                    Ok(()) => seq += 1,
                    Err(TrySendError::Full(_)) => {
                        warn!(%host, "Controller is not reading heartbeats; dropping one");
                    }
                    Err(TrySendError::Closed(_)) => break,
                }
            }
            message = inbound.message() => match message {
                Ok(Some(request)) => match request.kind {
                    Some(RequestKind::Hello(again)) => {
                        debug!(%host, term = again.term, "Repeated Hello ignored");
                    }
                    Some(RequestKind::Grant(grant)) => {
                        // Only a grant this session asked for: a seq from an earlier
                        // session would name grants this one has not had yet.
                        if grant.seq <= lease_seq {
                            after_grant = after_grant.max(grant.seq);
                        }
                        granted(&shared, &grant).await;
                    }
                    None => debug!(%host, "Empty session request ignored"),
                },
                Ok(None) => {
                    info!(%host, "Session closed by controller");
                    break;
                }
                Err(status) => {
                    info!(%host, %status, "Session stream failed");
                    break;
                }
            },
            () = stopping(&mut stop) => {
                let _ = tx.try_send(Err(Status::unavailable("hostd is shutting down")));
                break;
            }
            isolated = shared.isolation.begun() => {
                warn!(%host, drill = isolated.drill, "Session dropped: isolated by a drill");
                let _ = tx.try_send(Err(isolated.refusal()));
                break;
            }
            _ = tx.closed() => {
                info!(%host, "Session dropped by controller");
                break;
            }
        }
    }
}

/// Completes once hostd is stopping.
async fn stopping(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which also means hostd is stopping. The guard
    // `wait_for` returns is dropped here: it must not live across an await.
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// Applies a grant, unless it comes from a term older than the highest this host has
/// persisted (a deposed leader's grant is worthless).
async fn granted(shared: &Shared, grant: &pb::LeaseGrant) {
    let host = &shared.config.name;
    let highest = shared.fencing.highest().await;
    if grant.term < highest {
        warn!(%host, term = grant.term, highest, "Lease grant from a deposed leader ignored");
        return;
    }
    let ttl = Duration::from_millis(grant.ttl_ms);
    if ttl > shared.config.max_lease_ttl {
        let max_ms = shared.config.max_lease_ttl.as_millis() as u64;
        warn!(%host, ttl_ms = grant.ttl_ms, max_ms, "Lease grant above --max-lease-ttl-ms refused");
        return;
    }
    match shared
        .lease
        .granted(grant.seq, grant.term, ttl, grant.disarmed, grant.ha_epoch)
    {
        Ok(_) => debug!(%host, seq = grant.seq, term = grant.term, "Lease extended"),
        Err(ignored) => debug!(%host, ?ignored, "Lease grant ignored"),
    }
}

/// `after_grant`: the newest grant received before this listing began (see the proto).
async fn heartbeat(
    shared: &Shared,
    seq: u64,
    after_grant: u64,
) -> Result<pb::Heartbeat, HostdError> {
    let before = shared.vm_locks.snapshot();
    let (capacity, domains, pools, networks, links, vlans) = shared
        .blocking(|hv| {
            // Pools and networks are reported again next beat; the domains must not wait
            // for them.
            let pools = hv.list_pools().unwrap_or_else(|e| {
                tracing::warn!(error = %crate::error::error_chain(&e), "cannot list storage pools");
                Vec::new()
            });
            let networks = hv.list_networks().unwrap_or_else(|e| {
                tracing::warn!(error = %crate::error::error_chain(&e), "cannot list networks");
                Vec::new()
            });
            let links = crate::service::host_links_or_none(hv);
            let vlans = hv.makes_vlan_links();
            Ok((
                hv.host_info()?,
                hv.list_managed()?,
                pools,
                networks,
                links,
                vlans,
            ))
        })
        .await?;
    let after = shared.vm_locks.snapshot();
    let lease = shared.lease.view();
    let domains = domains
        .into_iter()
        .map(|d| {
            let busy = before.busy(&after, &d.name);
            pb::Domain {
                busy,
                ..domain_to_pb(d)
            }
        })
        .collect();
    Ok(pb::Heartbeat {
        seq,
        host: Some(shared.host_info(capacity, links, vlans)),
        domains,
        lease: Some(pb::LeaseStatus {
            held: lease.remaining.is_some(),
            remaining_ms: lease.remaining.map_or(0, |d| d.as_millis() as u64),
            self_fences: lease.self_fences,
            armed: lease.armed,
            ha_epoch: lease.ha_epoch,
        }),
        after_grant,
        pools: pools.into_iter().map(pool_to_pb).collect(),
        networks,
    })
}
