//! The host actor's part in storage pools: at every heartbeat, compare the cluster's pools
//! with the host's report (`pools::plan`), set up or drop what differs through hostd, and
//! record what the host has when that is news.

use std::time::Instant;

use actix::prelude::*;
use drover_proto::agent::v1::{EnsurePoolRequest, PoolStatus, RemovePoolRequest};
use drover_raft::model::PoolKind;
use drover_raft::Command;
use tonic::Code;

use super::HostActor;
use crate::agents::{deadline, QUICK_CALL};
use crate::host::pools::{self, Failure};

impl HostActor {
    pub(super) fn sync_pools(&mut self, reported: &[PoolStatus], ctx: &mut Context<Self>) {
        let now = Instant::now();
        let (plan, news) = self.cx.node.view().read(|d| {
            let plan = pools::plan(
                &self.name,
                &d.state.pools,
                reported,
                &self.pool_failures,
                now,
            );
            let news = pools::worth_recording(&self.name, &d.state.pools, &plan.observed);
            (plan, news)
        });
        if news {
            let cmd = Command::PoolsObserved {
                host: self.name.clone(),
                pools: plan.observed,
            };
            self.write(ctx, cmd, "cannot record the host's storage pools");
        }
        for (pool, kind) in plan.ensure {
            if self.pool_calls.insert(pool.clone()) {
                self.ensure_pool(pool, kind, ctx);
            }
        }
        for pool in plan.remove {
            if self.pool_calls.insert(pool.clone()) {
                self.remove_pool(pool, ctx);
            }
        }
    }

    fn ensure_pool(&mut self, pool: String, kind: PoolKind, ctx: &mut Context<Self>) {
        let req = EnsurePoolRequest {
            name: pool.clone(),
            r#type: kind.as_str().to_string(),
            path: kind.path().to_string(),
            term: self.cx.term,
        };
        self.call_host(
            ctx,
            move |mut c| async move { c.ensure_pool(deadline(req, QUICK_CALL)).await },
            move |act, _, res| {
                act.pool_calls.remove(&pool);
                match res {
                    Ok(_) => {
                        tracing::info!(host = %act.name, pool = %pool, "storage pool set up");
                        act.pool_failures.remove(&pool);
                    }
                    // The host could not be asked: nothing learnt about the pool.
                    Err(s) if is_transport(s.code()) => {
                        tracing::debug!(host = %act.name, pool = %pool, error = %s.message(), "cannot ask for a storage pool");
                    }
                    Err(s) => {
                        tracing::warn!(host = %act.name, pool = %pool, error = %s.message(), "storage pool cannot be set up");
                        let failure = Failure {
                            path: kind.path().to_string(),
                            reason: s.message().to_string(),
                            at: Instant::now(),
                        };
                        act.pool_failures.insert(pool, failure);
                    }
                }
            },
        );
    }

    fn remove_pool(&mut self, pool: String, ctx: &mut Context<Self>) {
        self.pool_failures.remove(&pool);
        let req = RemovePoolRequest {
            name: pool.clone(),
            term: self.cx.term,
        };
        self.call_host(
            ctx,
            move |mut c| async move { c.remove_pool(deadline(req, QUICK_CALL)).await },
            move |act, _, res| {
                act.pool_calls.remove(&pool);
                match res {
                    Ok(_) => tracing::info!(host = %act.name, pool = %pool, "storage pool removed"),
                    Err(s) => {
                        tracing::warn!(host = %act.name, pool = %pool, error = %s.message(), "cannot remove storage pool")
                    }
                }
            },
        );
    }
}

/// Codes that say the call did not get an answer from hostd about the pool itself.
fn is_transport(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    )
}
