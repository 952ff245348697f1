//! `drover certs`: a cluster CA and certificates signed by it, for a dev or small cluster
//! (production may bring its own PKI: drover only needs PEM files and the identity URI).
//!
//! Every certificate is good for both TLS server and client auth, because controllers are
//! both (they serve the API and Raft, and call peers and hostd). What the holder may do
//! comes from its identity, a `drover://` URI SAN (see [`drover_proto::identity`]): a
//! controller, a host, or a user with a role. The common name repeats it for humans
//! (`controller-1`, `host-h1`, `user-alice`), and so do the file names.
//!
//! Private keys are created owner-only (0600) and never over an existing file: the file is
//! opened with `O_CREAT|O_EXCL` and that mode, so there is no moment when another user
//! could read it, and a planted file or symlink is refused rather than written through.

use std::path::{Path, PathBuf};

use drover_proto::identity::Peer;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    Ia5String, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{0} exists already; refusing to overwrite a CA")]
    Exists(PathBuf),
    #[error("No CA in {0} (run `drover certs init` first)")]
    NoCa(PathBuf),
    #[error(transparent)]
    BadIdentity(#[from] drover_proto::identity::IdentityError),
    #[error("{0} exists already; move it away first (drover never overwrites a key)")]
    KeyExists(PathBuf),
    #[error("Cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// Where `drover certs issue` wrote: `<dir>/<stem>.pem` and `<dir>/<stem>-key.pem`.
#[derive(Debug, Clone)]
pub struct Issued {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes a certificate (public: world-readable is fine), replacing an older one.
fn write(path: &Path, contents: &str) -> Result<(), CertsError> {
    std::fs::write(path, contents).map_err(|source| CertsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a private key: a new file, owner-only from its creation (see the module docs).
pub fn write_key(path: &Path, contents: &str) -> Result<(), CertsError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| CertsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => CertsError::KeyExists(path.to_path_buf()),
            _ => io(e),
        })?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

fn read(path: &Path) -> Result<String, CertsError> {
    std::fs::read_to_string(path).map_err(|source| CertsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Creates `ca.pem` and `ca-key.pem` in `dir`.
pub fn init(dir: &Path) -> Result<PathBuf, CertsError> {
    std::fs::create_dir_all(dir).map_err(|source| CertsError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let ca_path = dir.join("ca.pem");
    if ca_path.exists() {
        return Err(CertsError::Exists(ca_path));
    }
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "drover cluster CA");
    params.distinguished_name = dn;
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    write_key(&dir.join("ca-key.pem"), &key.serialize_pem())?;
    write(&ca_path, &cert.pem())?;
    Ok(ca_path)
}

/// The file stem (and common name) of `peer`'s certificate: `controller-1`, `host-h1`,
/// `user-alice`.
pub fn stem(peer: &Peer) -> String {
    match peer {
        Peer::Controller(id) => format!("controller-{id}"),
        Peer::Host(name) => format!("host-{name}"),
        Peer::User { name, .. } => format!("user-{name}"),
    }
}

/// Issues a certificate for `peer`, valid for `sans` (IP addresses or DNS names; always
/// `localhost` and `127.0.0.1` too, for local clusters), naming `peer` in its URI SAN.
pub fn issue(dir: &Path, peer: &Peer, sans: &[String]) -> Result<Issued, CertsError> {
    // Round-trip the URI: a name that would not parse back must not be issued.
    let peer = Peer::from_uri(&peer.uri())?;
    let name = stem(&peer);
    let ca_path = dir.join("ca.pem");
    if !ca_path.exists() {
        return Err(CertsError::NoCa(dir.to_path_buf()));
    }
    let ca_key = KeyPair::from_pem(&read(&dir.join("ca-key.pem"))?)?;
    let ca_cert = CertificateParams::from_ca_cert_pem(&read(&ca_path)?)?.self_signed(&ca_key)?;

    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into()];
    names.extend(sans.iter().cloned());
    names.dedup();
    let mut params = CertificateParams::new(names)?;
    params
        .subject_alt_names
        .push(SanType::URI(Ia5String::try_from(peer.uri())?));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name.as_str());
    params.distinguished_name = dn;
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca_cert, &ca_key)?;
    let issued = Issued {
        ca: ca_path,
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    write_key(&issued.key, &key.serialize_pem())?;
    write(&issued.cert, &cert.pem())?;
    Ok(issued)
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_proto::identity::Role;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn init_then_issue_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let c1 = Peer::Controller(1);
        assert!(matches!(
            issue(dir.path(), &c1, &[]),
            Err(CertsError::NoCa(_))
        ));
        init(dir.path()).unwrap();
        assert!(matches!(init(dir.path()), Err(CertsError::Exists(_))));
        for peer in [
            c1,
            Peer::Host("h1".into()),
            Peer::User {
                name: "alice".into(),
                role: Role::Viewer,
            },
        ] {
            let issued = issue(dir.path(), &peer, &["10.0.0.1".into()]).unwrap();
            let pem = std::fs::read(&issued.cert).unwrap();
            let der = &pem_der(&pem);
            assert_eq!(Peer::from_certificate(der), Ok(peer));
            // The pair loads as a TLS identity.
            drover_proto::transport::Tls::load(&issued.ca, &issued.cert, &issued.key).unwrap();
        }
        assert!(matches!(
            issue(dir.path(), &Peer::Host("a/b".into()), &[]),
            Err(CertsError::BadIdentity(_))
        ));
    }

    #[test]
    fn a_certificate_without_a_drover_uri_has_no_identity() {
        // What a CA-signed certificate from before identities (or a foreign PKI) looks
        // like: DNS names only. Every drover service refuses it.
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(
            Peer::from_certificate(cert.der()),
            Err(drover_proto::identity::IdentityError::Missing)
        );
        let mut two = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        for uri in ["drover://controller/1", "drover://host/h1"] {
            two.subject_alt_names
                .push(SanType::URI(Ia5String::try_from(uri).unwrap()));
        }
        let cert = two.self_signed(&key).unwrap();
        assert_eq!(
            Peer::from_certificate(cert.der()),
            Err(drover_proto::identity::IdentityError::Ambiguous)
        );
    }

    /// The DER bytes of the first PEM block.
    fn pem_der(pem: &[u8]) -> Vec<u8> {
        x509_parser::pem::parse_x509_pem(pem).unwrap().1.contents
    }

    #[test]
    fn keys_are_owner_only_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path()).unwrap();
        assert_eq!(mode(&dir.path().join("ca-key.pem")), 0o600);
        let issued = issue(dir.path(), &Peer::Controller(1), &[]).unwrap();
        assert_eq!(mode(&issued.key), 0o600);
        // Issuing again would replace a key someone may be using: refused, key untouched.
        let before = std::fs::read(&issued.key).unwrap();
        assert!(matches!(
            issue(dir.path(), &Peer::Controller(1), &[]),
            Err(CertsError::KeyExists(_))
        ));
        assert_eq!(std::fs::read(&issued.key).unwrap(), before);
        // A symlink planted where a key will go is not written through.
        let elsewhere = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&elsewhere, dir.path().join("host-h2-key.pem")).unwrap();
        assert!(matches!(
            issue(dir.path(), &Peer::Host("h2".into()), &[]),
            Err(CertsError::KeyExists(_))
        ));
        assert!(!elsewhere.exists(), "the key was written through a symlink");
    }
}
