//! Identities and roles on every hop, against a real cluster with mutual TLS: hostd serves
//! controllers only, Raft RPCs accept controllers only, a host's certificate calls nothing
//! on the controllers (a host needs nothing from them: controllers call hosts), and every
//! RPC of the access table answers every kind of caller as the table says.

use std::time::Duration;

use drover_chaos_tests::cluster::TlsFiles;
use drover_chaos_tests::raw::call_empty;
use drover_chaos_tests::{wait_until, Cluster, ClusterSpec};
use drover_control::auth::roles::{every_rpc, need, Need};
use drover_proto::identity::Role;
use drover_proto::transport::{endpoint, Tls};
use tonic::transport::Channel;
use tonic::Code;

async fn channel(addr: &str, tls: &TlsFiles) -> anyhow::Result<Channel> {
    Ok(endpoint(addr, Some(&tls.load()?))?.connect().await?)
}

/// The code `path` answers `tls` with at `addr` (`Ok` when it served the call).
async fn answer(addr: &str, tls: &TlsFiles, path: &str) -> anyhow::Result<Code> {
    Ok(
        match call_empty(channel(addr, tls).await?, path, &[]).await {
            Ok(()) => Code::Ok,
            Err(status) => {
                eprintln!("{path}: {:?} {}", status.code(), status.message());
                status.code()
            }
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hop_serves_only_its_callers() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterSpec {
        controllers: 1,
        hosts: 1,
        tls: true,
        ..Default::default()
    })
    .await?;
    let controller = cluster.identity("controller-1").await?.expect("tls");
    let host = cluster.identity("host-h1").await?.expect("tls");
    let admin = cluster.admin().await?.expect("tls");
    let hostd = cluster.agents[0].addr.clone();
    let api = cluster.controllers[0].addr.clone();

    eprintln!("phase: hostd serves a controller, and refuses a host and an admin user");
    let list = "/drover.agent.v1.HostAgent/ListDomains";
    let session = "/drover.agent.v1.HostAgent/Session";
    assert_eq!(answer(&hostd, &controller, list).await?, Code::Ok);
    for who in [&host, &admin] {
        assert_eq!(answer(&hostd, who, list).await?, Code::PermissionDenied);
        // A session is where lease grants and the fencing term come from.
        assert_eq!(answer(&hostd, who, session).await?, Code::PermissionDenied);
    }

    eprintln!("phase: Raft RPCs pass a controller, and refuse a host and an admin user");
    for rpc in ["Vote", "AppendEntries", "ForwardWrite", "HoldElections"] {
        let path = format!("/drover.raft.v1.RaftService/{rpc}");
        // The empty payload is malformed: the call got past the gate to the handler.
        assert_eq!(
            answer(&api, &controller, &path).await?,
            Code::InvalidArgument
        );
        for who in [&host, &admin] {
            assert_eq!(answer(&api, who, &path).await?, Code::PermissionDenied);
        }
    }

    eprintln!("phase: a host's certificate calls nothing on the controllers");
    for path in [
        "/drover.v1.VmService/ListVms",
        "/drover.v1.ClusterService/Status",
        "/drover.v1.HostService/AddHost",
    ] {
        assert_eq!(answer(&api, &host, path).await?, Code::PermissionDenied);
    }
    assert_eq!(
        answer(&api, &admin, "/drover.v1.VmService/ListVms").await?,
        Code::Ok
    );
    Ok(())
}

/// A kind of caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Controller,
    Host,
    /// A user certificate with this role.
    Cert(Role),
    /// A user's bearer token with this role (CA-only TLS, no certificate).
    Token(Role),
    /// CA-only TLS and no token.
    Nobody,
    ExpiredToken,
    RevokedToken,
}

/// What the gate should do with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Past the gate: the handler answers (whatever it answers to an empty request).
    Served,
    Denied,
    Unauthenticated,
}

/// The table, read for one caller (written out again here, plainly, so that the server's
/// own `check` is what is under test).
fn expect(who: Who, need: Need) -> Expect {
    let user = |role: Role| match need {
        Need::Anyone => Expect::Served,
        Need::User(least) | Need::UserOrController(least) if role >= least => Expect::Served,
        _ => Expect::Denied,
    };
    match who {
        Who::ExpiredToken | Who::RevokedToken => Expect::Unauthenticated,
        Who::Nobody if need == Need::Anyone => Expect::Served,
        Who::Nobody => Expect::Unauthenticated,
        Who::Controller => match need {
            Need::Anyone | Need::Controller | Need::UserOrController(_) => Expect::Served,
            Need::User(_) => Expect::Denied,
        },
        Who::Host if need == Need::Anyone => Expect::Served,
        Who::Host => Expect::Denied,
        Who::Cert(role) | Who::Token(role) => user(role),
    }
}

