//! `drover certs`: a cluster CA and certificates signed by it, for a dev or small cluster
//! (production may bring its own PKI: drover only needs PEM files).
//!
//! Every certificate is good for both TLS server and client auth, because controllers are
//! both (they serve the API and Raft, and call peers and hostd). The common name says what
//! the holder is (`controller-1`, `host-h1`, `client-admin`); roles are not enforced yet.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{0} exists already; refusing to overwrite a CA")]
    Exists(PathBuf),
    #[error("No CA in {0} (run `drover certs init` first)")]
    NoCa(PathBuf),
    #[error("Invalid certificate name {0:?}: use letters, digits, '-', '_' and '.'")]
    BadName(String),
    #[error("Cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// Where `drover certs issue NAME` writes: `<dir>/<name>.pem` and `<dir>/<name>-key.pem`.
#[derive(Debug, Clone)]
pub struct Issued {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn write(path: &Path, contents: &str) -> Result<(), CertsError> {
    let io = |source| CertsError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(path, contents).map_err(io)?;
    // Keys are secrets: owner-only.
    if path.to_string_lossy().ends_with("-key.pem") {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    Ok(())
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
    write(&dir.join("ca-key.pem"), &key.serialize_pem())?;
    write(&ca_path, &cert.pem())?;
    Ok(ca_path)
}

/// Issues a certificate for `name`, valid for `sans` (IP addresses or DNS names; always
/// `localhost` and `127.0.0.1` too, for local clusters).
pub fn issue(dir: &Path, name: &str, sans: &[String]) -> Result<Issued, CertsError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(CertsError::BadName(name.to_string()));
    }
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
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
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
    write(&issued.key, &key.serialize_pem())?;
    write(&issued.cert, &cert.pem())?;
    Ok(issued)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_issue() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            issue(dir.path(), "x", &[]),
            Err(CertsError::NoCa(_))
        ));
        init(dir.path()).unwrap();
        assert!(matches!(init(dir.path()), Err(CertsError::Exists(_))));
        let issued = issue(dir.path(), "controller-1", &["10.0.0.1".into()]).unwrap();
        let pem = std::fs::read_to_string(&issued.cert).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(matches!(
            issue(dir.path(), "a/b", &[]),
            Err(CertsError::BadName(_))
        ));
        // The pair loads as a TLS identity.
        drover_proto::transport::Tls::load(&issued.ca, &issued.cert, &issued.key).unwrap();
    }
}
