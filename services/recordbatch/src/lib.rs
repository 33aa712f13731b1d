//! Kafka's RecordBatch v2 ("magic 2"), byte for byte: the layout the broker's partition
//! segment files hold and its Fetch answers with raw batches carry, so that a Kafka-protocol
//! listener can serve stored batches as they are and the idempotent producer finds its fields
//! where Kafka keeps them. This crate only encodes, checks and decodes; it keeps no state and
//! does no I/O.
//!
//! # Layout
//! Fixed-width integers are big-endian. Inside records, "varint" and "varlong" are zigzag
//! LEB128 (Kafka's `ByteUtils.writeVarint` / `writeVarlong`); a length of -1 means null.
//!
//! ```text
//! offset size  field
//!      0    8  base offset (i64)
//!      8    4  batch length (i32): bytes after this field (the batch is 12 + this long)
//!     12    4  partition leader epoch (i32)
//!     16    1  magic = 2
//!     17    4  CRC-32C (u32) of bytes [21, end)
//!     21    2  attributes (i16): bits 0-2 compression (0 none), 3 timestamp type
//!              (1 = log append time), 4 transactional, 5 control, 6 delete horizon set
//!     23    4  last offset delta (i32)
//!     27    8  base timestamp (i64 ms)
//!     35    8  max timestamp (i64 ms)
//!     43    8  producer id (i64, -1 = none)
//!     51    2  producer epoch (i16, -1 = none)
//!     53    4  base sequence (i32, -1 = none)
//!     57    4  record count (i32)
//!     61       records, each:
//!                varint   length of the rest of the record
//!                int8     attributes (unused, 0)
//!                varlong  timestamp delta from the base timestamp
//!                varint   offset delta from the base offset
//!                varint   key length (-1 = null), then the key
//!                varint   value length (-1 = null: a tombstone), then the value
//!                varint   header count, then each header:
//!                           varint key length, key (UTF-8), varint value length (-1 = null), value
//! ```
//! The base offset and the partition leader epoch sit before the CRC's range on purpose: a
//! leader assigns them to a batch a producer sent ([`set_base_offset`],
//! [`set_partition_leader_epoch`]) without recomputing the CRC or touching the records.
//!
//! # To ensure correctness
//! - [`check`] accepts a buffer only if it is exactly one whole batch: magic 2, a length that
//!   matches, a CRC that matches, a record count and last offset delta that fit the offsets.
//!   Garbage gives a [`BatchV2Error`], never a panic.
//! - [`records`] decodes only uncompressed batches; a compressed one is refused with
//!   [`BatchV2Error::Compressed`] (storing and serving it as it is needs no decoding).
//! - Every record must lie inside its declared length, lengths may not be negative except the
//!   null markers, and the decoded count and offset deltas must agree with the header.

use bytes::Bytes;

pub mod varint;

/// The magic byte of this layout.
pub const MAGIC_V2: u8 = 2;
/// Bytes before the first record.
pub const HEADER_LEN: usize = 61;
/// Bytes of the base offset and batch length fields, which the batch length does not count.
pub const LOG_OVERHEAD: usize = 12;
const PARTITION_LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
/// The CRC covers everything from the attributes on.
const CRC_COVERS_FROM: usize = 21;
const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;
/// The smallest encoded record: length, attributes, timestamp and offset deltas, key and value
/// lengths, header count, a byte each.
const MIN_RECORD_LEN: usize = 7;
/// "No producer id / epoch / sequence".
pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_PRODUCER_EPOCH: i16 = -1;
pub const NO_SEQUENCE: i32 = -1;

/// The fixed part of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeaderV2 {
    pub base_offset: i64,
    /// Bytes after the batch length field.
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeaderV2 {
    /// The offset of the last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// The whole batch's size in bytes.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// The compression codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> u8 {
        (self.attributes & COMPRESSION_MASK) as u8
    }

    /// Whether the timestamps are the broker's append time rather than the producer's.
    pub fn log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }
}

/// A record header; a null value is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderV2 {
    pub key: String,
    pub value: Option<Bytes>,
}

