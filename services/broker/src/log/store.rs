//! [`LogStore`]: the broker's partition logs, as segment files per partition with their small
//! state in one sled database, and one group-committed durable sync for all of them.
//!
//! # Layout (`<dir>`)
//! - `partitions/<topic>-<topic id>-<partition>/`: the partition's segments, Kafka's layout
//!   ([`super::segment`]): `<base offset, 20 digits>.log` holds RecordBatch v2 batches back to
//!   back, `.index` its sparse offset index. Bytes of the topic name other than
//!   `[A-Za-z0-9._]` are written `%XX` (so `/` and `-` never confuse the parse).
//! - sled 0.34's files (`conf`, `db`, `snap.*`) beside it: tree `log_meta`, key = [`PartitionId::meta_key`], value = the
//!   partition's [`super::meta::PartitionMeta`] (log start offset, high watermark, recovery
//!   checkpoint, leader-epoch history; CRC32C-checked); and the store's storage id.
//!
//! A store written by an earlier build, which kept record data in sled trees (`p/...`), is
//! refused at open ([`LogError::OldLayout`]): there is no migration.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::config::{LogConfig, LogStoreConfig};
use super::durable::{DurableSync, io_error, open_sled, sled_error};
use super::error::LogError;
use super::partition::PartitionLog;
use super::segment::SegmentError;

/// The tree of per-partition metadata.
const META_TREE: &str = "log_meta";
/// The prefix of partition keys in the metadata tree (and of the old layout's data trees).
const PARTITION_TREE_PREFIX: &str = "p/";
/// The directory of partition directories.
const PARTITIONS_DIR: &str = "partitions";
/// How long metadata-only writes (high watermark, checkpoint) may wait for a durable sync.
const META_SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// The key, in the metadata tree, of the store's storage id (8 bytes, big-endian).
const STORAGE_ID_KEY: &[u8] = b"store/storage_id";

/// Which partition: the topic name, the topic's id (unique for the life of a topic) and the
/// partition number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId {
    pub topic: String,
    pub topic_id: u64,
    pub partition: u32,
}

impl PartitionId {
    pub fn new(topic: impl Into<String>, topic_id: u64, partition: u32) -> PartitionId {
        PartitionId {
            topic: topic.into(),
            topic_id,
            partition,
        }
    }

    /// The partition's key in `log_meta`.
    pub fn meta_key(&self) -> String {
        format!(
            "{PARTITION_TREE_PREFIX}{}/{}/{}",
            self.topic, self.topic_id, self.partition
        )
    }

    /// The name of the partition's directory under `partitions/`.
    pub fn dir_name(&self) -> String {
        let mut name = String::with_capacity(self.topic.len() + 24);
        for b in self.topic.bytes() {
            if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' {
                name.push(b as char);
            } else {
                name.push_str(&format!("%{b:02X}"));
            }
        }
        name.push_str(&format!("-{}-{}", self.topic_id, self.partition));
        name
    }

    /// The inverse of [`PartitionId::dir_name`].
    pub fn from_dir_name(name: &str) -> Option<PartitionId> {
        let mut parts = name.rsplitn(3, '-');
        let partition = parts.next()?.parse().ok()?;
        let topic_id = parts.next()?.parse().ok()?;
        let encoded = parts.next()?.as_bytes();
        let mut topic = Vec::with_capacity(encoded.len());
        let mut i = 0;
        while i < encoded.len() {
            if encoded[i] == b'%' {
                let hex = std::str::from_utf8(encoded.get(i + 1..i + 3)?).ok()?;
                topic.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            } else {
                topic.push(encoded[i]);
                i += 1;
            }
        }
        Some(PartitionId {
            topic: String::from_utf8(topic).ok()?,
            topic_id,
            partition,
        })
    }

    /// The inverse of [`PartitionId::meta_key`] (the topic may itself contain `/`).
    pub fn from_meta_key(name: &[u8]) -> Option<PartitionId> {
        let name = std::str::from_utf8(name).ok()?;
        let rest = name.strip_prefix(PARTITION_TREE_PREFIX)?;
        let (rest, partition) = rest.rsplit_once('/')?;
        let (topic, topic_id) = rest.rsplit_once('/')?;
        Some(PartitionId {
            topic: topic.to_owned(),
            topic_id: topic_id.parse().ok()?,
            partition: partition.parse().ok()?,
        })
    }
}

