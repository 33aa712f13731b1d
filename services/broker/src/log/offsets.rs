//! ListOffsets: the earliest, the latest, or the first offset at or after a timestamp.

use super::error::LogError;
use super::partition::PartitionLog;
use super::store::segment_error;

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

/// Bytes read per step of a timestamp search.
const SEARCH_READ_BYTES: usize = 1 << 20;

impl PartitionLog {
    /// Looks up an offset. Only committed data (below the high watermark) is searched by
    /// timestamp: sealed segments whose largest timestamp is older are skipped whole, the
    /// segment's time index says where in it to start, then batch by batch on each batch's max
    /// timestamp, then record by record; `None` when no committed record is that recent.
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
        // Skip sealed segments that are all older.
        let mut at = log_start;
        {
            let state = self.lock_live()?;
            let log = state.segments();
            for (base, next, _) in log.sealed() {
                if (next as u64) <= at {
                    continue;
                }
                let max = log
                    .max_timestamp_ms(base)
                    .map_err(|e| segment_error(&self.id, e))?;
                if max.is_some_and(|m| m < timestamp) {
                    at = at.max(next as u64);
                } else {
                    break;
                }
            }
            // Within the segment: from its time index's bound on.
            at = (log.time_search_start(at as i64, timestamp) as u64).min(high_watermark.max(at));
        }
        while at < high_watermark {
            let batches =
                self.read_encoded(at, SEARCH_READ_BYTES, super::ReadBound::HighWatermark)?;
            let Some(last) = batches.last() else {
                break;
            };
            let next = last.header.next_offset();
            for b in batches {
                if b.header.max_timestamp_ms < timestamp {
                    continue;
                }
                let batch = b
                    .decode()
                    .map_err(|e| self.corrupt(Some(b.header.base_offset), e.to_string()))?;
                if let Some((offset, record)) = batch
                    .iter()
                    .find(|(o, r)| *o >= at && r.timestamp_ms >= timestamp)
                {
                    return Ok(Some(ListedOffset {
                        offset,
                        timestamp_ms: Some(record.timestamp_ms),
                    }));
                }
            }
            debug_assert!(next > at);
            at = next;
        }
        Ok(None)
    }
}
