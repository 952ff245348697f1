//! The one way the host actor makes a quick call to its host's hostd (pools, networks,
//! image volumes): a client for the host's registered address, the call spawned on the
//! actor's context, and its answer handed back to the actor. A host no longer registered,
//! or an address that cannot be dialled, answers `Unavailable`.

use std::future::Future;

use actix::prelude::*;
use drover_proto::agent::v1::host_agent_client::HostAgentClient;
use tonic::transport::Channel;
use tonic::Status;

use super::HostActor;

impl HostActor {
    pub(super) fn call_host<Resp, Fut>(
        &mut self,
        ctx: &mut Context<Self>,
        call: impl FnOnce(HostAgentClient<Channel>) -> Fut + 'static,
        done: impl FnOnce(&mut Self, &mut Context<Self>, Result<Resp, Status>) + 'static,
    ) where
        Resp: 'static,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>> + 'static,
    {
        let client = match self.address() {
            Some(address) => self
                .cx
                .agents
                .client(&address)
                .map_err(|e| Status::unavailable(e.to_string())),
            None => Err(Status::unavailable("the host is no longer registered")),
        };
        ctx.spawn(
            async move { call(client?).await.map(tonic::Response::into_inner) }
                .into_actor(self)
                .map(move |res, act, ctx| done(act, ctx, res)),
        );
    }
}
