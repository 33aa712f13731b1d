//! Records between the wire (`dmq.v1` messages) and the log ([`crate::log`]).

use bytes::Bytes;
use dmq_proto::v1 as pb;
use prost::Message;

use crate::log::{Header, NO_TIMESTAMP, Record, RecordBatch};

/// A produced record as the log stores it: an empty key is no key; timestamp 0 (or negative)
/// asks the leader to stamp it.
pub(crate) fn to_log_record(r: pb::Record) -> Record {
    Record {
        timestamp_ms: if r.timestamp_ms <= 0 {
            NO_TIMESTAMP
        } else {
            r.timestamp_ms
        },
        key: (!r.key.is_empty()).then(|| Bytes::from(r.key)),
        value: Bytes::from(r.value),
        headers: r
            .headers
            .into_iter()
            .map(|h| Header {
                key: h.key,
                value: Bytes::from(h.value),
            })
            .collect(),
    }
}

fn fetched(offset: u64, r: &Record) -> pb::FetchedRecord {
    pb::FetchedRecord {
        offset,
        timestamp_ms: r.timestamp_ms,
        key: r.key.as_ref().map_or_else(Vec::new, |k| k.to_vec()),
        value: r.value.to_vec(),
        headers: r
            .headers
            .iter()
            .map(|h| pb::Header {
                key: h.key.clone(),
                value: h.value.to_vec(),
            })
            .collect(),
    }
}

/// The records of `batches` with offsets in `from..below`, in order, stopping before their
/// encoded size passes `max_bytes` (but with at least one). Returns them, the offset after the
/// last one (`from` when none) and their encoded size.
pub(crate) fn committed_records(
    batches: &[RecordBatch],
    from: u64,
    below: u64,
    max_bytes: usize,
) -> (Vec<pb::FetchedRecord>, u64, usize) {
    let mut out = Vec::new();
    let mut next = from;
    let mut bytes = 0usize;
    'batches: for batch in batches {
        for (offset, record) in batch.iter() {
            if offset < from {
                continue;
            }
            if offset >= below {
                break 'batches;
            }
            let record = fetched(offset, record);
            // The field tag and length prefix of a repeated message: a few bytes.
            let size = record.encoded_len() + 6;
            if !out.is_empty() && bytes + size > max_bytes {
                break 'batches;
            }
            bytes += size;
            out.push(record);
            next = offset + 1;
        }
    }
    (out, next, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_stop_at_the_bounds() {
        let wire = pb::Record {
            key: Vec::new(),
            value: b"v".to_vec(),
            headers: vec![pb::Header {
                key: "h".into(),
                value: b"x".to_vec(),
            }],
            timestamp_ms: 0,
        };
        let r = to_log_record(wire);
        assert_eq!((r.key.clone(), r.timestamp_ms), (None, NO_TIMESTAMP));
        let batch = |base: u64, n: usize| RecordBatch {
            base_offset: base,
            leader_epoch: 0,
            records: (0..n)
                .map(|i| Record {
                    timestamp_ms: 5,
                    key: Some(Bytes::from(format!("k{i}"))),
                    ..r.clone()
                })
                .collect(),
        };
        let batches = [batch(10, 3), batch(13, 3)];
        let (records, next, _) = committed_records(&batches, 11, 15, usize::MAX);
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        assert_eq!((offsets, next), (vec![11, 12, 13, 14], 15));
        assert_eq!(records[0].key, b"k1");
        assert_eq!(records[0].headers[0].value, b"x");
        // At least one record, however small the budget.
        let (records, next, _) = committed_records(&batches, 10, 16, 1);
        assert_eq!((records.len(), next), (1, 11));
        let (records, next, _) = committed_records(&batches, 16, 16, 100);
        assert_eq!((records.len(), next), (0, 16));
    }
}