/// `drover token create … -o json` as the admin; returns (id, secret, expires_ms).
async fn create_token(
    cluster: &Cluster,
    user: &str,
    role: &str,
    ttl: &str,
) -> anyhow::Result<(String, String, u64)> {
    let created = cluster
        .cli_json(&[
            "token", "create", "--user", user, "--role", role, "--ttl", ttl,
        ])
        .await
        .map_err(anyhow::Error::msg)?;
    Ok((
        created["id"].as_str().unwrap_or_default().to_string(),
        created["token"].as_str().unwrap_or_default().to_string(),
        created["expires_ms"].as_u64().unwrap_or_default(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_every_caller_as_the_table_says() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterSpec {
        controllers: 1,
        hosts: 0,
        tls: true,
        ..Default::default()
    })
    .await?;
    let api = cluster.controllers[0].addr.clone();
    let admin = cluster.admin().await?.expect("tls");

    eprintln!("phase: tokens: a live operator's, an expired one, a revoked one");
    let (_, operator_token, _) = create_token(&cluster, "tok-op", "operator", "1h").await?;
    let (revoked_id, revoked, _) = create_token(&cluster, "gone", "admin", "1h").await?;
    let out = cluster.cli(&["token", "revoke", &revoked_id]).await?;
    assert!(out.success, "{}", out.stderr);
    // Last: creating a token drops the expired ones, and this one must stay (expired, not
    // unknown) so that the API's own expiry check is what refuses it.
    let (_, expired, expires_ms) = create_token(&cluster, "late", "admin", "1ms").await?;
    let listed = cluster.cli(&["token", "list", "-o", "table"]).await?;
    assert!(listed.stdout.contains("tok-op"), "{}", listed.stdout);
    for secret in [&operator_token, &expired, &revoked] {
        assert!(
            !listed.stdout.contains(secret.as_str()),
            "a secret was listed"
        );
    }

    let ca_only = Tls::ca_only(&admin.ca)?;
    let channel_for = |who: Who| {
        let cluster = &cluster;
        let api = api.clone();
        let ca_only = ca_only.clone();
        async move {
            let files = match who {
                Who::Controller => cluster.identity("controller-1").await?,
                Who::Host => cluster.identity("host-h1").await?,
                Who::Cert(role) => cluster.user(&format!("cert-{role}"), role.as_str()).await?,
                _ => None,
            };
            let tls = match files {
                Some(f) => f.load()?,
                None => ca_only,
            };
            anyhow::Ok(endpoint(&api, Some(&tls))?.connect().await?)
        }
    };
    let bearer = |who: Who| -> Vec<(&'static str, String)> {
        let token = match who {
            Who::Token(_) => &operator_token,
            Who::ExpiredToken => &expired,
            Who::RevokedToken => &revoked,
            _ => return Vec::new(),
        };
        vec![("authorization", format!("Bearer {token}"))]
    };
    // The expired token's ttl was 1 ms: wait (on the clock, not a sleep) until it is past.
    wait_until(
        "the short token to expire",
        Duration::from_secs(5),
        || async {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|e| e.to_string())?
                .as_millis() as u64;
            Ok((now > expires_ms).then_some(()))
        },
    )
    .await?;

    let callers = [
        Who::Controller,
        Who::Host,
        Who::Cert(Role::Admin),
        Who::Cert(Role::Operator),
        Who::Cert(Role::Viewer),
        Who::Token(Role::Operator),
        Who::Nobody,
        Who::ExpiredToken,
        Who::RevokedToken,
    ];
    let rpcs = every_rpc();
    let mut wrong = Vec::new();
    for who in callers {
        eprintln!("phase: every RPC as {who:?}");
        let channel = channel_for(who).await?;
        let metadata = bearer(who);
        for path in &rpcs {
            let need = need(path).expect("every RPC is in the table");
            let want = expect(who, need);
            let answer = call_empty(channel.clone(), path, &metadata).await;
            let got = match &answer {
                Err(s) if s.code() == Code::PermissionDenied => Expect::Denied,
                Err(s) if s.code() == Code::Unauthenticated => Expect::Unauthenticated,
                _ => Expect::Served,
            };
            if got != want {
                wrong.push(format!("{who:?} {path}: want {want:?}, got {answer:?}"));
            }
            // A refusal names what the call needs.
            if let (Expect::Denied, Err(s), Need::User(role)) = (got, &answer, need) {
                let needed = format!("role {role}");
                if !s.message().contains(&needed) {
                    wrong.push(format!(
                        "{who:?} {path}: {:?} does not say {needed}",
                        s.message()
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    eprintln!("phase: the CLI with a token and only the CA");
    let ca = admin.ca.display().to_string();
    let with_token = |args: &[&str]| {
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.extend(["--endpoints".into(), api.clone(), "--ca".into(), ca.clone()]);
        args.extend([
            "--token".into(),
            operator_token.clone(),
            "--timeout".into(),
            "5".into(),
        ]);
        args
    };
    let vms = cluster
        .drover(
            &with_token(&["vm", "list"])
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .await?;
    assert!(
        vms.success,
        "an operator's token cannot list VMs: {}",
        vms.stderr
    );
    let tokens = cluster
        .drover(
            &with_token(&["token", "list"])
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .await?;
    assert!(!tokens.success, "an operator listed tokens");
    assert!(
        tokens.stderr.contains("permission denied") && tokens.stderr.contains("role admin"),
        "{}",
        tokens.stderr
    );
    Ok(())
}
