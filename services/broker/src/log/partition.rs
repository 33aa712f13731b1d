//! [`PartitionLog`]: one partition's log of record batches, its offsets, high watermark and
//! leader-epoch history, stored in its own sled tree (layout in [`super::store`]).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use super::batch::{
    BatchError, BatchHeader, NO_TIMESTAMP, Record, RecordBatch, split_into_batches,
};
use super::epochs::{EpochEntry, EpochHistory};
use super::error::LogError;
use super::meta::PartitionMeta;
use super::store::{PartitionId, StoreShared};

/// How many batch removals go into one sled batch (retention, resets).
pub(super) const REMOVE_CHUNK: usize = 1024;

/// The key of the batch starting at `offset`.
pub(super) fn batch_key(offset: u64) -> [u8; 8] {
    offset.to_be_bytes()
}

/// Where a read stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBound {
    /// Consumers: only committed data, below the high watermark.
    HighWatermark,
    /// Replicas: everything, up to the log end offset.
    LogEnd,
}

/// What an append as leader wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// The offset of the first record appended.
    pub base_offset: u64,
    /// The offset of the last record appended.
    pub last_offset: u64,
    /// How many batches (stored values) the records were split into.
    pub batches: usize,
}

/// A stored batch as read, its CRC already verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    pub header: BatchHeader,
    /// The whole encoded batch ([`super::batch`] format), ready to send or append to a replica.
    pub bytes: Bytes,
}

impl EncodedBatch {
    pub fn decode(&self) -> Result<RecordBatch, BatchError> {
        RecordBatch::decode(self.bytes.clone())
    }
}

/// The offsets of a partition at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOffsets {
    pub log_start_offset: u64,
    pub log_end_offset: u64,
    pub high_watermark: u64,
    /// Encoded bytes of the stored batches.
    pub size_bytes: u64,
}

pub(super) struct State {
    pub log_start: u64,
    pub log_end: u64,
    pub high_watermark: u64,
    pub size_bytes: u64,
    pub epochs: EpochHistory,
    pub deleted: bool,
}

impl State {
    pub fn meta(&self) -> PartitionMeta {
        PartitionMeta {
            log_start_offset: self.log_start,
            high_watermark: self.high_watermark,
            epochs: self.epochs.clone(),
        }
    }
}

/// One partition's log. Obtain it from [`super::LogStore::partition`]; share the `Arc`.
///
/// # To ensure correctness
/// - Offsets are dense: the log holds exactly `log_start_offset..log_end_offset`, batch after
///   batch with no gap; a leader append takes the next offsets, a replica append must start at
///   the log end offset. Offsets below the high watermark never change (only retention removes
///   them, from the start, and only then can the log start move past them).
/// - `log_start_offset <= high_watermark <= log_end_offset`. The high watermark never moves
///   back; truncation only removes offsets at or above it.
/// - Reads bounded by [`ReadBound::HighWatermark`] return only whole batches ending at or below
///   the high watermark: a batch that straddles it is held back until the high watermark passes
///   its end (in Kafka the high watermark always falls on a batch boundary anyway).
/// - Every batch is CRC-checked when read; a bad one is reported as [`LogError::Corrupt`] with
///   the partition and its offset, never served.
/// - Writes are durable only after [`PartitionLog::sync`] (the store's group commit).
/// - Persisted: the batches (which define the log end offset: the end of the last batch, or the
///   log start offset when empty) and the metadata (log start, high watermark, epoch history).
///   Multi-step changes are ordered so that [`PartitionLog::open`] can finish or repair any
///   crash in between: retention and resets write the new log start before removing batches
///   (open removes batches below it); a new epoch is recorded before its first batch (open
///   drops epochs starting past the log end and re-derives epochs of batches written past the
///   recorded history); truncation removes batches in one atomic sled batch.
pub struct PartitionLog {
    pub(super) id: PartitionId,
    /// The tree name, also the key of the partition's metadata.
    pub(super) name: String,
    pub(super) store: Arc<StoreShared>,
    pub(super) data: sled::Tree,
    pub(super) state: Mutex<State>,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("id", &self.id)
            .field("offsets", &self.offsets())
            .finish_non_exhaustive()
    }
}

