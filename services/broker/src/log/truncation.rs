//! Truncation of a partition log ([`PartitionLog::truncate_to`], a follower dropping what the
//! new leader does not have), its reset ([`PartitionLog::truncate_fully_and_start_at`], a
//! follower whose log ends before the leader's start), and deleting detached segment files.

use super::batch::RecordBatch;
use super::batch_v2;
use super::epochs::EpochHistory;
use super::error::LogError;
use super::meta::PartitionMeta;
use super::partition::{Checkpointed, PartitionLog, State};

impl PartitionLog {
    /// Removes every offset at or after `offset` (a follower dropping what the new leader does
    /// not have). A batch holding `offset` is rewritten with its records before `offset` (rare:
    /// replicas share batch boundaries). No-op at or past the log end. The cut is synced; the
    /// rewrite waits for the group commit ([`PartitionLog::is_durable`] tells).
    /// Errors: [`LogError::TruncateBelowHighWatermark`] (a caller bug: committed data stays).
    pub fn truncate_to(&self, offset: u64) -> Result<(), LogError> {
        let mut state = self.lock_writable()?;
        self.truncate_locked(&mut state, offset)
    }

    pub(super) fn truncate_locked(&self, state: &mut State, offset: u64) -> Result<(), LogError> {
        if offset >= state.log_end {
            return Ok(());
        }
        if offset < state.high_watermark {
            return Err(LogError::TruncateBelowHighWatermark {
                offset,
                high_watermark: state.high_watermark,
            });
        }
        let (_, boundary) = state
            .segments()
            .checkpoint_at(offset as i64)
            .map_err(|e| super::store::segment_error(&self.id, e))?;
        let boundary = boundary as u64;
        // The batch that straddles `offset`, cut to the records before it.
        let rewritten = if boundary < offset {
            let bytes = state
                .segments()
                .read(boundary as i64, 1)
                .map_err(|e| super::store::segment_error(&self.id, e))?
                .ok_or_else(|| self.corrupt(Some(boundary), "the batch to cut is gone".into()))?;
            let len = batch_v2::peek_header(&bytes)
                .map_err(|e| self.corrupt(Some(boundary), e.to_string()))?
                .total_len();
            let mut batch = RecordBatch::decode(bytes.slice(..len.min(bytes.len())))
                .map_err(|e| self.corrupt(Some(boundary), e.to_string()))?;
            batch.records.truncate((offset - boundary) as usize);
            Some(batch.encode()?)
        } else {
            None
        };
        let log = state.segments_mut();
        log.truncate_to(boundary as i64)
            .map_err(self.store.segment_failed(&self.id))?;
        state.log_end = boundary;
        if let Some(batch) = rewritten {
            self.write_batch(state, &batch)?;
        }
        debug_assert_eq!(state.log_end, offset);
        let mut epochs = state.epochs.clone();
        if epochs.truncate_from_end(offset) {
            let meta = PartitionMeta {
                epochs: epochs.clone(),
                ..state.meta()
            };
            self.write_meta(&meta)?;
            state.epochs = epochs;
        }
        tracing::info!(topic = %self.id.topic, partition = self.id.partition, offset,
            "truncated partition log");
        Ok(())
    }

    /// Empties the log and restarts it at `offset` (a follower whose log ends before the
    /// leader's log start): log start = log end = high watermark = `offset`, no epoch history.
    /// Errors: [`LogError::TruncateBelowHighWatermark`] if `offset` is below the high watermark.
    pub fn truncate_fully_and_start_at(&self, offset: u64) -> Result<(), LogError> {
        let detached = {
            let mut state = self.lock_writable()?;
            if offset < state.high_watermark {
                return Err(LogError::TruncateBelowHighWatermark {
                    offset,
                    high_watermark: state.high_watermark,
                });
            }
            // The new segment first (synced with its directory entry), then the metadata
            // (synced), then the old files: a crash anywhere leaves what open finishes.
            let detached = state
                .segments_mut()
                .reset_to(offset as i64)
                .map_err(self.store.segment_failed(&self.id))?;
            let meta = PartitionMeta {
                log_start_offset: offset,
                high_watermark: offset,
                checkpoint_segment: offset,
                checkpoint_bytes: 0,
                checkpoint_offset: offset,
                epochs: EpochHistory::default(),
            };
            self.write_meta(&meta)?;
            self.store.sync_meta()?;
            state.log_start = offset;
            state.log_end = offset;
            state.high_watermark = offset;
            state.checkpoint = Checkpointed {
                segment: offset,
                bytes: 0,
                offset,
            };
            state.epochs = meta.epochs;
            state.active_since_ms = None;
            detached
        };
        // Below the new log start nothing is read any more: deleted without the lock.
        self.delete_detached(detached)?;
        tracing::info!(topic = %self.id.topic, partition = self.id.partition, offset,
            "emptied partition log and restarted it");
        Ok(())
    }

    /// Deletes the files of segments taken out of the log, then syncs the directory.
    pub(super) fn delete_detached(
        &self,
        detached: Vec<super::segment::LogSegment>,
    ) -> Result<usize, LogError> {
        let n = detached.len();
        if n == 0 {
            return Ok(0);
        }
        for segment in detached {
            segment
                .delete_files()
                .map_err(self.store.segment_failed(&self.id))?;
        }
        super::segment::sync_dir(&self.store.partition_dir(&self.id))
            .map_err(self.store.segment_failed(&self.id))?;
        Ok(n)
    }
}
