//! Records and record batches, and their binary encoding (one encoded batch = one stored value).
//!
//! # Encoding, format version 1
//! Fixed-width integers are big-endian; "varint" is unsigned LEB128 (at most 10 bytes), "zigzag"
//! a zigzag varint (see [`super::varint`]).
//!
//! ```text
//! offset size  field
//!      0    1  format version = 1
//!      1    4  CRC32C (Castagnoli) of every byte after this field, [5, end)
//!      5    8  base offset (u64): the offset of the first record; record i has base + i
//!     13    8  leader epoch (u64) of the leader that assigned the offsets
//!     21    4  record count (u32, >= 1)
//!     25    8  first timestamp (i64 ms) = the first record's timestamp
//!     33    8  max timestamp (i64 ms) = the largest record timestamp
//!     41    4  records length (u32): bytes after the header; the batch is 45 + this long
//!     45       records, back to back, each:
//!                zigzag   timestamp - first timestamp (wrapping)
//!                varint   key length + 1 (0 = no key), then the key
//!                varint   value length, then the value
//!                varint   header count, then for each header:
//!                           varint key length, the key (UTF-8), varint value length, the value
//! ```
//! [`RecordBatch::decode`] checks the version, the total length, the CRC, every length against
//! what is left, that the records fill the section exactly, that the count, the first and the
//! max timestamp agree with the records, and that the offsets do not overflow; garbage gives a
//! [`BatchError`], never a panic.
//!
//! Batches are kept under a target size ([`DEFAULT_MAX_BATCH_BYTES`], configurable) so that a sled
//! tree node of them stays below the ~128 KiB at which sled writes blob files (DESIGN.md,
//! "Storage facts"); [`split_into_batches`] cuts a produce request into batches under it.

use bytes::Bytes;

use super::varint;

/// The batch format this module writes and reads.
pub const BATCH_FORMAT_V1: u8 = 1;
/// Bytes before the first record.
pub const BATCH_HEADER_LEN: usize = 45;
/// Where the CRC sits; it covers everything from [`CRC_COVERS_FROM`] on.
const CRC_AT: usize = 1;
const CRC_COVERS_FROM: usize = 5;
/// Default target size of one encoded batch (one stored value); see [`super::LogConfig`].
pub const DEFAULT_MAX_BATCH_BYTES: usize = 16 * 1024;
/// Default largest record (encoded, [`Record::encoded_len`]): a batch of it alone is 64 KiB.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 64 * 1024 - BATCH_HEADER_LEN;
/// A record timestamp meaning "not set": the leader stamps it with the append time.
pub const NO_TIMESTAMP: i64 = -1;
/// The smallest encoded record (timestamp delta, key length, value length, header count).
const MIN_RECORD_LEN: usize = 4;
/// The smallest encoded header (key length, value length).
const MIN_HEADER_LEN: usize = 2;

/// A record header: a string key and a bytes value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Bytes,
}

/// One record. Its offset is not stored in it: it is the batch's base offset plus its index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Milliseconds since the Unix epoch; [`NO_TIMESTAMP`] asks the leader to stamp it.
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<Header>,
}

impl Record {
    /// A record with a value only and no timestamp (the leader stamps it).
    pub fn new(value: impl Into<Bytes>) -> Record {
        Record {
            timestamp_ms: NO_TIMESTAMP,
            key: None,
            value: value.into(),
            headers: Vec::new(),
        }
    }

    /// The record's encoded size as the first record of a batch: what record size limits count.
    /// Later records of a batch may take up to 9 bytes more for their timestamp delta.
    pub fn encoded_len(&self) -> usize {
        self.encoded_len_after(self.timestamp_ms)
    }

    /// The encoded size in a batch whose first timestamp is `first_timestamp_ms`.
    fn encoded_len_after(&self, first_timestamp_ms: i64) -> usize {
        let key = self.key.as_ref().map_or(0, |k| k.len());
        let key_prefix = self.key.as_ref().map_or(0, |k| k.len() as u64 + 1);
        let mut len = varint::len_i64(self.timestamp_ms.wrapping_sub(first_timestamp_ms))
            + varint::len_u64(key_prefix)
            + key
            + varint::len_u64(self.value.len() as u64)
            + self.value.len()
            + varint::len_u64(self.headers.len() as u64);
        for h in &self.headers {
            len += varint::len_u64(h.key.len() as u64)
                + h.key.len()
                + varint::len_u64(h.value.len() as u64)
                + h.value.len();
        }
        len
    }