impl PartitionLog {
    /// Opens the partition's tree and metadata (creating them empty), reads every batch header
    /// to find the log end offset and the size, and finishes or repairs any multi-step change a
    /// crash interrupted. A batch with a bad CRC in the middle of the log is only logged here
    /// (reads report it); a bad last batch, a gap, or bad metadata fail with
    /// [`LogError::Corrupt`].
    pub(super) fn open(store: Arc<StoreShared>, id: PartitionId) -> Result<PartitionLog, LogError> {
        store.check_usable()?;
        let name = id.tree_name();
        let data = store.db.open_tree(&name).map_err(store.write_failed())?;
        let log = PartitionLog {
            id,
            name,
            store,
            data,
            state: Mutex::new(State {
                log_start: 0,
                log_end: 0,
                high_watermark: 0,
                size_bytes: 0,
                epochs: EpochHistory::default(),
                deleted: false,
            }),
        };
        log.recover()?;
        Ok(log)
    }

    fn recover(&self) -> Result<(), LogError> {
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

        let mut below_start = Vec::new();
        // The offset the next batch must start at; `None` after a batch whose header cannot
        // be trusted (then the next key is taken as its end).
        let mut expected = Some(meta.log_start_offset);
        let mut last_end = meta.log_start_offset;
        let mut size_bytes = 0u64;
        let mut last_bad: Option<(u64, BatchError)> = None;
        // Where the batches' epoch changes: (epoch, first offset).
        let mut epoch_changes: Vec<(u64, u64)> = Vec::new();
        for item in self.data.iter() {
            let (key, value) = item.map_err(self.sled_error())?;
            let Ok(key) = <[u8; 8]>::try_from(key.as_ref()) else {
                return Err(self.corrupt(None, format!("a batch key is not 8 bytes: {key:02x?}")));
            };
            let base = u64::from_be_bytes(key);
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
            if base < meta.log_start_offset {
                match &header {
                    Ok(h) if h.next_offset() > meta.log_start_offset => {
                        return Err(self.corrupt(
                            Some(base),
                            format!(
                                "the batch {base}..{} straddles the log start offset {}",
                                h.next_offset(),
                                meta.log_start_offset
                            ),
                        ));
                    }
                    // Removal interrupted by a crash (or garbage below the start): finish it.
                    _ => below_start.push(key),
                }
                continue;
            }
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
            size_bytes += value.len() as u64;
            last_end = base;
            match header {
                Ok(h) => {
                    expected = Some(h.next_offset());
                    last_end = h.next_offset();
                    last_bad = None;
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
                    last_bad = Some((base, e));
                }
            }
        }
        if let Some((offset, e)) = last_bad {
            return Err(self.corrupt(
                Some(offset),
                format!("the last batch is corrupt, so the log end offset is unknown: {e}"),
            ));
        }
        let log_end = last_end.max(meta.log_start_offset);

        let mut epochs = meta.epochs.clone();
        // Epochs recorded before batches that a crash lost.
        epochs.truncate_from_end(log_end.saturating_add(1));
        epochs.truncate_from_start(meta.log_start_offset);
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
        if meta.high_watermark < meta.log_start_offset {
            meta.high_watermark = meta.log_start_offset;
            rewrite_meta = true;
        }
        if rewrite_meta {
            self.write_meta(&meta)?;
        }
        if !below_start.is_empty() {
            tracing::info!(topic = %self.id.topic, partition = self.id.partition,
                batches = below_start.len(), "finishing an interrupted removal of old batches");
            self.remove_keys(&below_start)?;
        }
        let mut state = self.lock();
        state.log_start = meta.log_start_offset;
        state.log_end = log_end;
        state.high_watermark = meta.high_watermark;
        state.size_bytes = size_bytes;
        state.epochs = meta.epochs;
        tracing::debug!(topic = %self.id.topic, partition = self.id.partition,
            log_start = state.log_start, log_end, high_watermark = state.high_watermark,
            "opened partition log");
        Ok(())
    }

    pub fn id(&self) -> &PartitionId {
        &self.id
    }

