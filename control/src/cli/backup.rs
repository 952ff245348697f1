//! `drover cluster snapshot save` and `drover cluster restore`: backups to a file and
//! seeding a new cluster's data dirs from one.

use std::io::Write as _;
use std::path::Path;

use serde_json::json;

use super::commands::Printed;
use super::output::Format;
use crate::client::Client;
use crate::config::parse_initial_cluster;

/// Fetches a backup from the leader and writes it to `file` atomically (temp file, fsync,
/// rename), so a crash never leaves a truncated backup under the final name.
pub async fn save(client: &Client, file: &Path, format: Format) -> anyhow::Result<Printed> {
    let (bytes, index) = client.save_snapshot().await?;
    // Refuse to write what could not be restored.
    drover_raft::backup::decode(&bytes)?;
    let tmp = file.with_extension("partial");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, file)?;
    let report =
        json!({"file": file.display().to_string(), "bytes": bytes.len(), "applied_index": index});
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(&report)?,
        Format::Table => format!(
            "saved {} bytes at applied index {index} to {}",
            bytes.len(),
            file.display()
        ),
    }
    .into())
}

/// Seeds `data_dir` from the backup in `file` for a new cluster of `initial_cluster`.
pub async fn restore(
    file: &Path,
    data_dir: &Path,
    initial_cluster: &str,
    format: Format,
) -> anyhow::Result<Printed> {
    let members = parse_initial_cluster(initial_cluster)?;
    let bytes =
        std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let data = drover_raft::backup::decode(&bytes)?;
    let (vms, hosts) = (data.state.vms.len(), data.state.hosts.len());
    std::fs::create_dir_all(data_dir)?;
    let log_id = drover_raft::backup::seed(data_dir, data, &members).await?;
    let report = json!({
        "data_dir": data_dir.display().to_string(),
        "index": log_id.index,
        "hosts": hosts,
        "vms": vms,
        "members": members,
    });
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(&report)?,
        Format::Table => format!(
            "restored {hosts} hosts and {vms} VMs at index {} into {}; start it with --initial-cluster {initial_cluster}",
            log_id.index,
            data_dir.display()
        ),
    }
    .into())
}
