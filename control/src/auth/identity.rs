//! Who is calling: the identity in the client certificate (see
//! [`drover_proto::identity`]) or, without a certificate, the user of the bearer token in
//! the `authorization` metadata. A certificate decides when there is one: a token sent
//! alongside it is not looked at. A credential that is no good is an error, never "no
//! credential".

use drover_proto::guard::Caller;
use drover_proto::identity::Peer;
use drover_raft::store::StateView;
use tonic::Status;

/// The metadata key carrying `Bearer <token>`.
pub const AUTHORIZATION: &str = "authorization";

/// The caller's identity: `Ok(None)` when it presented no credential, `Err` when the
/// credential it presented is no good (`UNAUTHENTICATED`).
pub fn identify(
    caller: &Caller<'_>,
    state: &StateView,
    now_ms: u64,
) -> Result<Option<Peer>, Status> {
    match &caller.certificate {
        Some(Ok(peer)) => return Ok(Some(peer.clone())),
        Some(Err(e)) => {
            return Err(Status::unauthenticated(format!(
                "The client certificate is not usable: {e}"
            )))
        }
        None => {}
    }
    let Some(value) = caller.headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            Status::unauthenticated("The authorization metadata is not `Bearer <token>`")
        })?;
    state
        .read(|d| super::tokens::verify(token.trim(), &d.state.tokens, now_ms))
        .map(Some)
}