    fn encode_into(&self, out: &mut Vec<u8>, first_timestamp_ms: i64) {
        varint::put_i64(out, self.timestamp_ms.wrapping_sub(first_timestamp_ms));
        match &self.key {
            None => varint::put_u64(out, 0),
            Some(k) => {
                varint::put_u64(out, k.len() as u64 + 1);
                out.extend_from_slice(k);
            }
        }
        varint::put_u64(out, self.value.len() as u64);
        out.extend_from_slice(&self.value);
        varint::put_u64(out, self.headers.len() as u64);
        for h in &self.headers {
            varint::put_u64(out, h.key.len() as u64);
            out.extend_from_slice(h.key.as_bytes());
            varint::put_u64(out, h.value.len() as u64);
            out.extend_from_slice(&h.value);
        }
    }
}

/// Why bytes are not a valid batch, or records cannot form one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("a record batch is at least {BATCH_HEADER_LEN} bytes, got {len}")]
    TooShort { len: usize },
    #[error(
        "unsupported record batch format version {version} (this build reads {BATCH_FORMAT_V1})"
    )]
    UnsupportedVersion { version: u8 },
    #[error("the batch header declares {declared} bytes but the value is {actual} bytes")]
    LengthMismatch { declared: u64, actual: usize },
    #[error("CRC32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("malformed batch: {0}")]
    Malformed(String),
    #[error("a record batch needs at least one record")]
    Empty,
    #[error("the batch is too large to encode: {0}")]
    TooLarge(String),
    /// One record alone does not fit under the limit: refuse it (INVALID_ARGUMENT).
    #[error("a record of {size} bytes (encoded) is larger than the limit of {max} bytes")]
    RecordTooLarge { size: usize, max: usize },
}

/// The fixed fields at the front of an encoded batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: u64,
    pub leader_epoch: u64,
    pub record_count: u32,
    pub first_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    /// The whole encoded batch, header included.
    pub encoded_len: usize,
    pub crc: u32,
}

impl BatchHeader {
    /// The offset of the last record.
    pub fn last_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count) - 1
    }

    /// The offset after the last record.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }

    /// Whether `offset` is one of this batch's.
    pub fn contains(&self, offset: u64) -> bool {
        self.base_offset <= offset && offset < self.next_offset()
    }

    /// Reads the header of the batch that is exactly `buf`, checking the version, the length,
    /// the count and the offset range, but not the CRC (see [`BatchHeader::read_verified`]).
    pub fn read(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        let header = BatchHeader::parse(buf)?;
        header.check()?;
        Ok(header)
    }

    /// [`BatchHeader::read`] and a check of the CRC over the whole batch (before anything the
    /// CRC covers is trusted).
    pub fn read_verified(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        let header = BatchHeader::parse(buf)?;
        let computed = crc32c::crc32c(&buf[CRC_COVERS_FROM..]);
        if computed != header.crc {
            return Err(BatchError::CrcMismatch {
                stored: header.crc,
                computed,
            });
        }
        header.check()?;
        Ok(header)
    }

    /// The fields, once the version and the total length are right.
    fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        let Some(head) = buf.first_chunk::<BATCH_HEADER_LEN>() else {
            return Err(BatchError::TooShort { len: buf.len() });
        };
        if head[0] != BATCH_FORMAT_V1 {
            return Err(BatchError::UnsupportedVersion { version: head[0] });
        }
        let u64_at = |at: usize| u64::from_be_bytes(head[at..at + 8].try_into().unwrap());
        let u32_at = |at: usize| u32::from_be_bytes(head[at..at + 4].try_into().unwrap());
        let records_len = u32_at(41);
        let declared = BATCH_HEADER_LEN as u64 + u64::from(records_len);
        if declared != buf.len() as u64 {
            return Err(BatchError::LengthMismatch {
                declared,
                actual: buf.len(),
            });
        }
        Ok(BatchHeader {
            crc: u32_at(CRC_AT),
            base_offset: u64_at(5),
            leader_epoch: u64_at(13),
            record_count: u32_at(21),
            first_timestamp_ms: u64_at(25) as i64,
            max_timestamp_ms: u64_at(33) as i64,
            encoded_len: buf.len(),
        })
    }

    /// The rules the fields must follow.
    fn check(&self) -> Result<(), BatchError> {
        if self.record_count == 0 {
            return Err(BatchError::Malformed("the record count is 0".into()));
        }
        if self
            .base_offset
            .checked_add(u64::from(self.record_count))
            .is_none()
        {
            return Err(BatchError::Malformed(format!(
                "base offset {} plus {} records overflows",
                self.base_offset, self.record_count
            )));
        }
        let records_len = self.encoded_len - BATCH_HEADER_LEN;
        if records_len < self.record_count as usize * MIN_RECORD_LEN {
            return Err(BatchError::Malformed(format!(
                "{} records cannot fit in {records_len} bytes",
                self.record_count
            )));
        }
        Ok(())
    }
}

