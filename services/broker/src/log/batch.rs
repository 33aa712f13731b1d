//! Records and record batches, stored and replicated in Kafka's RecordBatch v2 layout byte for
//! byte ([`super::batch_v2`] has the layout and the codec). This module is the broker's view of
//! it: [`Record`] and [`RecordBatch`] with dense offsets from a base offset and one leader epoch
//! (the batch's partition leader epoch), and [`BatchHeader`], the fixed fields a log needs.
//!
//! # What the broker accepts beyond [`super::batch_v2::check`]
//! [`BatchHeader::read`] and [`RecordBatch::decode`] also require what a partition log of this
//! broker holds: a base offset and an epoch that are not negative, at least one record, and
//! dense offsets (last offset delta = record count - 1, so no compacted gaps). Garbage gives a
//! [`BatchError`], never a panic. Null values and null header values (tombstones) read as empty.
//!
//! Batches are kept under a target size ([`DEFAULT_MAX_BATCH_BYTES`], configurable);
//! [`split_into_batches`] cuts a produce request into batches under it.

use bytes::Bytes;

use super::batch_v2::varint;
use super::batch_v2::{self, BatchV2Error, HeaderV2, NewRecord, ProducerFields};

/// The batch layout this module writes and reads: Kafka's magic 2.
pub const BATCH_FORMAT_V2: u8 = batch_v2::MAGIC_V2;
/// Bytes before the first record.
pub const BATCH_HEADER_LEN: usize = batch_v2::HEADER_LEN;
/// Default target size of one encoded batch; see [`super::LogConfig`].
pub const DEFAULT_MAX_BATCH_BYTES: usize = 16 * 1024;
/// Default largest record (encoded, [`Record::encoded_len`]): a batch of it alone is 64 KiB.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 64 * 1024 - BATCH_HEADER_LEN;
/// A record timestamp meaning "not set": the leader stamps it with the append time.
pub const NO_TIMESTAMP: i64 = -1;

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
    /// Later records of a batch take a few bytes more for their timestamp and offset deltas.
    pub fn encoded_len(&self) -> usize {
        self.encoded_len_at(self.timestamp_ms, 0)
    }

    /// The encoded size as record `index` of a batch whose first timestamp is
    /// `first_timestamp_ms` (v2: a length, then attributes, deltas, key, value, headers).
    fn encoded_len_at(&self, first_timestamp_ms: i64, index: usize) -> usize {
        let nullable = |len: usize| varint::len_i64(len as i64) + len;
        let mut body = 1
            + varint::len_i64(self.timestamp_ms.wrapping_sub(first_timestamp_ms))
            + varint::len_i64(index as i64)
            + self.key.as_ref().map_or(1, |k| nullable(k.len()))
            + nullable(self.value.len())
            + varint::len_i64(self.headers.len() as i64);
        for h in &self.headers {
            body += nullable(h.key.len()) + nullable(h.value.len());
        }
        varint::len_i64(body as i64) + body
    }

    fn to_v2(&self) -> NewRecord {
        NewRecord {
            timestamp_ms: self.timestamp_ms,
            key: self.key.clone(),
            value: Some(self.value.clone()),
            headers: self
                .headers
                .iter()
                .map(|h| HeaderV2 {
                    key: h.key.clone(),
                    value: Some(h.value.clone()),
                })
                .collect(),
        }
    }
}

