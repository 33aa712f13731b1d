//! [`PartitionLog`]: one partition's log of record batches, its offsets, high watermark and
//! leader-epoch history, stored in its own sled tree (layout in [`super::store`]).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use super::accounting::Accounting;
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
    /// Sizes and the recovery point (what opening the log trusts without reading it).
    pub acct: Accounting,
    pub epochs: EpochHistory,
    pub deleted: bool,
}

impl State {
    pub fn meta(&self) -> PartitionMeta {
        PartitionMeta {
            log_start_offset: self.log_start,
            high_watermark: self.high_watermark,
            recovery_point: self.acct.recovery_point(),
            bytes_below_recovery_point: self.acct.bytes_below_recovery_point(),
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
    /// How many batches the last open read (tests: start-up must not grow with the log).
    #[cfg(test)]
    pub(super) batches_read_at_open: std::sync::atomic::AtomicUsize,
    /// Called by retention between two chunks (tests: the lock is free there).
    #[cfg(test)]
    pub(super) between_retention_chunks: Mutex<Option<Box<dyn Fn() + Send>>>,
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
                acct: Accounting::default(),
                epochs: EpochHistory::default(),
                deleted: false,
            }),
            #[cfg(test)]
            batches_read_at_open: Default::default(),
            #[cfg(test)]
            between_retention_chunks: Mutex::new(None),
        };
        log.recover()?;
        Ok(log)
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
        let batches = groups.len();
        let mut sizes = Vec::with_capacity(batches);
        for records in groups {
            let batch = RecordBatch {
                base_offset: offset,
                leader_epoch,
                records,
            };
            let encoded = batch.encode()?;
            sizes.push((batch.base_offset, batch.next_offset(), encoded.len() as u64));
            offset = batch.next_offset();
            sled_batch.insert(&batch_key(batch.base_offset), encoded);
        }
        self.record_epoch(&mut state, leader_epoch, base_offset)?;
        self.data
            .apply_batch(sled_batch)
            .map_err(self.store.write_failed())?;
        self.store.note_write();
        state.log_end = offset;
        for (base, end, bytes) in sizes {
            state.acct.push(base, end, bytes);
        }
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
        state
            .acct
            .push(header.base_offset, header.next_offset(), len);
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

    /// Moves the high watermark up to `high_watermark` (a lower value is ignored: it never
    /// moves back) and the recovery point with it: everything below the high watermark is
    /// durable here, so a later open trusts it without reading it. Returns the high watermark
    /// now. Cheap: no batch is read.
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
            let mut acct = state.acct.clone();
            acct.checkpoint(high_watermark);
            let meta = PartitionMeta {
                high_watermark,
                recovery_point: acct.recovery_point(),
                bytes_below_recovery_point: acct.bytes_below_recovery_point(),
                ..state.meta()
            };
            self.write_meta(&meta)?;
            state.high_watermark = high_watermark;
            state.acct = acct;
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
        let mut rewritten = None;
        for item in self.data.range(batch_key(offset)..) {
            let (key, _) = item.map_err(self.sled_error())?;
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
                rewritten = Some(encoded.len() as u64);
                sled_batch.insert(&key, encoded);
            }
        }
        self.data
            .apply_batch(sled_batch)
            .map_err(self.store.write_failed())?;
        self.store.note_write();
        state.log_end = offset;
        state.acct.truncate(offset, rewritten);
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
        {
            let mut state = self.lock_writable()?;
            if offset < state.high_watermark {
                return Err(LogError::TruncateBelowHighWatermark {
                    offset,
                    high_watermark: state.high_watermark,
                });
            }
            // Past this point every stored batch ends at or before `offset`, so writing the
            // new log start first lets a crash be finished by `open` (it removes batches
            // below it).
            self.truncate_locked(&mut state, offset)?;
            let meta = PartitionMeta {
                log_start_offset: offset,
                high_watermark: offset,
                recovery_point: offset,
                bytes_below_recovery_point: 0,
                epochs: EpochHistory::default(),
            };
            self.write_meta(&meta)?;
            state.log_start = offset;
            state.log_end = offset;
            state.high_watermark = offset;
            state.epochs = meta.epochs;
            state.acct.reset(offset);
        }
        // Below the new log start nothing is read any more: removed without the lock.
        self.remove_below(offset)?;
        tracing::info!(topic = %self.id.topic, partition = self.id.partition, offset,
            "emptied partition log and restarted it");
        Ok(())
    }

    /// Removes the stored batches below `offset` (already below the log start, so no reader
    /// looks at them), a chunk at a time, without holding the partition's lock.
    pub(super) fn remove_below(&self, offset: u64) -> Result<usize, LogError> {
        let mut removed = 0;
        loop {
            let keys: Vec<[u8; 8]> = self
                .data
                .range(..batch_key(offset))
                .keys()
                .take(REMOVE_CHUNK)
                .map(|k| k.map(|k| batch_key(key_offset(&k))))
                .collect::<Result<_, _>>()
                .map_err(self.sled_error())?;
            if keys.is_empty() {
                return Ok(removed);
            }
            self.store.check_usable()?;
            removed += keys.len();
            self.remove_keys(&keys)?;
        }
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
        self.lock().acct.size_bytes()
    }

    /// All offsets at one instant.
    pub fn offsets(&self) -> LogOffsets {
        let state = self.lock();
        LogOffsets {
            log_start_offset: state.log_start,
            log_end_offset: state.log_end,
            high_watermark: state.high_watermark,
            size_bytes: state.acct.size_bytes(),
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
        state.acct.reset(0);
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
