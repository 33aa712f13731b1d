//! Making sled 0.34 writes durable (DESIGN.md, "Storage facts"), for every sled store we have.
//!
//! Upstream sled's `Db::flush` ends in `sync_file_range`, which survives a process crash but
//! not power loss. Our vendored sled's `flush` ends in one `fdatasync` of its data file
//! instead (`services/sled/PATCHES.md`, patch 6), so a durable sync is a flush: this crate
//! keeps the recipe in one place, checks that the data file is where we sync it, and syncs
//! directory entries. Blob files (a page over a quarter of a segment goes to
//! `<dir>/blobs/<lsn>`) are synced by the patched sled itself before the entry pointing at them
//! can be written (patch 3), so they need nothing here.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long [`open_sled`] waits for sled's lock on `<dir>/db` before giving up.
pub const LOCK_WAIT_MAX: Duration = Duration::from_secs(5);
const LOCK_RETRY_INTERVAL: Duration = Duration::from_millis(10);

/// A failed sync or open; the caller's store should refuse writes afterwards (what reached
/// the disk is unknown after a failed fsync).
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    #[error("sled failed on {}: {source}", path.display())]
    Sled { path: PathBuf, source: sled::Error },
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// The error for `op` on `path`; the path is copied only when there is an error, since the
/// sync path calls this on every sync.
fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DurableError + 'a {
    move |source| DurableError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Durable syncs of one sled database.
pub struct DurableSync {
    dir: PathBuf,
    blobs_dir: PathBuf,
}

impl DurableSync {
    /// Checks that sled's data file `<dir>/db` exists (sled must have created it): a sync of
    /// a directory without one would sync nothing and say it did.
    pub fn open(dir: &Path) -> Result<DurableSync, DurableError> {
        let data_path = dir.join("db");
        File::open(&data_path).map_err(io_error("open sled's data file", &data_path))?;
        Ok(DurableSync {
            dir: dir.to_path_buf(),
            blobs_dir: dir.join("blobs"),
        })
    }

    /// Makes everything written to `db` so far durable: the patched `flush` writes sled's
    /// buffers and ends in one `fdatasync`. (A second `fdatasync` here cost a device cache
    /// flush per sync for nothing.)
    pub fn sync(&mut self, db: &sled::Db) -> Result<(), DurableError> {
        db.flush().map(drop).map_err(|source| DurableError::Sled {
            path: self.dir.clone(),
            source,
        })
    }

    /// How many blob files sled holds now (a diagnostic; lists the directory).
    pub fn blob_count(&self) -> usize {
        std::fs::read_dir(&self.blobs_dir).map_or(0, |entries| entries.count())
    }

    /// Syncs the directory entries of a newly created database: sled's files in the directory,
    /// and the directory itself in its parent (it may just have been created).
    pub fn sync_directories(&self) -> Result<(), DurableError> {
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

/// Opens the sled db `config` names (at `dir`), waiting up to [`LOCK_WAIT_MAX`] for its file
/// lock: sled 0.34 releases the lock of a dropped `Db` lazily (spacejam/sled#1234, #1289), so a
/// reopen right after a drop in the same process can briefly find it held. A second process on
/// the same directory still fails, after the wait.
pub fn open_sled(config: &sled::Config, dir: &Path) -> Result<sled::Db, DurableError> {
    let deadline = Instant::now() + LOCK_WAIT_MAX;
    loop {
        match config.open() {
            Err(sled::Error::Io(e)) if is_lock_contention(&e) && Instant::now() < deadline => {
                std::thread::sleep(LOCK_RETRY_INTERVAL);
            }
            result => {
                return result.map_err(|source| DurableError::Sled {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
    }
}

/// sled 0.34.7 reports a held lock as an `Other` error whose text names it.
fn is_lock_contention(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::WouldBlock
        || (error.kind() == io::ErrorKind::Other
            && error.to_string().contains("could not acquire lock"))
}

fn sync_directory(dir: &Path) -> Result<(), DurableError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("sync a directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_what_was_written_and_tracks_blob_files() {
        let dir = tempfile::tempdir().unwrap();
        let config = sled::Config::new().path(dir.path());
        let db = open_sled(&config, dir.path()).unwrap();
        let mut d = DurableSync::open(dir.path()).unwrap();
        d.sync_directories().unwrap();
        db.insert(b"small", vec![1u8; 16]).unwrap();
        d.sync(&db).unwrap();
        assert_eq!(d.blob_count(), 0);
        // A value above a quarter of the 512 KiB default segment goes to a blob file.
        db.insert(b"large", vec![2u8; 300 * 1024]).unwrap();
        d.sync(&db).unwrap();
        assert!(d.blob_count() >= 1, "a blob file was written and synced");
        // Listed again through the same, rewound directory handle.
        let before = d.blob_count();
        db.insert(b"larger", vec![3u8; 400 * 1024]).unwrap();
        d.sync(&db).unwrap();
        assert!(d.blob_count() > before, "a later blob file is found too");
        drop(db);
        let db = open_sled(&config, dir.path()).expect("reopen waits for the released lock");
        assert_eq!(db.get(b"large").unwrap().unwrap().len(), 300 * 1024);
        assert_eq!(db.get(b"larger").unwrap().unwrap().len(), 400 * 1024);
    }
}
