//! `apply` for users' bearer tokens: what a create must carry, revocation, and the
//! dropping of expired tokens — all from the times in the commands, never a clock.

use drover_raft::model::{ClusterState, Token};
use drover_raft::{ApplyError, Command, Reply};

fn token(id: &str, created_ms: u64, expires_ms: u64) -> Token {
    Token {
        id: id.into(),
        hash: "0f".repeat(32),
        user: "alice".into(),
        role: "viewer".into(),
        created_ms,
        expires_ms,
    }
}

fn create(s: &mut ClusterState, t: Token) -> Result<Reply, ApplyError> {
    let (result, _) = s.apply(&Command::CreateToken { token: t });
    result
}

#[test]
fn create_checks_what_it_stores() {
    let mut s = ClusterState::default();
    let good = token("0123456789abcdef", 10, 20);
    assert_eq!(create(&mut s, good.clone()), Ok(Reply::Token(good.clone())));
    assert_eq!(
        create(&mut s, good.clone()),
        Err(ApplyError::TokenExists(good.id.clone()))
    );
    let bad = [
        Token {
            id: "short".into(),
            ..good.clone()
        },
        Token {
            id: "0123456789ABCDEF".into(),
            ..good.clone()
        },
        Token {
            hash: "secret".into(),
            ..good.clone()
        },
        Token {
            user: "a b".into(),
            ..good.clone()
        },
        Token {
            role: "root".into(),
            ..good.clone()
        },
        Token {
            expires_ms: 10,
            ..good.clone()
        },
    ];
    for (i, t) in bad.into_iter().enumerate() {
        // A fresh id each (but for the two bad ids), so only the bad field is wrong.
        let t = if i < 2 {
            t
        } else {
            Token {
                id: format!("{i:016x}"),
                ..t
            }
        };
        assert!(
            matches!(create(&mut s, t.clone()), Err(ApplyError::InvalidToken(_))),
            "{t:?} accepted"
        );
    }
    assert_eq!(s.tokens.len(), 1);
}

#[test]
fn revoke_forgets_and_create_drops_the_expired() {
    let mut s = ClusterState::default();
    create(&mut s, token("000000000000000a", 0, 100)).unwrap();
    create(&mut s, token("000000000000000b", 0, 1_000)).unwrap();
    let (revoked, _) = s.apply(&Command::RevokeToken {
        id: "000000000000000b".into(),
    });
    assert!(matches!(revoked, Ok(Reply::Token(t)) if t.id == "000000000000000b"));
    let (again, _) = s.apply(&Command::RevokeToken {
        id: "000000000000000b".into(),
    });
    assert_eq!(
        again,
        Err(ApplyError::UnknownToken("000000000000000b".into()))
    );
    // Created at 100, `a` has expired: it goes.
    create(&mut s, token("000000000000000c", 100, 200)).unwrap();
    assert_eq!(s.tokens.keys().collect::<Vec<_>>(), ["000000000000000c"]);
}
