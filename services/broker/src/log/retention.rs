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
//!
//! Retention works a chunk of [`RETENTION_CHUNK_BATCHES`] batches at a time: it reads their
//! headers without the partition's lock (nothing below the high watermark changes), takes the
//! lock only to move the log start, and removes the batches after releasing it (no reader
//! looks below the log start). Appends and reads never wait for a long deletion.

use super::error::LogError;
use super::partition::{PartitionLog, batch_key};

/// Batches examined, and at most deleted, per step of retention.
pub const RETENTION_CHUNK_BATCHES: usize = 1024;

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
        let mut outcome = RetentionOutcome {
            log_start_offset: self.lock_writable()?.log_start,
            ..RetentionOutcome::default()
        };
        if retention_ms < 0 && retention_bytes < 0 {
            return Ok(outcome);
        }
        loop {
            let (log_start, high_watermark, size) = {
                let state = self.lock_writable()?;
                (
                    state.log_start,
                    state.high_watermark,
                    state.acct.size_bytes(),
                )
            };
            // Plan one chunk, without the lock.
            let mut size_left = size;
            let mut new_start = log_start;
            let mut chunk_bytes = 0u64;
            let mut chunk_batches = 0usize;
            for item in self
                .data
                .range(batch_key(log_start)..batch_key(high_watermark))
                .take(RETENTION_CHUNK_BATCHES)
            {
                let (key, value) = item.map_err(self.sled_error())?;
                let header = self.verified_header(&key, &value)?;
                if header.next_offset() > high_watermark {
                    break;
                }
                let expired = retention_ms >= 0
                    && now_ms.saturating_sub(header.max_timestamp_ms) > retention_ms;
                let oversized = retention_bytes >= 0 && size_left > retention_bytes as u64;
                if !expired && !oversized {
                    break;
                }
                size_left = size_left.saturating_sub(value.len() as u64);
                chunk_bytes += value.len() as u64;
                chunk_batches += 1;
                new_start = header.next_offset();
            }
            if chunk_batches == 0 {
                break;
            }
            // Move the log start, under the lock, unless the log changed meanwhile.
            {
                let mut state = self.lock_writable()?;
                if state.log_start != log_start {
                    break;
                }
                let mut meta = state.meta();
                meta.log_start_offset = new_start;
                meta.epochs.truncate_from_start(new_start);
                let mut acct = state.acct.clone();
                acct.remove_front(new_start, chunk_bytes);
                meta.recovery_point = acct.recovery_point();
                meta.bytes_below_recovery_point = acct.bytes_below_recovery_point();
                self.write_meta(&meta)?;
                state.log_start = new_start;
                state.epochs = meta.epochs;
                state.acct = acct;
            }
            // Remove the batches, without the lock.
            self.remove_below(new_start)?;
            outcome.deleted_batches += chunk_batches;
            outcome.deleted_bytes += chunk_bytes;
            outcome.log_start_offset = new_start;
            if chunk_batches < RETENTION_CHUNK_BATCHES {
                break;
            }
            #[cfg(test)]
            if let Some(hook) = self
                .between_retention_chunks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
            {
                hook();
            }
        }
        if outcome.deleted_batches > 0 {
            tracing::debug!(topic = %self.id.topic, partition = self.id.partition,
                deleted_batches = outcome.deleted_batches,
                log_start = outcome.log_start_offset, "applied retention");
        }
        Ok(outcome)
    }
}