/// Records with consecutive offsets from `base_offset`, all written by one leader epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBatch {
    pub base_offset: u64,
    pub leader_epoch: u64,
    /// At least one.
    pub records: Vec<Record>,
}

impl RecordBatch {
    pub fn record_count(&self) -> usize {
        self.records.len()
    }

    /// The offset of the last record (the base offset if there are none).
    pub fn last_offset(&self) -> u64 {
        self.next_offset().saturating_sub(1).max(self.base_offset)
    }

    /// The offset after the last record.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + self.records.len() as u64
    }

    /// The first record's timestamp (or [`NO_TIMESTAMP`] without records).
    pub fn first_timestamp_ms(&self) -> i64 {
        self.records
            .first()
            .map_or(NO_TIMESTAMP, |r| r.timestamp_ms)
    }

    /// The largest record timestamp (or [`NO_TIMESTAMP`] without records).
    pub fn max_timestamp_ms(&self) -> i64 {
        self.records
            .iter()
            .map(|r| r.timestamp_ms)
            .max()
            .unwrap_or(NO_TIMESTAMP)
    }

    /// Each record with its offset.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Record)> {
        (self.base_offset..).zip(self.records.iter())
    }

    /// The size [`RecordBatch::encode`] produces.
    pub fn encoded_len(&self) -> usize {
        let first = self.first_timestamp_ms();
        BATCH_HEADER_LEN
            + self
                .records
                .iter()
                .map(|r| r.encoded_len_after(first))
                .sum::<usize>()
    }

    /// Encodes the batch (format version 1).
    pub fn encode(&self) -> Result<Vec<u8>, BatchError> {
        if self.records.is_empty() {
            return Err(BatchError::Empty);
        }
        let count = u32::try_from(self.records.len())
            .map_err(|_| BatchError::TooLarge(format!("{} records", self.records.len())))?;
        if self.base_offset.checked_add(u64::from(count)).is_none() {
            return Err(BatchError::TooLarge(format!(
                "base offset {} plus {count} records overflows",
                self.base_offset
            )));
        }
        let len = self.encoded_len();
        let records_len = u32::try_from(len - BATCH_HEADER_LEN)
            .map_err(|_| BatchError::TooLarge(format!("{len} bytes")))?;
        let first = self.first_timestamp_ms();
        let mut out = Vec::with_capacity(len);
        out.push(BATCH_FORMAT_V1);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.base_offset.to_be_bytes());
        out.extend_from_slice(&self.leader_epoch.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
        out.extend_from_slice(&first.to_be_bytes());
        out.extend_from_slice(&self.max_timestamp_ms().to_be_bytes());
        out.extend_from_slice(&records_len.to_be_bytes());
        for r in &self.records {
            r.encode_into(&mut out, first);
        }
        debug_assert_eq!(out.len(), len);
        let crc = crc32c::crc32c(&out[CRC_COVERS_FROM..]);
        out[CRC_AT..CRC_COVERS_FROM].copy_from_slice(&crc.to_be_bytes());
        Ok(out)
    }

    /// Decodes and verifies a batch; keys and values share `buf`'s memory.
    pub fn decode(buf: Bytes) -> Result<RecordBatch, BatchError> {
        let header = BatchHeader::read_verified(&buf)?;
        let records = decode_records(&buf, &header)?;
        Ok(RecordBatch {
            base_offset: header.base_offset,
            leader_epoch: header.leader_epoch,
            records,
        })
    }

    /// [`RecordBatch::decode`] of a copy of `buf`.
    pub fn decode_slice(buf: &[u8]) -> Result<RecordBatch, BatchError> {
        RecordBatch::decode(Bytes::copy_from_slice(buf))
    }
}

