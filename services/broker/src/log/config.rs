//! Settings of the log store and its partitions, with their defaults.

use super::batch::{BATCH_HEADER_LEN, DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_RECORD_BYTES};
use super::error::LogError;

/// Default time retention: 7 days.
pub const DEFAULT_RETENTION_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// Default size retention: unlimited.
pub const DEFAULT_RETENTION_BYTES: i64 = UNLIMITED;
/// A retention setting meaning "keep everything" (any negative value means the same).
pub const UNLIMITED: i64 = -1;
/// Default sled page cache (sled's own default is 1 GiB). The OS page cache holds the rest.
/// sled 0.34 does not hold to it strictly: measured, a full scan of a 300 MB log left about
/// 300 MB resident even with an 8 MiB cache, and a page written as a blob file is accounted by its
/// small log pointer, so it is never evicted (one reason for the 16 KiB batch target).
pub const DEFAULT_CACHE_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;

/// The largest `max_record_bytes` accepted.
pub const MAX_RECORD_BYTES_LIMIT: usize = 16 * 1024 * 1024;

/// Limits applied by every partition of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// The target size of one encoded batch (one stored value): appends are split into batches
    /// of at most this, except that a record larger than it is stored alone in its own batch.
    ///
    /// Default 16 KiB. sled writes any page over ~128 KiB, and a page is a whole tree node of up
    /// to 17 values, to a blob file: measured (64 x 1 KiB records per append + sync, 2000
    /// appends), a 64 KiB target made 446 blob files (each synced: sync p50 0.40 ms, p99 1.5-3.7
    /// ms) and a resident set growing with the data (sled's cache accounts a blob page by its
    /// small log pointer, so never evicts it), while 16 KiB made none (sync p50 0.26 ms, p99
    /// 0.57 ms) at the price of more inserts and about 7x disk writes per byte instead of 3x.
    pub max_batch_bytes: usize,
    /// The largest record accepted, as encoded ([`super::Record::encoded_len`]); larger ones are
    /// refused with [`super::BatchError::RecordTooLarge`]. Default 64 KiB minus the batch header,
    /// at most 16 MiB. Records over about 128 KiB go to sled blob files (synced, but slower and
    /// never evicted from sled's cache).
    pub max_record_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

impl LogConfig {
    pub fn validate(&self) -> Result<(), LogError> {
        if self.max_batch_bytes <= BATCH_HEADER_LEN + 4 || self.max_batch_bytes > u32::MAX as usize
        {
            return Err(LogError::InvalidConfig(format!(
                "max_batch_bytes {} must be above {} and at most {}",
                self.max_batch_bytes,
                BATCH_HEADER_LEN + 4,
                u32::MAX
            )));
        }
        if self.max_record_bytes == 0 || self.max_record_bytes > MAX_RECORD_BYTES_LIMIT {
            return Err(LogError::InvalidConfig(format!(
                "max_record_bytes {} must be between 1 and {MAX_RECORD_BYTES_LIMIT}",
                self.max_record_bytes
            )));
        }
        Ok(())
    }
}

/// Settings of a [`super::LogStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStoreConfig {
    /// sled's page cache size ([`DEFAULT_CACHE_CAPACITY_BYTES`]; a target, not a bound).
    pub cache_capacity_bytes: u64,
    pub log: LogConfig,
}

impl Default for LogStoreConfig {
    fn default() -> LogStoreConfig {
        LogStoreConfig {
            cache_capacity_bytes: DEFAULT_CACHE_CAPACITY_BYTES,
            log: LogConfig::default(),
        }
    }
}
