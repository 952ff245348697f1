//! `drover token create|list|revoke`.

use std::time::Duration;

use drover_proto::v1 as pb;
use serde_json::json;

use super::commands::{client, json, read, Printed, Target};
use super::output::{table, utc, Format};
use super::{ReadOpts, TokenCmd};

/// Parses a ttl such as `90s`, `30m`, `24h` or `7d` (`ms` too, for tests).
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} needs a unit: ms, s, m, h or d"))?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{text:?} is not a number and a unit"))?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (ms, s, m, h or d)"
            ))
        }
    };
    match n.checked_mul(unit_ms) {
        Some(0) | None => Err(format!("{text:?} is not a usable ttl")),
        Some(ms) => Ok(Duration::from_millis(ms)),
    }
}

fn info_json(t: &pb::TokenInfo) -> serde_json::Value {
    json!({
        "id": t.id,
        "user": t.user,
        "role": t.role,
        "created_ms": t.created_ms,
        "expires_ms": t.expires_ms,
    })
}

/// Runs a `drover token …` command.
pub async fn token(target: &Target, format: Format, cmd: TokenCmd) -> anyhow::Result<Printed> {
    let c = client(target)?;
    match cmd {
        TokenCmd::Create { user, role, ttl } => {
            let created = c
                .create_token(pb::CreateTokenRequest {
                    user,
                    role,
                    ttl_ms: ttl.as_millis() as u64,
                })
                .await?;
            let info = created.info.unwrap_or_default();
            Ok(match format {
                Format::Json => {
                    let mut v = info_json(&info);
                    v["token"] = json!(created.secret);
                    json(&v)?
                }
                // The token on the last line, alone, so scripts can take it with `tail -1`.
                Format::Table => format!(
                    "token {} for {} ({}), expires {} UTC\n\
                     shown once, never again: keep it now (drover --token, or DROVER_TOKEN)\n{}",
                    info.id,
                    info.user,
                    info.role,
                    utc(info.expires_ms),
                    created.secret
                ),
            }
            .into())
        }
        TokenCmd::List {
            read: ReadOpts { stale },
        } => read(c.tokens(stale).await?, stale, |tokens| {
            Ok(match format {
                Format::Json => json(&tokens.iter().map(info_json).collect())?,
                Format::Table => table(
                    &["ID", "USER", "ROLE", "CREATED", "EXPIRES"],
                    tokens
                        .iter()
                        .map(|t| {
                            vec![
                                t.id.clone(),
                                t.user.clone(),
                                t.role.clone(),
                                utc(t.created_ms),
                                utc(t.expires_ms),
                            ]
                        })
                        .collect(),
                ),
            })
        }),
        TokenCmd::Revoke { id } => {
            let t = c.revoke_token(&id).await?;
            Ok(match format {
                Format::Json => json(&info_json(&t))?,
                Format::Table => format!("revoked token {} of {}", t.id, t.user),
            }
            .into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse() {
        assert_eq!(parse_ttl("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("5ms"), Ok(Duration::from_millis(5)));
        for bad in ["", "24", "h", "0s", "3w", "-1h"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
