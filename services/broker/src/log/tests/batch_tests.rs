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
fn crc_detects_every_flipped_byte_it_covers() {
    let encoded = sample().encode().unwrap();
    for i in 0..encoded.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = encoded.clone();
            bad[i] ^= bit;
            let got = RecordBatch::decode_slice(&bad);
            match i {
                // The base offset and the partition leader epoch lie outside the CRC on
                // purpose (a leader assigns them): a flip changes them, or makes them negative.
                0..8 | 12..16 => match got {
                    Ok(b) => assert_ne!(
                        (b.base_offset, b.leader_epoch),
                        (42, 7),
                        "byte {i} changed nothing"
                    ),
                    Err(e) => assert!(matches!(e, BatchError::Malformed(_)), "byte {i}: {e}"),
                },
                8..12 => assert!(
                    matches!(got, Err(BatchError::LengthMismatch { .. })),
                    "byte {i}: {got:?}"
                ),
                // The counts are checked before the CRC.
                23..27 | 57..61 => assert!(
                    matches!(
                        got,
                        Err(BatchError::Malformed(_) | BatchError::CrcMismatch { .. })
                    ),
                    "byte {i}: {got:?}"
                ),
                16 => assert!(
                    matches!(got, Err(BatchError::UnsupportedVersion { .. })),
                    "{got:?}"
                ),
                _ => assert!(
                    matches!(got, Err(BatchError::CrcMismatch { .. })),
                    "byte {i}: {got:?}"
                ),
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

/// Replaces everything after the header with `records` (v2 record bytes) and fixes the
/// count, the last offset delta, the lengths and the CRC, so that decoding gets past the CRC
/// into the record parser.
fn with_valid_crc(mut header: Vec<u8>, count: u32, max_ts: i64, records: &[u8]) -> Vec<u8> {
    header.truncate(BATCH_HEADER_LEN);
    header[57..61].copy_from_slice(&count.to_be_bytes());
    header[23..27].copy_from_slice(&count.saturating_sub(1).to_be_bytes());
    header[35..43].copy_from_slice(&max_ts.to_be_bytes());
    header.extend_from_slice(records);
    let batch_length = (header.len() - 12) as u32;
    header[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let crc = crc32c::crc32c(&header[21..]);
    header[17..21].copy_from_slice(&crc.to_be_bytes());
    header
}

/// A minimal v2 record: attributes, timestamp and offset deltas 0, null key, empty value, no
/// headers; behind its zigzag length 6.
const MINIMAL_RECORD: [u8; 7] = [12, 0, 0, 0, 1, 0, 0];

#[test]
fn malformed_records_behind_a_valid_crc_are_errors() {
    let base = sample().encode().unwrap();
    let malformed = |bytes: Vec<u8>, what: &str| {
        assert!(
            matches!(
                RecordBatch::decode_slice(&bytes),
                Err(BatchError::Malformed(_))
            ),
            "{what}: {:?}",
            RecordBatch::decode_slice(&bytes)
        );
    };
    // A key length (50) larger than what is left.
    malformed(
        with_valid_crc(base.clone(), 1, 0, &[10, 0, 0, 0, 100, 0]),
        "key length",
    );
    // A header count far beyond the bytes left (must not allocate it).
    malformed(
        with_valid_crc(
            base.clone(),
            1,
            0,
            &[20, 0, 0, 0, 1, 0, 0xfe, 0xff, 0xff, 0xff, 0x0f],
        ),
        "header count",
    );
    // A record count the bytes cannot hold.
    malformed(
        with_valid_crc(base.clone(), i32::MAX as u32, 0, &MINIMAL_RECORD),
        "record count",
    );
    // Trailing bytes.
    let mut trailing = MINIMAL_RECORD.to_vec();
    trailing.push(9);
    malformed(with_valid_crc(base.clone(), 1, 0, &trailing), "trailing");
    // A header key that is not UTF-8 (one header, key 0xff, null value).
    malformed(
        with_valid_crc(base.clone(), 1, 0, &[18, 0, 0, 0, 1, 0, 2, 2, 0xff, 1]),
        "header key",
    );
    // Offsets that are not dense (a compacted batch): last offset delta 1 for one record.
    let mut sparse = with_valid_crc(base.clone(), 1, 0, &MINIMAL_RECORD);
    sparse[23..27].copy_from_slice(&1u32.to_be_bytes());
    let crc = crc32c::crc32c(&sparse[21..]);
    sparse[17..21].copy_from_slice(&crc.to_be_bytes());
    malformed(sparse, "sparse offsets");
    // And the well-formed minimal record decodes.
    let good = with_valid_crc(base, 1, 1_700_000_000_000, &MINIMAL_RECORD);
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
            size: 1033,
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
        epoch in 0..=i32::MAX as u64,
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
