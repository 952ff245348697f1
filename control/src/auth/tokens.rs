//! Users' bearer tokens: making one, and checking one a caller presents.
//!
//! A token reads `drover_<id>_<secret>`: a 16-hex-digit public id (to list, revoke and look
//! it up) and 32 random bytes in hex. The cluster stores only the SHA-256 of the whole
//! string (see [`drover_raft::model::Token`] for why a fast hash is right here). Expiry
//! is checked here, with this controller's clock, at every call.

use std::collections::BTreeMap;

use drover_proto::identity::{Peer, Role};
use drover_raft::model::Token;
use ring::rand::SecureRandom as _;
use tonic::Status;

const PREFIX: &str = "drover_";

/// A freshly made token: the secret to show once, and what the cluster keeps.
#[derive(Debug)]
pub struct NewToken {
    pub id: String,
    pub secret: String,
    pub hash: String,
}

#[derive(Debug, thiserror::Error)]
#[error("The system's random number generator failed")]
pub struct RandomError;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `token`, in hex.
pub fn hash(token: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

/// Makes a new token from the system's random number generator.
pub fn generate() -> Result<NewToken, RandomError> {
    let rng = ring::rand::SystemRandom::new();
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rng.fill(&mut id).map_err(|_| RandomError)?;
    rng.fill(&mut secret).map_err(|_| RandomError)?;
    let id = hex(&id);
    let secret = format!("{PREFIX}{id}_{}", hex(&secret));
    Ok(NewToken {
        hash: hash(&secret),
        id,
        secret,
    })
}

/// Equal without an early exit, so the time a comparison takes says nothing about how
/// much of a guessed hash was right.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The user a bearer token stands for, at `now_ms`; `UNAUTHENTICATED` when it is
/// malformed, unknown (or revoked: revoked tokens are forgotten) or expired.
pub fn verify(token: &str, tokens: &BTreeMap<String, Token>, now_ms: u64) -> Result<Peer, Status> {
    let id = token
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split_once('_'))
        .map(|(id, _)| id)
        .ok_or_else(|| Status::unauthenticated("Malformed bearer token"))?;
    let unknown = || Status::unauthenticated(format!("Unknown or revoked token {id}"));
    let stored = tokens.get(id).ok_or_else(unknown)?;
    if !same(&stored.hash, &hash(token)) {
        return Err(unknown());
    }
    if now_ms >= stored.expires_ms {
        return Err(Status::unauthenticated(format!(
            "Token {id} has expired: ask an admin for a new one"
        )));
    }
    let role: Role = stored
        .role
        .parse()
        .map_err(|_| Status::unauthenticated(format!("Token {id} has no valid role")))?;
    Ok(Peer::User {
        name: stored.user.clone(),
        role,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(new: &NewToken, expires_ms: u64) -> BTreeMap<String, Token> {
        let token = Token {
            id: new.id.clone(),
            hash: new.hash.clone(),
            user: "bob".into(),
            role: "viewer".into(),
            created_ms: 0,
            expires_ms,
        };
        [(new.id.clone(), token)].into()
    }

    #[test]
    fn a_token_verifies_until_it_expires() {
        let new = generate().unwrap();
        assert!(new.secret.starts_with(&format!("drover_{}_", new.id)));
        let tokens = stored(&new, 1000);
        let bob = Peer::User {
            name: "bob".into(),
            role: Role::Viewer,
        };
        assert_eq!(verify(&new.secret, &tokens, 999).unwrap(), bob);
        let expired = verify(&new.secret, &tokens, 1000).unwrap_err();
        assert!(expired.message().contains("expired"), "{expired:?}");
        // Another secret under the same id, and an unknown id, are refused alike.
        let forged = format!("drover_{}_{}", new.id, "0".repeat(64));
        for bad in [forged.as_str(), "drover_0000000000000000_00", "nonsense"] {
            let e = verify(bad, &tokens, 0).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
        }
        assert_ne!(generate().unwrap().secret, new.secret);
    }
}
