//! Why a locator or a channel could not be set up. Discovery itself never fails: it retries.

/// A configuration mistake: fix the controller list and start again.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// No controller address was configured: give at least one (`host:port`).
    #[error("no controller addresses configured; give at least one host:port")]
    NoControllers,
    /// A controller address is not a valid `host:port` (or `http://host:port`): correct it.
    #[error("invalid controller address {address:?}: {reason}")]
    InvalidAddress { address: String, reason: String },
}
