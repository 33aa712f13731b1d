//! The durable [`Storage`] of a controller's Raft state, in sled 0.34.
//!
//! # Layout
//! One sled `Db` per data directory, two trees:
//! - `raft_log`: key = the entry's index (big-endian u64, so keys sort by index); value =
//!   `crc32 · term (u64 BE) · kind (u8: 0 normal, 1 no-op) · data`, the CRC32 covering
//!   `index · term · kind · data`.
//! - `raft_meta`: `format` (the layout version), `hard_state` (`term · vote (0 = none) · commit`,
//!   u64 BE each), `snap_meta` (`last_index · last_term · data length (u64 BE) · data crc32 ·
//!   voter count (u32 BE) · voters (u64 BE each)`) and the snapshot data in chunks of at most
//!   [`SNAPSHOT_CHUNK_DATA_MAX_BYTES`] under `snap/<chunk number as u32 BE>`. Each value starts
//!   with a CRC32 over its key and payload (see [`crate::checksum`]).
//!
//! Why the chunks are small: sled writes any page bigger than segment_size / 4 (about 128 KiB)
//! to a separate blob file that it never syncs, and a page is a whole tree node (up to 17 keys
//! before a split), not one value. 64 KiB chunks were measured to produce blob files once a node
//! held two of them; 4 KiB chunks keep a full node below 70 KiB. Log entries cannot be split, so
//! a node of large entries (over about 7 KiB each) can still become a blob: [`SledStorage`] then
//! syncs the new blob files itself before it syncs the data file.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use dmq_durable::{DurableError, DurableSync};
use dmq_raft::{
    Entry, EntryKind, HardState, Index, RecoveredState, Snapshot, SnapshotMeta, Storage,
};
use sled::Batch;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use crate::checksum::{Reader, seal, unseal};

/// The tree holding the log entries.
const LOG_TREE: &str = "raft_log";
/// The tree holding the hard state, the snapshot and the format marker.
const META_TREE: &str = "raft_meta";
const KEY_FORMAT: &[u8] = b"format";
/// The layout this module writes; any other value stops `open`.
const FORMAT_V1: &[u8] = b"dmq-raft-sled/1";
const KEY_HARD_STATE: &[u8] = b"hard_state";
const KEY_SNAPSHOT_META: &[u8] = b"snap_meta";
const SNAPSHOT_CHUNK_PREFIX: &[u8] = b"snap/";
/// The most snapshot data stored under one key. Small enough that a full sled node of chunks
/// (17 keys) stays well below the ~128 KiB at which sled writes an unsynced blob file.
pub const SNAPSHOT_CHUNK_DATA_MAX_BYTES: usize = 4 * 1024;

const KIND_NORMAL: u8 = 0;
const KIND_NOOP: u8 = 1;

/// Why the Raft storage failed, and what the caller should do about it. Every variant means the
/// node must not go on as if the call had succeeded.
#[derive(Debug, thiserror::Error)]
pub enum RaftStorageError {
    /// sled reported an error (including a data directory that another process holds).
    #[error(
        "sled failed on the raft storage in {}: {source}. Stop this node: after a failed write \
         what is on disk is unknown; restarting recovers the last durable state. If it keeps \
         failing, check the disk and that no other process uses this directory",
        path.display()
    )]
    Sled {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    /// A file system call failed.
    #[error(
        "I/O error on the raft storage in {} while trying to {op}: {source}. Stop this node and \
         restart it once the disk is healthy: a failed sync leaves what is on disk unknown, so \
         the write must never be retried as if nothing happened",
        path.display()
    )]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Stored data failed its checksum or breaks the layout's invariants; nothing of it was used.
    #[error(
        "the raft storage in {} is corrupt: {what}: {detail}. This node must not run on it. \
         Restore it from a snapshot: stop the node, move the data directory {} aside and restart \
         it empty so that it catches up from the leader (only while the other controllers form \
         a majority, since the node forgets its term and vote)",
        path.display(),
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        /// Which key is corrupt, e.g. "log entry 17 (raft_log key 17)".
        what: String,
        /// The log index concerned, when the corrupt key is a log entry.
        index: Option<Index>,
        /// What is wrong with it.
        detail: String,
    },
    /// An earlier `persist` or `compact` failed; this handle refuses further writes.
    #[error(
        "an earlier write to the raft storage in {} failed, so what is on disk is unknown: drop \
         this storage and restart the node, which recovers the last durable state",
        path.display()
    )]
    Failed { path: PathBuf },
}

/// Where the stored log is: it always holds exactly the indices
/// `snapshot_index + 1 ..= last_index` (empty when they are equal).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Bounds {
    snapshot_index: Index,
    last_index: Index,
    /// How many `snap/<n>` keys the stored snapshot uses, so a smaller one removes the rest.
    snapshot_chunk_count: u32,
}

/// What reading the whole storage found.
struct Loaded {
    state: RecoveredState,
    bounds: Bounds,
    /// Whether the format marker is stored (it is missing only in a db that was never written).
    formatted: bool,
}

