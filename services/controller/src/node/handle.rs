//! How the rest of the controller talks to the Raft thread.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::Duration;

use dmq_proto::v1::MetadataCommand;
use dmq_raft::{Index, Message, NodeId, Role, Term};
use prost::Message as _;
use tokio::sync::{oneshot, watch};

use crate::metadata::ApplyOutcome;

/// What the node is and knows now; published after every Ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub leader_id: Option<NodeId>,
    /// The leader's client address, when known.
    pub leader_addr: Option<String>,
    pub commit_index: Index,
    pub applied_index: Index,
    /// On the leader: each follower's match index.
    pub match_indexes: BTreeMap<NodeId, Index>,
    /// False once the Raft thread stopped (shutdown or a fatal storage error).
    pub running: bool,
    /// Back with empty storage in a named cluster and not caught up yet (see
    /// [`dmq_raft::Raft::rejoin`]): it neither votes nor counts toward a commit.
    pub catching_up: bool,
    /// The configuration in effect here (the latest in its log, committed or not).
    pub membership: Arc<dmq_raft::Membership>,
}

impl NodeStatus {
    /// Whether `self` and `other` agree on everything but the indexes.
    pub fn same_role(&self, other: &NodeStatus) -> bool {
        (
            self.id,
            self.role,
            self.term,
            self.leader_id,
            &self.leader_addr,
            self.running,
            self.catching_up,
        ) == (
            other.id,
            other.role,
            other.term,
            other.leader_id,
            &other.leader_addr,
            other.running,
            other.catching_up,
        )
    }
}

/// Why a request to the node failed, and what the caller should do. Every variant says whether
/// the request may have taken effect: [`NodeError::outcome_unknown`] is true only for
/// [`NodeError::OutcomeUnknown`]; every other variant means the request was certainly not
/// applied, so retrying it is safe.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeError {
    /// Not applied: retry on the leader.
    #[error("this controller is not the leader; the leader is node {leader_id} at {leader_addr}")]
    NotLeader {
        leader_id: NodeId,
        leader_addr: String,
    },
    /// Not applied: retry shortly, an election is under way.
    #[error("no controller leader is known yet (an election is under way); retry shortly")]
    NoLeader,
    /// Not applied: this node could not confirm it still leads (a read barrier that did not
    /// complete, an expired leader lease); retry, on the new leader if there is one.
    #[error("{0}; nothing was applied, retry (on the new leader if there is one)")]
    Unconfirmed(String),
    /// Not applied: the node is saturated; retry with backoff.
    #[error("controller overloaded: {0}; nothing was applied, retry with backoff")]
    Overloaded(String),
    /// Not applied: the command is larger than a log entry may be.
    #[error("command of {bytes} bytes exceeds the {max_bytes} bytes a log entry may hold")]
    CommandTooLarge { bytes: usize, max_bytes: usize },
    /// Not applied: the node is stopping (or stopped); use another controller.
    #[error("controller is shutting down; nothing was applied, use another controller")]
    ShuttingDown,
    /// The command was proposed but is not known to be committed: it may or may not be
    /// applied (now or later, by this leader or the next). Retry only in a way that is safe
    /// either way (check first, or rely on the command being refused the second time).
    #[error("{0}; the change may or may not be applied, check before retrying")]
    OutcomeUnknown(Unknown),
    /// Not applied: another membership change is not committed yet, or the leader was just
    /// elected; retry shortly.
    #[error("{0}; nothing was applied, retry shortly")]
    MembershipChangeBusy(String),
    /// Not applied: the membership asked for is not one valid step from the current one.
    #[error("{0}; nothing was applied")]
    InvalidMembership(String),
}

/// Why the outcome of a proposal is unknown.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unknown {
    #[error("not committed within {0:?}")]
    Timeout(Duration),
    #[error("leadership changed before the change was committed")]
    LeadershipLost,
    #[error("the controller stopped before the change was committed")]
    Stopped,
    #[error("the controller's storage failed ({0}) and it stopped")]
    StorageFailed(String),
    #[error("the controller stopped at an entry it cannot apply ({0})")]
    CannotApply(String),
}

