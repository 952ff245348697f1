//! How drover processes reach each other: every gRPC hop (controller↔controller,
//! client→controller, controller→hostd) is built here, in plain HTTP/2 or with mutual TLS
//! (rustls, ring) when a [`Tls`] identity is configured. One place, so no hop can forget
//! to authenticate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// A process's TLS identity and the cluster CA it trusts. Peers must present a
/// certificate signed by that CA; anything else is refused during the handshake. A client
/// that authenticates with a bearer token instead has only the CA ([`Tls::ca_only`]).
#[derive(Clone)]
pub struct Tls {
    ca: Certificate,
    identity: Option<Identity>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("Cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--ca, --cert and --key go together; missing {0}")]
    Incomplete(&'static str),
}

/// The shared handle processes pass around; `None` means plaintext.
pub type TlsHandle = Option<Arc<Tls>>;

impl Tls {
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Self {
        Self {
            ca: Certificate::from_pem(ca),
            identity: Some(Identity::from_pem(cert, key)),
        }
    }

    /// A client that checks the server against the CA and presents no certificate of its
    /// own (it sends a bearer token).
    pub fn ca_only(ca: &Path) -> Result<Self, TlsError> {
        let pem = std::fs::read(ca).map_err(|source| TlsError::Read {
            path: ca.to_path_buf(),
            source,
        })?;
        Ok(Self {
            ca: Certificate::from_pem(pem),
            identity: None,
        })
    }

    /// Reads the CA certificate, the certificate and its key (PEM files).
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| TlsError::Read {
                path: p.to_path_buf(),
                source,
            })
        };
        Ok(Self::from_pem(&read(ca)?, &read(cert)?, &read(key)?))
    }

    /// From optional `--ca/--cert/--key` flags: all three, or none (plaintext).
    pub fn from_flags(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<TlsHandle, TlsError> {
        match (ca, cert, key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(Arc::new(Self::load(ca, cert, key)?))),
            (None, _, _) => Err(TlsError::Incomplete("--ca")),
            (_, None, _) => Err(TlsError::Incomplete("--cert")),
            (_, _, None) => Err(TlsError::Incomplete("--key")),
        }
    }

    /// Server side: present our certificate, require one from every client (the
    /// controllers relax that for token clients and check every call instead).
    pub fn server_config(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new().client_ca_root(self.ca.clone());
        // Only clients are ever CA-only (`from_flags` needs all three); tonic refuses to
        // serve TLS without an identity should one reach a server.
        match &self.identity {
            Some(identity) => config.identity(identity.clone()),
            None => config,
        }
    }

    fn client_config(&self, host: &str) -> ClientTlsConfig {
        let config = ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .domain_name(host.to_string());
        match &self.identity {
            Some(identity) => config.identity(identity.clone()),
            None => config,
        }
    }
}

/// Why a server refuses to serve plaintext.
#[derive(Debug, thiserror::Error)]
pub enum PlaintextError {
    #[error(
        "No TLS material (--ca, --cert, --key): refusing to serve without authentication. \
         Pass --insecure to serve plaintext anyway (anyone who can connect can do anything)"
    )]
    NotAsked,
    #[error("--insecure contradicts --ca/--cert/--key: give one or the other")]
    Contradiction,
    #[error(
        "--insecure on {0}, which is not a loopback address: anyone on that network could \
         take over the cluster. Add --allow-insecure-non-loopback if you really mean it"
    )]
    NonLoopback(std::net::SocketAddr),
}

/// How a server may listen: with TLS, or in plaintext only when asked for (`insecure`),
/// and on a non-loopback address only when asked for twice (`non_loopback`). `listen` is
/// the address actually bound.
pub fn check_plaintext(
    tls: bool,
    insecure: bool,
    non_loopback: bool,
    listen: std::net::SocketAddr,
) -> Result<(), PlaintextError> {
    match (tls, insecure) {
        (true, false) => Ok(()),
        (true, true) => Err(PlaintextError::Contradiction),
        (false, false) => Err(PlaintextError::NotAsked),
        (false, true) if !listen.ip().is_loopback() && !non_loopback => {
            Err(PlaintextError::NonLoopback(listen))
        }
        (false, true) => Ok(()),
    }
}

/// The log line every plaintext server starts with.
pub const PLAINTEXT_WARNING: &str =
    "INSECURE: serving plaintext (--insecure): no TLS, no authentication, every caller may do everything";

/// The source address every outgoing connection of this process binds to, if set.
static SOURCE_ADDRESS: std::sync::OnceLock<std::net::IpAddr> = std::sync::OnceLock::new();

/// Makes every endpoint built afterwards connect from `ip` (`drover server
/// --source-address`): the node's network identity, so that firewalls — and the partition
/// tests — can tell its traffic apart. Process-wide like the node's identity itself; the
/// first call wins.
pub fn set_source_address(ip: std::net::IpAddr) -> Result<(), std::net::IpAddr> {
    SOURCE_ADDRESS.set(ip)
}

/// An endpoint for `addr` (`host:port`): `https` with mTLS when `tls` is set, from the
/// process's source address when one is set.
pub fn endpoint(addr: &str, tls: Option<&Tls>) -> Result<Endpoint, tonic::transport::Error> {
    let addr = addr
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .local_address(SOURCE_ADDRESS.get().copied());
    match tls {
        None => Ok(endpoint),
        Some(tls) => {
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            endpoint.tls_config(tls.client_config(host))
        }
    }
}
