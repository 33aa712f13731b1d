//! Durability of the partition logs' state: the shared sled recipe (`dmq-durable`: our
//! vendored sled's flush, which ends in one `fdatasync`), sled opened with segments sized for record
//! batches, and the conversions into [`LogError`].

use std::io;
use std::path::Path;

use dmq_durable::DurableError;
pub use dmq_durable::DurableSync;

use super::error::LogError;

/// sled segment size of partition logs (see `open_sled`).
pub const SEGMENT_BYTES: usize = 8 * 1024 * 1024;

/// Opens the partition logs' sled db in `dir`.
pub fn open_sled(dir: &Path, cache_capacity_bytes: u64) -> Result<sled::Db, LogError> {
    // sled writes any page bigger than a quarter of a segment to its own blob file (a new
    // file, synced: an inode allocation per write). With the default 512 KiB segments a leaf
    // holding several 16 KiB batches crossed that all the time (measured: one blob per
    // ~130 KiB produced, most of the broker's CPU). 8 MiB segments move the threshold to 2 MiB.
    let config = sled::Config::new()
        .path(dir)
        .segment_size(SEGMENT_BYTES)
        .cache_capacity(cache_capacity_bytes);
    Ok(dmq_durable::open_sled(&config, dir)?)
}

impl From<DurableError> for LogError {
    fn from(e: DurableError) -> LogError {
        match e {
            DurableError::Sled { path, source } => LogError::Sled { path, source },
            DurableError::Io { op, path, source } => LogError::Io { op, path, source },
        }
    }
}

pub fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LogError + 'a {
    move |source| LogError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

pub fn sled_error(dir: &Path) -> impl FnOnce(sled::Error) -> LogError + '_ {
    move |source| LogError::Sled {
        path: dir.to_path_buf(),
        source,
    }
}