/// The controller's Raft storage in a sled database, durable when a call returns.
///
/// # To ensure correctness
/// - A call returns only once what it wrote is on disk: the writes of one `persist` (one Ready,
///   so one group commit) or `compact` are applied in one sled transaction across both trees
///   (so a crash leaves all or none of them), then `Db::flush` writes sled's log and, because
///   that ends in `sync_file_range` and not in an fsync, `sync_data` on our own handle of sled's
///   data file `<dir>/db` makes it survive power loss. New sled blob files are synced first.
/// - Within a call the order is snapshot, entries, hard state, as the trait asks; the
///   transaction makes the order invisible after a crash.
/// - `synced_index` only grows past what a completed sync covered: it is lowered before a write
///   that replaces entries and raised to the last index only after the sync returned.
/// - The stored log is always `snapshot index + 1 ..= last index`, contiguous. Appending
///   entries that start at or below the snapshot or after a gap is a caller bug and panics, as
///   in [`dmq_raft::MemStorage`].
/// - Every value carries a CRC32; [`SledStorage::open`] reads and verifies everything, so
///   corruption is found at start-up ([`RaftStorageError::Corrupt`]) and never used. `recover`
///   verifies again.
/// - After any failed `persist` or `compact` the handle refuses writes
///   ([`RaftStorageError::Failed`]): what reached the disk is unknown (a failed fsync may
///   even have dropped dirty pages), so the node must restart and recover.
/// - One process per directory: sled locks `<dir>/db`; `open` waits up to
///   `dmq_durable::LOCK_WAIT_MAX` for a lock that a just-dropped `SledStorage` still holds, then fails.
pub struct SledStorage {
    dir: PathBuf,
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    /// The durable-sync recipe (our handle on sled's data file, blob files already synced).
    durable: DurableSync,
    hard_state: HardState,
    bounds: Bounds,
    synced_index: Index,
    failed: bool,
}

impl fmt::Debug for SledStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStorage")
            .field("dir", &self.dir)
            .field("hard_state", &self.hard_state)
            .field("snapshot_index", &self.bounds.snapshot_index)
            .field("last_index", &self.bounds.last_index)
            .field("synced_index", &self.synced_index)
            .field("failed", &self.failed)
            .finish()
    }
}

