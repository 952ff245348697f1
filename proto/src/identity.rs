//! Who holds a certificate. Every certificate drover issues names its holder in one URI
//! subject alternative name:
//!
//! - `drover://controller/<id>`: a controller (Raft member `<id>`);
//! - `drover://host/<name>`: the hostd of host `<name>`;
//! - `drover://user/<name>?role=<admin|operator|viewer>`: a person or a script.
//!
//! A URI SAN rather than the subject CN: it is typed (no guessing from a name's prefix),
//! it carries the role with the name, and PKIs that are not drover's can add it alongside
//! their own subject conventions. A certificate with no `drover://` URI, or more than one,
//! has no identity and is refused by every drover service.

use std::fmt;

/// What a user may do; ordered, so a higher role includes every lower one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads only.
    Viewer,
    /// VMs, hosts, drains, migrations, the HA switch, drills; no membership, certificates
    /// or tokens.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| IdentityError::BadRole(s.to_string()))
    }
}

/// The holder of a certificate (or, for users, of a bearer token).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    Controller(u64),
    Host(String),
    User { name: String, role: Role },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("Unknown role {0:?}: use admin, operator or viewer")]
    BadRole(String),
    #[error("Invalid name {0:?}: use letters, digits, '-', '_' and '.'")]
    BadName(String),
    #[error("Not a drover identity URI: {0:?}")]
    BadUri(String),
    #[error("The certificate cannot be parsed: {0}")]
    BadCertificate(String),
    #[error("The certificate names no drover identity (a drover:// URI SAN)")]
    Missing,
    #[error("The certificate names more than one drover identity")]
    Ambiguous,
}

/// Names (of hosts and users) are the characters that need no escaping in a URI path or
/// a file name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name != "."
        && name != ".."
}

const SCHEME: &str = "drover://";

impl Peer {
    /// The URI SAN that names this holder.
    pub fn uri(&self) -> String {
        match self {
            Peer::Controller(id) => format!("{SCHEME}controller/{id}"),
            Peer::Host(name) => format!("{SCHEME}host/{name}"),
            Peer::User { name, role } => format!("{SCHEME}user/{name}?role={role}"),
        }
    }

    /// Parses a `drover://` URI.
    pub fn from_uri(uri: &str) -> Result<Peer, IdentityError> {
        let bad = || IdentityError::BadUri(uri.to_string());
        let rest = uri.strip_prefix(SCHEME).ok_or_else(bad)?;
        let (kind, rest) = rest.split_once('/').ok_or_else(bad)?;
        let (name, query) = match rest.split_once('?') {
            Some((n, q)) => (n, Some(q)),
            None => (rest, None),
        };
        let checked = |name: &str| {
            valid_name(name)
                .then(|| name.to_string())
                .ok_or_else(|| IdentityError::BadName(name.to_string()))
        };
        match (kind, query) {
            ("controller", None) => match name.parse::<u64>() {
                Ok(id) if id > 0 => Ok(Peer::Controller(id)),
                _ => Err(bad()),
            },
            ("host", None) => Ok(Peer::Host(checked(name)?)),
            ("user", Some(query)) => {
                let role = query.strip_prefix("role=").ok_or_else(bad)?;
                Ok(Peer::User {
                    name: checked(name)?,
                    role: role.parse()?,
                })
            }
            _ => Err(bad()),
        }
    }

    /// The identity a DER certificate names (see the module docs).
    pub fn from_certificate(der: &[u8]) -> Result<Peer, IdentityError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        let mut found = None;
        for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
            if let x509_parser::extensions::GeneralName::URI(uri) = name {
                if uri.starts_with(SCHEME) {
                    if found.is_some() {
                        return Err(IdentityError::Ambiguous);
                    }
                    found = Some(Peer::from_uri(uri)?);
                }
            }
        }
        found.ok_or(IdentityError::Missing)
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Controller(id) => write!(f, "controller {id}"),
            Peer::Host(name) => write!(f, "host {name}"),
            Peer::User { name, role } => write!(f, "user {name} ({role})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip() {
        for peer in [
            Peer::Controller(3),
            Peer::Host("h1".into()),
            Peer::User {
                name: "alice".into(),
                role: Role::Operator,
            },
        ] {
            assert_eq!(Peer::from_uri(&peer.uri()), Ok(peer));
        }
    }

    #[test]
    fn bad_uris_are_refused() {
        for uri in [
            "drover://controller/0",
            "drover://controller/x",
            "drover://controller/1?role=admin",
            "drover://host/",
            "drover://host/a/b",
            "drover://user/alice",
            "drover://user/alice?role=root",
            "drover://god/1",
            "https://controller/1",
        ] {
            assert!(Peer::from_uri(uri).is_err(), "{uri} accepted");
        }
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
    }
}