    /// Appends `records` as the leader in `leader_epoch`: they get the next offsets, in order,
    /// split into batches ([`split_into_batches`] with the store's [`super::LogConfig`]), all
    /// stored at once (all or nothing).
    /// Records without a timestamp ([`NO_TIMESTAMP`]) get `now_ms`. Durable after
    /// [`PartitionLog::sync`].
    ///
    /// Errors: [`LogError::InvalidBatch`] (no records, or one larger than `max_record_bytes`:
    /// nothing is written), [`LogError::StaleLeaderEpoch`] if the log already has a newer epoch.
    pub fn append_as_leader(
        &self,
        mut records: Vec<Record>,
        leader_epoch: u64,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        if records.is_empty() {
            return Err(BatchError::Empty.into());
        }
        let cfg = self.store.cfg;
        for r in &mut records {
            if r.timestamp_ms == NO_TIMESTAMP {
                r.timestamp_ms = now_ms;
            }
        }
        let count = records.len() as u64;
        let groups = split_into_batches(records, cfg.max_batch_bytes, cfg.max_record_bytes)?;

        let mut state = self.lock_writable()?;
        if let Some(latest) = state.epochs.latest_epoch()
            && leader_epoch < latest
        {
            return Err(LogError::StaleLeaderEpoch {
                epoch: leader_epoch,
                latest,
            });
        }
        let base_offset = state.log_end;
        if base_offset.checked_add(count).is_none() {
            return Err(BatchError::TooLarge("the offsets would overflow".into()).into());
        }
        let mut sled_batch = sled::Batch::default();
        let mut offset = base_offset;
        let mut bytes = 0u64;
        let batches = groups.len();
        for records in groups {
            let batch = RecordBatch {
                base_offset: offset,
                leader_epoch,
                records,
            };
            let encoded = batch.encode()?;
            bytes += encoded.len() as u64;
            offset = batch.next_offset();
            sled_batch.insert(&batch_key(batch.base_offset), encoded);
        }
        self.record_epoch(&mut state, leader_epoch, base_offset)?;
        self.data
            .apply_batch(sled_batch)
            .map_err(self.store.write_failed())?;
        self.store.note_write();
        state.log_end = offset;
        state.size_bytes += bytes;
        Ok(AppendInfo {
            base_offset,
            last_offset: offset - 1,
            batches,
        })
    }

    /// Appends a batch copied from the leader (it keeps its offsets and epoch). It must start at
    /// the log end offset ([`LogError::NotContiguous`]). The epoch history follows the batch's
    /// epoch as Kafka's does.
    pub fn append_replica(&self, batch: &RecordBatch) -> Result<(), LogError> {
        let encoded = batch.encode()?;
        self.append_replica_checked(BatchHeader::read(&encoded)?, encoded)
    }

    /// [`PartitionLog::append_replica`] of an encoded batch (as [`PartitionLog::read_encoded`]
    /// returns), stored as is after a full check ([`LogError::InvalidBatch`] if it fails).
    pub fn append_replica_encoded(&self, encoded: &[u8]) -> Result<(), LogError> {
        let bytes = Bytes::copy_from_slice(encoded);
        let header = BatchHeader::read_verified(&bytes)?;
        RecordBatch::decode(bytes)?;
        self.append_replica_checked(header, encoded.to_vec())
    }

    fn append_replica_checked(
        &self,
        header: BatchHeader,
        encoded: Vec<u8>,
    ) -> Result<(), LogError> {
        let mut state = self.lock_writable()?;
        if header.base_offset != state.log_end {
            return Err(LogError::NotContiguous {
                base_offset: header.base_offset,
                log_end_offset: state.log_end,
            });
        }
        self.record_epoch(&mut state, header.leader_epoch, header.base_offset)?;
        let len = encoded.len() as u64;
        self.data
            .insert(batch_key(header.base_offset), encoded)
            .map_err(self.store.write_failed())?;
        self.store.note_write();
        state.log_end = header.next_offset();
        state.size_bytes += len;
        Ok(())
    }

    /// Records, before the batch that starts it is written, that `epoch` writes from `start`.
    fn record_epoch(&self, state: &mut State, epoch: u64, start: u64) -> Result<(), LogError> {
        if let Some(last) = state.epochs.entries().last()
            && last.epoch == epoch
            && last.start_offset <= start
        {
            return Ok(()); // The common case: same epoch, nothing to record.
        }
        let mut epochs = state.epochs.clone();
        if epochs.assign(epoch, start) {
            if let Some(latest) = state.epochs.latest_epoch()
                && epoch < latest
            {
                tracing::warn!(topic = %self.id.topic, partition = self.id.partition, epoch, latest,
                    start, "a replicated batch has an older epoch than the history; dropping newer epochs");
            }
            let meta = PartitionMeta {
                epochs: epochs.clone(),
                ..state.meta()
            };
            self.write_meta(&meta)?;
            state.epochs = epochs;
        }
        Ok(())
    }