impl SledStorage {
    /// Opens the storage in `dir`, creating the directory and the database if needed, and
    /// verifies everything stored (checksums, a contiguous log right after the snapshot), so a
    /// corrupt storage fails here with [`RaftStorageError::Corrupt`]. What it recovered is
    /// synced before it returns, so [`Storage::synced_index`] starts at the last stored index.
    pub fn open(dir: &Path) -> Result<SledStorage, RaftStorageError> {
        let dir = dir.to_path_buf();
        let data_path = dir.join("db");
        let created = !data_path.exists();
        std::fs::create_dir_all(&dir).map_err(io_error("create the data directory", &dir))?;
        let db = open_sled(&dir)?;
        let log = db.open_tree(LOG_TREE).map_err(sled_error(&dir))?;
        let meta = db.open_tree(META_TREE).map_err(sled_error(&dir))?;
        let durable = DurableSync::open(&dir)?;
        let mut storage = SledStorage {
            dir,
            db,
            log,
            meta,
            durable,
            hard_state: HardState::default(),
            bounds: Bounds::default(),
            synced_index: 0,
            failed: false,
        };
        let loaded = storage.load()?;
        storage.hard_state = loaded.state.hard_state;
        storage.bounds = loaded.bounds;
        if !loaded.formatted {
            let value = seal(KEY_FORMAT, FORMAT_V1.len(), |v| {
                v.extend_from_slice(FORMAT_V1)
            });
            storage
                .meta
                .insert(KEY_FORMAT, value)
                .map_err(sled_error(&storage.dir))?;
        }
        // Whatever sled recovered may only have reached the page cache before a crash; sync it
        // so that `synced_index` is true from the start.
        storage.sync()?;
        if created {
            storage.sync_directories()?;
        }
        storage.synced_index = storage.bounds.last_index;
        tracing::info!(
            dir = %storage.dir.display(),
            term = storage.hard_state.term,
            commit = storage.hard_state.commit,
            snapshot_index = storage.bounds.snapshot_index,
            last_index = storage.bounds.last_index,
            "opened raft storage"
        );
        Ok(storage)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The sled database, shared with the metadata state machine so that its trees ride the
    /// same file and the same sync.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Reads and verifies everything stored.
    fn load(&self) -> Result<Loaded, RaftStorageError> {
        let mut formatted = false;
        let mut hard_state = None;
        let mut snapshot_meta = None;
        let mut chunks = BTreeMap::new();
        for item in self.meta.iter() {
            let (key, value) = item.map_err(sled_error(&self.dir))?;
            if key.as_ref() == KEY_FORMAT {
                let what = "format marker (raft_meta key \"format\")";
                let payload = unseal(&key, &value).map_err(|d| self.corrupt(what, None, d))?;
                if payload != FORMAT_V1 {
                    return Err(self.corrupt(
                        what,
                        None,
                        format!(
                            "unknown layout {:?}, this build reads {:?}",
                            String::from_utf8_lossy(payload),
                            String::from_utf8_lossy(FORMAT_V1)
                        ),
                    ));
                }
                formatted = true;
            } else if key.as_ref() == KEY_HARD_STATE {
                let what = "hard state (raft_meta key \"hard_state\")";
                let payload = unseal(&key, &value).map_err(|d| self.corrupt(what, None, d))?;
                hard_state =
                    Some(decode_hard_state(payload).map_err(|d| self.corrupt(what, None, d))?);
            } else if key.as_ref() == KEY_SNAPSHOT_META {
                let what = "snapshot metadata (raft_meta key \"snap_meta\")";
                let payload = unseal(&key, &value).map_err(|d| self.corrupt(what, None, d))?;
                snapshot_meta =
                    Some(decode_snapshot_meta(payload).map_err(|d| self.corrupt(what, None, d))?);
            } else if let Some(number) = parse_chunk_key(&key) {
                let what = format!("snapshot chunk {number} (raft_meta key \"snap/{number}\")");
                let payload =
                    unseal(&key, &value).map_err(|d| self.corrupt(what.clone(), None, d))?;
                chunks.insert(number, payload.to_vec());
            } else {
                return Err(self.corrupt(
                    format!("raft_meta key {:?}", String::from_utf8_lossy(&key)),
                    None,
                    "this key is not part of the layout",
                ));
            }
        }

        let (snapshot, snapshot_chunk_count) = match snapshot_meta {
            None => {
                if let Some(number) = chunks.keys().next() {
                    return Err(self.corrupt(
                        format!("snapshot chunk {number} (raft_meta key \"snap/{number}\")"),
                        None,
                        "a snapshot chunk is stored without snapshot metadata",
                    ));
                }
                (None, 0)
            }
            Some(stored) => {
                let (snapshot, count) = self.assemble_snapshot(stored, chunks)?;
                (Some(snapshot), count)
            }
        };
        let snapshot_index = snapshot.as_ref().map_or(0, |s| s.meta.last_index);

        let mut entries = Vec::new();
        let mut expected = snapshot_index + 1;
        for item in self.log.iter() {
            let (key, value) = item.map_err(sled_error(&self.dir))?;
            let Ok(index_bytes) = <[u8; 8]>::try_from(key.as_ref()) else {
                return Err(self.corrupt(
                    format!("raft_log key {:02x?}", key.as_ref()),
                    None,
                    "a log key must be an 8-byte index",
                ));
            };
            let index = u64::from_be_bytes(index_bytes);
            if index != expected {
                let detail = if index < expected {
                    format!(
                        "entry {index} is stored although the snapshot covers up to \
                         {snapshot_index}"
                    )
                } else {
                    format!(
                        "it is missing: the log must be contiguous after the snapshot \
                         ({snapshot_index}), but the next stored entry is {index}"
                    )
                };
                let at = index.min(expected);
                return Err(self.corrupt(
                    format!("log entry {at} (raft_log key {at})"),
                    Some(at),
                    detail,
                ));
            }
            let entry = decode_entry(index, &value).map_err(|d| {
                self.corrupt(
                    format!("log entry {index} (raft_log key {index})"),
                    Some(index),
                    d,
                )
            })?;
            entries.push(entry);
            expected += 1;
        }

        let hard_state = hard_state.unwrap_or_default();
        if !formatted
            && (hard_state != HardState::default() || snapshot.is_some() || !entries.is_empty())
        {
            return Err(self.corrupt(
                "format marker (raft_meta key \"format\")",
                None,
                "it is missing although Raft state is stored",
            ));
        }
        let bounds = Bounds {
            snapshot_index,
            last_index: expected - 1,
            snapshot_chunk_count,
        };
        Ok(Loaded {
            state: RecoveredState {
                hard_state,
                snapshot,
                entries,
            },
            bounds,
            formatted,
        })
    }

    /// Puts the snapshot back together from its verified chunks, checking that exactly the
    /// chunks its metadata names are present and that the whole matches its checksum.
    fn assemble_snapshot(
        &self,
        stored: StoredSnapshotMeta,
        chunks: BTreeMap<u32, Vec<u8>>,
    ) -> Result<(Snapshot, u32), RaftStorageError> {
        let count = chunk_count(stored.data_len_bytes).ok_or_else(|| {
            self.corrupt(
                "snapshot metadata (raft_meta key \"snap_meta\")",
                None,
                format!("data length {} is impossible", stored.data_len_bytes),
            )
        })?;
        let mut data = Vec::with_capacity(usize::try_from(stored.data_len_bytes).unwrap_or(0));
        for number in 0..count {
            let what = format!("snapshot chunk {number} (raft_meta key \"snap/{number}\")");
            let Some(chunk) = chunks.get(&number) else {
                return Err(self.corrupt(what, None, "it is missing"));
            };
            let remaining = stored.data_len_bytes - data.len() as u64;
            let expected_len = remaining.min(SNAPSHOT_CHUNK_DATA_MAX_BYTES as u64);
            if chunk.len() as u64 != expected_len {
                return Err(self.corrupt(
                    what,
                    None,
                    format!(
                        "it holds {} bytes, the metadata says {expected_len}",
                        chunk.len()
                    ),
                ));
            }
            data.extend_from_slice(chunk);
        }
        if let Some(extra) = chunks.keys().find(|&&n| n >= count) {
            return Err(self.corrupt(
                format!("snapshot chunk {extra} (raft_meta key \"snap/{extra}\")"),
                None,
                format!("the snapshot has only {count} chunks"),
            ));
        }
        let computed = crc32fast::hash(&data);
        if computed != stored.data_crc {
            return Err(self.corrupt(
                "snapshot data (raft_meta keys \"snap/<n>\")",
                None,
                format!(
                    "the chunks do not add up to the stored snapshot (checksum {computed:#010x}, \
                     expected {:#010x})",
                    stored.data_crc
                ),
            ));
        }
        Ok((
            Snapshot {
                meta: stored.meta,
                data,
            },
            count,
        ))
    }

    /// Adds the writes that make `snapshot` the stored one. A snapshot received from the leader
    /// (`keep_suffix` false) replaces the whole log, as the core did in memory: a stored suffix
    /// may hold entries of an old term that merely continue the index. A local compaction keeps
    /// the suffix after the snapshot.
    fn stage_snapshot(
        &self,
        snapshot: &Snapshot,
        keep_suffix: bool,
        bounds: &mut Bounds,
        log_batch: &mut Batch,
        meta_batch: &mut Batch,
    ) {
        let last_index = snapshot.meta.last_index;
        // The log holds `snapshot_index + 1 ..= last_index`. A newer snapshot removes the part
        // it covers; an older one (snapshot_index > last_index) leaves a log that does not start
        // right after it, so the whole log goes.
        let keeps_suffix = keep_suffix && bounds.snapshot_index <= last_index;
        let remove_through = if keeps_suffix {
            bounds.last_index.min(last_index)
        } else {
            bounds.last_index
        };
        for index in bounds.snapshot_index + 1..=remove_through {
            log_batch.remove(&index.to_be_bytes());
        }
        bounds.last_index = if keeps_suffix {
            bounds.last_index.max(last_index)
        } else {
            last_index
        };
        bounds.snapshot_index = last_index;

        let data = &snapshot.data;
        let count = chunk_count(data.len() as u64).expect("snapshot data too large to store");
        let voter_count =
            u32::try_from(snapshot.meta.voters.len()).expect("too many voters to store");
        let meta_value = seal(
            KEY_SNAPSHOT_META,
            32 + 8 * snapshot.meta.voters.len(),
            |v| {
                v.extend_from_slice(&snapshot.meta.last_index.to_be_bytes());
                v.extend_from_slice(&snapshot.meta.last_term.to_be_bytes());
                v.extend_from_slice(&(data.len() as u64).to_be_bytes());
                v.extend_from_slice(&crc32fast::hash(data).to_be_bytes());
                v.extend_from_slice(&voter_count.to_be_bytes());
                for voter in &snapshot.meta.voters {
                    v.extend_from_slice(&voter.to_be_bytes());
                }
            },
        );
        meta_batch.insert(KEY_SNAPSHOT_META, meta_value);
        for (number, chunk) in (0..count).zip(data.chunks(SNAPSHOT_CHUNK_DATA_MAX_BYTES)) {
            let key = chunk_key(number);
            let value = seal(&key, chunk.len(), |v| v.extend_from_slice(chunk));
            meta_batch.insert(key.as_slice(), value);
        }
        for number in count..bounds.snapshot_chunk_count {
            meta_batch.remove(chunk_key(number).as_slice());
        }
        bounds.snapshot_chunk_count = count;
    }

    /// Applies one call's writes atomically, syncs them and only then moves `synced_index` up.
    /// `first_touched` is the lowest log index whose stored state the write changes.
    fn write(
        &mut self,
        log_batch: Batch,
        meta_batch: Batch,
        bounds: Bounds,
        hard_state: HardState,
        first_touched: Index,
    ) -> Result<(), RaftStorageError> {
        // Until the sync returns, only what the write leaves untouched is known durable.
        self.synced_index = self.synced_index.min(first_touched.saturating_sub(1));
        let result = self.commit(&log_batch, &meta_batch).and_then(|()| {
            self.bounds = bounds;
            self.hard_state = hard_state;
            self.synced_index = self.synced_index.min(bounds.last_index);
            self.sync()
        });
        match result {
            Ok(()) => {
                self.synced_index = self.bounds.last_index;
                Ok(())
            }
            Err(error) => {
                self.failed = true;
                tracing::error!(dir = %self.dir.display(), %error, "raft storage write failed");
                Err(error)
            }
        }
    }

    /// One sled transaction over both trees: sled recovers all of it or none of it.
    fn commit(&self, log_batch: &Batch, meta_batch: &Batch) -> Result<(), RaftStorageError> {
        (&self.log, &self.meta)
            .transaction(|(log, meta)| {
                log.apply_batch(log_batch)?;
                meta.apply_batch(meta_batch)?;
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|error| match error {
                TransactionError::Storage(error) => sled_error(&self.dir)(error),
                TransactionError::Abort(()) => unreachable!("the transaction never aborts"),
            })
    }

    /// Makes everything written so far durable: sled's flush (which ends in
    /// `sync_file_range`), then an fsync of new blob files, then `sync_data` on the data file.
    fn sync(&mut self) -> Result<(), RaftStorageError> {
        Ok(self.durable.sync(&self.db)?)
    }

    /// Syncs the directory entries of a newly created database.
    fn sync_directories(&self) -> Result<(), RaftStorageError> {
        Ok(self.durable.sync_directories()?)
    }

    fn check_usable(&self) -> Result<(), RaftStorageError> {
        if self.failed {
            Err(RaftStorageError::Failed {
                path: self.dir.clone(),
            })
        } else {
            Ok(())
        }
    }

    fn corrupt(
        &self,
        what: impl Into<String>,
        index: Option<Index>,
        detail: impl Into<String>,
    ) -> RaftStorageError {
        let error = RaftStorageError::Corrupt {
            path: self.dir.clone(),
            what: what.into(),
            index,
            detail: detail.into(),
        };
        tracing::error!(%error, "raft storage corrupt");
        error
    }
}

impl Storage for SledStorage {
    type Error = RaftStorageError;

    /// Reads everything back and verifies it again, as [`SledStorage::open`] did.
    fn recover(&self) -> Result<RecoveredState, RaftStorageError> {
        self.load().map(|loaded| loaded.state)
    }

    fn persist(
        &mut self,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), RaftStorageError> {
        self.check_usable()?;
        if snapshot.is_none() && entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        let mut bounds = self.bounds;
        let mut log_batch = Batch::default();
        let mut meta_batch = Batch::default();
        let mut first_touched = Index::MAX;
        if let Some(snapshot) = snapshot {
            first_touched = bounds.snapshot_index + 1;
            self.stage_snapshot(
                snapshot,
                false,
                &mut bounds,
                &mut log_batch,
                &mut meta_batch,
            );
        }
        if let Some(first) = entries.first() {
            let first_index = first.index;
            assert!(
                first_index > bounds.snapshot_index,
                "persisting entry {first_index} at or below the snapshot ({})",
                bounds.snapshot_index
            );
            assert!(
                first_index <= bounds.last_index + 1,
                "persisting entry {first_index} leaves a gap after {}",
                bounds.last_index
            );
            let new_last = first_index + entries.len() as u64 - 1;
            for (offset, entry) in entries.iter().enumerate() {
                assert_eq!(
                    entry.index,
                    first_index + offset as u64,
                    "entries are not contiguous"
                );
                log_batch.insert(&entry.index.to_be_bytes(), encode_entry(entry));
            }
            // The conflicting suffix beyond the new entries (§5.3); the ones in between are
            // overwritten.
            for index in new_last + 1..=bounds.last_index {
                log_batch.remove(&index.to_be_bytes());
            }
            bounds.last_index = new_last;
            first_touched = first_touched.min(first_index);
        }
        let mut new_hard_state = self.hard_state;
        if let Some(hs) = hard_state {
            assert!(
                hs.term >= self.hard_state.term,
                "term went backwards in storage"
            );
            assert_ne!(hs.vote, Some(0), "node id 0 is not a valid vote");
            meta_batch.insert(KEY_HARD_STATE, encode_hard_state(hs));
            new_hard_state = *hs;
        }
        let commit_only = snapshot.is_none()
            && entries.is_empty()
            && (new_hard_state.term, new_hard_state.vote)
                == (self.hard_state.term, self.hard_state.vote);
        if commit_only {
            // Only the commit index moved: it is a hint the core re-learns from the leader, so
            // it rides along with the next sync instead of costing one (see the trait docs).
            self.commit(&log_batch, &meta_batch)
                .inspect_err(|_| self.failed = true)?;
            self.hard_state = new_hard_state;
            return Ok(());
        }
        self.write(log_batch, meta_batch, bounds, new_hard_state, first_touched)
    }

    fn compact(&mut self, snapshot: &Snapshot) -> Result<(), RaftStorageError> {
        self.check_usable()?;
        if snapshot.meta.last_index <= self.bounds.snapshot_index {
            return Ok(());
        }
        let mut bounds = self.bounds;
        let mut log_batch = Batch::default();
        let mut meta_batch = Batch::default();
        let first_touched = bounds.snapshot_index + 1;
        self.stage_snapshot(snapshot, true, &mut bounds, &mut log_batch, &mut meta_batch);
        self.write(
            log_batch,
            meta_batch,
            bounds,
            self.hard_state,
            first_touched,
        )
    }

    fn synced_index(&self) -> Index {
        debug_assert!(
            self.synced_index <= self.bounds.last_index,
            "synced index {} beyond the last stored index {}",
            self.synced_index,
            self.bounds.last_index
        );
        self.synced_index
    }
}

fn encode_entry(entry: &Entry) -> Vec<u8> {
    let kind = match entry.kind {
        EntryKind::Normal => KIND_NORMAL,
        EntryKind::Noop => KIND_NOOP,
    };
    seal(&entry.index.to_be_bytes(), 9 + entry.data.len(), |v| {
        v.extend_from_slice(&entry.term.to_be_bytes());
        v.push(kind);
        v.extend_from_slice(&entry.data);
    })
}

fn decode_entry(index: Index, value: &[u8]) -> Result<Entry, String> {
    let payload = unseal(&index.to_be_bytes(), value)?;
    let mut reader = Reader::new(payload);
    let term = reader.u64()?;
    let kind = match reader.u8()? {
        KIND_NORMAL => EntryKind::Normal,
        KIND_NOOP => EntryKind::Noop,
        other => return Err(format!("unknown entry kind {other}")),
    };
    Ok(Entry {
        index,
        term,
        kind,
        data: reader.rest().to_vec(),
    })
}

fn encode_hard_state(hs: &HardState) -> Vec<u8> {
    seal(KEY_HARD_STATE, 24, |v| {
        v.extend_from_slice(&hs.term.to_be_bytes());
        v.extend_from_slice(&hs.vote.unwrap_or(0).to_be_bytes());
        v.extend_from_slice(&hs.commit.to_be_bytes());
    })
}

fn decode_hard_state(payload: &[u8]) -> Result<HardState, String> {
    let mut reader = Reader::new(payload);
    let term = reader.u64()?;
    let vote = reader.u64()?;
    let commit = reader.u64()?;
    reader.finish()?;
    Ok(HardState {
        term,
        vote: (vote != 0).then_some(vote),
        commit,
    })
}

/// The snapshot metadata as stored, before its chunks are read.
struct StoredSnapshotMeta {
    meta: SnapshotMeta,
    data_len_bytes: u64,
    data_crc: u32,
}

fn decode_snapshot_meta(payload: &[u8]) -> Result<StoredSnapshotMeta, String> {
    let mut reader = Reader::new(payload);
    let last_index = reader.u64()?;
    let last_term = reader.u64()?;
    let data_len_bytes = reader.u64()?;
    let data_crc = reader.u32()?;
    let voter_count = reader.u32()?;
    let voters = (0..voter_count)
        .map(|_| reader.u64())
        .collect::<Result<Vec<_>, _>>()?;
    reader.finish()?;
    Ok(StoredSnapshotMeta {
        meta: SnapshotMeta {
            last_index,
            last_term,
            voters,
        },
        data_len_bytes,
        data_crc,
    })
}

/// How many chunks hold `len_bytes` of snapshot data, if that fits the key space.
fn chunk_count(len_bytes: u64) -> Option<u32> {
    u32::try_from(len_bytes.div_ceil(SNAPSHOT_CHUNK_DATA_MAX_BYTES as u64)).ok()
}

fn chunk_key(number: u32) -> Vec<u8> {
    let mut key = SNAPSHOT_CHUNK_PREFIX.to_vec();
    key.extend_from_slice(&number.to_be_bytes());
    key
}

fn parse_chunk_key(key: &[u8]) -> Option<u32> {
    let number = key.strip_prefix(SNAPSHOT_CHUNK_PREFIX)?;
    Some(u32::from_be_bytes(number.try_into().ok()?))
}

/// How long `open` waits for sled's lock on `<dir>/db` before giving up.
/// Opens the sled db, waiting a bounded time for its file lock (see `dmq_durable::open_sled`).
fn open_sled(dir: &Path) -> Result<sled::Db, RaftStorageError> {
    Ok(dmq_durable::open_sled(&sled::Config::new().path(dir), dir)?)
}

impl From<DurableError> for RaftStorageError {
    fn from(e: DurableError) -> RaftStorageError {
        match e {
            DurableError::Sled { path, source } => sled_error(&path)(source),
            DurableError::Io { op, path, source } => RaftStorageError::Io { op, path, source },
        }
    }
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RaftStorageError {
    let path = path.to_path_buf();
    move |source| RaftStorageError::Io { op, path, source }
}

/// sled's own corruption reports become [`RaftStorageError::Corrupt`]; the rest stay sled errors.
fn sled_error(dir: &Path) -> impl FnOnce(sled::Error) -> RaftStorageError {
    let path = dir.to_path_buf();
    move |source| match source {
        sled::Error::Corruption { at, .. } => RaftStorageError::Corrupt {
            path,
            what: "sled's data file".to_owned(),
            index: None,
            detail: format!("sled found corrupt data at {at:?}"),
        },
        source => RaftStorageError::Sled { path, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmq_raft::MemStorage;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn entry(index: Index, term: u64) -> Entry {
        let kind = if index.is_multiple_of(3) {
            EntryKind::Noop
        } else {
            EntryKind::Normal
        };
        Entry {
            index,
            term,
            kind,
            data: format!("command {index} of term {term}").into_bytes(),
        }
    }

    fn entries(indexes: std::ops::RangeInclusive<Index>, term: u64) -> Vec<Entry> {
        indexes.map(|i| entry(i, term)).collect()
    }

    fn snapshot(last_index: Index, last_term: u64, data_len_bytes: usize) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                last_index,
                last_term,
                voters: vec![1, 2, 3],
            },
            data: (0..data_len_bytes)
                .map(|i| (i * 31 + last_index as usize) as u8)
                .collect(),
        }
    }

    fn hard_state(term: u64, vote: Option<u64>, commit: Index) -> HardState {
        HardState { term, vote, commit }
    }

    fn reopen(storage: SledStorage) -> SledStorage {
        let dir = storage.dir().to_path_buf();
        drop(storage);
        SledStorage::open(&dir).unwrap()
    }

    fn last_index(state: &RecoveredState) -> Index {
        state.entries.last().map_or(
            state.snapshot.as_ref().map_or(0, |s| s.meta.last_index),
            |e| e.index,
        )
    }

    /// Opens the sled db behind a closed storage and lets `change` alter one tree.
    fn tamper(dir: &Path, tree: &str, change: impl FnOnce(&sled::Tree)) {
        // The storage just dropped may still hold sled's lock for a moment: wait for it.
        let db = dmq_durable::open_sled(&sled::Config::new().path(dir), dir).unwrap();
        change(&db.open_tree(tree).unwrap());
        db.flush().unwrap();
    }

    fn flip_last_byte(tree: &sled::Tree, key: &[u8]) {
        let mut value = tree
            .get(key)
            .unwrap()
            .expect("key to corrupt is stored")
            .to_vec();
        *value.last_mut().unwrap() ^= 0x40;
        tree.insert(key, value).unwrap();
    }

    fn open_err(dir: &Path) -> RaftStorageError {
        SledStorage::open(dir).expect_err("open must detect the corruption")
    }

    #[test]
    fn what_was_persisted_comes_back_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStorage::open(dir.path()).unwrap();
        assert_eq!(s.recover().unwrap(), RecoveredState::default());

        let hs = hard_state(1, Some(2), 3);
        s.persist(None, &entries(1..=5, 1), Some(&hs)).unwrap();
        let s = reopen(s);
        let expected = RecoveredState {
            hard_state: hs,
            snapshot: None,
            entries: entries(1..=5, 1),
        };
        assert_eq!(s.recover().unwrap(), expected);

        let mut s = s;
        let snap = snapshot(10, 2, 100);
        let hs = hard_state(3, None, 12);
        s.persist(Some(&snap), &entries(11..=15, 3), Some(&hs))
            .unwrap();
        let s = reopen(s);
        let expected = RecoveredState {
            hard_state: hs,
            snapshot: Some(snap),
            entries: entries(11..=15, 3),
        };
        assert_eq!(s.recover().unwrap(), expected);
        assert_eq!(s.synced_index(), 15);
    }

    #[test]
    fn a_truncated_conflicting_suffix_stays_truncated_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStorage::open(dir.path()).unwrap();
        s.persist(None, &entries(1..=5, 1), Some(&hard_state(1, Some(1), 0)))
            .unwrap();
        s.persist(None, &entries(3..=4, 2), Some(&hard_state(2, Some(3), 2)))
            .unwrap();
        let s = reopen(s);
        let r = s.recover().unwrap();
        let mut expected = entries(1..=2, 1);
        expected.extend(entries(3..=4, 2));
        assert_eq!(r.entries, expected);
        assert_eq!(r.hard_state, hard_state(2, Some(3), 2));
        assert_eq!(s.synced_index(), 4);

        // Appending right after the truncated log works; a gap panics as in MemStorage.
        let mut s = s;
        s.persist(None, &entries(5..=5, 2), None).unwrap();
        assert_eq!(reopen(s).recover().unwrap().entries.len(), 5);
    }

