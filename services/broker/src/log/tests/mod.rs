//! Unit and property tests of the partition log (temporary directories, no networking).

mod batch_tests;
mod bounded_tests;
mod log_tests;
mod prop_tests;

use std::path::Path;

use bytes::Bytes;

use super::{Header, LogStore, Record};

/// A record with a key, a value, one header and a timestamp.
pub(super) fn rec(value: &str, timestamp_ms: i64) -> Record {
    Record {
        timestamp_ms,
        key: Some(Bytes::from(format!("k-{value}"))),
        value: Bytes::from(value.to_owned()),
        headers: vec![Header {
            key: "h".into(),
            value: Bytes::from_static(b"v"),
        }],
    }
}

/// `n` records named `prefix-i`, timestamps `ts`, `ts + 1`, ...
pub(super) fn recs(prefix: &str, n: usize, ts: i64) -> Vec<Record> {
    (0..n)
        .map(|i| rec(&format!("{prefix}-{i}"), ts + i as i64))
        .collect()
}

pub(super) fn open(dir: &Path) -> LogStore {
    LogStore::open(dir).expect("open log store")
}

/// The (offset, value) pairs of `batches`, from `from` on.
pub(super) fn values(batches: &[super::RecordBatch], from: u64) -> Vec<(u64, String)> {
    batches
        .iter()
        .flat_map(|b| b.iter())
        .filter(|(o, _)| *o >= from)
        .map(|(o, r)| (o, String::from_utf8(r.value.to_vec()).unwrap()))
        .collect()
}
