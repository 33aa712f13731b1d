//! ControllerService: the gRPC face of a metadata node (brokers, admins, clients), with the
//! leader's broker liveness tracker and its CONTROLLER_CHANGED pushes.
//!
//! - [`ControllerServiceImpl`] (`controller.rs`): the handlers. Mutations are validated, then
//!   proposed on the leader; reads are linearizable (ReadIndex) unless the request allows a
//!   stale read.
//! - `status.rs`: the one place that turns a [`NodeError`](crate::node::NodeError) or a
//!   [`MetadataError`](crate::metadata::MetadataError) into a `tonic::Status` (leader hints
//!   included), and [`leader_hint`] to read such a hint back on the client side.
//! - [`LivenessTracker`] (`liveness.rs`): each broker's last heartbeat, kept by the leader in
//!   memory; who is overdue and must be fenced (marked OFFLINE through the log).
//! - [`Admission`] (`admission.rs`): the bound on requests in progress; beyond it a request is
//!   answered RESOURCE_EXHAUSTED (CONTROLLER_OVERLOADED) before any work.
//! - `push.rs`: CONTROLLER_CHANGED to every registered broker when this node becomes leader.
//! - [`Consensus`] (`consensus.rs`): what the service needs of the node, implemented by
//!   [`NodeHandle`](crate::node::NodeHandle) (and by a fake in the unit tests).

mod admission;
mod consensus;
mod controller;
mod liveness;
mod membership;
mod push;
mod status;
mod watch;

pub use admission::{Admission, AdmissionLimits};
pub use consensus::Consensus;
pub use controller::ControllerServiceImpl;
pub use liveness::{BrokerView, LivenessTracker};
pub use membership::{REASON_LEARNER_NOT_CAUGHT_UP, REASON_MEMBER_EXISTS};
pub use push::{PushTarget, push_targets};
pub use status::{
    ERROR_DOMAIN, LEADER_METADATA_KEY, LeaderHint, REASON_COMMAND_TOO_LARGE,
    REASON_CONTROLLER_OVERLOADED, REASON_NO_LEADER, REASON_NOT_LEADER, REASON_OUTCOME_UNKNOWN,
    REASON_SHUTTING_DOWN, leader_hint, metadata_error_status, node_error_status,
};

use std::time::Duration;

use crate::metadata::validate::DEFAULT_MAX_PARTITIONS;

/// What ControllerService needs beyond the node: liveness timing, limits and push bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    /// A broker not heard from for this long is marked OFFLINE (fenced) by the leader.
    pub session_timeout: Duration,
    /// How often brokers are expected to heartbeat. The liveness check runs at least twice per
    /// interval.
    pub heartbeat_interval: Duration,
    /// How often the leader looks for overdue brokers (capped at `heartbeat_interval / 2`).
    pub liveness_check_interval: Duration,
    /// A broker whose metadata stream closed (its connection went: the process died) and
    /// that neither opened a new one nor heartbeated within this is fenced at once, without
    /// waiting for the session timeout.
    pub disconnect_grace: Duration,
    /// The most partitions one topic may have.
    pub max_partitions: u32,
    /// Bound on connecting to a broker for a CONTROLLER_CHANGED push.
    pub push_connect_timeout: Duration,
    /// Bound on one CONTROLLER_CHANGED call, once connected.
    pub push_call_timeout: Duration,
    /// Pushes in flight at once.
    pub push_concurrency: usize,
    /// How often the leader gives partitions back to their preferred replicas (automatic
    /// leader rebalance, Kafka's `auto.leader.rebalance.enable`); zero turns it off.
    pub leader_rebalance_interval: Duration,
}

impl Default for ServiceConfig {
    /// Session timeout 6 s, heartbeat interval 1 s, check every 500 ms, a closed broker
    /// connection fenced after 500 ms, 1000 partitions per topic at most, pushes bounded by
    /// 1 s to connect and 1 s to answer, 32 at once, leader rebalance every 30 s.
    fn default() -> ServiceConfig {
        ServiceConfig {
            session_timeout: Duration::from_secs(6),
            heartbeat_interval: Duration::from_secs(1),
            liveness_check_interval: Duration::from_millis(500),
            disconnect_grace: Duration::from_millis(500),
            max_partitions: DEFAULT_MAX_PARTITIONS,
            push_connect_timeout: Duration::from_secs(1),
            push_call_timeout: Duration::from_secs(1),
            push_concurrency: 32,
            leader_rebalance_interval: Duration::from_secs(30),
        }
    }
}

impl ServiceConfig {
    /// How often the liveness check runs: `liveness_check_interval`, at most half the heartbeat
    /// interval, at least 10 ms.
    pub fn check_interval(&self) -> Duration {
        self.liveness_check_interval
            .min(self.heartbeat_interval / 2)
            .max(Duration::from_millis(10))
    }
}