/// What every partition of a store shares: the metadata database and the group commit.
pub(super) struct StoreShared {
    pub dir: PathBuf,
    pub db: sled::Db,
    pub meta: sled::Tree,
    pub cfg: LogConfig,
    /// Held for the whole of a group commit round.
    durable: Mutex<DurableSync>,
    /// Segment files written since the round that last synced them, by address.
    dirty: Mutex<HashMap<usize, Arc<File>>>,
    /// Completed writes so far, and how many of them the last sync covered.
    written: AtomicU64,
    synced: AtomicU64,
    /// Metadata written since the last durable sync of sled, and when that sync was.
    meta_dirty: AtomicBool,
    meta_synced_at: Mutex<Instant>,
    /// Set when a write or a sync failed: what is on disk is unknown from then on.
    failed: AtomicBool,
    /// Why the store failed, once it has: the broker gives up its leaderships and stops.
    failure: tokio::sync::watch::Sender<Option<String>>,
    /// Group commit rounds that synced files (and the syncs at open).
    durable_syncs: AtomicU64,
    /// Chosen at random when the store is created, kept with its data.
    storage_id: u64,
}

impl StoreShared {
    /// Fails if an earlier write or sync failed.
    pub fn check_usable(&self) -> Result<(), LogError> {
        if self.failed.load(Ordering::SeqCst) {
            Err(LogError::Failed {
                path: self.dir.clone(),
            })
        } else {
            Ok(())
        }
    }

    /// Where partition `id`'s segments live.
    pub fn partition_dir(&self, id: &PartitionId) -> PathBuf {
        self.dir.join(PARTITIONS_DIR).join(id.dir_name())
    }

    /// Counts a completed write to `file`, so that the next [`StoreShared::sync`] covers it.
    /// Returns the write's ticket: it is durable once [`StoreShared::is_synced`] says so.
    pub fn note_write(&self, file: &Arc<File>) -> u64 {
        self.dirty
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(Arc::as_ptr(file) as usize)
            .or_insert_with(|| file.clone());
        self.written.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Whether a sync covered the write with `ticket` (and every write before it).
    pub fn is_synced(&self, ticket: u64) -> bool {
        self.synced.load(Ordering::SeqCst) >= ticket
    }

    /// Counts a metadata write: durable by the next round at most [`META_SYNC_INTERVAL`] later,
    /// or at once with [`StoreShared::sync_meta`].
    pub fn note_meta_write(&self) {
        self.meta_dirty.store(true, Ordering::SeqCst);
    }

    /// Maps a sled write error and marks the store failed.
    pub fn write_failed(&self) -> impl FnOnce(sled::Error) -> LogError + '_ {
        move |e| {
            self.mark_failed(format!("a write failed: {e}"));
            sled_error(&self.dir)(e)
        }
    }