impl Unknown {
    /// A short machine-readable name (the `cause` of the `OUTCOME_UNKNOWN` error details).
    pub fn cause(&self) -> &'static str {
        match self {
            Unknown::Timeout(_) => "timeout",
            Unknown::LeadershipLost => "leadership_lost",
            Unknown::Stopped => "stopped",
            Unknown::StorageFailed(_) => "storage_failure",
            Unknown::CannotApply(_) => "cannot_apply",
        }
    }
}

impl NodeError {
    /// Whether the same request may succeed if tried again (possibly elsewhere): all but a
    /// command that is too large and a membership that is not a valid step.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            NodeError::CommandTooLarge { .. } | NodeError::InvalidMembership(_)
        )
    }

    /// Whether the request may have been applied.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, NodeError::OutcomeUnknown(_))
    }
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, NodeError>>;

/// The Raft thread's two bounded queues and its doorbell. Peer traffic (Raft RPCs and their
/// answers, shutdown) and client work (proposals, read barriers, transfers) have separate
/// queues so that a client flood can never fill the queue a peer's append answer or vote
/// needs: the thread takes every queued peer input first, then a bounded number of client
/// inputs. A full client queue is the client's RESOURCE_EXHAUSTED; peer traffic is bounded by
/// the peers' own in-flight windows, far below its queue's depth.
#[derive(Clone)]
pub(crate) struct Inbox {
    peers: SyncSender<Input>,
    clients: SyncSender<Input>,
    /// One pending ring at most: the thread drains both queues on every ring.
    bell: SyncSender<()>,
}

/// The Raft thread's side of an [`Inbox`].
pub(crate) struct InboxReceiver {
    pub(crate) peers: Receiver<Input>,
    pub(crate) clients: Receiver<Input>,
    pub(crate) bell: Receiver<()>,
}

impl Inbox {
    pub(crate) fn new(peer_depth: usize, client_depth: usize) -> (Inbox, InboxReceiver) {
        let (peers, peers_rx) = std::sync::mpsc::sync_channel(peer_depth);
        let (clients, clients_rx) = std::sync::mpsc::sync_channel(client_depth);
        let (bell, bell_rx) = std::sync::mpsc::sync_channel(1);
        (
            Inbox {
                peers,
                clients,
                bell,
            },
            InboxReceiver {
                peers: peers_rx,
                clients: clients_rx,
                bell: bell_rx,
            },
        )
    }

    /// Queues peer traffic (or a shutdown).
    pub(crate) fn send_peer(&self, input: Input) -> Result<(), InboxError> {
        self.peers.try_send(input).map_err(InboxError::from)?;
        let _ = self.bell.try_send(());
        Ok(())
    }

    /// Queues client work.
    pub(crate) fn send_client(&self, input: Input) -> Result<(), InboxError> {
        self.clients.try_send(input).map_err(InboxError::from)?;
        let _ = self.bell.try_send(());
        Ok(())
    }
}

/// Why an input was not queued (it is dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InboxError {
    /// The queue is at its depth.
    Full,
    /// The Raft thread stopped.
    Closed,
}

impl From<TrySendError<Input>> for InboxError {
    fn from(e: TrySendError<Input>) -> InboxError {
        match e {
            TrySendError::Full(_) => InboxError::Full,
            TrySendError::Disconnected(_) => InboxError::Closed,
        }
    }
}

