//! Who is calling: the identity in the client certificate (see
//! [`drover_proto::identity`]); a certificate without one is no credential at all.

use drover_proto::guard::Caller;
use drover_proto::identity::Peer;
use tonic::Status;

/// The caller's identity: `Ok(None)` when it presented no credential, `Err` when the
/// credential it presented is no good (`UNAUTHENTICATED`).
pub fn identify(caller: &Caller<'_>) -> Result<Option<Peer>, Status> {
    match &caller.certificate {
        Some(Ok(peer)) => Ok(Some(peer.clone())),
        Some(Err(e)) => Err(Status::unauthenticated(format!(
            "The client certificate is not usable: {e}"
        ))),
        None => Ok(None),
    }
}
