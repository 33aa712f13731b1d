//! What a broker is told at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use dmq_client::discovery::DiscoveryOptions;

use crate::BrokerError;
use crate::log::{
    DEFAULT_CACHE_CAPACITY_BYTES, DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_RECORD_BYTES,
    DEFAULT_RETENTION_BYTES, DEFAULT_RETENTION_MS, LogConfig, LogStoreConfig,
};

/// Default [`BrokerConfig::max_request_bytes`]: 4 MiB, gRPC's usual message limit.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// Default [`BrokerConfig::fetch_max_bytes`]: 4 MiB.
pub const DEFAULT_FETCH_MAX_BYTES: u32 = 4 * 1024 * 1024;
/// Default [`BrokerConfig::memory_budget_bytes`]: 128 MiB.
pub const DEFAULT_MEMORY_BUDGET_BYTES: usize = 128 * 1024 * 1024;
/// What a Fetch or Consume with `max_bytes = 0` gets: 1 MiB (broker.proto).
pub const DEFAULT_FETCH_BYTES: u32 = 1024 * 1024;

/// A broker's settings. [`BrokerConfig::new`] fills in the documented defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct BrokerConfig {
    /// This broker's id in the cluster: unique, stable across restarts, never 0.
    pub broker_id: u64,
    /// Where BrokerService and the gRPC health service listen.
    pub listen: SocketAddr,
    /// The `host:port` that controllers, clients and other brokers use to reach this broker
    /// (registered with the controllers; may differ from `listen`, e.g. behind NAT or in
    /// Kubernetes). The host is everything before the last `:`; an IPv6 host keeps its
    /// brackets, so `host:port` can be joined back as given.
    pub advertise: String,
    /// ControllerService addresses (`host:port`) of the controllers; any subset that includes
    /// one live controller is enough to find the leader.
    pub controllers: Vec<String>,
    /// Where this broker keeps its data (partition logs, later). Created if missing.
    pub data_dir: PathBuf,
    /// Rack (failure domain) label for replica placement; empty for none.
    pub rack: String,
    /// Pause between heartbeats while they succeed (default 1 s). The controllers mark a
    /// broker OFFLINE after their session timeout (default 6 s) without one.
    pub heartbeat_interval: Duration,
    /// Pause before retrying a failed heartbeat (default 1 s; never more than
    /// `heartbeat_interval`), so a dead leader is given up on after 3 quick failures rather
    /// than 3 full intervals.
    pub heartbeat_retry_interval: Duration,
    /// Deadline of every call to a controller (default 2 s).
    pub rpc_timeout: Duration,
    /// Bound on each shutdown step: the final "leaving" heartbeat, then draining the server
    /// (default 5 s each).
    pub shutdown_timeout: Duration,
    /// Controller discovery timing (1 s per GetControllerInfo, backoff 1–8 s, 3 failures).
    /// Its backoff also paces registration retries.
    pub discovery: DiscoveryOptions,

    // ---- Data plane (partition logs in `<data_dir>/logs`) ----
    /// `min_insync_replicas` of topics whose config says 0 (default 1): acks=ALL is refused
    /// (NOT_ENOUGH_REPLICAS, nothing appended) while a partition's ISR is smaller.
    pub min_insync_replicas: u32,
    /// A follower that has not caught up with the leader's log end for longer than this is
    /// removed from the ISR (default 10 s). acks=ALL produce waits at most about this long for
    /// a dead follower before the ISR shrinks and the batch commits without it.
    pub replica_lag_time_max: Duration,
    /// The largest record accepted, as encoded (default 64 KiB − 61 bytes, at most 16 MiB; a
    /// topic's `max_message_bytes` can only lower it). Larger records are refused with
    /// INVALID_ARGUMENT.
    pub max_record_bytes: usize,
    /// The target size of one stored record batch (default 16 KiB). A Produce is split into
    /// as many stored batches as it needs; a record larger than this is stored alone.
    pub max_batch_bytes: usize,
    /// A partition's segment file rolls before passing this (default 1 GiB).
    pub log_segment_bytes: u64,
    /// A segment rolls at the first append this long after its first (ms; default 7 days;
    /// negative: only by size).
    pub log_segment_ms: i64,
    /// The most bytes of records (as encoded) one Produce may carry (default 4 MiB); more is
    /// refused with RESOURCE_EXHAUSTED. gRPC messages up to this plus 64 KiB are accepted.
    pub max_request_bytes: usize,
    /// Cap on a Fetch's `max_bytes` (default 4 MiB); a request asking 0 gets 1 MiB.
    pub fetch_max_bytes: u32,
    /// Cap on a Fetch's long poll `max_wait_ms` (default 30 s).
    pub fetch_max_wait: Duration,
    /// Bytes a follower asks per ReplicaFetch (default 1 MiB; at least one batch).
    pub replica_fetch_max_bytes: u32,
    /// How long a follower's ReplicaFetch waits at the leader for new data (default 500 ms).
    pub replica_fetch_max_wait: Duration,
    /// Longest pause between a follower's failed fetches (default 1 s; the first is 50 ms).
    pub replica_fetch_backoff_max: Duration,
    /// Time retention of topics whose `retention_ms` is 0 (default 7 days; negative: keep
    /// forever). Whole batches older than this (by their newest record) are deleted.
    pub retention_ms: i64,
    /// Size retention per partition of topics whose `retention_bytes` is 0 (default -1:
    /// unlimited). The oldest whole batches go while the partition is larger.
    pub retention_bytes: i64,
    /// How often retention runs over every partition (default 5 min).
    pub retention_check_interval: Duration,
    /// How often a moved high watermark is written to disk (default 1 s). Only a restart
    /// reads it back, and it is recomputed from the replicas, so losing the last one is
    /// harmless.
    pub high_watermark_checkpoint_interval: Duration,
    /// sled's page cache for the partition logs (default 64 MiB).
    pub log_cache_bytes: u64,
    /// The most bytes that requests in flight may hold together (default 128 MiB): Produce
    /// requests until answered (acks=ALL waiters included), acks=NONE appends in the
    /// background, Fetch answers and queued Consume responses. Beyond it requests are refused
    /// RESOURCE_EXHAUSTED / BROKER_OVERLOADED, nothing done. At least `max_request_bytes`.
    pub memory_budget_bytes: usize,
    /// Test-only pause points and injected failures (see [`crate::faults`]).
    #[cfg(any(test, feature = "fault-injection"))]
    pub faults: crate::FaultPoints,
}

