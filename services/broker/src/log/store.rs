//! [`LogStore`]: the broker's partition logs in one sled database, with one group-committed
//! durable sync for all of them.
//!
//! # Layout (sled 0.34, `<dir>/db`)
//! - One tree per partition, named `p/<topic>/<topic id>/<partition>` (decimal numbers; the topic
//!   id keeps a deleted-then-recreated topic apart): key = a batch's base offset (u64
//!   big-endian, so keys sort by offset), value = the encoded batch ([`super::batch`]).
//! - Tree `log_meta`: key = a partition's tree name, value = its [`super::meta::PartitionMeta`]
//!   (log start offset, high watermark, leader-epoch history; CRC32C-checked). Separate from
//!   the batches so that its frequent rewrites (high watermark moves) touch a small tree node,
//!   not one holding large batches.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::config::{LogConfig, LogStoreConfig};
use super::durable::{DurableSync, io_error, open_sled, sled_error};
use super::error::LogError;
use super::partition::PartitionLog;

/// The tree of per-partition metadata.
const META_TREE: &str = "log_meta";
/// The prefix of partition tree names.
const PARTITION_TREE_PREFIX: &str = "p/";
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

    /// The sled tree holding the partition's batches, also its key in `log_meta`.
    pub fn tree_name(&self) -> String {
        format!(
            "{PARTITION_TREE_PREFIX}{}/{}/{}",
            self.topic, self.topic_id, self.partition
        )
    }

    /// The inverse of [`PartitionId::tree_name`] (the topic may itself contain `/`).
    pub fn from_tree_name(name: &[u8]) -> Option<PartitionId> {
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

/// What every partition of a store shares: the database, the metadata tree and the sync.
pub(super) struct StoreShared {
    pub dir: PathBuf,
    pub db: sled::Db,
    pub meta: sled::Tree,
    pub cfg: LogConfig,
    durable: Mutex<DurableSync>,
    /// Completed writes so far, and how many of them the last sync covered.
    written: AtomicU64,
    synced: AtomicU64,
    /// Set when a write or a sync failed: what is on disk is unknown from then on.
    failed: AtomicBool,
    /// Why the store failed, once it has: the broker gives up its leaderships and stops.
    failure: tokio::sync::watch::Sender<Option<String>>,
    /// Durable syncs done (the group commit's and the one at open).
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

    /// Counts a completed write, so that the next [`StoreShared::sync`] covers it.
    pub fn note_write(&self) {
        self.written.fetch_add(1, Ordering::SeqCst);
    }

    /// Maps a sled write error and marks the store failed.
    pub fn write_failed(&self) -> impl FnOnce(sled::Error) -> LogError + '_ {
        move |e| {
            self.mark_failed(format!("a write failed: {e}"));
            sled_error(&self.dir)(e)
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

    /// Group commit: makes every write completed before the call durable. Concurrent callers
    /// share one sync: whoever finds a sync running waits for it, and returns at once if it
    /// covered its writes.
    pub fn sync(&self) -> Result<(), LogError> {
        self.check_usable()?;
        let target = self.written.load(Ordering::SeqCst);
        if self.synced.load(Ordering::SeqCst) >= target {
            return Ok(());
        }
        let mut durable = self
            .durable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.check_usable()?;
        if self.synced.load(Ordering::SeqCst) >= target {
            return Ok(());
        }
        // Every write counted here completed before the flush starts, so the flush covers it.
        let covered = self.written.load(Ordering::SeqCst);
        self.sync_now(&mut durable)?;
        self.synced.fetch_max(covered, Ordering::SeqCst);
        Ok(())
    }

    /// One durable sync of everything written so far, whatever the counters say.
    fn sync_now(&self, durable: &mut DurableSync) -> Result<(), LogError> {
        if let Err(e) = durable.sync(&self.db) {
            self.mark_failed(format!("a sync failed: {e}"));
            return Err(e.into());
        }
        self.durable_syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The partition logs of one broker in one sled database under `dir`.
///
/// # To ensure correctness
/// - Writes reach sled at once but are durable only after [`LogStore::sync`] (or
///   [`PartitionLog::sync`], the same thing) returned: acknowledge a produce only after it.
///   One sync covers every partition's writes (group commit); concurrent callers share it.
/// - After a failed write or sync the store refuses writes ([`LogError::Failed`]); restart.
/// - One [`PartitionLog`] per partition: [`LogStore::partition`] caches it, so every caller
///   shares the same offsets and lock.
/// - All calls block (sled and fsync): call them from `spawn_blocking` in async code.
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

    /// Opens (or creates) the store in `dir`. Partitions are opened (and checked) on first use.
    ///
    /// Opening ends with one durable sync: after a crash, sled may read back writes that
    /// reached the file but were never synced, and a follower reports its log end as durable
    /// without syncing again, so everything found here is made durable before it is served.
    pub fn open_with(dir: &Path, cfg: LogStoreConfig) -> Result<LogStore, LogError> {
        cfg.log.validate()?;
        let dir = dir.to_path_buf();
        let created = !dir.join("db").exists();
        std::fs::create_dir_all(&dir).map_err(io_error("create the log directory", &dir))?;
        let db = open_sled(&dir, cfg.cache_capacity_bytes)?;
        let meta = db.open_tree(META_TREE).map_err(sled_error(&dir))?;
        let durable = DurableSync::open(&dir)?;
        if created {
            durable.sync_directories()?;
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
            written: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            failure: tokio::sync::watch::Sender::new(None),
            durable_syncs: AtomicU64::new(0),
            storage_id,
        });
        shared.sync_now(
            &mut shared
                .durable
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )?;
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

    /// How many durable syncs this store did (the one at open included).
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
        for name in self.shared.db.tree_names() {
            if let Some(id) = PartitionId::from_tree_name(&name) {
                found.insert(id);
            }
        }
        for item in self.shared.meta.iter().keys() {
            let key = item.map_err(sled_error(&self.shared.dir))?;
            if let Some(id) = PartitionId::from_tree_name(&key) {
                found.insert(id);
            }
        }
        Ok(found.into_iter().collect())
    }

    /// Deletes every partition of topic `topic` with id `topic_id` (data and metadata), opened
    /// or not. Returns how many partitions were removed. Durable after the next sync.
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
    /// group commit): flush, sync new blob files, `sync_data` on `<dir>/db`.
    pub fn sync(&self) -> Result<(), LogError> {
        self.shared.sync()
    }

    /// Resolves to why the store failed, once a write or sync has (it then refuses writes).
    pub fn failures(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.shared.failure.subscribe()
    }

    /// Fails the store as a failed fdatasync would (fault tests).
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn inject_failure(&self) {
        self.shared.mark_failed("injected sync failure".into());
    }

    /// The sled database (tests corrupt data through it).
    #[cfg(test)]
    pub(crate) fn db(&self) -> &sled::Db {
        &self.shared.db
    }

    /// How many blob files sled has written that the syncs have seen (a diagnostic).
    pub fn blob_file_count(&self) -> usize {
        self.shared
            .durable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .blob_count()
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

    /// Issue 10, path 5: after a crash sled reads back writes that reached the file but were
    /// never fdatasynced; a follower then reports that log end as durable without syncing
    /// again. Opening a store must make what it found durable first.
    #[test]
    fn opening_a_store_syncs_what_it_finds_and_keeps_its_storage_id() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let store = LogStore::open(dir.path()).unwrap();
            assert_eq!(store.durable_sync_count(), 1);
            let log = store.partition("t", 1, 0).unwrap();
            log.append_as_leader(vec![crate::log::Record::new("unsynced")], 0, 1)
                .unwrap();
            // A crash: dropped without a sync (sled wrote the page, nobody fdatasynced it).
            store.storage_id()
        };
        let store = LogStore::open(dir.path()).unwrap();
        assert_eq!(
            store.durable_sync_count(),
            1,
            "one durable sync before anything is served"
        );
        assert_eq!(store.partition("t", 1, 0).unwrap().log_end_offset(), 1);
        assert_eq!(store.storage_id(), id, "the disk keeps its identity");
        assert_ne!(id, 0);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(LogStore::open(other.path()).unwrap().storage_id(), id);
    }

    #[test]
    fn tree_names_roundtrip() {
        for id in [
            PartitionId::new("orders", 7, 0),
            PartitionId::new("a/b/c", 1, 12),
            PartitionId::new("", 0, 0),
        ] {
            assert_eq!(
                PartitionId::from_tree_name(id.tree_name().as_bytes()),
                Some(id)
            );
        }
        assert_eq!(PartitionId::from_tree_name(b"__sled__default"), None);
        assert_eq!(PartitionId::from_tree_name(b"p/x/y/0"), None);
        assert_eq!(PartitionId::from_tree_name(META_TREE.as_bytes()), None);
    }
}
