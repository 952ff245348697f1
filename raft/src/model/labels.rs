//! Host labels and the `key=value` syntax operators type them in. Keys and values are
//! short and plain so that they read well in `host list` and cannot smuggle separators.

use std::collections::BTreeMap;

/// A host's labels, or the labels a VM requires.
pub type Labels = BTreeMap<String, String>;

const MAX_LABEL_LEN: usize = 63;
/// Most labels one host carries or one VM requires: enough for rack, zone, hardware and
/// a few more; bounded so that one host cannot bloat every state snapshot.
pub const MAX_LABELS: usize = 32;

fn check_part(what: &str, part: &str) -> Result<(), String> {
    if part.is_empty() {
        return Err(format!("label {what} is empty"));
    }
    if part.len() > MAX_LABEL_LEN {
        return Err(format!(
            "label {what} {part:?} is longer than {MAX_LABEL_LEN}"
        ));
    }
    if let Some(bad) = part
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')))
    {
        return Err(format!(
            "label {what} {part:?} contains {bad:?}; allowed are A-Z a-z 0-9 . _ - /"
        ));
    }
    Ok(())
}

/// Parses `key=value`.
pub fn parse_label(text: &str) -> Result<(String, String), String> {
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| format!("label {text:?} is not key=value"))?;
    check_part("key", k)?;
    check_part("value", v)?;
    Ok((k.to_string(), v.to_string()))
}

/// Checks labels that arrive already split (API, commands).
pub fn validate_labels(labels: &Labels) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!(
            "{} labels; at most {MAX_LABELS} are allowed",
            labels.len()
        ));
    }
    for (k, v) in labels {
        check_part("key", k)?;
        check_part("value", v)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_with_reasons() {
        assert_eq!(
            parse_label("rack=r1").unwrap(),
            ("rack".to_string(), "r1".to_string())
        );
        assert!(parse_label("rack").unwrap_err().contains("key=value"));
        assert!(parse_label("=r1").unwrap_err().contains("key is empty"));
        assert!(parse_label("rack=").unwrap_err().contains("value is empty"));
        assert!(parse_label("ra ck=r1").unwrap_err().contains("' '"));
        assert!(parse_label("a=b=c").unwrap_err().contains("'='"));
    }

    #[test]
    fn label_count_is_bounded() {
        let many = |n: usize| -> Labels { (0..n).map(|i| (format!("k{i}"), "v".into())).collect() };
        assert!(validate_labels(&many(MAX_LABELS)).is_ok());
        let err = validate_labels(&many(MAX_LABELS + 1)).unwrap_err();
        assert!(err.contains("at most 32"), "{err}");
    }
}