    /// Maps a segment error; an I/O error marks the store failed (what is on disk is unknown).
    pub fn segment_failed<'a>(
        &'a self,
        id: &'a PartitionId,
    ) -> impl FnOnce(SegmentError) -> LogError + 'a {
        move |e| match e {
            SegmentError::Io { what, path, source } => {
                self.mark_failed(format!("{what} {}: {source}", path.display()));
                LogError::Io {
                    op: what,
                    path,
                    source,
                }
            }
            other => segment_error(id, other),
        }
    }

    /// From now on the store refuses writes (what is on disk is unknown), and says so to
    /// whoever watches [`LogStore::failures`].
    pub fn mark_failed(&self, why: String) {
        self.failed.store(true, Ordering::SeqCst);
        tracing::error!(dir = %self.dir.display(), error = %why, "log store failed; refusing further writes");
        self.failure.send_if_modified(|f| {
            if f.is_none() {
                *f = Some(why);
                true
            } else {
                false
            }
        });
    }

    /// Group commit: makes every segment write completed before the call durable (one
    /// `fdatasync` per file written since the last round). Concurrent callers share one
    /// round: whoever finds a round running waits for it, and returns at once if it covered
    /// its writes. Metadata rides along at most every [`META_SYNC_INTERVAL`].
    pub fn sync(&self) -> Result<(), LogError> {
        self.check_usable()?;
        let target = self.written.load(Ordering::SeqCst);
        if self.synced.load(Ordering::SeqCst) >= target {
            return Ok(());
        }
        let mut durable = self.durable.lock().unwrap_or_else(PoisonError::into_inner);
        self.check_usable()?;
        if self.synced.load(Ordering::SeqCst) >= target {
            return Ok(());
        }
        // Every write counted here put its file in `dirty` before counting, and every earlier
        // round finished (it held `durable`), so the files taken below cover them all.
        let covered = self.written.load(Ordering::SeqCst);
        let files: Vec<Arc<File>> =
            std::mem::take(&mut *self.dirty.lock().unwrap_or_else(PoisonError::into_inner))
                .into_values()
                .collect();
        for file in &files {
            if let Err(e) = file.sync_data() {
                self.mark_failed(format!("a segment sync failed: {e}"));
                return Err(LogError::Io {
                    op: "sync a segment",
                    path: self.dir.clone(),
                    source: e,
                });
            }
        }
        self.durable_syncs.fetch_add(1, Ordering::Relaxed);
        self.synced.fetch_max(covered, Ordering::SeqCst);
        if self.meta_dirty.load(Ordering::SeqCst)
            && self.meta_synced_at().elapsed() >= META_SYNC_INTERVAL
        {
            self.sync_meta_locked(&mut durable)?;
        }
        Ok(())
    }

    /// Counts a sync done outside a round (a partition's at open).
    pub fn count_sync(&self) {
        self.durable_syncs.fetch_add(1, Ordering::Relaxed);
    }

    /// Makes every metadata write so far durable now (resets, deletions, open).
    pub fn sync_meta(&self) -> Result<(), LogError> {
        self.check_usable()?;
        let mut durable = self.durable.lock().unwrap_or_else(PoisonError::into_inner);
        self.sync_meta_locked(&mut durable)
    }

    /// Syncs the metadata if it was written and waited [`META_SYNC_INTERVAL`] (a timer's
    /// round when no produce traffic brings one).
    pub fn sync_meta_if_due(&self) -> Result<(), LogError> {
        if self.meta_dirty.load(Ordering::SeqCst)
            && self.meta_synced_at().elapsed() >= META_SYNC_INTERVAL
        {
            self.sync_meta()?;
        }
        Ok(())
    }

    fn meta_synced_at(&self) -> Instant {
        *self
            .meta_synced_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn sync_meta_locked(&self, durable: &mut DurableSync) -> Result<(), LogError> {
        self.meta_dirty.store(false, Ordering::SeqCst);
        if let Err(e) = durable.sync(&self.db) {
            self.meta_dirty.store(true, Ordering::SeqCst);
            self.mark_failed(format!("a metadata sync failed: {e}"));
            return Err(e.into());
        }
        *self
            .meta_synced_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        Ok(())
    }
}

