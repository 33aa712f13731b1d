//! Retention: deleting the oldest whole segments of a partition by age and by total size.
//!
//! Defaults ([`super::config`]): 7 days ([`super::DEFAULT_RETENTION_MS`]) and unlimited size
//! ([`super::DEFAULT_RETENTION_BYTES`]); a negative setting ([`super::UNLIMITED`], -1) turns
//! that rule off.
//!
//! Rules, as Kafka's, applied segment by segment from the oldest, stopping at the first kept:
//! - only segments wholly below the high watermark (uncommitted data is never deleted);
//!   segments roll by size (`segment_bytes_max`) and by age (`segment_ms`); when every
//!   segment goes, the active one included, the log first rolls a new empty one (as Kafka);
//! - by time: a segment goes when `now_ms - its largest timestamp > retention_ms`;
//! - by size: a segment goes while the log without it is still at least `retention_bytes`.
//!
//! The log start offset moves to the base of the first segment kept. It is written before the
//! files are deleted, and the files are deleted after the partition's lock is released (no
//! reader looks below the log start), so appends and reads never wait for a deletion; a crash
//! in between is finished when the log is opened again.

use super::error::LogError;
use super::partition::PartitionLog;
use super::store::segment_error;

/// What [`PartitionLog::apply_retention`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    pub deleted_segments: usize,
    pub deleted_bytes: u64,
    /// The log start offset afterwards.
    pub log_start_offset: u64,
}

impl PartitionLog {
    /// Deletes the oldest segments that retention no longer keeps (see the module doc). A
    /// segment whose headers cannot be read stops retention with [`LogError::Corrupt`] (its
    /// age is unknown).
    pub fn apply_retention(
        &self,
        now_ms: i64,
        retention_ms: i64,
        retention_bytes: i64,
    ) -> Result<RetentionOutcome, LogError> {
        let mut outcome = RetentionOutcome::default();
        let detached = {
            let mut state = self.lock_writable()?;
            outcome.log_start_offset = state.log_start;
            if retention_ms < 0 && retention_bytes < 0 {
                return Ok(outcome);
            }
            let log = state.segments();
            let mut size_left = log.size_bytes();
            let mut new_start = None;
            let segments = log.list();
            let active = segments.last().map(|&(b, _, _)| b);
            let mut takes_active = false;
            for (base, next, bytes) in segments {
                if bytes == 0 {
                    break;
                }
                if next as u64 > state.high_watermark {
                    break;
                }
                let expired = retention_ms >= 0
                    && log
                        .max_timestamp_ms(base)
                        .map_err(|e| segment_error(&self.id, e))?
                        .is_some_and(|t| now_ms.saturating_sub(t) > retention_ms);
                let oversized = retention_bytes >= 0
                    && size_left.saturating_sub(bytes) >= retention_bytes as u64;
                if !expired && !oversized {
                    break;
                }
                size_left -= bytes;
                outcome.deleted_segments += 1;
                outcome.deleted_bytes += bytes;
                new_start = Some(next as u64);
                takes_active = Some(base) == active;
            }
            let Some(new_start) = new_start.filter(|&s| s > state.log_start) else {
                return Ok(outcome);
            };
            let mut meta = state.meta();
            meta.log_start_offset = new_start;
            meta.epochs.truncate_from_start(new_start);
            self.write_meta(&meta)?;
            state.log_start = new_start;
            state.epochs = meta.epochs;
            outcome.log_start_offset = new_start;
            if takes_active {
                state.active_since_ms = None;
                state
                    .segments_mut()
                    .roll()
                    .map_err(self.store.segment_failed(&self.id))?;
            }
            state.segments_mut().detach_before(new_start as i64)
        };
        self.delete_detached(detached)?;
        tracing::debug!(topic = %self.id.topic, partition = self.id.partition,
            deleted_segments = outcome.deleted_segments,
            log_start = outcome.log_start_offset, "applied retention");
        Ok(outcome)
    }
}