impl BrokerConfig {
    /// A configuration with the default timings and no rack.
    pub fn new(
        broker_id: u64,
        listen: SocketAddr,
        advertise: impl Into<String>,
        controllers: Vec<String>,
        data_dir: impl Into<PathBuf>,
    ) -> BrokerConfig {
        BrokerConfig {
            broker_id,
            listen,
            advertise: advertise.into(),
            controllers,
            data_dir: data_dir.into(),
            rack: String::new(),
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_retry_interval: Duration::from_secs(1),
            rpc_timeout: Duration::from_secs(2),
            shutdown_timeout: Duration::from_secs(5),
            discovery: DiscoveryOptions::default(),
            min_insync_replicas: 1,
            replica_lag_time_max: Duration::from_secs(10),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            log_segment_bytes: crate::log::DEFAULT_SEGMENT_BYTES,
            log_segment_ms: crate::log::DEFAULT_SEGMENT_MS,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            fetch_max_bytes: DEFAULT_FETCH_MAX_BYTES,
            fetch_max_wait: Duration::from_secs(30),
            replica_fetch_max_bytes: 1024 * 1024,
            replica_fetch_max_wait: Duration::from_millis(500),
            replica_fetch_backoff_max: Duration::from_secs(1),
            retention_ms: DEFAULT_RETENTION_MS,
            retention_bytes: DEFAULT_RETENTION_BYTES,
            retention_check_interval: Duration::from_secs(300),
            high_watermark_checkpoint_interval: Duration::from_secs(1),
            log_cache_bytes: DEFAULT_CACHE_CAPACITY_BYTES,
            memory_budget_bytes: DEFAULT_MEMORY_BUDGET_BYTES,
            #[cfg(any(test, feature = "fault-injection"))]
            faults: crate::FaultPoints::default(),
        }
    }

    /// The partition log store's settings.
    pub fn log_store_config(&self) -> LogStoreConfig {
        LogStoreConfig {
            cache_capacity_bytes: self.log_cache_bytes,
            log: LogConfig {
                max_batch_bytes: self.max_batch_bytes,
                max_record_bytes: self.max_record_bytes,
                segment_bytes_max: self.log_segment_bytes,
                segment_ms: self.log_segment_ms,
                ..LogConfig::default()
            },
        }
    }

