//! Controller leader discovery: which controller leads, right now, and when to stop believing it.
//!
//! Brokers (and, later, clients) send mutations to the controller leader only. A
//! [`LeaderLocator`] finds it by asking every configured controller `GetControllerInfo` at once
//! (the first OK answer that names a leader wins), caches it, and forgets it by the rules in
//! DESIGN.md ("Brokers and liveness"):
//!
//! - 3 consecutive heartbeat failures ([`LeaderLocator::on_heartbeat_failure`]);
//! - a NOT_LEADER answer ([`LeaderLocator::on_not_leader`]), whose hint is tried first;
//! - a CONTROLLER_CHANGED push with a higher term ([`LeaderLocator::on_controller_changed`]),
//!   which names the new leader at once; a push with a stale term is ignored.
//!
//! When no controller names a leader, discovery backs off 1, 2, 4, 8, 8, … s ([`Backoff`], with
//! jitter) and retries forever, logging the first failure and then at most every 30 s.
//!
//! Files: `locator.rs` (the cache and its rules), `probe.rs` (how one controller is asked; a
//! trait so tests use in-process fakes), `channels.rs` (one lazily connected gRPC channel per
//! controller address), `backoff.rs`, `status.rs` (reading NOT_LEADER answers), `options.rs`,
//! `error.rs`.

mod backoff;
mod channels;
mod error;
mod locator;
mod options;
mod probe;
mod status;

pub use backoff::Backoff;
pub use channels::{ChannelPool, endpoint};
pub use error::DiscoveryError;
pub use locator::{LeaderInfo, LeaderLocator};
pub use options::DiscoveryOptions;
pub use probe::{ControllerProbe, GrpcProbe};
pub use status::{ControllerFailure, LEADER_METADATA_KEY, classify, leader_hint, outcome_unknown};
