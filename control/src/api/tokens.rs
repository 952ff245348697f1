//! `drover.v1.TokenService`: users' bearer tokens. The secret is made here, shown once in
//! the answer, and only its hash is committed.

use std::time::Duration;

use drover_proto::identity::{valid_name, Role};
use drover_proto::v1 as pb;
use drover_proto::v1::token_service_server::TokenService;
use drover_raft::model::Token;
use drover_raft::{wall_clock_ms, Command, RaftNode, Reply, Request as WriteRequest};
use tonic::{Request, Response, Status};

use super::cluster::{applied, fresh_read, read_response};
use super::errors::committed;
use super::write::commit;
use crate::auth::tokens;

/// Longest a token may live: a forgotten token should not outlive its owner's job.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

pub struct TokenApi {
    node: RaftNode,
}

impl TokenApi {
    pub fn new(node: RaftNode) -> Self {
        Self { node }
    }
}

fn info(t: &Token) -> pb::TokenInfo {
    pb::TokenInfo {
        id: t.id.clone(),
        user: t.user.clone(),
        role: t.role.clone(),
        created_ms: t.created_ms,
        expires_ms: t.expires_ms,
    }
}

fn token_reply(reply: Reply) -> Result<Token, Status> {
    match reply {
        Reply::Token(t) => Ok(t),
        other => Err(Status::internal(format!("Unexpected reply {other:?}"))),
    }
}

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreatedToken>, Status> {
        let req = req.into_inner();
        if !valid_name(&req.user) {
            return Err(Status::invalid_argument(
                "User name must be letters, digits, '-', '_' and '.'",
            ));
        }
        let role: Role = req
            .role
            .parse()
            .map_err(|e: drover_proto::identity::IdentityError| {
                Status::invalid_argument(e.to_string())
            })?;
        let ttl = Duration::from_millis(req.ttl_ms);
        if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
            return Err(Status::invalid_argument(format!(
                "The ttl must be above 0 and at most {} days",
                MAX_TOKEN_TTL.as_secs() / 86_400
            )));
        }
        let new = tokens::generate().map_err(|e| Status::internal(e.to_string()))?;
        let created_ms = wall_clock_ms();
        let token = Token {
            id: new.id,
            hash: new.hash,
            user: req.user,
            role: role.to_string(),
            created_ms,
            expires_ms: created_ms.saturating_add(req.ttl_ms),
        };
        // No request id: a retried create must not answer with the first attempt's reply,
        // whose secret this attempt does not know. A lost reply leaves an unused token
        // behind, which expires.
        let reply = committed(
            self.node
                .write(WriteRequest::anonymous(Command::CreateToken { token }))
                .await,
        )?;
        let token = token_reply(reply)?;
        tracing::info!(id = %token.id, user = %token.user, role = %token.role, "token created");
        Ok(Response::new(pb::CreatedToken {
            info: Some(info(&token)),
            secret: new.secret,
        }))
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        fresh_read(&self.node, req.into_inner().stale).await?;
        let (index, tokens) = self
            .node
            .view()
            .read(|d| (applied(d), d.state.tokens.values().map(info).collect()));
        Ok(read_response(
            &self.node,
            index,
            pb::ListTokensResponse { tokens },
        ))
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        let (meta, _, req) = req.into_parts();
        let reply = commit(&self.node, &meta, Command::RevokeToken { id: req.id }).await?;
        let token = token_reply(reply)?;
        tracing::info!(id = %token.id, user = %token.user, "token revoked");
        Ok(Response::new(info(&token)))
    }
}