/// Reads the records of a batch whose header (and CRC) was checked.
fn decode_records(buf: &Bytes, header: &BatchHeader) -> Result<Vec<Record>, BatchError> {
    let count = header.record_count as usize;
    let mut cursor = Cursor {
        buf,
        at: BATCH_HEADER_LEN,
    };
    // The header checked that `count` records can fit, so this allocation is bounded.
    let mut records = Vec::with_capacity(count);
    let mut max_timestamp = i64::MIN;
    for i in 0..count {
        let fail = |what: String| BatchError::Malformed(format!("record {i}: {what}"));
        let delta = cursor.zigzag().map_err(&fail)?;
        let timestamp_ms = header.first_timestamp_ms.wrapping_add(delta);
        if i == 0 && delta != 0 {
            return Err(fail(format!(
                "its timestamp delta is {delta}, the first record's must be 0"
            )));
        }
        max_timestamp = max_timestamp.max(timestamp_ms);
        let key = match cursor.varint("key length").map_err(&fail)? {
            0 => None,
            n => Some(cursor.bytes(n - 1, "key").map_err(&fail)?),
        };
        let value_len = cursor.varint("value length").map_err(&fail)?;
        let value = cursor.bytes(value_len, "value").map_err(&fail)?;
        let header_count = cursor.varint("header count").map_err(&fail)?;
        if header_count > (cursor.left() / MIN_HEADER_LEN) as u64 {
            return Err(fail(format!(
                "{header_count} headers cannot fit in the {} bytes left",
                cursor.left()
            )));
        }
        let mut headers = Vec::with_capacity(header_count as usize);
        for h in 0..header_count {
            let key_len = cursor.varint("header key length").map_err(&fail)?;
            let key = cursor.bytes(key_len, "header key").map_err(&fail)?;
            let key = String::from_utf8(key.to_vec())
                .map_err(|_| fail(format!("header {h}: the key is not UTF-8")))?;
            let value_len = cursor.varint("header value length").map_err(&fail)?;
            let value = cursor.bytes(value_len, "header value").map_err(&fail)?;
            headers.push(Header { key, value });
        }
        records.push(Record {
            timestamp_ms,
            key,
            value,
            headers,
        });
    }
    if cursor.left() != 0 {
        return Err(BatchError::Malformed(format!(
            "{} bytes follow the last record",
            cursor.left()
        )));
    }
    if max_timestamp != header.max_timestamp_ms {
        return Err(BatchError::Malformed(format!(
            "the header's max timestamp {} differs from the records' {max_timestamp}",
            header.max_timestamp_ms
        )));
    }
    Ok(records)
}

struct Cursor<'a> {
    buf: &'a Bytes,
    at: usize,
}

impl Cursor<'_> {
    fn left(&self) -> usize {
        self.buf.len() - self.at
    }

    fn varint(&mut self, what: &str) -> Result<u64, String> {
        let (v, n) = varint::get_u64(&self.buf[self.at..])
            .map_err(|e| format!("bad {what} varint at byte {}: {e:?}", self.at))?;
        self.at += n;
        Ok(v)
    }

    fn zigzag(&mut self) -> Result<i64, String> {
        let (v, n) = varint::get_i64(&self.buf[self.at..])
            .map_err(|e| format!("bad timestamp varint at byte {}: {e:?}", self.at))?;
        self.at += n;
        Ok(v)
    }

    fn bytes(&mut self, len: u64, what: &str) -> Result<Bytes, String> {
        if len > self.left() as u64 {
            return Err(format!(
                "{what} length {len} exceeds the {} bytes left",
                self.left()
            ));
        }
        let end = self.at + len as usize;
        let out = self.buf.slice(self.at..end);
        self.at = end;
        Ok(out)
    }
}

/// Cuts `records` (in order) into groups that each encode to at most `max_batch_bytes`, filling
/// each group as far as it goes; a record too large for that shares no batch (it is stored alone,
/// in a batch over the target). Fails, before anything else, with [`BatchError::RecordTooLarge`]
/// if a record's [`Record::encoded_len`] is over `max_record_bytes`, and with
/// [`BatchError::Empty`] without records.
pub fn split_into_batches(
    records: Vec<Record>,
    max_batch_bytes: usize,
    max_record_bytes: usize,
) -> Result<Vec<Vec<Record>>, BatchError> {
    if records.is_empty() {
        return Err(BatchError::Empty);
    }
    if let Some(size) = records
        .iter()
        .map(Record::encoded_len)
        .find(|&size| size > max_record_bytes)
    {
        return Err(BatchError::RecordTooLarge {
            size,
            max: max_record_bytes,
        });
    }
    let mut groups = Vec::new();
    let mut current: Vec<Record> = Vec::new();
    let mut current_len = BATCH_HEADER_LEN;
    let mut first_timestamp = 0;
    for record in records {
        if !current.is_empty() {
            let len = record.encoded_len_after(first_timestamp);
            if current_len + len <= max_batch_bytes && current.len() < u32::MAX as usize {
                current_len += len;
                current.push(record);
                continue;
            }
            groups.push(std::mem::take(&mut current));
        }
        first_timestamp = record.timestamp_ms;
        current_len = BATCH_HEADER_LEN + record.encoded_len();
        current.push(record);
    }
    groups.push(current);
    Ok(groups)
}
