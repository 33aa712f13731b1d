//! ListOffsets: the earliest, the latest, or the first offset at or after a timestamp.

use super::error::LogError;
use super::partition::{PartitionLog, batch_key};

/// Which offset [`PartitionLog::list_offset`] looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The high watermark: where a consumer reading committed data ends.
    Latest,
    /// The first committed offset whose record timestamp is at or after this (ms).
    Timestamp(i64),
}

/// An offset found by [`PartitionLog::list_offset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    pub offset: u64,
    /// The record's timestamp, for [`OffsetSpec::Timestamp`] lookups.
    pub timestamp_ms: Option<i64>,
}

impl PartitionLog {
    /// Looks up an offset. Only committed data (below the high watermark) is searched by
    /// timestamp, batch by batch using each batch's max timestamp, then record by record; `None`
    /// when no committed record is that recent. The search reads the log from its start, so it
    /// costs time proportional to the log's size.
    pub fn list_offset(&self, spec: OffsetSpec) -> Result<Option<ListedOffset>, LogError> {
        let (log_start, high_watermark) = {
            let state = self.lock_live()?;
            (state.log_start, state.high_watermark)
        };
        let timestamp = match spec {
            OffsetSpec::Earliest => {
                return Ok(Some(ListedOffset {
                    offset: log_start,
                    timestamp_ms: None,
                }));
            }
            OffsetSpec::Latest => {
                return Ok(Some(ListedOffset {
                    offset: high_watermark,
                    timestamp_ms: None,
                }));
            }
            OffsetSpec::Timestamp(t) => t,
        };
        for item in self
            .data
            .range(batch_key(log_start)..batch_key(high_watermark))
        {
            let (key, value) = item.map_err(self.sled_error())?;
            let header = self.verified_header(&key, &value)?;
            if header.next_offset() > high_watermark {
                break;
            }
            if header.max_timestamp_ms < timestamp {
                continue;
            }
            let batch = super::RecordBatch::decode(bytes::Bytes::from_owner(value))
                .map_err(|e| self.corrupt(Some(header.base_offset), e.to_string()))?;
            if let Some((offset, record)) = batch.iter().find(|(_, r)| r.timestamp_ms >= timestamp)
            {
                return Ok(Some(ListedOffset {
                    offset,
                    timestamp_ms: Some(record.timestamp_ms),
                }));
            }
        }
        Ok(None)
    }
}
