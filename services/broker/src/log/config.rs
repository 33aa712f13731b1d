//! Settings of the log store and its partitions, with their defaults.

use super::batch::{BATCH_HEADER_LEN, DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_RECORD_BYTES};
use super::error::LogError;

/// Default time retention: 7 days.
pub const DEFAULT_RETENTION_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// Default size retention: unlimited.
pub const DEFAULT_RETENTION_BYTES: i64 = UNLIMITED;
/// A retention setting meaning "keep everything" (any negative value means the same).
pub const UNLIMITED: i64 = -1;
/// Default sled page cache (sled's own default is 1 GiB). sled holds only the partitions'
/// small state now (record data is in segment files, cached by the OS).
pub const DEFAULT_CACHE_CAPACITY_BYTES: u64 = 16 * 1024 * 1024;
/// Default segment size: Kafka's `segment.bytes`, 1 GiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 1 << 30;
/// Default segment age before it rolls: Kafka's `segment.ms`, 7 days.
pub const DEFAULT_SEGMENT_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// The largest `max_record_bytes` accepted.
pub const MAX_RECORD_BYTES_LIMIT: usize = 16 * 1024 * 1024;

/// Limits applied by every partition of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// The target size of one encoded batch: appends are split into batches of at most this,
    /// except that a record larger than it is stored alone in its own batch. Default 16 KiB.
    pub max_batch_bytes: usize,
    /// The largest record accepted, as encoded ([`super::Record::encoded_len`]); larger ones are
    /// refused with [`super::BatchError::RecordTooLarge`]. Default 64 KiB minus the batch header,
    /// at most 16 MiB.
    pub max_record_bytes: usize,
    /// A segment rolls before an append would take it past this ([`DEFAULT_SEGMENT_BYTES`]).
    pub segment_bytes_max: u64,
    /// A segment rolls at the first append this long after its first ([`DEFAULT_SEGMENT_MS`];
    /// negative: never by time). Time retention deletes only rolled segments.
    pub segment_ms: i64,
    /// An offset index entry every this many bytes of batches (Kafka's 4 KiB).
    pub index_interval_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            segment_bytes_max: DEFAULT_SEGMENT_BYTES,
            segment_ms: DEFAULT_SEGMENT_MS,
            index_interval_bytes: super::segment::DEFAULT_INDEX_INTERVAL_BYTES,
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
        if self.segment_bytes_max == 0
            || self.segment_bytes_max > super::segment::SEGMENT_BYTES_LIMIT
        {
            return Err(LogError::InvalidConfig(format!(
                "segment_bytes_max {} must be between 1 and {} (a batch larger than it gets a \
                 segment of its own)",
                self.segment_bytes_max,
                super::segment::SEGMENT_BYTES_LIMIT
            )));
        }
        if self.index_interval_bytes == 0 {
            return Err(LogError::InvalidConfig(
                "index_interval_bytes must be at least 1".into(),
            ));
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
