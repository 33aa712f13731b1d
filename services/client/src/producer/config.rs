//! [`ProducerConfig`] and [`Acks`].

use std::time::Duration;

use dmq_proto::v1 as pb;

use crate::{ClientError, Partitioner, RetryPolicy};

/// How many replicas must hold a batch before the broker answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Acks {
    /// The broker answers before writing anything: fastest, may lose records, no offsets.
    None,
    /// Once the leader's log holds the batch durably: lost if the leader dies before a
    /// follower copied it.
    Leader,
    /// Once every in-sync replica holds it and the ISR has at least `min_insync_replicas`
    /// members (else NOT_ENOUGH_REPLICAS, retried). The default: an acknowledged record
    /// survives the loss of any minority of its replicas.
    #[default]
    All,
}

impl Acks {
    pub(crate) fn wire(self) -> pb::Acks {
        match self {
            Acks::None => pb::Acks::None,
            Acks::Leader => pb::Acks::Leader,
            Acks::All => pb::Acks::All,
        }
    }
}

/// How a [`Producer`](crate::Producer) batches, bounds memory and retries.
#[derive(Clone, Debug, PartialEq)]
pub struct ProducerConfig {
    /// Default [`Acks::All`].
    pub acks: Acks,
    /// How long a partition's batch waits for more records after its first one arrived
    /// (default 5 ms); a full batch or [`flush`](crate::Producer::flush) sends it earlier.
    /// 0 sends whatever is waiting as soon as the partition may send.
    pub linger: Duration,
    /// Most bytes of records (protobuf-encoded, plus a few bytes of overhead each) in one
    /// Produce request (default 256 KiB). Keep it well under the brokers' request limit
    /// (gRPC's 4 MiB default); the broker splits it into its own stored batches.
    pub batch_max_bytes: usize,
    /// Most bytes of records the producer holds, queued or in flight, over all partitions
    /// (default 32 MiB). `send` waits (asynchronously) while a record does not fit, so a
    /// producer faster than the cluster slows down instead of growing without bound.
    pub buffer_max_bytes: usize,
    /// The largest record accepted, as counted for the batch (default 63 KiB). Larger ones
    /// are refused by `send` with `TooLarge` so that the broker's per-record limit (just under
    /// its 64 KiB stored batch) never fails the other records batched with one.
    pub max_record_bytes: usize,
    /// Retries of a batch after a retryable failure (default 10, pauses 50 ms doubling to
    /// 1 s); see [`Producer`](crate::Producer) for what is retried.
    pub retry: RetryPolicy,
    /// Whether a batch whose attempt had an unknown outcome (appended but not confirmed: the
    /// ISR shrank, the leader changed, a timeout, a lost connection) is sent again (default
    /// true: at least once, a retry may duplicate it). With false the batch fails at once with
    /// [`ClientError::OutcomeUnknown`] and the caller decides (at most once per send).
    pub retry_unknown_outcomes: bool,
    /// Bound on one Produce attempt (default 30 s). The broker is asked to give up waiting
    /// for the ISR after three quarters of it (at most 60 s), so it usually answers first.
    pub request_timeout: Duration,
    /// Produce requests a partition may have outstanding (default 1). With 1, batch N+1 is
    /// not sent before batch N is acknowledged or failed, so retries never reorder records.
    /// More pipelines requests for throughput, but a retried batch may then land after a
    /// later one.
    pub max_in_flight_per_partition: usize,
    /// How a record without an explicit partition is placed (default key hash, keyless
    /// round-robin).
    pub partitioner: Partitioner,
}

impl Default for ProducerConfig {
    fn default() -> ProducerConfig {
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_max_bytes: 256 * 1024,
            buffer_max_bytes: 32 * 1024 * 1024,
            max_record_bytes: 63 * 1024,
            retry: RetryPolicy::default(),
            retry_unknown_outcomes: true,
            request_timeout: Duration::from_secs(30),
            max_in_flight_per_partition: 1,
            partitioner: Partitioner::KeyHash,
        }
    }
}

impl ProducerConfig {
    /// Refuses settings that cannot work together.
    pub fn validate(&self) -> Result<(), ClientError> {
        let invalid = |message: String| Err(ClientError::InvalidArgument { message });
        if self.batch_max_bytes == 0 || self.max_record_bytes == 0 {
            return invalid("batch_max_bytes and max_record_bytes must be positive".into());
        }
        if self.max_record_bytes > self.batch_max_bytes {
            return invalid(format!(
                "max_record_bytes {} exceeds batch_max_bytes {}: a record must fit in a batch",
                self.max_record_bytes, self.batch_max_bytes
            ));
        }
        if self.buffer_max_bytes < self.batch_max_bytes || self.buffer_max_bytes > u32::MAX as usize
        {
            return invalid(format!(
                "buffer_max_bytes {} must be between batch_max_bytes {} and {}",
                self.buffer_max_bytes,
                self.batch_max_bytes,
                u32::MAX
            ));
        }
        if self.max_in_flight_per_partition == 0 {
            return invalid("max_in_flight_per_partition must be at least 1".into());
        }
        if self.request_timeout.is_zero() {
            return invalid("request_timeout must be positive".into());
        }
        Ok(())
    }

    /// The `timeout_ms` sent with Produce: how long the leader may wait for the ISR.
    pub(crate) fn broker_timeout_ms(&self) -> u32 {
        (self.request_timeout.as_millis() * 3 / 4).clamp(1, 60_000) as u32
    }
}
