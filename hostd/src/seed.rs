//! cloud-init NoCloud seeds: the `meta-data` and `user-data` files a VM's settings make
//! (pure, tested), and the ISO9660 image labelled `cidata` that carries them, written by
//! Debian's `genisoimage`. hostd keeps the image as a volume in the boot disk's pool (see
//! `hypervisor::libvirt_pool::ensure_seed`), so it sits at the same path on every host
//! that sees the pool.

use std::process::Command;

use crate::error::HostdError;

/// What a seed says; the cluster decides every field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// Its volume in the boot disk's pool.
    pub volume: String,
    pub instance_id: String,
    pub hostname: String,
    /// Empty: a minimal `#cloud-config`.
    pub user_data: String,
    pub ssh_keys: Vec<String>,
    /// The `network-config` file (cloud-init network config v2, from the VM's NICs);
    /// `None`: no file, the guest's own defaults.
    pub network_config: Option<String>,
}

impl Seed {
    /// The `meta-data` file. JSON is YAML that cloud-init reads, and serde quotes every
    /// string: a hostname or key can never inject a key of its own.
    pub fn meta_data(&self) -> String {
        let mut meta = serde_json::json!({
            "instance-id": self.instance_id,
            "local-hostname": self.hostname,
        });
        if !self.ssh_keys.is_empty() {
            meta["public-keys"] = serde_json::json!(self.ssh_keys);
        }
        format!("{meta}\n")
    }

    /// The `user-data` file: the operator's, or an empty cloud-config (cloud-init wants
    /// the file to exist).
    pub fn user_data(&self) -> String {
        if self.user_data.is_empty() {
            "#cloud-config\n{}\n".into()
        } else {
            self.user_data.clone()
        }
    }

    /// The seed image's bytes. Runs `genisoimage` (blocking: call from `spawn_blocking`).
    pub fn build_iso(&self) -> Result<Vec<u8>, HostdError> {
        let dir = tempfile::tempdir().map_err(|e| HostdError::Seed(format!("temp dir: {e}")))?;
        let files = dir.path().join("files");
        std::fs::create_dir(&files).map_err(|e| HostdError::Seed(format!("temp dir: {e}")))?;
        let network = self
            .network_config
            .clone()
            .map(|text| ("network-config", text));
        for (name, text) in [
            ("meta-data", self.meta_data()),
            ("user-data", self.user_data()),
        ]
        .into_iter()
        .chain(network)
        {
            std::fs::write(files.join(name), text)
                .map_err(|e| HostdError::Seed(format!("writing {name}: {e}")))?;
        }
        let iso = dir.path().join("seed.iso");
        let out = Command::new("genisoimage")
            .args(["-quiet", "-volid", "cidata", "-joliet", "-rock", "-output"])
            .arg(&iso)
            .arg(&files)
            .output()
            .map_err(|e| {
                HostdError::Seed(format!(
                    "cannot run genisoimage (Debian package genisoimage): {e}"
                ))
            })?;
        if !out.status.success() {
            return Err(HostdError::Seed(format!(
                "genisoimage failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        std::fs::read(&iso).map_err(|e| HostdError::Seed(format!("reading the seed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> Seed {
        Seed {
            volume: "web-3-cidata.iso".into(),
            instance_id: "web-3".into(),
            hostname: "web".into(),
            user_data: String::new(),
            ssh_keys: vec!["ssh-ed25519 AAAA a@b".into()],
            network_config: Some("{\"version\":2}\n".into()),
        }
    }

    #[test]
    fn meta_data_carries_the_identity_and_keys() {
        let meta: serde_json::Value = serde_json::from_str(&seed().meta_data()).unwrap();
        assert_eq!(meta["instance-id"], "web-3");
        assert_eq!(meta["local-hostname"], "web");
        assert_eq!(meta["public-keys"][0], "ssh-ed25519 AAAA a@b");
        let keyless = Seed {
            ssh_keys: vec![],
            ..seed()
        };
        assert!(!keyless.meta_data().contains("public-keys"));
    }

    #[test]
    fn user_data_defaults_to_an_empty_cloud_config() {
        assert!(seed().user_data().starts_with("#cloud-config\n"));
        let given = Seed {
            user_data: "#!/bin/sh\ntrue\n".into(),
            ..seed()
        };
        assert_eq!(given.user_data(), "#!/bin/sh\ntrue\n");
    }

    #[test]
    fn the_iso_is_labelled_cidata() {
        let found = which("genisoimage")
            .map(|_| ())
            .ok_or_else(|| "genisoimage is not installed (scripts/deps.sh installs it)".into());
        if !drover_chaos_tests::require::prerequisite(found) {
            return;
        }
        let iso = seed().build_iso().unwrap();
        // ISO9660: the primary volume descriptor at 32 KiB, its volume id at offset 40.
        assert_eq!(&iso[0x8001..0x8006], b"CD001");
        assert_eq!(&iso[0x8028..0x802e], b"cidata");
        let text = String::from_utf8_lossy(&iso);
        assert!(
            text.contains("\"instance-id\":\"web-3\""),
            "meta-data is in the image"
        );
        assert!(
            text.contains("{\"version\":2}"),
            "network-config is in the image"
        );
    }

    fn which(tool: &str) -> Option<std::path::PathBuf> {
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(|d| std::path::Path::new(d).join(tool))
            .find(|p| p.is_file())
    }
}
