//! What an uploaded file is, asked of `qemu-img`: its format (qcow2 or raw, nothing else),
//! the size it boots as, and for a qcow2 that it is consistent and refers to no other
//! file. A qcow2 backing file or external data file named by a user's upload would have
//! QEMU open a file of the host's choosing in the guest's place.

use std::process::Command;

use serde::Deserialize;

use crate::error::HostdError;

/// What `qemu-img` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    /// `qcow2` or `raw`.
    pub format: &'static str,
    pub virtual_bytes: u64,
}

#[derive(Deserialize)]
struct Info {
    format: String,
    #[serde(rename = "virtual-size")]
    virtual_size: u64,
    #[serde(rename = "backing-filename")]
    backing_filename: Option<String>,
    #[serde(rename = "format-specific")]
    format_specific: Option<FormatSpecific>,
}

#[derive(Deserialize)]
struct FormatSpecific {
    data: Option<serde_json::Value>,
}

/// `qemu-img info --output=json`'s answer, judged.
pub fn judge_info(json: &str) -> Result<Inspected, HostdError> {
    let info: Info = serde_json::from_str(json)
        .map_err(|e| HostdError::BadImage(format!("qemu-img info gave no usable answer: {e}")))?;
    let format = match info.format.as_str() {
        "qcow2" => "qcow2",
        "raw" => "raw",
        other => {
            return Err(HostdError::BadImage(format!(
                "format {other:?} is not supported; supported: qcow2, raw"
            )))
        }
    };
    if let Some(backing) = info.backing_filename {
        return Err(HostdError::BadImage(format!(
            "it names a backing file ({backing:?}); import a standalone image \
             (qemu-img convert -O qcow2 it into one)"
        )));
    }
    let data_file = info
        .format_specific
        .and_then(|f| f.data)
        .and_then(|d| d.get("data-file").cloned());
    if let Some(data_file) = data_file {
        return Err(HostdError::BadImage(format!(
            "it keeps its data in an external file ({data_file}); import a standalone image"
        )));
    }
    if info.virtual_size == 0 {
        return Err(HostdError::BadImage("its virtual size is 0".into()));
    }
    Ok(Inspected {
        format,
        virtual_bytes: info.virtual_size,
    })
}

fn run(args: &[&str]) -> Result<std::process::Output, HostdError> {
    Command::new("qemu-img")
        .args(args)
        .output()
        .map_err(|e| HostdError::Tool {
            program: "qemu-img",
            reason: e.to_string(),
        })
}

/// Inspects the file at `path` (blocking: run it on a blocking thread).
pub fn inspect(path: &str) -> Result<Inspected, HostdError> {
    let out = run(&["info", "--output=json", path])?;
    if !out.status.success() {
        return Err(HostdError::BadImage(format!(
            "qemu-img info refused it: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let found = judge_info(&String::from_utf8_lossy(&out.stdout))?;
    if found.format == "qcow2" {
        let check = run(&["check", "-f", "qcow2", path])?;
        if !check.status.success() {
            let said = String::from_utf8_lossy(&check.stdout);
            let said = said.lines().last().unwrap_or_default();
            return Err(HostdError::BadImage(format!(
                "qemu-img check found it damaged: {} {said}",
                String::from_utf8_lossy(&check.stderr).trim()
            )));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_standalone_qcow2_and_raw_pass() {
        let ok = judge_info(r#"{"format":"qcow2","virtual-size":1073741824}"#).expect("qcow2");
        assert_eq!((ok.format, ok.virtual_bytes), ("qcow2", 1 << 30));
        assert!(judge_info(r#"{"format":"raw","virtual-size":512}"#).is_ok());
        let refused = [
            r#"{"format":"vmdk","virtual-size":512}"#,
            r#"{"format":"qcow2","virtual-size":512,"backing-filename":"/etc/shadow"}"#,
            r#"{"format":"qcow2","virtual-size":512,"format-specific":{"type":"qcow2","data":{"data-file":"/dev/sda"}}}"#,
            r#"{"format":"raw","virtual-size":0}"#,
            "not json",
        ];
        for json in refused {
            assert!(
                matches!(judge_info(json), Err(HostdError::BadImage(_))),
                "{json} must be refused"
            );
        }
    }
}