    /// A new leader records that `epoch` starts at the log end offset, so that followers asking
    /// where the previous epoch ends get an answer before the first append. Refuses an epoch
    /// older than the latest ([`LogError::StaleLeaderEpoch`]); the latest epoch is a no-op.
    pub fn assign_leader_epoch(&self, epoch: u64) -> Result<(), LogError> {
        let mut state = self.lock_writable()?;
        if let Some(latest) = state.epochs.latest_epoch()
            && epoch < latest
        {
            return Err(LogError::StaleLeaderEpoch { epoch, latest });
        }
        let log_end = state.log_end;
        self.record_epoch(&mut state, epoch, log_end)
    }

    /// Reads whole batches from the one holding `from_offset` (which the caller skips into),
    /// up to `bound`, stopping before `max_bytes` would be exceeded but returning at least one
    /// batch when any is available. Empty when `from_offset` is at or past the bound (but not
    /// past the log end). CRCs are checked; keys and values are decoded.
    ///
    /// Errors: [`LogError::OffsetOutOfRange`] below the log start or above the log end offset;
    /// [`LogError::Corrupt`] for a bad batch.
    pub fn read(
        &self,
        from_offset: u64,
        max_bytes: usize,
        bound: ReadBound,
    ) -> Result<Vec<RecordBatch>, LogError> {
        self.read_encoded(from_offset, max_bytes, bound)?
            .into_iter()
            .map(|b| {
                b.decode()
                    .map_err(|e| self.corrupt(Some(b.header.base_offset), e.to_string()))
            })
            .collect()
    }

    /// [`PartitionLog::read`] without decoding: the stored bytes of each batch, CRC-checked.
    pub fn read_encoded(
        &self,
        from_offset: u64,
        max_bytes: usize,
        bound: ReadBound,
    ) -> Result<Vec<EncodedBatch>, LogError> {
        let (log_start, log_end, upper) = {
            let state = self.lock_live()?;
            let upper = match bound {
                ReadBound::HighWatermark => state.high_watermark,
                ReadBound::LogEnd => state.log_end,
            };
            (state.log_start, state.log_end, upper)
        };
        if from_offset < log_start || from_offset > log_end {
            return Err(self.out_of_range(from_offset, log_start, log_end));
        }
        if from_offset >= upper {
            return Ok(Vec::new());
        }
        // The batch holding `from_offset` starts at or before it.
        let start = self
            .data
            .range(batch_key(log_start)..=batch_key(from_offset))
            .keys()
            .next_back()
            .transpose()
            .map_err(self.sled_error())?
            .map_or(from_offset, |k| key_offset(&k));
        let mut out = Vec::new();
        let mut total = 0usize;
        for item in self.data.range(batch_key(start)..batch_key(upper)) {
            let (key, value) = item.map_err(self.sled_error())?;
            let header = self.verified_header(&key, &value)?;
            if header.next_offset() > upper {
                break;
            }
            if !out.is_empty() && total + value.len() > max_bytes {
                break;
            }
            total += value.len();
            out.push(EncodedBatch {
                header,
                bytes: Bytes::from_owner(value),
            });
            if total >= max_bytes {
                break;
            }
        }
        if let Some(first) = out.first()
            && !first.header.contains(from_offset)
        {
            // Retention removed the batch while we read: the offset is gone now.
            let state = self.lock_live()?;
            return Err(self.out_of_range(from_offset, state.log_start, state.log_end));
        }
        Ok(out)
    }

    /// The CRC-checked header of a stored batch, or [`LogError::Corrupt`].
    pub(super) fn verified_header(
        &self,
        key: &[u8],
        value: &[u8],
    ) -> Result<BatchHeader, LogError> {
        let base = key_offset(key);
        let header = BatchHeader::read_verified(value)
            .map_err(|e| self.corrupt(Some(base), e.to_string()))?;
        if header.base_offset != base {
            return Err(self.corrupt(
                Some(base),
                format!(
                    "stored under offset {base} but says base offset {}",
                    header.base_offset
                ),
            ));
        }
        Ok(header)
    }

    /// Moves the high watermark up to `high_watermark`; a lower value is ignored (the high
    /// watermark never moves back). Returns the high watermark now.
    /// Errors: [`LogError::HighWatermarkAboveLogEnd`] past the log end offset.
    pub fn set_high_watermark(&self, high_watermark: u64) -> Result<u64, LogError> {
        let mut state = self.lock_writable()?;
        if high_watermark > state.log_end {
            return Err(LogError::HighWatermarkAboveLogEnd {
                high_watermark,
                log_end_offset: state.log_end,
            });
        }
        if high_watermark > state.high_watermark {
            let meta = PartitionMeta {
                high_watermark,
                ..state.meta()
            };
            self.write_meta(&meta)?;
            state.high_watermark = high_watermark;
        }
        Ok(state.high_watermark)
    }