/// A segment error of partition `id` as a [`LogError`] (I/O errors: see
/// [`StoreShared::segment_failed`], which also fails the store).
pub(super) fn segment_error(id: &PartitionId, e: SegmentError) -> LogError {
    let corrupt = |offset: Option<u64>, detail: String| LogError::Corrupt {
        topic: id.topic.clone(),
        topic_id: id.topic_id,
        partition: id.partition,
        offset,
        detail,
    };
    match e {
        SegmentError::Io { what, path, source } => LogError::Io {
            op: what,
            path,
            source,
        },
        SegmentError::Batch(b) => LogError::InvalidBatch(b.into()),
        SegmentError::OffsetBehind { given, next } => LogError::NotContiguous {
            base_offset: given.max(0) as u64,
            log_end_offset: next.max(0) as u64,
        },
        e @ SegmentError::Full { .. } => corrupt(None, e.to_string()),
        e @ SegmentError::Corrupt { .. } => corrupt(None, e.to_string()),
    }
}

/// The partition logs of one broker in one sled database under `dir`.
///
/// # To ensure correctness
/// - Writes reach the segment files at once but are durable only after [`LogStore::sync`] (or
///   [`PartitionLog::sync`], the same thing) returned: acknowledge a produce only after it.
///   One round covers every partition's writes (group commit); concurrent callers share it.
/// - Metadata (high watermark, checkpoint, epochs) need not be durable for an acknowledgement
///   (see [`super::meta`]); it is synced at most a second later, and at once where an order on
///   disk matters (resets, deletions).
/// - After a failed write or sync the store refuses writes ([`LogError::Failed`]); restart.
/// - One [`PartitionLog`] per partition: [`LogStore::partition`] caches it, so every caller
///   shares the same offsets and lock.
/// - All calls block (files, sled and fsync): call them from `spawn_blocking` in async code.
/// - One process per directory: sled locks `<dir>/db`.
pub struct LogStore {
    shared: Arc<StoreShared>,
    partitions: Mutex<HashMap<PartitionId, Arc<PartitionLog>>>,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

impl LogStore {
    /// Opens (or creates) the store in `dir` with the default settings.
    pub fn open(dir: &Path) -> Result<LogStore, LogError> {
        LogStore::open_with(dir, LogStoreConfig::default())
    }

    /// Opens (or creates) the store in `dir`. Partitions are opened (and checked) on first use;
    /// each one syncs what it found at open (see [`PartitionLog`]).
    ///
    /// Refuses a store of the old layout, record data in sled ([`LogError::OldLayout`]).
    pub fn open_with(dir: &Path, cfg: LogStoreConfig) -> Result<LogStore, LogError> {
        cfg.log.validate()?;
        let dir = dir.to_path_buf();
        let created = !dir.join("db").exists();
        std::fs::create_dir_all(dir.join(PARTITIONS_DIR))
            .map_err(io_error("create the log directory", &dir))?;
        let db = open_sled(&dir, cfg.cache_capacity_bytes)?;
        if let Some(name) = db
            .tree_names()
            .into_iter()
            .find(|n| n.starts_with(PARTITION_TREE_PREFIX.as_bytes()))
        {
            return Err(LogError::OldLayout {
                path: dir.clone(),
                detail: format!(
                    "it keeps record data in sled (tree {:?})",
                    String::from_utf8_lossy(&name)
                ),
            });
        }
        let meta = db.open_tree(META_TREE).map_err(sled_error(&dir))?;
        let durable = DurableSync::open(&dir)?;
        if created {
            durable.sync_directories()?;
            for d in [dir.join(PARTITIONS_DIR), dir.clone()] {
                File::open(&d)
                    .and_then(|f| f.sync_all())
                    .map_err(io_error("sync the log directory", &d))?;
            }
        }
        let storage_id = match meta.get(STORAGE_ID_KEY).map_err(sled_error(&dir))? {
            Some(v) if v.len() == 8 && v.iter().any(|&b| b != 0) => {
                u64::from_be_bytes(v.as_ref().try_into().expect("8 bytes"))
            }
            Some(v) => {
                return Err(LogError::Corrupt {
                    topic: String::new(),
                    topic_id: 0,
                    partition: 0,
                    offset: None,
                    detail: format!("the store's storage id is {v:02x?}, not 8 non-zero bytes"),
                });
            }
            None => {
                // New (or from before storage ids): this disk's identity from now on.
                let id = rand::random::<u64>().max(1);
                meta.insert(STORAGE_ID_KEY, &id.to_be_bytes())
                    .map_err(sled_error(&dir))?;
                id
            }
        };
        let shared = Arc::new(StoreShared {
            dir,
            db,
            meta,
            cfg: cfg.log,
            durable: Mutex::new(durable),
            dirty: Mutex::new(HashMap::new()),
            written: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            meta_dirty: AtomicBool::new(false),
            meta_synced_at: Mutex::new(Instant::now()),
            failed: AtomicBool::new(false),
            failure: tokio::sync::watch::Sender::new(None),
            durable_syncs: AtomicU64::new(0),
            storage_id,
        });
        shared.sync_meta()?;
        tracing::info!(dir = %shared.dir.display(), storage_id, "opened log store");
        Ok(LogStore {
            shared,
            partitions: Mutex::new(HashMap::new()),
        })
    }

