//! `vm create`'s cloud-init flags, and the request they make: files are read here, on the
//! operator's machine, and their text travels in the request.

use anyhow::Context as _;
use drover_proto::v1 as pb;

#[derive(Debug, Default, clap::Args)]
pub struct CloudInitArgs {
    /// cloud-init user-data (#cloud-config, a #! script, ...) from this file; attaches a
    /// NoCloud seed.
    #[arg(long, value_name = "FILE")]
    user_data: Option<std::path::PathBuf>,
    /// An SSH public key for the image's default user: the key itself, or a file of keys
    /// one per line (repeatable); attaches a NoCloud seed.
    #[arg(long = "ssh-key", value_name = "KEY|FILE")]
    ssh_keys: Vec<String>,
    /// The guest's hostname (default: the VM's name); attaches a NoCloud seed.
    #[arg(long)]
    hostname: Option<String>,
}

impl CloudInitArgs {
    /// The seed's settings, `None` when no flag asks for one.
    pub fn request(self) -> anyhow::Result<Option<pb::CloudInit>> {
        if self.user_data.is_none() && self.ssh_keys.is_empty() && self.hostname.is_none() {
            return Ok(None);
        }
        let user_data = match &self.user_data {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read user-data {}", path.display()))?,
            None => String::new(),
        };
        let mut ssh_keys = Vec::new();
        for arg in self.ssh_keys {
            let path = std::path::Path::new(&arg);
            // A key never names an existing file; a file is read as authorized_keys is.
            if path.is_file() {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read SSH keys {}", path.display()))?;
                ssh_keys.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .map(String::from),
                );
            } else {
                ssh_keys.push(arg.trim().to_string());
            }
        }
        Ok(Some(pb::CloudInit {
            hostname: self.hostname.unwrap_or_default(),
            user_data,
            ssh_keys,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_flag_no_seed() {
        assert_eq!(CloudInitArgs::default().request().unwrap(), None);
    }

    #[test]
    fn keys_come_from_text_or_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        std::fs::write(&file, "# mine\nssh-ed25519 AAAA a@b\n\nssh-rsa BBBB c@d\n").unwrap();
        let args = CloudInitArgs {
            ssh_keys: vec!["ssh-ed25519 CCCC e@f".into(), file.display().to_string()],
            ..Default::default()
        };
        let req = args.request().unwrap().unwrap();
        assert_eq!(
            req.ssh_keys,
            [
                "ssh-ed25519 CCCC e@f",
                "ssh-ed25519 AAAA a@b",
                "ssh-rsa BBBB c@d"
            ]
        );
        assert_eq!(req.hostname, "");
    }

    #[test]
    fn an_unreadable_user_data_file_is_named() {
        let args = CloudInitArgs {
            user_data: Some("/nonexistent/user-data".into()),
            ..Default::default()
        };
        let err = args.request().unwrap_err().to_string();
        assert!(err.contains("/nonexistent/user-data"), "{err}");
    }
}
