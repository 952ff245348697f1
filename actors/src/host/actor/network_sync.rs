//! The host actor's part in networks: at every heartbeat, compare the networks the host's
//! VMs use with what it reports (`networks::plan`), and wire or drop what differs through
//! hostd. A network is wired before any VM starts or arrives anyway (StartVm carries it,
//! the migration actor calls EnsureNetwork): this keeps overlays' peers current when hosts
//! join or leave, and takes networks away from hosts none of whose VMs use them.

use std::time::Instant;

use actix::prelude::*;
use drover_proto::agent::v1::{
    EnsureNetworkRequest, HostInfo, NetworkWiring, RemoveNetworkRequest,
};
use drover_raft::Command;

use super::HostActor;

/// How often a host's networks are compared with its VMs' when its report stays the same.
const SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
use crate::agents::{deadline, QUICK_CALL};
use crate::host::networks;

impl HostActor {
    /// Commits the host's underlay address and interfaces when they differ from the
    /// state's (the scheduler and overlays' peers read them there).
    pub(super) fn sync_networking(&self, host: &HostInfo, ctx: &mut Context<Self>) {
        let networking = match crate::host::report::networking(host) {
            Ok(n) => n,
            Err(why) => {
                tracing::warn!(host = %self.name, "networking report ignored: {why}");
                return;
            }
        };
        let differs = self.cx.node.view().read(|d| {
            d.state
                .hosts
                .get(&self.name)
                .is_some_and(|h| h.networking.as_ref() != Some(&networking))
        });
        if differs {
            let cmd = Command::HostNetworkingObserved {
                name: self.name.clone(),
                networking,
            };
            self.write(ctx, cmd, "cannot commit host networking");
        }
    }

    pub(super) fn sync_networks(&mut self, reported: &[String], ctx: &mut Context<Self>) {
        let now = Instant::now();
        // The plan reads every VM: at every heartbeat of every host that is a hot path at
        // scale. A VM is wired before it starts or arrives anyway (StartVm, the migration
        // actor), so this cleanup and peer refresh runs only when the host's report
        // changed, or every SYNC_EVERY.
        let due = self.networks_reported.as_slice() != reported
            || self
                .networks_synced_at
                .is_none_or(|at| now.duration_since(at) >= SYNC_EVERY);
        if !due {
            return;
        }
        self.networks_synced_at = Some(now);
        self.networks_reported = reported.to_vec();
        let plan = self.cx.node.view().read(|d| {
            if d.state.networks.is_empty() && reported.is_empty() {
                return networks::NetworkPlan::default();
            }
            networks::plan(
                &d.state,
                &self.name,
                reported,
                &self.networks_wired,
                &self.network_failures,
                now,
            )
        });
        // What the host no longer reports is not wired there (hostd restarted, libvirt
        // lost it): forget it, so it is wired again.
        self.networks_wired.retain(|n, _| reported.contains(n));
        for wiring in plan.ensure {
            if self.network_calls.insert(wiring.name.clone()) {
                self.ensure_network(wiring, ctx);
            }
        }
        for name in plan.remove {
            if self.network_calls.insert(name.clone()) {
                self.remove_network(name, ctx);
            }
        }
    }

    fn ensure_network(&mut self, wiring: NetworkWiring, ctx: &mut Context<Self>) {
        let name = wiring.name.clone();
        let req = EnsureNetworkRequest {
            network: Some(wiring.clone()),
            term: self.cx.term,
        };
        self.call_host(
            ctx,
            move |mut c| async move { c.ensure_network(deadline(req, QUICK_CALL)).await },
            move |act, _, res| {
                act.network_calls.remove(&name);
                match res {
                    Ok(_) => {
                        tracing::info!(host = %act.name, network = %name, "network wired");
                        act.network_failures.remove(&name);
                        act.networks_wired.insert(name, wiring);
                    }
                    Err(s) => {
                        tracing::warn!(host = %act.name, network = %name, error = %s.message(), "network cannot be wired");
                        act.network_failures.insert(name, Instant::now());
                    }
                }
            },
        );
    }

    fn remove_network(&mut self, name: String, ctx: &mut Context<Self>) {
        let req = RemoveNetworkRequest {
            name: name.clone(),
            term: self.cx.term,
        };
        self.call_host(
            ctx,
            move |mut c| async move { c.remove_network(deadline(req, QUICK_CALL)).await },
            move |act, _, res| {
                act.network_calls.remove(&name);
                match res {
                    Ok(_) => {
                        tracing::info!(host = %act.name, network = %name, "network removed");
                        act.networks_wired.remove(&name);
                    }
                    // Still in use there (a domain the state has not caught up with):
                    // the next heartbeat's plan decides again.
                    Err(s) => {
                        tracing::warn!(host = %act.name, network = %name, error = %s.message(), "cannot remove network")
                    }
                }
            },
        );
    }
}
