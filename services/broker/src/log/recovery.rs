//! Opening a partition log ([`PartitionLog::recover`]): finishing or repairing what a crash
//! interrupted, while reading only the tail of the log past its recovery checkpoint, so
//! start-up does not grow with the log.
//!
//! What open does, in order:
//! 1. The segments open ([`SegmentedLog::open`]): below the checkpoint only batch headers from
//!    the last index entry are read; past it every batch is CRC-checked, and the first torn or
//!    corrupt one and everything after it is cut off (unsynced data a crash tore; nothing
//!    acknowledged lies there, since acknowledged data is synced and the checkpoint only moves
//!    over synced data).
//! 2. A gap between segments is a reset ([`PartitionLog::truncate_fully_and_start_at`]) a
//!    crash interrupted: the segments before it go.
//! 3. The log start is the larger of the recorded one and the first segment's base (retention
//!    moves the former before deleting files, so after a crash either may lead); whole segments
//!    below it go.
//! 4. The leader epochs of the batches step 1 checked (past the checkpoint) are taken for
//!    those a crash kept out of the stored history.
//! 5. The metadata is fixed where the crash left it inconsistent (epochs past the end, a high
//!    watermark past the end), and the active segment is synced: what open found is durable
//!    before it is served (a follower reports its log end as durable).

use super::error::LogError;
use super::meta::PartitionMeta;
use super::partition::PartitionLog;
use super::segment::segmented::{Checkpoint, SegmentedLog};

impl PartitionLog {
    pub(super) fn recover(&self) -> Result<(), LogError> {
        let stored = self
            .store
            .meta
            .get(self.name.as_bytes())
            .map_err(self.sled_error())?;
        let mut meta = match &stored {
            None => PartitionMeta::default(),
            Some(value) => PartitionMeta::decode(self.name.as_bytes(), value)
                .map_err(|detail| self.corrupt(None, format!("partition metadata: {detail}")))?,
        };
        let mut rewrite_meta = stored.is_none();
        let dir = self.store.partition_dir(&self.id);

        // 1. The segments.
        let checkpoint = Checkpoint {
            segment_base: meta.checkpoint_segment as i64,
            bytes: meta.checkpoint_bytes,
        };
        let (mut log, recovered) = SegmentedLog::open(
            &dir,
            meta.log_start_offset as i64,
            checkpoint,
            self.segmented_config(),
        )
        .map_err(self.store.segment_failed(&self.id))?;
        if stored.is_none() {
            // A new partition: its directory entry is durable before anything in it.
            if let Some(parent) = dir.parent() {
                std::fs::File::open(parent)
                    .and_then(|d| d.sync_all())
                    .map_err(super::durable::io_error(
                        "sync the partitions directory",
                        parent,
                    ))?;
            }
        }
        #[cfg(test)]
        self.batches_read_at_open.store(
            recovered
                .iter()
                .map(|(_, r)| r.batches_checked as usize)
                .sum(),
            std::sync::atomic::Ordering::Relaxed,
        );
        for (base, r) in &recovered {
            if r.truncated_bytes > 0 {
                tracing::warn!(topic = %self.id.topic, partition = self.id.partition,
                    segment = base, cut_bytes = r.truncated_bytes,
                    "cut a torn or corrupt unsynced tail off a segment");
            }
        }

        // 2. An interrupted reset.
        let mut detached = Vec::new();
        if let Some(gap_end) = log.gap_start() {
            tracing::warn!(topic = %self.id.topic, partition = self.id.partition,
                restart_at = gap_end, "finishing an interrupted restart of the log");
            detached.extend(log.detach_before(gap_end));
            if log.log_start_offset() < gap_end {
                return Err(self.corrupt(
                    None,
                    format!("segments before offset {gap_end} remain after a gap"),
                ));
            }
            meta.log_start_offset = meta.log_start_offset.max(gap_end as u64);
            meta.epochs.clear();
            rewrite_meta = true;
        }

        // 3. The log start.
        let log_start = meta.log_start_offset.max(log.log_start_offset() as u64);
        detached.extend(log.detach_before(log_start as i64));
        let log_end = log.next_offset() as u64;
        if log_end < log_start {
            return Err(self.corrupt(
                None,
                format!(
                    "the segments end at offset {log_end}, before the log start {log_start} \
                     (data that was durable is missing)"
                ),
            ));
        }
        if log_start != meta.log_start_offset {
            meta.log_start_offset = log_start;
            rewrite_meta = true;
        }

        // 4. Epochs of the batches past the checkpoint: the segments' recovery read them.
        let epoch_changes: Vec<(u64, u64)> = recovered
            .iter()
            .flat_map(|(_, r)| r.epoch_starts.iter())
            .filter(|&&(_, base)| base as u64 >= log_start)
            .map(|&(epoch, base)| (epoch.max(0) as u64, base as u64))
            .collect();

        // 5. Metadata a crash left behind.
        let mut epochs = meta.epochs.clone();
        // Epochs recorded before batches that a crash lost.
        epochs.truncate_from_end(log_end.saturating_add(1));
        epochs.truncate_from_start(log_start);
        for (epoch, start) in epoch_changes {
            if epochs.latest_epoch().is_none_or(|latest| epoch > latest) {
                tracing::warn!(topic = %self.id.topic, partition = self.id.partition, epoch,
                    start, "re-deriving a leader epoch missing from the stored history");
                epochs.assign(epoch, start);
            }
        }
        if epochs != meta.epochs {
            meta.epochs = epochs;
            rewrite_meta = true;
        }
        if meta.high_watermark > log_end {
            tracing::warn!(topic = %self.id.topic, partition = self.id.partition,
                high_watermark = meta.high_watermark, log_end_offset = log_end,
                "stored high watermark is past the log end (unsynced data lost); lowering it");
            meta.high_watermark = log_end;
            rewrite_meta = true;
        }
        if meta.high_watermark < log_start {
            meta.high_watermark = log_start;
            rewrite_meta = true;
        }
        log.sync().map_err(self.store.segment_failed(&self.id))?;
        self.store.count_sync();
        let mut state = self.lock();
        state.log = Some(log);
        state.log_start = log_start;
        state.log_end = log_end;
        state.high_watermark = meta.high_watermark;
        state.epochs = meta.epochs.clone();
        let checkpoint = self.checkpoint_at(&state, meta.high_watermark)?;
        if (checkpoint.segment, checkpoint.bytes, checkpoint.offset)
            != (
                meta.checkpoint_segment,
                meta.checkpoint_bytes,
                meta.checkpoint_offset,
            )
        {
            meta.checkpoint_segment = checkpoint.segment;
            meta.checkpoint_bytes = checkpoint.bytes;
            meta.checkpoint_offset = checkpoint.offset;
            rewrite_meta = true;
        }
        state.checkpoint = checkpoint;
        if rewrite_meta {
            self.write_meta(&meta)?;
        }
        drop(state);
        self.delete_detached(detached)?;
        tracing::debug!(topic = %self.id.topic, partition = self.id.partition,
            log_start, log_end, high_watermark = meta.high_watermark,
            checkpoint_offset = meta.checkpoint_offset, "opened partition log");
        Ok(())
    }
}
