//! The one rule for storage pool paths, shared by the controllers (which refuse a bad one
//! before it is replicated) and hostd (which refuses one from anywhere else).

/// Longest accepted pool path (Linux's `PATH_MAX` is 4096; libvirt XML and QEMU command
/// lines carry it, so stay far below).
pub const MAX_POOL_PATH_LEN: usize = 1024;

/// An absolute, normalized path that hostd may hand to libvirt as a pool target: no `.`
/// or `..` components, no empty ones, no trailing `/`, not `/` itself, and only printable
/// characters without spaces or quotes (it goes into XML and QEMU command lines).
pub fn validate_pool_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("path {path:?} is not absolute"));
    }
    if path == "/" {
        return Err("path must not be the root directory".into());
    }
    if path.len() > MAX_POOL_PATH_LEN {
        return Err(format!(
            "path is longer than {MAX_POOL_PATH_LEN} characters"
        ));
    }
    if let Some(bad) = path.chars().find(|c| {
        c.is_control() || c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '&' | ',')
    }) {
        return Err(format!("path {path:?} contains {bad:?}"));
    }
    if path[1..]
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(format!(
            "path {path:?} is not normalized (empty, '.' or '..' components, or a trailing '/')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_paths_must_be_absolute_normalized_and_plain() {
        for ok in ["/srv/pool", "/var/lib/drover/images", "/a"] {
            assert_eq!(validate_pool_path(ok), Ok(()), "{ok}");
        }
        for (bad, says) in [
            ("srv/pool", "not absolute"),
            ("/", "root"),
            ("/srv/", "normalized"),
            ("/srv//pool", "normalized"),
            ("/srv/../etc", "normalized"),
            ("/srv/./x", "normalized"),
            ("/srv/my pool", "contains ' '"),
            ("/srv/a\"b", "contains"),
            ("/srv/a<b", "contains"),
        ] {
            let err = validate_pool_path(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
        let long = format!("/{}", "a".repeat(MAX_POOL_PATH_LEN));
        assert!(validate_pool_path(&long).is_err());
    }
}
