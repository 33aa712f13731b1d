//! What a broker is told at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use dmq_client::discovery::DiscoveryOptions;

use crate::BrokerError;

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
    /// Pause between heartbeats while they succeed (default 5 s). The controllers mark a
    /// broker OFFLINE after their session timeout (default 30 s) without one.
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
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_retry_interval: Duration::from_secs(1),
            rpc_timeout: Duration::from_secs(2),
            shutdown_timeout: Duration::from_secs(5),
            discovery: DiscoveryOptions::default(),
        }
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
        ] {
            if value.is_zero() {
                return invalid(format!("{name} must be greater than zero"));
            }
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
}