    /// This store's identity: random, chosen when it was created. The controllers compare it
    /// at registration to tell a restarted broker from one whose disk was replaced.
    pub fn storage_id(&self) -> u64 {
        self.shared.storage_id
    }

    /// How many group commit rounds synced files (a partition's sync at open included).
    pub fn durable_sync_count(&self) -> u64 {
        self.shared.durable_syncs.load(Ordering::Relaxed)
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    pub fn config(&self) -> LogConfig {
        self.shared.cfg
    }

    /// The partition's log, opened (and checked: see [`PartitionLog`]) on first use, created
    /// empty if it does not exist. Later calls return the same log.
    pub fn partition(
        &self,
        topic: &str,
        topic_id: u64,
        partition: u32,
    ) -> Result<Arc<PartitionLog>, LogError> {
        let id = PartitionId::new(topic, topic_id, partition);
        let mut partitions = self.lock_partitions();
        if let Some(log) = partitions.get(&id)
            && !log.is_deleted()
        {
            return Ok(log.clone());
        }
        let log = Arc::new(PartitionLog::open(self.shared.clone(), id.clone())?);
        partitions.insert(id, log.clone());
        Ok(log)
    }

    /// Every partition with data or metadata in the store (opened or not), e.g. to find
    /// partitions of topics deleted while the broker was down.
    pub fn stored_partitions(&self) -> Result<Vec<PartitionId>, LogError> {
        let mut found = BTreeSet::new();
        let partitions = self.shared.dir.join(PARTITIONS_DIR);
        let entries = std::fs::read_dir(&partitions)
            .map_err(io_error("list the partition directories", &partitions))?;
        for entry in entries {
            let entry = entry.map_err(io_error("list the partition directories", &partitions))?;
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(PartitionId::from_dir_name)
            {
                found.insert(id);
            }
        }
        for item in self.shared.meta.iter().keys() {
            let key = item.map_err(sled_error(&self.shared.dir))?;
            if let Some(id) = PartitionId::from_meta_key(&key) {
                found.insert(id);
            }
        }
        Ok(found.into_iter().collect())
    }

    /// Deletes every partition of topic `topic` with id `topic_id` (data and metadata), opened
    /// or not. Returns how many partitions were removed. Durable when it returns.
    pub fn remove_topic(&self, topic: &str, topic_id: u64) -> Result<usize, LogError> {
        let mut partitions = self.lock_partitions();
        let mut removed = 0;
        for id in self.stored_partitions()? {
            if id.topic != topic || id.topic_id != topic_id {
                continue;
            }
            match partitions.remove(&id) {
                Some(log) => log.delete()?,
                None => PartitionLog::delete_stored(&self.shared, &id)?,
            }
            removed += 1;
        }
        partitions.retain(|id, _| id.topic != topic || id.topic_id != topic_id);
        Ok(removed)
    }

    /// Makes every write to any partition completed so far durable (see [`StoreShared`]'s
    /// group commit): `fdatasync` of each segment file written since the last round.
    pub fn sync(&self) -> Result<(), LogError> {
        self.shared.sync()
    }

    /// Syncs metadata-only writes that waited a second (call it from a timer).
    pub fn sync_meta_if_due(&self) -> Result<(), LogError> {
        self.shared.sync_meta_if_due()
    }

    /// Resolves to why the store failed, once a write or sync has (it then refuses writes).
    pub fn failures(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.shared.failure.subscribe()
    }

    /// Fails the store as a failed fdatasync would (fault tests).
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn inject_failure(&self) {
        self.mark_failed("injected sync failure".into());
    }

    /// From now on the store refuses writes: what its files hold is unknown (a sync that
    /// ended in a panic, say). Watchers of [`LogStore::failures`] hear `why`.
    pub fn mark_failed(&self, why: String) {
        self.shared.mark_failed(why);
    }

    /// The sled database (tests corrupt data through it).
    #[cfg(test)]
    pub(crate) fn db(&self) -> &sled::Db {
        &self.shared.db
    }

    fn lock_partitions(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<PartitionId, Arc<PartitionLog>>> {
        self.partitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 10, path 5: after a crash a file may read back writes that were never
    /// fdatasynced; a follower then reports that log end as durable without syncing again.
    /// Opening a partition must make what it found durable first.
    #[test]
    fn opening_a_partition_syncs_what_it_finds_and_the_store_keeps_its_storage_id() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let store = LogStore::open(dir.path()).unwrap();
            let log = store.partition("t", 1, 0).unwrap();
            assert_eq!(
                store.durable_sync_count(),
                1,
                "the partition's sync at open"
            );
            log.append_as_leader(vec![crate::log::Record::new("unsynced")], 0, 1)
                .unwrap();
            // A crash: dropped without a sync (the page cache has it, no fdatasync ran).
            store.storage_id()
        };
        let store = LogStore::open(dir.path()).unwrap();
        assert_eq!(store.durable_sync_count(), 0);
        assert_eq!(store.partition("t", 1, 0).unwrap().log_end_offset(), 1);
        assert_eq!(
            store.durable_sync_count(),
            1,
            "one durable sync before anything is served"
        );
        assert_eq!(store.storage_id(), id, "the disk keeps its identity");
        assert_ne!(id, 0);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(LogStore::open(other.path()).unwrap().storage_id(), id);
    }

    #[test]
    fn names_roundtrip() {
        for id in [
            PartitionId::new("orders", 7, 0),
            PartitionId::new("a/b/c", 1, 12),
            PartitionId::new("with-dash_and.dot", 3, 4),
            PartitionId::new("%41", 3, 4),
            PartitionId::new("", 0, 0),
        ] {
            assert_eq!(
                PartitionId::from_meta_key(id.meta_key().as_bytes()),
                Some(id.clone())
            );
            let dir = id.dir_name();
            assert!(!dir.contains('/'), "{dir}");
            assert_eq!(PartitionId::from_dir_name(&dir), Some(id));
        }
        assert_eq!(PartitionId::from_meta_key(b"__sled__default"), None);
        assert_eq!(PartitionId::from_meta_key(b"p/x/y/0"), None);
        assert_eq!(PartitionId::from_meta_key(META_TREE.as_bytes()), None);
        assert_eq!(PartitionId::from_dir_name("x-y-0"), None);
        assert_eq!(PartitionId::from_dir_name("bad%zz-1-0"), None);
    }

    /// Issue 11: a store of the old layout (record data in sled trees) is refused with what
    /// to do, never opened as an empty store that would then report its partitions empty.
    #[test]
    fn a_store_of_the_sled_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = open_sled(dir.path(), 1 << 20).unwrap();
            db.open_tree("p/orders/1/0")
                .unwrap()
                .insert(0u64.to_be_bytes(), b"batch".to_vec())
                .unwrap();
            db.flush().unwrap();
        }
        let err = LogStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, LogError::OldLayout { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("move or delete"), "{msg}");
    }
}
