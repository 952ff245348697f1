//! `Redo`: one applied batch's writes to the state machine's trees, encoded as a single
//! value. The batch is stored under one key first, then written key by key, then the key
//! is removed; a store that opens with the key present writes the batch again (every
//! write is a put or a delete, so writing twice is harmless).
//!
//! Why not a sled transaction or `apply_batch`: in sled 0.34 both roll the I/O buffer
//! before and after ("HACK" in `PageCache::pin_log`), and each roll is a write and a
//! `sync_file_range` handed to sled's thread pool, whose `notify_all` wakes all seven idle
//! I/O threads. Measured in issue 10: the leader issued 4,200 such writes and 42,000
//! context switches a second at 2,200 client writes a second. A single insert does not
//! roll, and sled recovers a prefix of the log in write order, so after a crash either
//! the redo record is there (and with it possibly part of the batch) or none of the
//! batch is.
//!
//! Encoding: per write, tree (1 byte), key length (u32 LE), key, then 0 for a delete or
//! 1, value length (u32 LE), value. Decoding checks every length.

/// The state machine's trees a batch writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TreeId {
    Meta = 0,
    Hosts = 1,
    Vms = 2,
    Requests = 3,
    Events = 4,
}

impl TreeId {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Meta,
            1 => Self::Hosts,
            2 => Self::Vms,
            3 => Self::Requests,
            4 => Self::Events,
            _ => return None,
        })
    }
}

/// A put (`Some`) or delete (`None`) of `key` in `tree`.
pub(super) type Write = (TreeId, Vec<u8>, Option<Vec<u8>>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the redo record is cut short or malformed at byte {at}")]
pub(super) struct Malformed {
    at: usize,
}

pub(super) fn encode(writes: &[Write]) -> Vec<u8> {
    let size: usize = writes
        .iter()
        .map(|(_, k, v)| 10 + k.len() + v.as_ref().map_or(0, Vec::len))
        .sum();
    let mut out = Vec::with_capacity(size);
    for (tree, key, value) in writes {
        out.push(*tree as u8);
        put_bytes(&mut out, key);
        match value {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                put_bytes(&mut out, v);
            }
        }
    }
    out
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Keys and values are bounded far below 4 GiB (a command is at most 128 KiB, a record
    // a few KiB); a longer one would be a bug, and truncating its length would corrupt.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

pub(super) fn decode(mut raw: &[u8]) -> Result<Vec<Write>, Malformed> {
    let total = raw.len();
    let mut writes = Vec::new();
    while let Some((&tree, rest)) = raw.split_first() {
        let at = total - raw.len();
        let tree = TreeId::from_byte(tree).ok_or(Malformed { at })?;
        let (key, rest) = take_bytes(rest).ok_or(Malformed { at })?;
        let (value, rest) = match rest.split_first() {
            Some((0, rest)) => (None, rest),
            Some((1, rest)) => {
                let (v, rest) = take_bytes(rest).ok_or(Malformed { at })?;
                (Some(v.to_vec()), rest)
            }
            _ => return Err(Malformed { at }),
        };
        writes.push((tree, key.to_vec(), value));
        raw = rest;
    }
    Ok(writes)
}

fn take_bytes(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = raw.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_is_cut_short() {
        let writes: Vec<Write> = vec![
            (
                TreeId::Vms,
                b"web".to_vec(),
                Some(br#"{"name":"web"}"#.to_vec()),
            ),
            (TreeId::Requests, b"client-1".to_vec(), None),
            (TreeId::Meta, b"last_applied".to_vec(), Some(Vec::new())),
            (TreeId::Events, Vec::new(), Some(vec![0, 1, 255])),
        ];
        let raw = encode(&writes);
        assert_eq!(decode(&raw), Ok(writes.clone()));
        assert_eq!(decode(&[]), Ok(Vec::new()));
        // A cut at a write's end decodes the writes before it; anywhere else it fails.
        for cut in 1..raw.len() {
            if let Ok(some) = decode(&raw[..cut]) {
                assert!(
                    some.len() < writes.len() && writes.starts_with(&some),
                    "{cut}"
                );
            }
        }
        let mut bad_tree = raw.clone();
        bad_tree[0] = 9;
        assert_eq!(decode(&bad_tree), Err(Malformed { at: 0 }));
    }
}