    #[test]
    #[should_panic(expected = "leaves a gap")]
    fn persisting_after_a_gap_panics() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStorage::open(dir.path()).unwrap();
        s.persist(None, &entries(1..=2, 1), None).unwrap();
        s.persist(None, &entries(4..=4, 1), None).unwrap();
    }

    #[test]
    fn compaction_keeps_the_snapshot_and_the_suffix_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStorage::open(dir.path()).unwrap();
        s.persist(None, &entries(1..=10, 1), Some(&hard_state(1, None, 8)))
            .unwrap();
        let snap = snapshot(6, 1, 50);
        s.compact(&snap).unwrap();
        // An older snapshot is ignored.
        s.compact(&snapshot(4, 1, 50)).unwrap();
        let mut s = reopen(s);
        let r = s.recover().unwrap();
        assert_eq!(r.snapshot, Some(snap));
        assert_eq!(r.entries, entries(7..=10, 1));
        assert_eq!(r.hard_state, hard_state(1, None, 8));

        // Compacting past the log leaves only the snapshot; appending continues after it.
        let snap = snapshot(12, 1, 0);
        s.compact(&snap).unwrap();
        let mut s = reopen(s);
        let r = s.recover().unwrap();
        assert_eq!((r.snapshot, r.entries), (Some(snap), vec![]));
        s.persist(None, &entries(13..=13, 2), None).unwrap();
        assert_eq!(reopen(s).recover().unwrap().entries, entries(13..=13, 2));
    }

    #[test]
    fn a_persisted_snapshot_replaces_the_log_and_large_data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStorage::open(dir.path()).unwrap();
        s.persist(None, &entries(1..=10, 1), None).unwrap();

        // A received snapshot inside the log still replaces all of it: the suffix may be of an
        // old term that merely continues the index.
        let snap = snapshot(5, 1, 10);
        s.persist(Some(&snap), &[], None).unwrap();
        assert_eq!(s.recover().unwrap().entries, vec![]);
        s.persist(None, &entries(6..=10, 1), None).unwrap();

        // A large snapshot past the log replaces it; 300 KiB spans many chunks.
        let big = snapshot(20, 2, 300 * 1024);
        s.persist(Some(&big), &[], Some(&hard_state(2, Some(1), 20)))
            .unwrap();
        let mut s = reopen(s);
        let r = s.recover().unwrap();
        assert_eq!(r.snapshot.as_ref(), Some(&big));
        assert!(r.entries.is_empty());
        assert_eq!(s.synced_index(), 20);

        // Rewriting large snapshots keeps every sled page inline: no blob files appear.
        for round in 0..5 {
            let again = snapshot(21 + round, 2, 300 * 1024);
            s.persist(Some(&again), &[], None).unwrap();
        }
        let blobs = std::fs::read_dir(dir.path().join("blobs")).unwrap().count();
        assert_eq!(blobs, 0, "sled wrote blob files for snapshot chunks");

        // A smaller snapshot removes the chunks it does not use.
        let small = snapshot(30, 3, 5 * 1024);
        s.persist(Some(&small), &entries(31..=32, 3), None).unwrap();
        let s = reopen(s);
        let r = s.recover().unwrap();
        assert_eq!(r.snapshot, Some(small));
        assert_eq!(r.entries, entries(31..=32, 3));
        drop(s);
        let db = dmq_durable::open_sled(&sled::Config::new().path(dir.path()), dir.path()).unwrap();
        let chunks = db
            .open_tree(META_TREE)
            .unwrap()
            .scan_prefix(SNAPSHOT_CHUNK_PREFIX)
            .count();
        assert_eq!(chunks, 2);
    }

    #[test]
    fn large_entries_that_spill_into_blob_files_are_synced_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStorage::open(dir.path()).unwrap();
        let big: Vec<Entry> = (1..=40)
            .map(|index| Entry {
                data: vec![index as u8; 20 * 1024],
                ..entry(index, 1)
            })
            .collect();
        for chunk in big.chunks(4) {
            s.persist(None, chunk, None).unwrap();
        }
        // sled wrote tree nodes of many 20 KiB entries as blob files; persist synced them.
        assert!(
            s.durable.blob_count() > 0,
            "expected sled to write blob files"
        );
        let s = reopen(s);
        assert_eq!(s.recover().unwrap().entries, big);
    }

    #[test]
    fn a_corrupt_log_entry_is_reported_with_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStorage::open(dir.path()).unwrap();
        s.persist(None, &entries(1..=5, 1), Some(&hard_state(1, None, 0)))
            .unwrap();
        drop(s);
        tamper(dir.path(), LOG_TREE, |log| {
            flip_last_byte(log, &3u64.to_be_bytes())
        });

        let error = open_err(dir.path());
        let RaftStorageError::Corrupt {
            index, ref what, ..
        } = error
        else {
            panic!("expected Corrupt, got {error}");
        };
        assert_eq!(index, Some(3));
        assert!(what.contains("log entry 3"), "{what}");
        let message = error.to_string();
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        assert!(message.contains("checksum mismatch"), "{message}");
        assert!(message.contains("catches up from the leader"), "{message}");
    }

    #[test]
    fn a_missing_log_entry_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStorage::open(dir.path()).unwrap();
        s.persist(None, &entries(1..=5, 1), None).unwrap();
        drop(s);
        tamper(dir.path(), LOG_TREE, |log| {
            log.remove(2u64.to_be_bytes()).unwrap();
        });
        let error = open_err(dir.path());
        assert!(
            matches!(error, RaftStorageError::Corrupt { index: Some(2), .. }),
            "unexpected {error}"
        );
    }

    #[test]
    fn a_corrupt_hard_state_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStorage::open(dir.path()).unwrap();
        s.persist(None, &entries(1..=2, 1), Some(&hard_state(7, Some(2), 1)))
            .unwrap();
        drop(s);
        tamper(dir.path(), META_TREE, |meta| {
            flip_last_byte(meta, KEY_HARD_STATE)
        });
        let error = open_err(dir.path());
        let RaftStorageError::Corrupt {
            index: None,
            ref what,
            ..
        } = error
        else {
            panic!("expected Corrupt, got {error}");
        };
        assert!(what.contains("hard state"), "{what}");
    }

    #[test]
    fn a_corrupt_snapshot_chunk_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStorage::open(dir.path()).unwrap();
        s.persist(Some(&snapshot(3, 1, 10 * 1024)), &[], None)
            .unwrap();
        drop(s);
        tamper(dir.path(), META_TREE, |meta| {
            flip_last_byte(meta, &chunk_key(1))
        });
        let error = open_err(dir.path());
        let RaftStorageError::Corrupt { ref what, .. } = error else {
            panic!("expected Corrupt, got {error}");
        };
        assert!(what.contains("snapshot chunk 1"), "{what}");
    }

    #[test]
    fn the_synced_index_follows_persist_and_never_exceeds_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStorage::open(dir.path()).unwrap();
        let check = |s: &SledStorage, expected: Index| {
            assert_eq!(s.synced_index(), expected);
            assert!(s.synced_index() <= last_index(&s.recover().unwrap()));
        };
        check(&s, 0);
        s.persist(None, &entries(1..=5, 1), None).unwrap();
        check(&s, 5);
        s.persist(None, &[], Some(&hard_state(1, Some(1), 5)))
            .unwrap();
        check(&s, 5);
        s.persist(None, &entries(3..=3, 2), None).unwrap();
        check(&s, 3);
        s.compact(&snapshot(2, 1, 0)).unwrap();
        check(&s, 3);
        s.compact(&snapshot(10, 2, 0)).unwrap();
        check(&s, 10);
        s.persist(Some(&snapshot(8, 2, 0)), &[], None).unwrap();
        check(&s, 8);
        let s = reopen(s);
        check(&s, 8);
    }

    /// Runs the same random operations against `SledStorage` and `MemStorage` and compares what
    /// they recover, with reopens in between. Set `DMQ_RAFT_STORAGE_SEED` to replay one seed.
    #[test]
    fn behaves_like_mem_storage_on_random_operations() {
        let seeds = match std::env::var("DMQ_RAFT_STORAGE_SEED") {
            Ok(seed) => vec![seed.parse().expect("DMQ_RAFT_STORAGE_SEED must be a u64")],
            Err(_) => vec![1, 2, rand::random()],
        };
        for seed in seeds {
            check_against_mem_storage(seed, 200);
        }
    }

    fn check_against_mem_storage(seed: u64, operations: usize) {
        println!("conformance seed {seed} (replay with DMQ_RAFT_STORAGE_SEED={seed})");
        let mut rng = StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let mut sled = SledStorage::open(dir.path()).unwrap();
        let mut mem = MemStorage::new();
        let mut term = 1;
        for step in 0..operations {
            let state = mem.recover().unwrap();
            let (snapshot_index, last) = (mem.snapshot_index(), last_index(&state));
            let op = rng.random_range(0..10);
            let what = match op {
                0..=5 => {
                    let snap = rng.random_bool(0.1).then(|| {
                        let at =
                            rng.random_range(snapshot_index.saturating_sub(2).max(1)..=last + 3);
                        let len = if rng.random_bool(0.3) {
                            rng.random_range(0..20_000)
                        } else {
                            0
                        };
                        snapshot(at, term, len)
                    });
                    let (snap_after, last_after) = match &snap {
                        None => (snapshot_index, last),
                        Some(s) => {
                            // A received snapshot replaces the whole log.
                            let at = s.meta.last_index;
                            (at, at)
                        }
                    };
                    let start = rng.random_range(snap_after + 1..=last_after + 1);
                    let count = rng.random_range(0..=4);
                    term += u64::from(rng.random_bool(0.2));
                    let new: Vec<Entry> = (start..start + count)
                        .map(|i| entry(i, rng.random_range(1..=term)))
                        .collect();
                    let hs = rng.random_bool(0.5).then(|| HardState {
                        term,
                        vote: rng.random_bool(0.7).then(|| rng.random_range(1..=5)),
                        commit: rng.random_range(0..=last_after + count),
                    });
                    sled.persist(snap.as_ref(), &new, hs.as_ref()).unwrap();
                    mem.persist(snap.as_ref(), &new, hs.as_ref()).unwrap();
                    format!(
                        "persist snapshot {:?}, {count} entries from {start}, hs {hs:?}",
                        snap.map(|s| s.meta.last_index)
                    )
                }
                6..=7 => {
                    let at = rng.random_range(snapshot_index.max(1)..=last + 2);
                    let len = rng.random_range(0..10_000);
                    let snap = snapshot(at, term, len);
                    sled.compact(&snap).unwrap();
                    mem.compact(&snap).unwrap();
                    format!("compact to {at}")
                }
                8 => {
                    sled = reopen(sled);
                    "reopen".to_owned()
                }
                _ => {
                    sled.persist(None, &[], None).unwrap();
                    "empty persist".to_owned()
                }
            };
            let context = format!("seed {seed}, step {step}: {what}");
            assert_eq!(sled.recover().unwrap(), mem.recover().unwrap(), "{context}");
            assert_eq!(sled.synced_index(), mem.synced_index(), "{context}");
        }
        let sled = reopen(sled);
        assert_eq!(
            sled.recover().unwrap(),
            mem.recover().unwrap(),
            "seed {seed}, final reopen"
        );
    }
}
