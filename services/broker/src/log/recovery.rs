//! Opening a partition log ([`PartitionLog::recover`]): finishing or repairing what a crash
//! interrupted, while reading only the tail of the log past its recovery point (see
//! [`super::accounting`]), so start-up does not grow with the log.
//!
//! What open does, in order:
//! 1. Batches left below the log start (retention or a reset interrupted after writing the new
//!    log start) are removed; one straddling the log start is corruption.
//! 2. The batch that ends at the recovery point is read and checked (it must end exactly
//!    there): the batches below it were durable and checked when the point was checkpointed,
//!    and are checked again whenever they are read.
//! 3. Every batch from the recovery point on is read and CRC-checked: dense offsets, the log
//!    end, their sizes, and leader epochs a crash kept out of the stored history. A corrupt
//!    batch in the middle is logged (reads report it); a corrupt last batch, a gap, or bad
//!    metadata fail with [`LogError::Corrupt`].
//! 4. The metadata is fixed where the crash left it inconsistent (epochs past the end, a high
//!    watermark past the end), and the recovery point is moved up to the high watermark.

use super::accounting::Accounting;
use super::batch::{BatchError, BatchHeader};
use super::error::LogError;
use super::meta::PartitionMeta;
use super::partition::{PartitionLog, batch_key};

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
        let log_start = meta.log_start_offset;

        // 1. Leftovers below the log start.
        if let Some((key, value)) = self
            .data
            .range(..batch_key(log_start))
            .next_back()
            .transpose()
            .map_err(self.sled_error())?
        {
            if let Ok(h) = BatchHeader::read(&value)
                && h.next_offset() > log_start
            {
                return Err(self.corrupt(
                    Some(h.base_offset),
                    format!(
                        "the batch {}..{} straddles the log start offset {log_start}",
                        h.base_offset,
                        h.next_offset()
                    ),
                ));
            }
            drop((key, value));
            let removed = self.remove_below(log_start)?;
            tracing::info!(topic = %self.id.topic, partition = self.id.partition,
                batches = removed, "finished an interrupted removal of old batches");
        }

        // 2. The recovery point.
        let (recovery_point, bytes_below) = if meta.recovery_point > log_start {
            (meta.recovery_point, meta.bytes_below_recovery_point)
        } else {
            (log_start, 0)
        };
        if recovery_point > log_start {
            let before = self
                .data
                .range(batch_key(log_start)..batch_key(recovery_point))
                .next_back()
                .transpose()
                .map_err(self.sled_error())?;
            let Some((key, value)) = before else {
                return Err(self.corrupt(
                    None,
                    format!(
                        "no batch is stored below the recovery point {recovery_point} although \
                         the log starts at {log_start}"
                    ),
                ));
            };
            let header = self.verified_header(&key, &value)?;
            if header.next_offset() != recovery_point {
                return Err(self.corrupt(
                    Some(header.base_offset),
                    format!(
                        "the batch {}..{} does not end at the recovery point {recovery_point}",
                        header.base_offset,
                        header.next_offset()
                    ),
                ));
            }
        }

        // 3. The tail.
        let mut acct = Accounting::new(recovery_point, bytes_below);
        // The offset the next batch must start at; `None` after a batch whose header cannot
        // be trusted (then the next key is taken as its end).
        let mut expected = Some(recovery_point);
        let mut last_end = recovery_point;
        let mut bad: Option<(u64, u64, BatchError)> = None;
        // Where the batches' epoch changes: (epoch, first offset).
        let mut epoch_changes: Vec<(u64, u64)> = Vec::new();
        for item in self.data.range(batch_key(recovery_point)..) {
            let (key, value) = item.map_err(self.sled_error())?;
            let Ok(key) = <[u8; 8]>::try_from(key.as_ref()) else {
                return Err(self.corrupt(None, format!("a batch key is not 8 bytes: {key:02x?}")));
            };
            let base = u64::from_be_bytes(key);
            match expected {
                Some(at) if at != base => {
                    return Err(self.corrupt(
                        Some(base.min(at)),
                        format!("the log has a gap or overlap: expected a batch at {at}, found one at {base}"),
                    ));
                }
                None if base <= last_end => {
                    return Err(
                        self.corrupt(Some(base), format!("batch keys out of order at {base}"))
                    );
                }
                _ => {}
            }
            if let Some((bad_base, bad_bytes, _)) = bad.take() {
                // A corrupt batch in the middle: its end is where the next one starts.
                acct.push(bad_base, base, bad_bytes);
            }
            #[cfg(test)]
            self.batches_read_at_open
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let header = BatchHeader::read_verified(&value).and_then(|h| {
                if h.base_offset == base {
                    Ok(h)
                } else {
                    Err(BatchError::Malformed(format!(
                        "stored under offset {base} but says base offset {}",
                        h.base_offset
                    )))
                }
            });
            last_end = base;
            match header {
                Ok(h) => {
                    expected = Some(h.next_offset());
                    last_end = h.next_offset();
                    acct.push(base, h.next_offset(), value.len() as u64);
                    if epoch_changes
                        .last()
                        .is_none_or(|&(e, _)| e != h.leader_epoch)
                    {
                        epoch_changes.push((h.leader_epoch, h.base_offset));
                    }
                }
                Err(e) => {
                    tracing::error!(
                        topic = %self.id.topic, partition = self.id.partition, offset = base,
                        error = %e, "corrupt batch in partition log; reads of it will fail"
                    );
                    expected = None;
                    bad = Some((base, value.len() as u64, e));
                }
            }
        }
        if let Some((offset, _, e)) = bad {
            return Err(self.corrupt(
                Some(offset),
                format!("the last batch is corrupt, so the log end offset is unknown: {e}"),
            ));
        }
        let log_end = last_end;

        // 4. Metadata a crash left behind.
        let mut epochs = meta.epochs.clone();
        // Epochs recorded before batches that a crash lost.
        epochs.truncate_from_end(log_end.saturating_add(1));
        epochs.truncate_from_start(log_start);
        for (epoch, start) in epoch_changes {
            if epochs.latest_epoch().is_none_or(|latest| epoch > latest) {
                // Written after an epoch change whose metadata a crash lost.
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
        acct.checkpoint(meta.high_watermark);
        if acct.recovery_point() != meta.recovery_point
            || acct.bytes_below_recovery_point() != meta.bytes_below_recovery_point
        {
            meta.recovery_point = acct.recovery_point();
            meta.bytes_below_recovery_point = acct.bytes_below_recovery_point();
            rewrite_meta = true;
        }
        if rewrite_meta {
            self.write_meta(&meta)?;
        }
        let mut state = self.lock();
        state.log_start = log_start;
        state.log_end = log_end;
        state.high_watermark = meta.high_watermark;
        state.acct = acct;
        state.epochs = meta.epochs;
        tracing::debug!(topic = %self.id.topic, partition = self.id.partition,
            log_start, log_end, high_watermark = state.high_watermark,
            recovery_point = state.acct.recovery_point(), "opened partition log");
        Ok(())
    }
}
