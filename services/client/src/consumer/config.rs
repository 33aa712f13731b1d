//! [`ConsumerConfig`], [`Start`] and [`OffsetReset`].

use std::time::Duration;

use crate::{ClientError, RetryPolicy};

/// Where a newly assigned partition starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The log start offset (the oldest record retention kept).
    Beginning,
    /// The high watermark: only records produced from now on.
    End,
    /// This offset (checked by the first fetch: see [`OffsetReset`]).
    Offset(u64),
    /// The first record whose timestamp is at or after this many ms since the Unix epoch
    /// (the high watermark when there is none).
    Timestamp(i64),
}

/// What a fetch at an offset outside `[log_start, high_watermark]` does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OffsetReset {
    /// [`poll`](crate::Consumer::poll) returns `OffsetOutOfRange` with the valid range, once;
    /// the partition is paused until [`seek`](crate::Consumer::seek) or a new
    /// [`assign`](crate::Consumer::assign). The default: a consumer never skips or re-reads
    /// records without being told.
    #[default]
    Error,
    /// Move to the log start offset and go on (retention deleted what was asked for).
    Earliest,
    /// Move to the high watermark and go on.
    Latest,
}

/// How a [`Consumer`](crate::Consumer) fetches.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsumerConfig {
    /// About the most bytes of records one fetch of one partition returns (default 1 MiB; at
    /// least one record whatever its size).
    pub max_bytes: u32,
    /// How long a fetch waits at the broker for new records (long poll), and how long
    /// [`poll`](crate::Consumer::poll) waits before returning an empty batch (default 500 ms).
    pub max_wait: Duration,
    /// Bound on one fetch attempt on top of `max_wait` (default 10 s).
    pub request_timeout: Duration,
    /// Retries of one fetch across leader changes and outages (default 10, pauses 50 ms
    /// doubling to 1 s); when they run out, `poll` returns the (retryable) error once and the
    /// next `poll` starts over.
    pub retry: RetryPolicy,
    /// Default [`OffsetReset::Error`].
    pub offset_reset: OffsetReset,
    /// Most fetches outstanding at once over all assigned partitions (default 16); partitions
    /// take turns beyond that. Memory is bounded by about `fetch_concurrency · max_bytes`.
    pub fetch_concurrency: usize,
}

impl Default for ConsumerConfig {
    fn default() -> ConsumerConfig {
        ConsumerConfig {
            max_bytes: 1024 * 1024,
            max_wait: Duration::from_millis(500),
            request_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            offset_reset: OffsetReset::Error,
            fetch_concurrency: 16,
        }
    }
}

impl ConsumerConfig {
    /// Refuses settings that cannot work.
    pub fn validate(&self) -> Result<(), ClientError> {
        let invalid = |message: &str| {
            Err(ClientError::InvalidArgument {
                message: message.to_string(),
            })
        };
        if self.max_bytes == 0 {
            return invalid("max_bytes must be positive");
        }
        if self.fetch_concurrency == 0 {
            return invalid("fetch_concurrency must be at least 1");
        }
        if self.request_timeout.is_zero() {
            return invalid("request_timeout must be positive");
        }
        if self.max_wait > Duration::from_millis(u32::MAX as u64) {
            return invalid("max_wait is too long");
        }
        Ok(())
    }
}
