//! `drover.v1.OperationService`: the running and recent operations (migrations, drains)
//! and their cancellation.

use drover_proto::v1 as pb;
use drover_proto::v1::operation_service_server::OperationService;
use drover_raft::{Command, RaftNode, Reply};
use tonic::{Request, Response, Status};

use super::cluster::{applied, fresh_read, read_response};
use super::convert;
use super::write::commit;

pub struct OperationApi {
    node: RaftNode,
}

impl OperationApi {
    pub fn new(node: RaftNode) -> Self {
        Self { node }
    }
}

#[tonic::async_trait]
impl OperationService for OperationApi {
    async fn list_operations(
        &self,
        req: Request<pb::ListOperationsRequest>,
    ) -> Result<Response<pb::ListOperationsResponse>, Status> {
        let req = req.into_inner();
        fresh_read(&self.node, req.stale).await?;
        let (index, operations) = self.node.view().read(|d| {
            let ops = d
                .state
                .operations
                .ops
                .values()
                .filter(|o| !req.running || !o.state.is_finished())
                .map(convert::operation)
                .collect();
            (applied(d), ops)
        });
        Ok(read_response(
            &self.node,
            index,
            pb::ListOperationsResponse { operations },
        ))
    }

    async fn get_operation(
        &self,
        req: Request<pb::GetOperationRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let req = req.into_inner();
        fresh_read(&self.node, req.stale).await?;
        let (index, op) = self.node.view().read(|d| {
            let op = d.state.operations.ops.get(&req.id).map(convert::operation);
            (applied(d), op)
        });
        let op = op.ok_or_else(|| Status::not_found(format!("Operation {} not found", req.id)))?;
        Ok(read_response(&self.node, index, op))
    }

    async fn cancel_operation(
        &self,
        req: Request<pb::CancelOperationRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let (meta, _, req) = req.into_parts();
        match commit(&self.node, &meta, Command::CancelOperation { op: req.id }).await? {
            Reply::Operation(op) => Ok(Response::new(convert::operation(&op))),
            other => Err(Status::internal(format!("unexpected reply {other:?}"))),
        }
    }
}
