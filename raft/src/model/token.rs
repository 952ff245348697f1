//! Bearer tokens for users: what the replicated state keeps of each one. The secret itself
//! is never stored, only its SHA-256: a token is 32 random bytes, far beyond guessing, so
//! a fast hash is enough (a slow KDF exists to protect guessable passwords) and a leaked
//! state or backup gives nobody a usable token.

use serde::{Deserialize, Serialize};

/// Most tokens the cluster keeps; expired ones are dropped whenever one is created.
pub const MAX_TOKENS: usize = 1000;

/// One bearer token, as the state machine stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// Public id (16 hex digits), also the token's prefix: how it is listed, revoked and
    /// looked up.
    pub id: String,
    /// SHA-256 of the whole token string, 64 hex digits.
    pub hash: String,
    /// The user the token acts as.
    pub user: String,
    /// `admin`, `operator` or `viewer`.
    pub role: String,
    /// When it was created and when it stops working, Unix milliseconds (the writer's
    /// clock; `apply` reads none, the API checks expiry with its own clock at each call).
    pub created_ms: u64,
    pub expires_ms: u64,
}