/// What the Raft thread takes in.
pub(crate) enum Input {
    /// A message from a peer that needs no answer (TimeoutNow).
    Peer(Message),
    /// The transport's report of the end of an InstallSnapshot transfer.
    SnapshotReport {
        to: NodeId,
        index: Index,
        ok: bool,
    },
    /// A peer's answer to one of our RPCs.
    Response {
        message: Message,
        /// When the request was sent (before the call), and in which term.
        sent_at: std::time::Instant,
        request_term: Term,
        /// The peer's transport answered for its busy Raft thread (see `follower_view.rs`).
        liveness_only: bool,
        /// The highest metadata feature level the peer supports (0: it did not say).
        feature_level_max: u32,
    },
    /// A request from a peer whose RPC waits for the core's answer (sent only once the Ready
    /// that produced it is durable).
    PeerRequest {
        message: Message,
        reply: oneshot::Sender<Option<Message>>,
        /// The sender belongs to a named cluster (its request carried a cluster id).
        from_named_cluster: bool,
    },
    Propose {
        data: Vec<u8>,
        reply: Reply<ApplyOutcome>,
    },
    /// Waits until a linearizable read point (ReadIndex) is applied.
    ReadBarrier {
        reply: Reply<()>,
    },
    /// Proposes the next configuration of the controller group (one voter at a time).
    ProposeMembership {
        from: dmq_raft::Membership,
        to: dmq_raft::Membership,
        reply: Reply<ApplyOutcome>,
    },
    /// Hands leadership to the most up-to-date follower (or `to`).
    TransferLeadership {
        to: Option<NodeId>,
        reply: Reply<NodeId>,
    },
    Shutdown,
}

/// A cheap, cloneable handle to a running node.
#[derive(Clone)]
pub struct NodeHandle {
    pub(crate) inbox: Inbox,
    /// What the transport may answer a heartbeat with while the Raft thread is busy.
    pub(crate) follower_view: Arc<super::follower_view::FollowerView>,
    /// How long the transport waits for the Raft thread before answering a heartbeat from
    /// `follower_view`.
    pub(crate) busy_answer_after: Duration,
    /// The leader lease the Raft thread publishes.
    pub(crate) lease: Arc<super::lease::LeaderLease>,
    /// Test-only fault points (inert in a default build).
    pub(crate) faults: Arc<crate::faults::Faults>,
    /// The cluster this node belongs to (empty until named).
    pub(crate) cluster_id: Arc<super::ClusterId>,
    /// Where incoming snapshot transfers are written.
    pub(crate) data_dir: std::path::PathBuf,
    /// See [`super::NodeConfig::snapshot_min_rate_bytes_per_sec`].
    pub(crate) snapshot_min_rate_bytes_per_sec: u64,
    pub(crate) status: watch::Receiver<NodeStatus>,
    /// See [`NodeHandle::watch_status`].
    pub(crate) role_status: watch::Receiver<NodeStatus>,
    pub(crate) replication_timeout: Duration,
    pub(crate) max_command_bytes: usize,
    pub(crate) addrs: Arc<std::sync::RwLock<BTreeMap<NodeId, crate::node::PeerAddrs>>>,
}

impl NodeHandle {
    pub(crate) fn send(&self, input: Input) -> Result<(), NodeError> {
        self.inbox.send_client(input).map_err(|e| match e {
            InboxError::Full => {
                NodeError::Overloaded("the Raft thread's client queue is full".into())
            }
            InboxError::Closed => NodeError::ShuttingDown,
        })
    }

    /// The error a non-leader answers with: where the leader is, or that none is known.
    pub fn not_leader(&self) -> NodeError {
        let s = self.status();
        match (s.leader_id, s.leader_addr) {
            (Some(id), Some(addr)) if id != s.id => NodeError::NotLeader {
                leader_id: id,
                leader_addr: addr,
            },
            _ => NodeError::NoLeader,
        }
    }

    /// Proposes `command` and waits until it is applied (or fails). Only the leader accepts.
    pub async fn propose(&self, command: &MetadataCommand) -> Result<ApplyOutcome, NodeError> {
        let data = command.encode_to_vec();
        if data.len() > self.max_command_bytes {
            return Err(NodeError::CommandTooLarge {
                bytes: data.len(),
                max_bytes: self.max_command_bytes,
            });
        }
        let (reply, rx) = oneshot::channel();
        self.send(Input::Propose { data, reply })?;
        self.wait(rx, NodeError::OutcomeUnknown).await
    }

