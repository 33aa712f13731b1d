//! [`Consensus`]: what ControllerService needs of its metadata node. [`NodeHandle`] is the real
//! one; the unit tests use a fake that applies proposals to a store at once.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Instant;

use dmq_proto::v1::MetadataCommand;
use dmq_raft::NodeId;
use tokio::sync::watch;

use crate::metadata::ApplyOutcome;
use crate::node::{NodeError, NodeHandle, NodeStatus, PeerAddrs};

/// The node operations the service uses; see [`NodeHandle`] for their contracts.
pub trait Consensus: Clone + Send + Sync + 'static {
    /// What the node is and knows now.
    fn status(&self) -> NodeStatus;
    /// Told when the node's role changes, not on commits ([`NodeHandle::watch_status`]).
    fn watch_status(&self) -> watch::Receiver<NodeStatus>;
    /// Told on every change of the status, commits and followers' progress included (for the
    /// rare waits that need them: a learner catching up).
    fn watch_progress(&self) -> watch::Receiver<NodeStatus>;
    /// The error a non-leader answers a mutation with.
    fn not_leader(&self) -> NodeError;
    /// Every member's addresses, this one included.
    fn peers(&self) -> BTreeMap<NodeId, PeerAddrs>;
    /// Proposes `to` as the next configuration of the controller group if the one in effect
    /// is still `from`, and waits until it is applied.
    fn propose_membership(
        &self,
        from: dmq_raft::Membership,
        to: dmq_raft::Membership,
    ) -> impl Future<Output = Result<ApplyOutcome, NodeError>> + Send;
    /// Proposes `command` and waits until it is applied (only the leader accepts).
    fn propose(
        &self,
        command: &MetadataCommand,
    ) -> impl Future<Output = Result<ApplyOutcome, NodeError>> + Send;
    /// Returns once reading the applied state is linearizable.
    fn read_barrier(&self) -> impl Future<Output = Result<(), NodeError>> + Send;
    /// Until when no other controller can lead, if this one leads (its leader lease, on the
    /// monotonic clock).
    fn leader_lease(&self) -> Option<Instant>;
    /// The highest metadata feature level this node supports.
    fn feature_level_max(&self) -> u32;
}

impl Consensus for NodeHandle {
    fn status(&self) -> NodeStatus {
        NodeHandle::status(self)
    }

    fn watch_status(&self) -> watch::Receiver<NodeStatus> {
        NodeHandle::watch_status(self)
    }

    fn watch_progress(&self) -> watch::Receiver<NodeStatus> {
        self.status.clone()
    }

    fn not_leader(&self) -> NodeError {
        NodeHandle::not_leader(self)
    }

    fn peers(&self) -> BTreeMap<NodeId, PeerAddrs> {
        NodeHandle::peers(self)
    }

    fn propose_membership(
        &self,
        from: dmq_raft::Membership,
        to: dmq_raft::Membership,
    ) -> impl Future<Output = Result<ApplyOutcome, NodeError>> + Send {
        NodeHandle::propose_membership(self, from, to)
    }

    fn propose(
        &self,
        command: &MetadataCommand,
    ) -> impl Future<Output = Result<ApplyOutcome, NodeError>> + Send {
        NodeHandle::propose(self, command)
    }

    fn read_barrier(&self) -> impl Future<Output = Result<(), NodeError>> + Send {
        NodeHandle::read_barrier(self)
    }

    fn leader_lease(&self) -> Option<Instant> {
        NodeHandle::leader_lease(self)
    }

    fn feature_level_max(&self) -> u32 {
        crate::metadata::features::supported_max(&self.faults)
    }
}