/// One record of a batch, with its absolute offset and timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordV2 {
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    /// `None` is a tombstone.
    pub value: Option<Bytes>,
    pub headers: Vec<HeaderV2>,
}

/// What a record to encode holds (offsets and the base timestamp come from the batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<HeaderV2>,
}

/// The producer fields of a batch (idempotent producer); [`ProducerFields::NONE`] for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerFields {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl ProducerFields {
    pub const NONE: ProducerFields = ProducerFields {
        producer_id: NO_PRODUCER_ID,
        producer_epoch: NO_PRODUCER_EPOCH,
        base_sequence: NO_SEQUENCE,
    };
}

/// Why bytes are not a usable v2 batch. Each says what is wrong; none is retryable as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchV2Error {
    #[error("a record batch needs at least {HEADER_LEN} bytes, got {0}")]
    TooShort(usize),
    #[error("record batch magic {0} is not supported (only 2)")]
    Magic(u8),
    #[error("the batch length field says {declared} bytes follow it, but {actual} do")]
    Length { declared: i64, actual: usize },
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error("record count {count} and last offset delta {last_offset_delta} do not fit")]
    Counts { count: i32, last_offset_delta: i32 },
    #[error("compressed batches (codec {0}) cannot be decoded here")]
    Compressed(u8),
    #[error("record {index}: {what}")]
    Record { index: usize, what: String },
    #[error("a batch holds 1 to {max} records, got {0}", max = i32::MAX)]
    RecordCount(usize),
}

