//! Record batch encoding: roundtrips, CRC, malformed input, splitting.

use bytes::Bytes;
use proptest::prelude::*;

use super::super::batch::{
    BATCH_HEADER_LEN, BatchError, BatchHeader, Header, Record, RecordBatch, split_into_batches,
};
use super::recs;

fn sample() -> RecordBatch {
    let mut records = recs("a", 3, 1_700_000_000_000);
    records.push(Record {
        timestamp_ms: 5,
        key: None,
        value: Bytes::new(),
        headers: vec![],
    });
    records.push(Record {
        timestamp_ms: i64::MAX,
        key: Some(Bytes::new()),
        value: Bytes::from(vec![0xab; 300]),
        headers: vec![
            Header {
                key: String::new(),
                value: Bytes::new(),
            },
            Header {
                key: "trace-id".into(),
                value: Bytes::from_static(b"\x00\x01"),
            },
        ],
    });
    records.push(Record::new(Bytes::from_static(b"min")));
    records.last_mut().unwrap().timestamp_ms = i64::MIN;
    RecordBatch {
        base_offset: 42,
        leader_epoch: 7,
        records,
    }
}

#[test]
fn encode_decode_roundtrip() {
    let batch = sample();
    let encoded = batch.encode().unwrap();
    assert_eq!(encoded.len(), batch.encoded_len());
    let decoded = RecordBatch::decode(Bytes::from(encoded.clone())).unwrap();
    assert_eq!(decoded, batch);
    let header = BatchHeader::read_verified(&encoded).unwrap();
    assert_eq!(header.base_offset, 42);
    assert_eq!(header.leader_epoch, 7);
    assert_eq!(header.record_count, 6);
    assert_eq!(header.last_offset(), 47);
    assert_eq!(header.first_timestamp_ms, 1_700_000_000_000);
    assert_eq!(header.max_timestamp_ms, i64::MAX);
    assert_eq!(header.encoded_len, encoded.len());
    assert_eq!(batch.iter().nth(2).unwrap().0, 44);
}

#[test]
fn crc_detects_every_flipped_byte() {
    let encoded = sample().encode().unwrap();
    for i in 0..encoded.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = encoded.clone();
            bad[i] ^= bit;
            let err = RecordBatch::decode_slice(&bad).unwrap_err();
            if i == 0 {
                assert!(
                    matches!(err, BatchError::UnsupportedVersion { .. }),
                    "{err}"
                );
            } else if (41..45).contains(&i) {
                assert!(matches!(err, BatchError::LengthMismatch { .. }), "{err}");
            } else {
                assert!(
                    matches!(err, BatchError::CrcMismatch { .. }),
                    "byte {i}: {err}"
                );
            }
        }
    }
}

#[test]
fn truncated_and_empty_inputs_are_errors() {
    let encoded = sample().encode().unwrap();
    for len in 0..encoded.len() {
        assert!(RecordBatch::decode_slice(&encoded[..len]).is_err(), "{len}");
    }
    let mut longer = encoded.clone();
    longer.push(0);
    assert!(matches!(
        RecordBatch::decode_slice(&longer),
        Err(BatchError::LengthMismatch { .. })
    ));
    let empty = RecordBatch {
        base_offset: 0,
        leader_epoch: 0,
        records: vec![],
    };
    assert_eq!(empty.encode(), Err(BatchError::Empty));
    let overflowing = RecordBatch {
        base_offset: u64::MAX,
        leader_epoch: 0,
        records: recs("x", 1, 0),
    };
    assert!(matches!(overflowing.encode(), Err(BatchError::TooLarge(_))));
}

/// Replaces everything after the header with `records` and fixes lengths and CRC, so that
/// decoding gets past the CRC into the record parser.
fn with_valid_crc(mut header: Vec<u8>, count: u32, max_ts: i64, records: &[u8]) -> Vec<u8> {
    header.truncate(BATCH_HEADER_LEN);
    header[21..25].copy_from_slice(&count.to_be_bytes());
    header[33..41].copy_from_slice(&max_ts.to_be_bytes());
    header[41..45].copy_from_slice(&(records.len() as u32).to_be_bytes());
    header.extend_from_slice(records);
    let crc = crc32c::crc32c(&header[5..]);
    header[1..5].copy_from_slice(&crc.to_be_bytes());
    header
}