    /// Removes every offset at or after `offset` (a follower dropping what the new leader does
    /// not have). A batch holding `offset` is rewritten with its records before `offset`. No-op
    /// at or past the log end.
    /// Errors: [`LogError::TruncateBelowHighWatermark`] (a caller bug: committed data stays).
    pub fn truncate_to(&self, offset: u64) -> Result<(), LogError> {
        let mut state = self.lock_writable()?;
        self.truncate_locked(&mut state, offset)
    }

    fn truncate_locked(&self, state: &mut State, offset: u64) -> Result<(), LogError> {
        if offset >= state.log_end {
            return Ok(());
        }
        if offset < state.high_watermark {
            return Err(LogError::TruncateBelowHighWatermark {
                offset,
                high_watermark: state.high_watermark,
            });
        }
        let mut sled_batch = sled::Batch::default();
        let mut removed_bytes = 0u64;
        let mut added_bytes = 0u64;
        for item in self.data.range(batch_key(offset)..) {
            let (key, value) = item.map_err(self.sled_error())?;
            removed_bytes += value.len() as u64;
            sled_batch.remove(key);
        }
        let straddling = self
            .data
            .range(batch_key(state.log_start)..batch_key(offset))
            .next_back()
            .transpose()
            .map_err(self.sled_error())?;
        if let Some((key, value)) = straddling {
            let header = self.verified_header(&key, &value)?;
            if header.next_offset() > offset {
                let mut batch = RecordBatch::decode(Bytes::from_owner(value.clone()))
                    .map_err(|e| self.corrupt(Some(header.base_offset), e.to_string()))?;
                batch
                    .records
                    .truncate((offset - batch.base_offset) as usize);
                let encoded = batch.encode()?;
                removed_bytes += value.len() as u64;
                added_bytes += encoded.len() as u64;
                sled_batch.insert(&key, encoded);
            }
        }
        self.data
            .apply_batch(sled_batch)
            .map_err(self.store.write_failed())?;
        self.store.note_write();
        state.log_end = offset;
        state.size_bytes = state.size_bytes.saturating_sub(removed_bytes) + added_bytes;
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
        let mut state = self.lock_writable()?;
        if offset < state.high_watermark {
            return Err(LogError::TruncateBelowHighWatermark {
                offset,
                high_watermark: state.high_watermark,
            });
        }
        // Past this point every stored batch ends at or before `offset`, so writing the new
        // log start first lets a crash be finished by `open` (it removes batches below it).
        self.truncate_locked(&mut state, offset)?;
        let meta = PartitionMeta {
            log_start_offset: offset,
            high_watermark: offset,
            epochs: EpochHistory::default(),
        };
        self.write_meta(&meta)?;
        state.log_start = offset;
        state.log_end = offset;
        state.high_watermark = offset;
        state.epochs = meta.epochs;
        let keys: Vec<[u8; 8]> = self
            .data
            .iter()
            .keys()
            .map(|k| k.map(|k| batch_key(key_offset(&k))))
            .collect::<Result<_, _>>()
            .map_err(self.sled_error())?;
        self.remove_keys(&keys)?;
        state.size_bytes = 0;
        tracing::info!(topic = %self.id.topic, partition = self.id.partition, offset,
            "emptied partition log and restarted it");
        Ok(())
    }

    /// The first offset written in `epoch`, if the history has it.
    pub fn leader_epoch_start_offset(&self, epoch: u64) -> Option<u64> {
        self.lock().epochs.start_offset_of(epoch)
    }

    /// OffsetsForLeaderEpoch: `(epoch, end offset)` for `requested` (see
    /// [`EpochHistory::end_offset_for`]); `None` when unknown (empty history or a newer epoch).
    pub fn end_offset_for_epoch(&self, requested: u64) -> Option<(u64, u64)> {
        let state = self.lock();
        state.epochs.end_offset_for(requested, state.log_end)
    }

    /// The newest leader epoch in the log's history.
    pub fn latest_leader_epoch(&self) -> Option<u64> {
        self.lock().epochs.latest_epoch()
    }

    /// The leader-epoch history, oldest first.
    pub fn leader_epochs(&self) -> Vec<EpochEntry> {
        self.lock().epochs.entries().to_vec()
    }