    /// Where the partition logs live.
    pub fn log_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }

    /// Checks everything that can be checked without the network.
    pub fn validate(&self) -> Result<(), BrokerError> {
        let invalid = |what: String| Err(BrokerError::InvalidConfig(what));
        if self.broker_id == 0 {
            return invalid("broker id must be at least 1 (0 means \"no broker\")".into());
        }
        self.advertised()?;
        if self.controllers.is_empty() {
            return invalid("no controllers given; list at least one host:port".into());
        }
        for (name, value) in [
            ("heartbeat interval", self.heartbeat_interval),
            ("heartbeat retry interval", self.heartbeat_retry_interval),
            ("rpc timeout", self.rpc_timeout),
            ("shutdown timeout", self.shutdown_timeout),
            ("discovery call timeout", self.discovery.call_timeout),
            ("replica lag time max", self.replica_lag_time_max),
            ("replica fetch backoff max", self.replica_fetch_backoff_max),
            ("retention check interval", self.retention_check_interval),
            (
                "high watermark checkpoint interval",
                self.high_watermark_checkpoint_interval,
            ),
        ] {
            if value.is_zero() {
                return invalid(format!("{name} must be greater than zero"));
            }
        }
        if self.min_insync_replicas == 0 {
            return invalid("min insync replicas must be at least 1".into());
        }
        if let Err(e) = self.log_store_config().log.validate() {
            return invalid(format!("{e} (max record bytes / max batch bytes)"));
        }
        if self.memory_budget_bytes < self.max_request_bytes
            || self.memory_budget_bytes > u32::MAX as usize
        {
            return invalid(format!(
                "memory budget bytes {} must be between max request bytes {} and {}",
                self.memory_budget_bytes,
                self.max_request_bytes,
                u32::MAX
            ));
        }
        if self.max_request_bytes < self.max_record_bytes
            || self.max_request_bytes > i32::MAX as usize
        {
            return invalid(format!(
                "max request bytes {} must be between max record bytes {} and {}",
                self.max_request_bytes,
                self.max_record_bytes,
                i32::MAX
            ));
        }
        if self.fetch_max_bytes == 0 || self.replica_fetch_max_bytes == 0 {
            return invalid("fetch max bytes and replica fetch max bytes must be positive".into());
        }
        Ok(())
    }

    /// `advertise` split into the host and port registered with the controllers.
    pub fn advertised(&self) -> Result<(String, u16), BrokerError> {
        let bad = |why: &str| {
            BrokerError::InvalidConfig(format!(
                "advertise address {:?} {why}; expected host:port",
                self.advertise
            ))
        };
        let (host, port) = self
            .advertise
            .trim()
            .rsplit_once(':')
            .ok_or_else(|| bad("has no port"))?;
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(bad("has no usable host"));
        }
        if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
            return Err(bad("has an IPv6 host without brackets"));
        }
        match port.parse::<u16>() {
            Ok(port) if port != 0 => Ok((host.to_string(), port)),
            _ => Err(bad("has no valid port (1-65535)")),
        }
    }

    /// The pause after a failed heartbeat: the retry interval, at most the heartbeat interval.
    pub(crate) fn retry_pause(&self) -> Duration {
        self.heartbeat_retry_interval.min(self.heartbeat_interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(advertise: &str) -> BrokerConfig {
        BrokerConfig::new(
            1,
            "127.0.0.1:0".parse().unwrap(),
            advertise,
            vec!["127.0.0.1:9000".into()],
            "/tmp/x",
        )
    }

    #[test]
    fn advertise_is_host_and_port() {
        assert_eq!(
            cfg("broker-1.dmq:9092").advertised().unwrap(),
            ("broker-1.dmq".to_string(), 9092)
        );
        assert_eq!(
            cfg("[::1]:9092").advertised().unwrap(),
            ("[::1]".to_string(), 9092)
        );
        for bad in ["", "host", ":9092", "host:0", "host:x", "::1:9092", "a b:1"] {
            assert!(cfg(bad).advertised().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn validate_catches_the_obvious() {
        assert!(cfg("h:1").validate().is_ok());
        let mut c = cfg("h:1");
        c.broker_id = 0;
        assert!(c.validate().is_err());
        let mut c = cfg("h:1");
        c.controllers.clear();
        assert!(c.validate().is_err());
        let mut c = cfg("h:1");
        c.heartbeat_interval = Duration::ZERO;
        assert!(c.validate().is_err());
    }

    #[test]
    fn data_plane_settings_are_checked() {
        let d = cfg("h:1");
        assert_eq!(d.min_insync_replicas, 1);
        assert_eq!(d.replica_lag_time_max, Duration::from_secs(10));
        assert_eq!(d.log_store_config().log, LogConfig::default());
        assert_eq!(d.log_dir(), PathBuf::from("/tmp/x/logs"));
        for broken in [
            |c: &mut BrokerConfig| c.min_insync_replicas = 0,
            |c: &mut BrokerConfig| c.replica_lag_time_max = Duration::ZERO,
            |c: &mut BrokerConfig| c.max_request_bytes = c.max_record_bytes - 1,
            |c: &mut BrokerConfig| c.max_record_bytes = 0,
            |c: &mut BrokerConfig| c.max_batch_bytes = 10,
            |c: &mut BrokerConfig| c.fetch_max_bytes = 0,
        ] {
            let mut c = cfg("h:1");
            broken(&mut c);
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}
