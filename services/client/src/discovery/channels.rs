//! One lazily connected gRPC channel per controller address.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use super::DiscoveryError;

/// Most channels a pool keeps. Controllers are few; when hints name more addresses than this
/// the pool starts over (dropping only idle connections) rather than grow without bound.
const CHANNELS_MAX: usize = 64;

/// The endpoint for a controller `address`: `host:port` (plain HTTP/2) or a full
/// `http://host:port` URI, with `connect_timeout` on every (re)connect.
pub fn endpoint(address: &str, connect_timeout: Duration) -> Result<Endpoint, DiscoveryError> {
    let invalid = |reason: String| DiscoveryError::InvalidAddress {
        address: address.to_string(),
        reason,
    };
    if address.trim().is_empty() {
        return Err(invalid("empty address".into()));
    }
    let uri = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    let endpoint = Endpoint::from_shared(uri).map_err(|e| invalid(e.to_string()))?;
    if endpoint.uri().port_u16().is_none() {
        return Err(invalid("missing port (expected host:port)".into()));
    }
    Ok(endpoint.connect_timeout(connect_timeout).tcp_nodelay(true))
}

/// Channels by address, shared by clones. A channel connects on first use and reconnects by
/// itself after its controller went away, so a cached channel to a dead controller fails fast
/// (or within the connect timeout) and recovers when the controller is back.
#[derive(Clone, Debug)]
pub struct ChannelPool {
    connect_timeout: Duration,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl ChannelPool {
    /// An empty pool whose channels bound every connection attempt by `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> ChannelPool {
        ChannelPool {
            connect_timeout,
            channels: Arc::default(),
        }
    }

    /// The bound on each connection attempt.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The channel to `address`, created (unconnected) on first request. Must be called inside
    /// a tokio runtime.
    pub fn get(&self, address: &str) -> Result<Channel, DiscoveryError> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = endpoint(address, self.connect_timeout)?.connect_lazy();
        if channels.len() >= CHANNELS_MAX {
            channels.clear();
        }
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_host_port_and_uris_and_rejects_the_rest() {
        let t = Duration::from_secs(1);
        assert!(endpoint("127.0.0.1:9000", t).is_ok());
        assert!(endpoint("controller-0.dmq:9000", t).is_ok());
        assert!(endpoint("http://[::1]:9000", t).is_ok());
        assert!(endpoint("", t).is_err());
        assert!(endpoint("no-port", t).is_err());
        assert!(endpoint("bad host:1", t).is_err());
    }
}
