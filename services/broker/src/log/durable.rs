//! Making sled 0.34 writes durable, as the controller's Raft storage does
//! (services/controller/src/raft_storage.rs; copied, not shared, to keep the crates apart).
//!
//! `Db::flush` ends in `sync_file_range`, which survives a process crash but not power loss. So a
//! durable sync is: flush, then fsync any blob file sled wrote since the last sync (sled writes a
//! page over ~128 KiB, e.g. a tree node of several large batches, to `<dir>/blobs/<lsn>` and
//! never syncs it; the data file points at it, so it goes first), then `sync_data` on our own
//! handle of sled's data file `<dir>/db`.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::error::LogError;

/// How long `open_sled` waits for sled's lock on `<dir>/db` before giving up.
const LOCK_WAIT_MAX: Duration = Duration::from_secs(5);
const LOCK_RETRY_INTERVAL: Duration = Duration::from_millis(10);

/// Our handle of sled's data file and the blob files already synced.
pub struct DurableSync {
    dir: PathBuf,
    data_file: File,
    /// sled never rewrites a blob file (it writes a new one), so each is synced once.
    synced_blobs: HashSet<OsString>,
}

impl DurableSync {
    /// Opens `<dir>/db` (sled must have created it).
    pub fn open(dir: &Path) -> Result<DurableSync, LogError> {
        let data_path = dir.join("db");
        let data_file =
            File::open(&data_path).map_err(io_error("open sled's data file", &data_path))?;
        Ok(DurableSync {
            dir: dir.to_path_buf(),
            data_file,
            synced_blobs: HashSet::new(),
        })
    }

    /// Makes everything written to `db` so far durable.
    pub fn sync(&mut self, db: &sled::Db) -> Result<(), LogError> {
        db.flush().map_err(sled_error(&self.dir))?;
        self.sync_new_blobs()?;
        self.data_file
            .sync_data()
            .map_err(io_error("sync sled's data file", &self.dir.join("db")))
    }

    /// How many blob files sled has written that are still present (a diagnostic).
    pub fn blob_count(&self) -> usize {
        self.synced_blobs.len()
    }

    fn sync_new_blobs(&mut self) -> Result<(), LogError> {
        let blobs_dir = self.dir.join("blobs");
        let listing = match std::fs::read_dir(&blobs_dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error("list sled's blob files", &blobs_dir)(e)),
        };
        let mut present = HashSet::new();
        let mut synced_any = false;
        for item in listing {
            let item = item.map_err(io_error("list sled's blob files", &blobs_dir))?;
            let name = item.file_name();
            if !self.synced_blobs.contains(&name) {
                let path = item.path();
                match File::open(&path) {
                    // sled removes blobs it no longer needs, maybe right now.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_error("open a sled blob file", &path)(e)),
                    Ok(file) => file
                        .sync_data()
                        .map_err(io_error("sync a sled blob file", &path))?,
                }
                synced_any = true;
            }
            present.insert(name);
        }
        if synced_any {
            sync_directory(&blobs_dir)?;
        }
        self.synced_blobs = present;
        Ok(())
    }

    /// Syncs the directory entries of a newly created database: sled's files in the directory,
    /// and the directory itself in its parent.
    pub fn sync_directories(&self) -> Result<(), LogError> {
        let conf = self.dir.join("conf");
        if conf.exists() {
            File::open(&conf)
                .and_then(|f| f.sync_all())
                .map_err(io_error("sync sled's config file", &conf))?;
        }
        let blobs = self.dir.join("blobs");
        if blobs.exists() {
            sync_directory(&blobs)?;
        }
        sync_directory(&self.dir)?;
        if let Some(parent) = self.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_directory(parent)?;
        }
        Ok(())
    }
}

/// Opens the sled db in `dir`, waiting a bounded time for its file lock: sled 0.34 releases the
/// lock of a dropped `Db` lazily (spacejam/sled#1234), so a reopen in the same process can find
/// it briefly held. A second process on the same directory still fails, after the wait.
/// sled segment size of partition logs (see `open_sled`).
pub const SEGMENT_BYTES: usize = 8 * 1024 * 1024;

pub fn open_sled(dir: &Path, cache_capacity_bytes: u64) -> Result<sled::Db, LogError> {
    // sled writes any page bigger than a quarter of a segment to its own blob file (a new
    // file, synced: an inode allocation per write). With the default 512 KiB segments a leaf
    // holding several 16 KiB batches crossed that all the time (measured: one blob per
    // ~130 KiB produced, most of the broker's CPU). 8 MiB segments move the threshold to 2 MiB.
    let config = sled::Config::new()
        .path(dir)
        .segment_size(SEGMENT_BYTES)
        .cache_capacity(cache_capacity_bytes);
    let deadline = Instant::now() + LOCK_WAIT_MAX;
    loop {
        match config.open() {
            Err(sled::Error::Io(e)) if is_lock_contention(&e) && Instant::now() < deadline => {
                std::thread::sleep(LOCK_RETRY_INTERVAL);
            }
            result => return result.map_err(sled_error(dir)),
        }
    }
}

/// sled 0.34.7 reports a held lock as an `Other` error whose text names it.
fn is_lock_contention(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::WouldBlock
        || (error.kind() == io::ErrorKind::Other
            && error.to_string().contains("could not acquire lock"))
}

fn sync_directory(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("sync a directory", dir))
}

pub fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LogError {
    let path = path.to_path_buf();
    move |source| LogError::Io { op, path, source }
}

pub fn sled_error(dir: &Path) -> impl FnOnce(sled::Error) -> LogError {
    let path = dir.to_path_buf();
    move |source| LogError::Sled { path, source }
}