/// Encodes `records` as one uncompressed batch at `base_offset`, its base timestamp the first
/// record's and its max timestamp the largest. At least one record.
pub fn encode(
    base_offset: i64,
    partition_leader_epoch: i32,
    producer: ProducerFields,
    records: &[NewRecord],
) -> Result<Vec<u8>, BatchV2Error> {
    if records.is_empty() || records.len() > i32::MAX as usize {
        return Err(BatchV2Error::RecordCount(records.len()));
    }
    let base_timestamp = records[0].timestamp_ms;
    let max_timestamp = records.iter().map(|r| r.timestamp_ms).max().unwrap_or(0);
    let mut out = Vec::with_capacity(HEADER_LEN + records.len() * 16);
    out.extend_from_slice(&base_offset.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes()); // batch length, below
    out.extend_from_slice(&partition_leader_epoch.to_be_bytes());
    out.push(MAGIC_V2);
    out.extend_from_slice(&0u32.to_be_bytes()); // CRC, below
    out.extend_from_slice(&0i16.to_be_bytes());
    out.extend_from_slice(&((records.len() - 1) as i32).to_be_bytes());
    out.extend_from_slice(&base_timestamp.to_be_bytes());
    out.extend_from_slice(&max_timestamp.to_be_bytes());
    out.extend_from_slice(&producer.producer_id.to_be_bytes());
    out.extend_from_slice(&producer.producer_epoch.to_be_bytes());
    out.extend_from_slice(&producer.base_sequence.to_be_bytes());
    out.extend_from_slice(&(records.len() as i32).to_be_bytes());
    debug_assert_eq!(out.len(), HEADER_LEN);
    let mut body = Vec::new();
    for (delta, r) in records.iter().enumerate() {
        body.clear();
        body.push(0); // attributes
        varint::put_i64(&mut body, r.timestamp_ms.wrapping_sub(base_timestamp));
        varint::put_i64(&mut body, delta as i64);
        put_nullable(&mut body, r.key.as_deref());
        put_nullable(&mut body, r.value.as_deref());
        varint::put_i64(&mut body, r.headers.len() as i64);
        for h in &r.headers {
            put_nullable(&mut body, Some(h.key.as_bytes()));
            put_nullable(&mut body, h.value.as_deref());
        }
        varint::put_i64(&mut out, body.len() as i64);
        out.extend_from_slice(&body);
    }
    let batch_length = (out.len() - LOG_OVERHEAD) as i32;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_COVERS_FROM..]);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => varint::put_i64(out, -1),
        Some(b) => {
            varint::put_i64(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

/// The header of the batch at the front of `buf`, without checking the CRC or that the
/// whole batch is there: for finding batch boundaries while scanning a segment.
pub fn peek_header(buf: &[u8]) -> Result<BatchHeaderV2, BatchV2Error> {
    if buf.len() < HEADER_LEN {
        return Err(BatchV2Error::TooShort(buf.len()));
    }
    if buf[MAGIC_AT] != MAGIC_V2 {
        return Err(BatchV2Error::Magic(buf[MAGIC_AT]));
    }
    let header = BatchHeaderV2 {
        base_offset: i64_at(buf, 0),
        batch_length: i32_at(buf, 8),
        partition_leader_epoch: i32_at(buf, PARTITION_LEADER_EPOCH_AT),
        crc: u32::from_be_bytes(buf[CRC_AT..CRC_AT + 4].try_into().expect("4 bytes")),
        attributes: i16::from_be_bytes(buf[21..23].try_into().expect("2 bytes")),
        last_offset_delta: i32_at(buf, 23),
        base_timestamp: i64_at(buf, 27),
        max_timestamp: i64_at(buf, 35),
        producer_id: i64_at(buf, 43),
        producer_epoch: i16::from_be_bytes(buf[51..53].try_into().expect("2 bytes")),
        base_sequence: i32_at(buf, 53),
        record_count: i32_at(buf, 57),
    };
    if (header.batch_length as i64) < (HEADER_LEN - LOG_OVERHEAD) as i64 {
        return Err(BatchV2Error::Length {
            declared: header.batch_length.into(),
            actual: buf.len() - LOG_OVERHEAD,
        });
    }
    if header.record_count < 0
        || header.last_offset_delta < 0
        || (header.record_count > 0 && header.last_offset_delta < header.record_count - 1)
        || header
            .base_offset
            .checked_add(header.last_offset_delta.into())
            .is_none()
    {
        return Err(BatchV2Error::Counts {
            count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// Checks that `buf` is exactly one whole, intact batch and returns its header.
pub fn check(buf: &[u8]) -> Result<BatchHeaderV2, BatchV2Error> {
    let header = peek_header(buf)?;
    if header.total_len() != buf.len() {
        return Err(BatchV2Error::Length {
            declared: header.batch_length.into(),
            actual: buf.len() - LOG_OVERHEAD,
        });
    }
    let computed = crc32c::crc32c(&buf[CRC_COVERS_FROM..]);
    if computed != header.crc {
        return Err(BatchV2Error::Crc {
            stored: header.crc,
            computed,
        });
    }
    Ok(header)
}

/// Gives the batch in `buf` a new base offset (the leader assigning offsets); the CRC stays
/// valid since it does not cover the field.
pub fn set_base_offset(buf: &mut [u8], base_offset: i64) {
    buf[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Stamps the batch in `buf` with the epoch of the leader that appended it (CRC unchanged).
pub fn set_partition_leader_epoch(buf: &mut [u8], epoch: i32) {
    buf[PARTITION_LEADER_EPOCH_AT..PARTITION_LEADER_EPOCH_AT + 4]
        .copy_from_slice(&epoch.to_be_bytes());
}

/// The records of the whole, intact, uncompressed batch `buf` (see [`check`]); keys and values
/// share `buf`'s memory.
pub fn records(buf: &Bytes) -> Result<Vec<RecordV2>, BatchV2Error> {
    let header = check(buf)?;
    if header.compression() != 0 {
        return Err(BatchV2Error::Compressed(header.compression()));
    }
    // The count is the sender's word: reserve no more than the bytes can hold.
    let mut out = Vec::with_capacity(
        (header.record_count as usize).min((buf.len() - HEADER_LEN) / MIN_RECORD_LEN),
    );
    let mut at = HEADER_LEN;
    let mut last_delta = -1i64;
    for index in 0..header.record_count as usize {
        let bad = |what: String| BatchV2Error::Record { index, what };
        let (len, n) = signed(&buf[at..]).map_err(|e| bad(e.into()))?;
        at += n;
        if len < 1 || len as usize > buf.len() - at {
            return Err(bad(format!(
                "length {len} does not fit the {} bytes left",
                buf.len() - at
            )));
        }
        let end = at + len as usize;
        let mut r = Reader {
            buf,
            at: at + 1, // attributes
            end,
        };
        let timestamp_delta = r.signed().map_err(&bad)?;
        let offset_delta = r.signed().map_err(&bad)?;
        if offset_delta <= last_delta || offset_delta > header.last_offset_delta.into() {
            return Err(bad(format!(
                "offset delta {offset_delta} after {last_delta} (last offset delta {})",
                header.last_offset_delta
            )));
        }
        last_delta = offset_delta;
        let key = r.nullable().map_err(&bad)?;
        let value = r.nullable().map_err(&bad)?;
        let count = r.signed().map_err(&bad)?;
        if count < 0 || count as usize > (end - r.at) / 2 {
            return Err(bad(format!("header count {count}")));
        }
        let mut headers = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let key = r
                .nullable()
                .map_err(&bad)?
                .ok_or_else(|| bad("a header key is null".into()))?;
            let key = String::from_utf8(key.to_vec())
                .map_err(|_| bad("a header key is not UTF-8".into()))?;
            headers.push(HeaderV2 {
                key,
                value: r.nullable().map_err(&bad)?,
            });
        }
        if r.at != end {
            return Err(bad(format!(
                "{} bytes left over inside the record",
                end - r.at
            )));
        }
        out.push(RecordV2 {
            offset: header.base_offset + offset_delta,
            timestamp_ms: header.base_timestamp.wrapping_add(timestamp_delta),
            key,
            value,
            headers,
        });
        at = end;
    }
    if at != buf.len() {
        return Err(BatchV2Error::Record {
            index: out.len(),
            what: format!("{} bytes after the last record", buf.len() - at),
        });
    }
    Ok(out)
}

fn signed(input: &[u8]) -> Result<(i64, usize), &'static str> {
    varint::get_i64(input).map_err(|e| match e {
        varint::VarintError::Truncated => "a varint is cut off",
        varint::VarintError::Overflow => "a varint is too long",
    })
}

/// Reads the fields of one record, never past its end.
struct Reader<'a> {
    buf: &'a Bytes,
    at: usize,
    end: usize,
}

impl Reader<'_> {
    fn signed(&mut self) -> Result<i64, String> {
        let (v, n) = signed(&self.buf[self.at..self.end]).map_err(String::from)?;
        self.at += n;
        Ok(v)
    }

    fn nullable(&mut self) -> Result<Option<Bytes>, String> {
        let len = self.signed()?;
        if len == -1 {
            return Ok(None);
        }
        if len < 0 || len as usize > self.end - self.at {
            return Err(format!(
                "a field of length {len} does not fit the {} bytes left",
                self.end - self.at
            ));
        }
        let field = self.buf.slice(self.at..self.at + len as usize);
        self.at += len as usize;
        Ok(Some(field))
    }
}

fn i64_at(buf: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

fn i32_at(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by an independent implementation: kafka-python 3.0.12's
    /// `DefaultRecordBatchBuilder(magic=2, compression_type=0, producer_id=-1, ...)` with
    /// (offset 0, ts 1700000000000, key None, value b"hello"), (1, ts +5, b"k1", b"world",
    /// headers [("h", b"v"), ("n", None)]) and (2, ts -10, key b"", value None).
    const KAFKA_PYTHON_3_RECORDS: &str = "000000000000000000000059000000000285d615010000000000020000018bcfe568000000018bcfe56805ffffffffffffffffffffffffffff0000000316000000010a68656c6c6f0028000a02046b310a776f726c640402680276026e010c001304000100";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn b(s: &str) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn the_three() -> Vec<NewRecord> {
        let ts = 1_700_000_000_000;
        vec![
            NewRecord {
                timestamp_ms: ts,
                key: None,
                value: b("hello"),
                headers: vec![],
            },
            NewRecord {
                timestamp_ms: ts + 5,
                key: b("k1"),
                value: b("world"),
                headers: vec![
                    HeaderV2 {
                        key: "h".into(),
                        value: b("v"),
                    },
                    HeaderV2 {
                        key: "n".into(),
                        value: None,
                    },
                ],
            },
            NewRecord {
                timestamp_ms: ts - 10,
                key: b(""),
                value: None,
                headers: vec![],
            },
        ]
    }

    #[test]
    fn encodes_byte_for_byte_what_kafka_python_encodes() {
        let ours = encode(0, 0, ProducerFields::NONE, &the_three()).unwrap();
        assert_eq!(ours, hex(KAFKA_PYTHON_3_RECORDS));
    }

    #[test]
    fn decodes_kafka_pythons_batch() {
        let buf = Bytes::from(hex(KAFKA_PYTHON_3_RECORDS));
        let h = check(&buf).unwrap();
        assert_eq!(
            (h.record_count, h.last_offset_delta, h.compression()),
            (3, 2, 0)
        );
        assert_eq!(h.max_timestamp, 1_700_000_000_005);
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (-1, -1, -1)
        );
        let records = records(&buf).unwrap();
        let want = the_three();
        assert_eq!(records.len(), 3);
        for (i, (got, want)) in records.iter().zip(&want).enumerate() {
            assert_eq!(got.offset, i as i64);
            assert_eq!(got.timestamp_ms, want.timestamp_ms);
            assert_eq!(
                (&got.key, &got.value, &got.headers),
                (&want.key, &want.value, &want.headers)
            );
        }
    }

    #[test]
    fn producer_fields_sit_where_kafka_keeps_them() {
        let record = NewRecord {
            timestamp_ms: 5,
            key: None,
            value: Some(Bytes::from(vec![b'x'; 200])),
            headers: vec![],
        };
        let producer = ProducerFields {
            producer_id: 4242,
            producer_epoch: 3,
            base_sequence: 17,
        };
        let ours = encode(0, 0, producer, &[record]).unwrap();
        // kafka-python, same producer fields and record.
        let theirs = "000000000000000000000102000000000270fbe791000000000000000000000000000500000000000000050000000000001092000300000011000000019e03000000019003";
        assert_eq!(hex(theirs), ours[..hex(theirs).len()].to_vec());
        let h = check(&ours).unwrap();
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (4242, 3, 17)
        );
    }

    #[test]
    fn offset_and_epoch_can_be_assigned_without_touching_the_crc() {
        let mut buf = encode(0, 0, ProducerFields::NONE, &the_three()).unwrap();
        set_base_offset(&mut buf, 1_000);
        set_partition_leader_epoch(&mut buf, 7);
        let h = check(&buf).unwrap();
        assert_eq!(
            (h.base_offset, h.last_offset(), h.partition_leader_epoch),
            (1_000, 1_002, 7)
        );
        let offsets: Vec<i64> = records(&Bytes::from(buf))
            .unwrap()
            .iter()
            .map(|r| r.offset)
            .collect();
        assert_eq!(offsets, [1_000, 1_001, 1_002]);
    }

    #[test]
    fn damage_is_reported_not_decoded() {
        let good = encode(0, 0, ProducerFields::NONE, &the_three()).unwrap();
        // Every single-byte flip after the epoch field is caught (magic, CRC or content).
        for at in MAGIC_AT..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            assert!(check(&bad).is_err(), "a flip at byte {at} went unnoticed");
        }
        // Every truncation, and trailing bytes.
        for len in 0..good.len() {
            assert!(
                check(&good[..len]).is_err(),
                "a batch cut to {len} bytes passed"
            );
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(matches!(check(&longer), Err(BatchV2Error::Length { .. })));
        assert_eq!(
            encode(0, 0, ProducerFields::NONE, &[]),
            Err(BatchV2Error::RecordCount(0))
        );
    }

    #[test]
    fn records_with_a_valid_crc_but_bad_content_are_refused() {
        // A lying record length, re-sealed with a correct CRC: content checks must catch it.
        let mut buf = encode(0, 0, ProducerFields::NONE, &the_three()).unwrap();
        buf[HEADER_LEN] = 0x7e; // first record's length: 63, past its end
        let crc = crc32c::crc32c(&buf[CRC_COVERS_FROM..]);
        buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(check(&buf).is_ok());
        assert!(matches!(
            records(&Bytes::from(buf)),
            Err(BatchV2Error::Record { index: 0, .. })
        ));
        // A compressed batch is checked but not decoded.
        let mut gz = encode(0, 0, ProducerFields::NONE, &the_three()).unwrap();
        gz[22] |= 1;
        let crc = crc32c::crc32c(&gz[CRC_COVERS_FROM..]);
        gz[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(records(&Bytes::from(gz)), Err(BatchV2Error::Compressed(1)));
    }

    #[test]
    fn random_batches_roundtrip() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..200 {
            let n = rng.random_range(1..20);
            let base_ts: i64 = rng.random_range(0..1 << 42);
            let records: Vec<NewRecord> = (0..n)
                .map(|_| NewRecord {
                    timestamp_ms: base_ts + rng.random_range(-1000..1000),
                    key: rng
                        .random_bool(0.5)
                        .then(|| Bytes::from(vec![1u8; rng.random_range(0..40)])),
                    value: rng
                        .random_bool(0.9)
                        .then(|| Bytes::from(vec![2u8; rng.random_range(0..300)])),
                    headers: (0..rng.random_range(0..3))
                        .map(|i| HeaderV2 {
                            key: format!("h{i}"),
                            value: rng.random_bool(0.5).then(|| Bytes::from_static(b"v")),
                        })
                        .collect(),
                })
                .collect();
            let base = rng.random_range(0..1i64 << 40);
            let buf = Bytes::from(encode(base, 3, ProducerFields::NONE, &records).unwrap());
            let got = records_of(&buf);
            assert_eq!(got.len(), records.len());
            for (i, (g, w)) in got.iter().zip(&records).enumerate() {
                assert_eq!(g.offset, base + i as i64);
                assert_eq!(
                    (g.timestamp_ms, &g.key, &g.value, &g.headers),
                    (w.timestamp_ms, &w.key, &w.value, &w.headers)
                );
            }
        }
    }

    #[test]
    fn a_huge_record_count_is_refused_without_reserving_for_it() {
        // Re-sealed with a valid CRC: only the content checks stand between the count and an
        // allocation of ~200 GB (which aborts the process, it cannot be caught).
        let mut buf = encode(0, 0, ProducerFields::NONE, &the_three()).unwrap();
        buf[23..27].copy_from_slice(&i32::MAX.to_be_bytes()); // last offset delta
        buf[57..61].copy_from_slice(&i32::MAX.to_be_bytes()); // record count
        let crc = crc32c::crc32c(&buf[CRC_COVERS_FROM..]);
        buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            records(&Bytes::from(buf)),
            Err(BatchV2Error::Record { index: 3, .. })
        ));
    }

    #[test]
    fn garbage_with_a_valid_crc_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        let good = encode(0, 0, ProducerFields::NONE, &the_three()).unwrap();
        for _ in 0..5_000 {
            let mut buf = good.clone();
            for _ in 0..rng.random_range(1..6) {
                let at = rng.random_range(CRC_COVERS_FROM..buf.len());
                buf[at] = rng.random();
            }
            let crc = crc32c::crc32c(&buf[CRC_COVERS_FROM..]);
            buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
            let count = peek_header(&buf).map(|h| h.record_count);
            if let Ok(decoded) = records(&Bytes::from(buf)) {
                assert_eq!(
                    Ok(decoded.len() as i32),
                    count,
                    "decoded as many as declared"
                );
            }
        }
    }

    fn records_of(buf: &Bytes) -> Vec<RecordV2> {
        records(buf).unwrap()
    }
}