    /// Test-only (`fault-injection`): proposes `data` as it is, unchecked, as if a newer (or
    /// broken) controller had written it.
    #[cfg(feature = "fault-injection")]
    pub async fn propose_raw(&self, data: Vec<u8>) -> Result<ApplyOutcome, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Input::Propose { data, reply })?;
        self.wait(rx, NodeError::OutcomeUnknown).await
    }

    /// Returns once this node's applied state includes every change committed before the call
    /// (ReadIndex, thesis §6.4): a read of the metadata store after it is linearizable.
    pub async fn read_barrier(&self) -> Result<(), NodeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Input::ReadBarrier { reply })?;
        self.wait(rx, |why| {
            NodeError::Unconfirmed(format!("read barrier failed: {why}"))
        })
        .await
    }

    /// Hands leadership over (to `to`, or the most up-to-date follower) and returns the
    /// target. Completes when the transfer was started; watch [`NodeHandle::status`] for the
    /// outcome.
    pub async fn transfer_leadership(&self, to: Option<NodeId>) -> Result<NodeId, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Input::TransferLeadership { to, reply })?;
        self.wait(rx, |why| {
            NodeError::Unconfirmed(format!("leadership transfer not started: {why}"))
        })
        .await
    }

    /// Stops the Raft thread (after the Ready in progress).
    pub fn shutdown(&self) {
        let _ = self.inbox.send_peer(Input::Shutdown);
    }

    /// Waits for the driver's answer. The driver answers every waiter (timeouts included);
    /// `lost` is the answer should it die without answering (for a proposal: outcome unknown).
    async fn wait<T>(
        &self,
        rx: oneshot::Receiver<Result<T, NodeError>>,
        lost: impl Fn(Unknown) -> NodeError,
    ) -> Result<T, NodeError> {
        match tokio::time::timeout(self.replication_timeout * 2, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(lost(Unknown::Stopped)),
            Err(_) => Err(lost(Unknown::Timeout(self.replication_timeout * 2))),
        }
    }

    pub fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    /// Until when this node is sure no other controller leads, if it leads now (see
    /// [`super::lease`]): answers that change or reveal broker liveness need it.
    pub fn leader_lease(&self) -> Option<std::time::Instant> {
        let s = self.status.borrow();
        if s.role != Role::Leader {
            return None;
        }
        self.lease
            .until(s.term)
            .filter(|&t| std::time::Instant::now() < t)
    }

    /// A receiver that is told when the node's role changes: its role, term, leader, whether
    /// it runs or is catching up ([`NodeStatus::same_role`]). Its index fields are those of
    /// that change; [`NodeHandle::status`] has the current ones. Commits do not wake it: every
    /// waiter on a status that changed with each commit was woken once per write.
    pub fn watch_status(&self) -> watch::Receiver<NodeStatus> {
        self.role_status.clone()
    }

    /// Every member's addresses, as the configuration in effect here says (and this node's
    /// own, from its flags, while it is not a member).
    pub fn peers(&self) -> BTreeMap<NodeId, crate::node::PeerAddrs> {
        self.addrs.read().expect("not poisoned").clone()
    }

    /// Proposes `to` as the next configuration of the controller group, if the one in effect
    /// is still `from` (else [`NodeError::MembershipChangeBusy`]: recompute and retry), and
    /// waits until it is applied here (the leader only; one voter changed at a time, see
    /// [`dmq_raft::Raft::propose_membership`]).
    pub async fn propose_membership(
        &self,
        from: dmq_raft::Membership,
        to: dmq_raft::Membership,
    ) -> Result<ApplyOutcome, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Input::ProposeMembership { from, to, reply })?;
        self.wait(rx, NodeError::OutcomeUnknown).await
    }

    pub(crate) fn inbox(&self) -> Inbox {
        self.inbox.clone()
    }
}
