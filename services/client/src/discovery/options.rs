//! Discovery timing.

use std::time::Duration;

/// How discovery paces itself. The defaults are the ones DESIGN.md documents.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscoveryOptions {
    /// Bound on one `GetControllerInfo` call, connecting included (default 1 s). A controller
    /// that does not answer in time counts as failed for that round.
    pub call_timeout: Duration,
    /// The first pause after a round in which no controller named a leader (default 1 s).
    pub backoff_initial: Duration,
    /// The longest pause; the pause doubles up to it (default 8 s).
    pub backoff_max: Duration,
    /// Each pause is shortened by a random fraction in `[0, jitter_ratio]` (default 0.2), so
    /// brokers that lost the leader together do not retry in lockstep. In `[0, 1)`.
    pub jitter_ratio: f64,
    /// Consecutive heartbeat failures after which the cached leader is forgotten (default 3).
    pub heartbeat_failures_max: u32,
    /// While discovery keeps failing, a warning is logged on the first failed round and then
    /// at most once per this interval (default 30 s).
    pub log_interval: Duration,
    /// Seed of the jitter RNG; `None` seeds from the OS. Tests set it for reproducible pauses.
    pub seed: Option<u64>,
}

impl Default for DiscoveryOptions {
    fn default() -> DiscoveryOptions {
        DiscoveryOptions {
            call_timeout: Duration::from_secs(1),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(8),
            jitter_ratio: 0.2,
            heartbeat_failures_max: 3,
            log_interval: Duration::from_secs(30),
            seed: None,
        }
    }
}
