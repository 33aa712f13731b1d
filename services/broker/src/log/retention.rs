//! Retention: deleting the oldest whole batches of a partition by age and by total size.
//!
//! Defaults ([`super::config`]): 7 days ([`super::DEFAULT_RETENTION_MS`]) and unlimited size
//! ([`super::DEFAULT_RETENTION_BYTES`]); a negative setting ([`super::UNLIMITED`], -1) turns
//! that rule off.
//!
//! Rules, applied batch by batch from the log start, stopping at the first batch kept:
//! - only batches wholly below the high watermark go (uncommitted data is never deleted);
//! - by time: a batch goes when `now_ms - max timestamp > retention_ms` (Kafka's rule, on the
//!   batch's largest record timestamp);
//! - by size: a batch goes while the log is larger than `retention_bytes` (encoded bytes).
//!
//! The log start offset moves to the end of the last deleted batch. The new log start is
//! written before the batches are removed, so a crash in between is finished when the log is
//! opened again.

use super::error::LogError;
use super::partition::{PartitionLog, batch_key};

/// What [`PartitionLog::apply_retention`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    pub deleted_batches: usize,
    pub deleted_bytes: u64,
    /// The log start offset afterwards.
    pub log_start_offset: u64,
}

impl PartitionLog {
    /// Deletes the oldest batches that retention no longer keeps (see the module doc). A
    /// corrupt batch stops retention with [`LogError::Corrupt`] (its age is unknown).
    pub fn apply_retention(
        &self,
        now_ms: i64,
        retention_ms: i64,
        retention_bytes: i64,
    ) -> Result<RetentionOutcome, LogError> {
        let mut state = self.lock_writable()?;
        let mut outcome = RetentionOutcome {
            log_start_offset: state.log_start,
            ..RetentionOutcome::default()
        };
        if retention_ms < 0 && retention_bytes < 0 {
            return Ok(outcome);
        }
        let mut keys = Vec::new();
        let mut size = state.size_bytes;
        let mut new_start = state.log_start;
        for item in self
            .data
            .range(batch_key(state.log_start)..batch_key(state.high_watermark))
        {
            let (key, value) = item.map_err(self.sled_error())?;
            let header = self.verified_header(&key, &value)?;
            if header.next_offset() > state.high_watermark {
                break;
            }
            let expired =
                retention_ms >= 0 && now_ms.saturating_sub(header.max_timestamp_ms) > retention_ms;
            let oversized = retention_bytes >= 0 && size > retention_bytes as u64;
            if !expired && !oversized {
                break;
            }
            size = size.saturating_sub(value.len() as u64);
            outcome.deleted_bytes += value.len() as u64;
            new_start = header.next_offset();
            keys.push(batch_key(header.base_offset));
        }
        if keys.is_empty() {
            return Ok(outcome);
        }
        let mut meta = state.meta();
        meta.log_start_offset = new_start;
        meta.epochs.truncate_from_start(new_start);
        self.write_meta(&meta)?;
        state.log_start = new_start;
        state.epochs = meta.epochs;
        self.remove_keys(&keys)?;
        state.size_bytes = size;
        outcome.deleted_batches = keys.len();
        outcome.log_start_offset = new_start;
        tracing::debug!(topic = %self.id.topic, partition = self.id.partition,
            deleted_batches = outcome.deleted_batches, log_start = new_start, "applied retention");
        Ok(outcome)
    }
}