/// Why bytes are not a valid batch, or records cannot form one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("a record batch is at least {BATCH_HEADER_LEN} bytes, got {len}")]
    TooShort { len: usize },
    #[error(
        "unsupported record batch magic {version} (this build reads {BATCH_FORMAT_V2}, Kafka's RecordBatch v2)"
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

    /// Reads the header of the batch that is exactly `buf`, checking the layout, the length,
    /// the count and the offset range, but not the CRC (see [`BatchHeader::read_verified`]).
    pub fn read(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        let v2 = batch_v2::peek_header(buf).map_err(BatchError::from)?;
        if v2.total_len() != buf.len() {
            return Err(BatchError::LengthMismatch {
                declared: v2.total_len() as u64,
                actual: buf.len(),
            });
        }
        BatchHeader::from_v2(&v2, buf.len())
    }

    /// [`BatchHeader::read`] and a check of the CRC over the whole batch (before anything the
    /// CRC covers is trusted).
    pub fn read_verified(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        let v2 = batch_v2::check(buf).map_err(BatchError::from)?;
        BatchHeader::from_v2(&v2, buf.len())
    }

    /// The broker's rules on top of the layout's (see the module docs).
    pub fn from_v2(v2: &batch_v2::BatchHeaderV2, len: usize) -> Result<BatchHeader, BatchError> {
        if v2.record_count < 1 {
            return Err(BatchError::Malformed(format!(
                "the record count is {}",
                v2.record_count
            )));
        }
        if v2.last_offset_delta != v2.record_count - 1 {
            return Err(BatchError::Malformed(format!(
                "{} records with a last offset delta of {}: offsets must be dense",
                v2.record_count, v2.last_offset_delta
            )));
        }
        if v2.base_offset < 0 || v2.partition_leader_epoch < 0 {
            return Err(BatchError::Malformed(format!(
                "base offset {} and leader epoch {} must not be negative",
                v2.base_offset, v2.partition_leader_epoch
            )));
        }
        Ok(BatchHeader {
            base_offset: v2.base_offset as u64,
            leader_epoch: v2.partition_leader_epoch as u64,
            record_count: v2.record_count as u32,
            first_timestamp_ms: v2.base_timestamp,
            max_timestamp_ms: v2.max_timestamp,
            encoded_len: len,
            crc: v2.crc,
        })
    }
}

impl From<BatchV2Error> for BatchError {
    fn from(e: BatchV2Error) -> BatchError {
        match e {
            BatchV2Error::TooShort(len) => BatchError::TooShort { len },
            BatchV2Error::Magic(version) => BatchError::UnsupportedVersion { version },
            BatchV2Error::Length { declared, actual } => BatchError::LengthMismatch {
                declared: declared.max(0) as u64 + batch_v2::LOG_OVERHEAD as u64,
                actual: actual + batch_v2::LOG_OVERHEAD,
            },
            BatchV2Error::Crc { stored, computed } => BatchError::CrcMismatch { stored, computed },
            other => BatchError::Malformed(other.to_string()),
        }
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
                .enumerate()
                .map(|(i, r)| r.encoded_len_at(first, i))
                .sum::<usize>()
    }

    /// Encodes the batch as one uncompressed RecordBatch v2 without producer fields.
    pub fn encode(&self) -> Result<Vec<u8>, BatchError> {
        if self.records.is_empty() {
            return Err(BatchError::Empty);
        }
        let count = i32::try_from(self.records.len())
            .map_err(|_| BatchError::TooLarge(format!("{} records", self.records.len())))?;
        let base = i64::try_from(self.base_offset)
            .ok()
            .filter(|b| b.checked_add(i64::from(count)).is_some())
            .ok_or_else(|| {
                BatchError::TooLarge(format!(
                    "base offset {} plus {count} records overflows",
                    self.base_offset
                ))
            })?;
        let epoch = i32::try_from(self.leader_epoch).map_err(|_| {
            BatchError::TooLarge(format!(
                "leader epoch {} does not fit a batch's 31 bits",
                self.leader_epoch
            ))
        })?;
        let len = self.encoded_len();
        if len > i32::MAX as usize {
            return Err(BatchError::TooLarge(format!("{len} bytes")));
        }
        let records: Vec<NewRecord> = self.records.iter().map(Record::to_v2).collect();
        let out = batch_v2::encode(base, epoch, ProducerFields::NONE, &records)?;
        debug_assert_eq!(out.len(), len);
        Ok(out)
    }

    /// Decodes and verifies a batch; keys and values share `buf`'s memory.
    pub fn decode(buf: Bytes) -> Result<RecordBatch, BatchError> {
        let header = BatchHeader::read_verified(&buf)?;
        let records = batch_v2::records(&buf)?
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                if r.offset != (header.base_offset + i as u64) as i64 {
                    return Err(BatchError::Malformed(format!(
                        "record {i} has offset {}, not {}: offsets must be dense",
                        r.offset,
                        header.base_offset + i as u64
                    )));
                }
                Ok(Record {
                    timestamp_ms: r.timestamp_ms,
                    key: r.key,
                    value: r.value.unwrap_or_default(),
                    headers: r
                        .headers
                        .into_iter()
                        .map(|h| Header {
                            key: h.key,
                            value: h.value.unwrap_or_default(),
                        })
                        .collect(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
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
            let len = record.encoded_len_at(first_timestamp, current.len());
            if current_len + len <= max_batch_bytes && current.len() < i32::MAX as usize {
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