#[test]
fn malformed_records_behind_a_valid_crc_are_errors() {
    let base = sample().encode().unwrap();
    // A key length larger than what is left.
    let bad = with_valid_crc(base.clone(), 1, 0, &[0, 100, 1, b'x', 0]);
    assert!(matches!(
        RecordBatch::decode_slice(&bad),
        Err(BatchError::Malformed(_))
    ));
    // A header count far beyond the bytes left (must not allocate it).
    let bad = with_valid_crc(base.clone(), 1, 0, &[0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(matches!(
        RecordBatch::decode_slice(&bad),
        Err(BatchError::Malformed(_))
    ));
    // A record count the bytes cannot hold.
    let bad = with_valid_crc(base.clone(), u32::MAX, 0, &[0, 0, 0, 0]);
    assert!(matches!(
        RecordBatch::decode_slice(&bad),
        Err(BatchError::Malformed(_))
    ));
    // Trailing bytes.
    let bad = with_valid_crc(base.clone(), 1, 1_700_000_000_000, &[0, 0, 0, 0, 9]);
    assert!(matches!(
        RecordBatch::decode_slice(&bad),
        Err(BatchError::Malformed(_))
    ));
    // A max timestamp that disagrees with the records.
    let bad = with_valid_crc(base.clone(), 1, 3, &[0, 0, 0, 0]);
    assert!(matches!(
        RecordBatch::decode_slice(&bad),
        Err(BatchError::Malformed(_))
    ));
    // A header key that is not UTF-8.
    let bad = with_valid_crc(
        base.clone(),
        1,
        1_700_000_000_000,
        &[0, 0, 0, 1, 1, 0xff, 0],
    );
    assert!(matches!(
        RecordBatch::decode_slice(&bad),
        Err(BatchError::Malformed(_))
    ));
    // And the well-formed minimal record decodes.
    let good = with_valid_crc(base, 1, 1_700_000_000_000, &[0, 0, 0, 0]);
    let batch = RecordBatch::decode_slice(&good).unwrap();
    assert_eq!(batch.records[0].key, None);
    assert!(batch.records[0].value.is_empty());
}

#[test]
fn split_fills_batches_under_the_target_and_refuses_oversized_records() {
    let records: Vec<Record> = (0..64)
        .map(|i| Record {
            timestamp_ms: 1_700_000_000_000 + i,
            key: None,
            value: Bytes::from(vec![b'x'; 1024]),
            headers: vec![],
        })
        .collect();
    let groups = split_into_batches(records.clone(), 64 * 1024, 2000).unwrap();
    assert_eq!(groups.iter().map(Vec::len).collect::<Vec<_>>(), [63, 1]);
    let groups = split_into_batches(records.clone(), 16 * 1024, 2000).unwrap();
    assert_eq!(
        groups.iter().map(Vec::len).collect::<Vec<_>>(),
        [15, 15, 15, 15, 4]
    );
    let flat: Vec<Record> = groups.iter().flatten().cloned().collect();
    assert_eq!(flat, records);
    for (i, g) in groups.into_iter().enumerate() {
        let batch = RecordBatch {
            base_offset: 0,
            leader_epoch: 0,
            records: g,
        };
        assert!(batch.encode().unwrap().len() <= 16 * 1024, "group {i}");
    }
    // A record over the target is stored alone; one over the record limit is refused.
    let single = split_into_batches(records.clone(), 1000, 2000).unwrap();
    assert_eq!(single.len(), 64);
    let mut mixed = recs("small", 3, 0);
    mixed.insert(1, records[0].clone());
    let groups = split_into_batches(mixed, 1000, 2000).unwrap();
    assert_eq!(groups.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 2]);
    assert_eq!(
        split_into_batches(records, 64 * 1024, 1000),
        Err(BatchError::RecordTooLarge {
            size: 1029,
            max: 1000
        })
    );
    assert_eq!(
        split_into_batches(vec![], 1000, 1000),
        Err(BatchError::Empty)
    );
}

fn arb_record() -> impl Strategy<Value = Record> {
    (
        any::<i64>(),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        proptest::collection::vec(any::<u8>(), 0..200),
        proptest::collection::vec(
            (
                "[a-z\u{e9}]{0,8}",
                proptest::collection::vec(any::<u8>(), 0..10),
            ),
            0..3,
        ),
    )
        .prop_map(|(timestamp_ms, key, value, headers)| Record {
            timestamp_ms,
            key: key.map(Bytes::from),
            value: Bytes::from(value),
            headers: headers
                .into_iter()
                .map(|(key, value)| Header {
                    key,
                    value: Bytes::from(value),
                })
                .collect(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decode_of_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = RecordBatch::decode_slice(&bytes);
        let _ = BatchHeader::read(&bytes);
    }

    #[test]
    fn decode_of_garbage_records_with_a_valid_crc_never_panics(
        count in 0u32..20,
        max_ts in any::<i64>(),
        records in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let header = sample().encode().unwrap();
        let _ = RecordBatch::decode_slice(&with_valid_crc(header, count, max_ts, &records));
    }

    #[test]
    fn any_records_roundtrip_and_split(
        records in proptest::collection::vec(arb_record(), 1..30),
        base in 0u64..1 << 40,
        epoch in any::<u64>(),
        max in 50usize..2000,
    ) {
        let batch = RecordBatch { base_offset: base, leader_epoch: epoch, records: records.clone() };
        let encoded = batch.encode().unwrap();
        prop_assert_eq!(encoded.len(), batch.encoded_len());
        prop_assert_eq!(RecordBatch::decode(Bytes::from(encoded)).unwrap(), batch);
        let groups = split_into_batches(records.clone(), max, usize::MAX).unwrap();
        let flat: Vec<Record> = groups.iter().flatten().cloned().collect();
        prop_assert_eq!(flat, records);
        for g in groups {
            let b = RecordBatch { base_offset: base, leader_epoch: epoch, records: g };
            prop_assert!(b.encode().unwrap().len() <= max || b.records.len() == 1);
        }
    }
}
