//! A VM's cloud-init settings, kept in the replicated state: what its NoCloud seed says.
//! hostd renders the seed from them at every start (`hostd::seed`); the instance id comes
//! from the VM's incarnation, so a re-created VM is a new instance to cloud-init and a
//! migrated or restarted one is not.

use serde::{Deserialize, Serialize};

/// Largest user-data accepted: it travels in the Raft log and in every start request.
pub const MAX_USER_DATA_BYTES: usize = 64 * 1024;
/// Most SSH keys per VM.
pub const MAX_SSH_KEYS: usize = 32;
/// Longest SSH public key line accepted (an RSA 16384-bit key is ~2.8 KiB).
pub const MAX_SSH_KEY_LEN: usize = 8 * 1024;

/// First lines cloud-init acts on; user-data starting otherwise would be ignored by the
/// guest, silently, so it is refused here instead.
const USER_DATA_HEADERS: &[&str] = &[
    "#cloud-config",
    "#!",
    "#include",
    "#cloud-boothook",
    "#part-handler",
    "## template: jinja",
    "Content-Type:",
];

/// Key types OpenSSH accepts in `authorized_keys`, by prefix.
const SSH_KEY_PREFIXES: &[&str] = &["ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-sha2-"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudInit {
    /// The guest's hostname (`local-hostname`).
    pub hostname: String,
    /// The operator's user-data, as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// Public keys for the default user (`public-keys` in the meta-data).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_keys: Vec<String>,
}

/// Why cloud-init settings are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CloudInitError {
    #[error("hostname {hostname:?}: {reason}")]
    Hostname { hostname: String, reason: String },
    #[error("user-data is {len} bytes; at most {MAX_USER_DATA_BYTES} are accepted")]
    UserDataTooLarge { len: usize },
    #[error(
        "user-data starts with {first_line:?}; cloud-init only acts on user-data that starts \
         with #cloud-config, #!, #include, #cloud-boothook, #part-handler or a MIME header"
    )]
    UserDataHeader { first_line: String },
    #[error("{count} SSH keys; at most {MAX_SSH_KEYS} are accepted")]
    TooManyKeys { count: usize },
    #[error("SSH key {index}: {reason}")]
    SshKey { index: usize, reason: String },
    #[error("cloud-init needs a disk: its seed is a volume in the boot disk's pool")]
    NoDisk,
}

impl CloudInit {
    pub fn validate(&self) -> Result<(), CloudInitError> {
        validate_hostname(&self.hostname).map_err(|reason| CloudInitError::Hostname {
            hostname: self.hostname.clone(),
            reason,
        })?;
        if let Some(data) = &self.user_data {
            if data.len() > MAX_USER_DATA_BYTES {
                return Err(CloudInitError::UserDataTooLarge { len: data.len() });
            }
            let first_line = data.lines().next().unwrap_or_default();
            if !USER_DATA_HEADERS.iter().any(|h| first_line.starts_with(h)) {
                return Err(CloudInitError::UserDataHeader {
                    first_line: first_line.chars().take(40).collect(),
                });
            }
        }
        if self.ssh_keys.len() > MAX_SSH_KEYS {
            return Err(CloudInitError::TooManyKeys {
                count: self.ssh_keys.len(),
            });
        }
        for (index, key) in self.ssh_keys.iter().enumerate() {
            validate_ssh_key(key).map_err(|reason| CloudInitError::SshKey { index, reason })?;
        }
        Ok(())
    }
}

/// What cloud-init knows the VM by: changes when the VM is re-created under the same name
/// (a new incarnation), never when it moves.
pub fn instance_id(vm: &str, uid: u64) -> String {
    format!("{vm}-{uid}")
}

/// The seed's volume, in the boot disk's pool.
pub fn seed_volume_name(vm: &str, uid: u64) -> String {
    format!("{vm}-{uid}-cidata.iso")
}

/// A DNS hostname: dot-separated labels of 1–63 letters, digits and hyphens, not starting
/// or ending with a hyphen, 253 characters at most.
pub fn validate_hostname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > 253 {
        return Err("is longer than 253 characters".into());
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each dot-separated part must be 1 to 63 characters".into());
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(format!("contains {bad:?}; allowed are A-Z a-z 0-9 - ."));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a part may not start or end with '-'".into());
        }
    }
    Ok(())
}

fn validate_ssh_key(key: &str) -> Result<(), String> {
    if key.len() > MAX_SSH_KEY_LEN {
        return Err(format!("longer than {MAX_SSH_KEY_LEN} characters"));
    }
    if key.contains(['\n', '\r']) {
        return Err("one key per line: it contains a line break".into());
    }
    let mut fields = key.split_whitespace();
    let kind = fields.next().unwrap_or_default();
    if !SSH_KEY_PREFIXES.iter().any(|p| kind.starts_with(p)) {
        return Err(format!(
            "{:?} is not an OpenSSH public key type (ssh-ed25519, ssh-rsa, ecdsa-sha2-…)",
            kind.chars().take(20).collect::<String>()
        ));
    }
    if fields.next().is_none() {
        return Err("the key's base64 body is missing".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> CloudInit {
        CloudInit {
            hostname: "web-1.example".into(),
            user_data: Some("#cloud-config\nruncmd: [true]\n".into()),
            ssh_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA user@host".into()],
        }
    }

    #[test]
    fn accepts_a_usual_configuration() {
        assert_eq!(valid().validate(), Ok(()));
        let script = CloudInit {
            user_data: Some("#!/bin/sh\necho hi\n".into()),
            ..valid()
        };
        assert_eq!(script.validate(), Ok(()));
    }

    #[test]
    fn refuses_bad_hostnames() {
        for bad in ["", "-web", "web-", "we_b", "a..b", &"x".repeat(64)] {
            let c = CloudInit {
                hostname: bad.into(),
                ..valid()
            };
            assert!(
                matches!(c.validate(), Err(CloudInitError::Hostname { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn refuses_user_data_cloud_init_would_ignore() {
        let c = CloudInit {
            user_data: Some("runcmd: [true]\n".into()),
            ..valid()
        };
        assert_eq!(
            c.validate(),
            Err(CloudInitError::UserDataHeader {
                first_line: "runcmd: [true]".into()
            })
        );
        let big = CloudInit {
            user_data: Some(format!(
                "#cloud-config\n{}",
                "#".repeat(MAX_USER_DATA_BYTES)
            )),
            ..valid()
        };
        assert!(matches!(
            big.validate(),
            Err(CloudInitError::UserDataTooLarge { .. })
        ));
    }

    #[test]
    fn refuses_bad_keys() {
        for bad in [
            "not-a-key AAAA",
            "ssh-ed25519",
            "ssh-ed25519 AAAA\nssh-rsa BBBB",
        ] {
            let c = CloudInit {
                ssh_keys: vec![bad.into()],
                ..valid()
            };
            assert!(
                matches!(c.validate(), Err(CloudInitError::SshKey { index: 0, .. })),
                "{bad:?}"
            );
        }
        let many = CloudInit {
            ssh_keys: vec![valid().ssh_keys[0].clone(); MAX_SSH_KEYS + 1],
            ..valid()
        };
        assert!(matches!(
            many.validate(),
            Err(CloudInitError::TooManyKeys { .. })
        ));
    }

    #[test]
    fn the_instance_id_follows_the_incarnation() {
        assert_ne!(instance_id("web", 1), instance_id("web", 2));
        assert_eq!(instance_id("web", 7), instance_id("web", 7));
    }
}
