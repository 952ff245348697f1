//! `apply` for bearer tokens: create (checked, with the writer's times) and revoke. Kept
//! apart from `apply.rs`, which calls in here from one arm per command.

use drover_proto::identity::{valid_name, Role};

use crate::command::{ApplyError, ApplyResult, Reply};
use crate::model::{ClusterState, Token, MAX_TOKENS};

fn hex_of_len(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl ClusterState {
    pub(crate) fn create_token(&mut self, token: &Token) -> ApplyResult {
        let invalid = |why: &str| Err(ApplyError::InvalidToken(why.to_string()));
        if !hex_of_len(&token.id, 16) {
            return invalid("the id must be 16 lowercase hex digits");
        }
        if !hex_of_len(&token.hash, 64) {
            return invalid("the hash must be a SHA-256, 64 lowercase hex digits");
        }
        if !valid_name(&token.user) {
            return invalid("the user name must be letters, digits, '-', '_' and '.'");
        }
        if token.role.parse::<Role>().is_err() {
            return invalid("the role must be admin, operator or viewer");
        }
        if token.expires_ms <= token.created_ms {
            return invalid("it must expire after it is created");
        }
        if self.tokens.contains_key(&token.id) {
            return Err(ApplyError::TokenExists(token.id.clone()));
        }
        // Tokens expired by the new one's creation time are worthless: drop them.
        let live = self
            .tokens
            .values()
            .filter(|t| t.expires_ms > token.created_ms)
            .count();
        if live >= MAX_TOKENS {
            return Err(ApplyError::TooManyTokens(MAX_TOKENS));
        }
        self.tokens.retain(|_, t| t.expires_ms > token.created_ms);
        self.tokens.insert(token.id.clone(), token.clone());
        Ok(Reply::Token(token.clone()))
    }

    pub(crate) fn revoke_token(&mut self, id: &str) -> ApplyResult {
        self.tokens
            .remove(id)
            .map(Reply::Token)
            .ok_or_else(|| ApplyError::UnknownToken(id.to_string()))
    }
}
