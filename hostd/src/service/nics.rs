//! `HostAgent`'s NIC hot-plug calls: a running VM gets a NIC (its network wired here
//! first, under the same network locks as `StartVm`) or loses one, which counts only once
//! the guest has released it. Fenced like every VM command: a deposed leader or an older
//! placement is refused.

use drover_proto::agent::v1 as pb;
use tonic::Status;
use tracing::info;

use super::{networks, AgentService};
use crate::error::HostdError;

impl AgentService {
    pub(super) async fn plug_nic_inner(
        &self,
        req: pb::PlugNicRequest,
    ) -> Result<pb::PlugNicResponse, Status> {
        let op = "PlugNic";
        let name = req.name.clone();
        super::validate_name(&name).map_err(self.failed(op, &name))?;
        let vtep = self.shared.config.vtep_address;
        let (nic, wiring) = req
            .nic
            .zip(req.network)
            .ok_or_else(|| HostdError::InvalidArgument("the NIC or its network is missing".into()))
            .and_then(|(nic, wiring)| {
                let nic = networks::nics_from_pb(vec![nic])?.remove(0);
                let wiring = networks::wiring_from_pb(wiring, vtep)?;
                if nic.network != wiring.name {
                    return Err(HostdError::InvalidArgument(format!(
                        "the NIC is on network {}, the wiring is for {}",
                        nic.network, wiring.name
                    )));
                }
                Ok((nic, wiring))
            })
            .map_err(self.failed(op, &name))?;
        let _guard = self.shared.lock_vm(&name).await;
        let fence = self.fenced(op, &name, req.fence).await?;
        info!(
            host = %self.host(), vm = %name, term = fence.term, generation = fence.generation,
            network = %nic.network, mac = %nic.mac, "PlugNic"
        );
        // As for StartVm: exclusive while wiring, then shared until the NIC is in.
        let exclusive = self
            .shared
            .network_locks
            .wiring(std::slice::from_ref(&wiring.name))
            .await;
        self.wire(vec![wiring])
            .await
            .map_err(self.failed(op, &name))?;
        let _network: Vec<_> = exclusive.into_iter().map(|g| g.downgrade()).collect();
        let vm = name.clone();
        let online = self
            .shared
            .blocking(move |hv| hv.plug_nic(&vm, &nic))
            .await
            .map_err(self.failed(op, &name))?;
        Ok(pb::PlugNicResponse { online })
    }

    pub(super) async fn unplug_nic_inner(
        &self,
        req: pb::UnplugNicRequest,
    ) -> Result<pb::UnplugNicResponse, Status> {
        let op = "UnplugNic";
        let name = req.name.clone();
        super::validate_name(&name).map_err(self.failed(op, &name))?;
        let mac = networks::mac(&req.mac).map_err(self.failed(op, &name))?;
        let _guard = self.shared.lock_vm(&name).await;
        let fence = self.fenced(op, &name, req.fence).await?;
        info!(
            host = %self.host(), vm = %name, term = fence.term, generation = fence.generation,
            mac = %mac, "UnplugNic"
        );
        let vm = name.clone();
        self.shared
            .blocking(move |hv| hv.unplug_nic(&vm, &mac))
            .await
            .map_err(self.failed(op, &name))?;
        Ok(pb::UnplugNicResponse {})
    }

    pub(super) async fn update_nic_filters_inner(
        &self,
        req: pb::UpdateNicFiltersRequest,
    ) -> Result<pb::UpdateNicFiltersResponse, Status> {
        let op = "UpdateNicFilters";
        let name = req.name.clone();
        super::validate_name(&name).map_err(self.failed(op, &name))?;
        let nics = networks::nics_from_pb(req.nics).map_err(self.failed(op, &name))?;
        let _guard = self.shared.lock_vm(&name).await;
        let fence = self.fenced(op, &name, req.fence).await?;
        info!(
            host = %self.host(), vm = %name, term = fence.term, generation = fence.generation,
            nics = nics.len(), "UpdateNicFilters"
        );
        let vm = name.clone();
        let online = self
            .shared
            .blocking(move |hv| hv.update_nic_filters(&vm, &nics))
            .await
            .map_err(self.failed(op, &name))?;
        Ok(pb::UpdateNicFiltersResponse { online })
    }
}