    /// Makes every write so far durable (the store's group commit, shared with all partitions).
    pub fn sync(&self) -> Result<(), LogError> {
        self.store.sync()
    }

    pub fn log_start_offset(&self) -> u64 {
        self.lock().log_start
    }

    pub fn log_end_offset(&self) -> u64 {
        self.lock().log_end
    }

    pub fn high_watermark(&self) -> u64 {
        self.lock().high_watermark
    }

    /// Encoded bytes of the stored batches.
    pub fn size_bytes(&self) -> u64 {
        self.lock().size_bytes
    }

    /// All offsets at one instant.
    pub fn offsets(&self) -> LogOffsets {
        let state = self.lock();
        LogOffsets {
            log_start_offset: state.log_start,
            log_end_offset: state.log_end,
            high_watermark: state.high_watermark,
            size_bytes: state.size_bytes,
        }
    }

    pub fn is_deleted(&self) -> bool {
        self.lock().deleted
    }

    /// Removes the partition's data and metadata (topic deletion); every later call fails with
    /// [`LogError::Deleted`]. Durable after the next sync.
    pub fn delete(&self) -> Result<(), LogError> {
        let mut state = self.lock();
        if state.deleted {
            return Ok(());
        }
        self.store.check_usable()?;
        state.deleted = true;
        Self::delete_stored(&self.store, &self.id)?;
        state.size_bytes = 0;
        Ok(())
    }

    /// Removes a partition's tree, then its metadata (a crash in between leaves metadata that
    /// [`super::LogStore::stored_partitions`] still lists).
    pub(super) fn delete_stored(store: &StoreShared, id: &PartitionId) -> Result<(), LogError> {
        let name = id.tree_name();
        store
            .db
            .drop_tree(name.as_bytes())
            .map_err(store.write_failed())?;
        store
            .meta
            .remove(name.as_bytes())
            .map_err(store.write_failed())?;
        store.note_write();
        tracing::info!(topic = %id.topic, topic_id = id.topic_id, partition = id.partition,
            "deleted partition log");
        Ok(())
    }

    pub(super) fn write_meta(&self, meta: &PartitionMeta) -> Result<(), LogError> {
        let value = meta.encode(self.name.as_bytes());
        self.store
            .meta
            .insert(self.name.as_bytes(), value)
            .map_err(self.store.write_failed())?;
        self.store.note_write();
        Ok(())
    }

    pub(super) fn remove_keys(&self, keys: &[[u8; 8]]) -> Result<(), LogError> {
        for chunk in keys.chunks(REMOVE_CHUNK) {
            let mut batch = sled::Batch::default();
            for key in chunk {
                batch.remove(key);
            }
            self.data
                .apply_batch(batch)
                .map_err(self.store.write_failed())?;
            self.store.note_write();
        }
        Ok(())
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state, if the partition was not deleted.
    pub(super) fn lock_live(&self) -> Result<MutexGuard<'_, State>, LogError> {
        let state = self.lock();
        if state.deleted {
            return Err(LogError::Deleted {
                topic: self.id.topic.clone(),
                topic_id: self.id.topic_id,
                partition: self.id.partition,
            });
        }
        Ok(state)
    }

    /// The state, if the partition was not deleted and the store takes writes.
    pub(super) fn lock_writable(&self) -> Result<MutexGuard<'_, State>, LogError> {
        let state = self.lock_live()?;
        self.store.check_usable()?;
        Ok(state)
    }

    pub(super) fn corrupt(&self, offset: Option<u64>, detail: String) -> LogError {
        LogError::Corrupt {
            topic: self.id.topic.clone(),
            topic_id: self.id.topic_id,
            partition: self.id.partition,
            offset,
            detail,
        }
    }

    fn out_of_range(&self, offset: u64, log_start: u64, log_end: u64) -> LogError {
        LogError::OffsetOutOfRange {
            topic: self.id.topic.clone(),
            partition: self.id.partition,
            offset,
            log_start_offset: log_start,
            log_end_offset: log_end,
        }
    }

    pub(super) fn sled_error(&self) -> impl FnOnce(sled::Error) -> LogError + '_ {
        move |source| LogError::Sled {
            path: self.store.dir.clone(),
            source,
        }
    }
}

/// The offset of an 8-byte batch key (keys are checked when the log is opened).
pub(super) fn key_offset(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = key.len().min(8);
    bytes[8 - n..].copy_from_slice(&key[..n]);
    u64::from_be_bytes(bytes)
}
