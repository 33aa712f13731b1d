//! The Raft thread: the only owner of the core, the sled storage writes and the applied
//! metadata. It runs on its own OS thread because every Ready ends in a blocking fsync.
//!
//! # To ensure correctness
//! - One loop iteration takes every queued peer input, then at most
//!   [`CLIENT_INPUTS_PER_ITERATION_MAX`] client inputs (so concurrent proposals share one Ready
//!   and a client flood cannot crowd out peers), then for each Ready: persist (one sync), send,
//!   apply, advance. No message leaves and no waiter is answered before the Ready that produced
//!   it is durable (a leader's appends excepted, which promise nothing about its own disk); this
//!   is asserted against the storage's synced index and hard state.
//! - Committed entries are applied before their Ready's sync only if both the storage and the
//!   core hold them durable; an entry this version cannot apply stops the node (`apply.rs`).
//! - Which messages and entries may go before the sync is decided by [`ReadyPlan`] in
//!   `dmq-raft`, and the promises are checked with its functions, so the simulator runs the
//!   order this driver runs.
//! - Files: `apply.rs` (applying), `leadership.rs` (the lease and the feature level).
//! - A proposal is answered when the entry at its index is applied: with the outcome if the
//!   entry has the proposal's term, else as lost. Losing leadership fails every waiter at once.
//! - A peer's RPC is answered with the response the core produced for it, in order per peer and
//!   kind; a request the core ignored is answered with an empty response.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
use std::time::Instant;

use dmq_proto::v1::MetadataSnapshot;
use dmq_raft::ready_plan::{self, ReadyPlan, Undurable};
use dmq_raft::{
    EntryKind, Index, Message, MessageBody, NodeId, ProposeError, Raft, ReadState, Role, Storage,
    Term,
};
use prost::Message as _;
use tokio::sync::{mpsc, oneshot, watch};

use super::follower_view::FollowerView;
use super::handle::{Inbox, InboxReceiver, Input, Reply};
use super::lease::{LeaderLease, LeaseTracker};
use super::{NodeConfig, NodeError, NodeHandle, NodeStatus, StartError, Unknown};
use crate::metadata::{ApplyOutcome, MetadataStore};
use crate::raft_storage::SledStorage;

mod apply;
mod leadership;
mod membership;

/// Peer inputs taken in one iteration at most (all that are queued, in practice: the peers'
/// windows bound them far below this).
const PEER_INPUTS_PER_ITERATION_MAX: usize = 16 * 1024;
/// Client inputs taken in one iteration at most, after the peer inputs: bounds the work (and
/// the sync) between two looks at the peer queue and the clock.
const CLIENT_INPUTS_PER_ITERATION_MAX: usize = 1024;
/// Largest serialized metadata command accepted for proposal.
pub(crate) const COMMAND_BYTES_MAX: usize = 512 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ResponseKind {
    Vote,
    Append,
    Snapshot,
}

struct ProposalWaiter {
    term: Term,
    reply: Reply<ApplyOutcome>,
}

struct Driver {
    cfg: NodeConfig,
    raft: Raft,
    storage: SledStorage,
    metadata: Arc<MetadataStore>,
    inbox: InboxReceiver,
    follower_view: Arc<FollowerView>,
    cluster_id: Arc<super::ClusterId>,
    lease: Arc<LeaderLease>,
    lease_tracker: LeaseTracker,
    /// The highest feature level each peer said it supports (in its last append answer).
    peer_levels: BTreeMap<NodeId, u32>,
    /// The SetFeatureLevel this leader proposed: (index, term).
    level_proposal: Option<(Index, Term)>,
    /// The index of this leader's no-op.
    term_start_index: Index,
    /// InstallSnapshots that never reached the transport (its queue was full): failed
    /// transfers, reported at the next iteration.
    unsent_snapshots: Vec<(NodeId, Index)>,
    peers: BTreeMap<NodeId, mpsc::Sender<Message>>,
    /// Every member's addresses (see `membership.rs`), and the copy the handle reads.
    addrs: BTreeMap<NodeId, crate::node::PeerAddrs>,
    shared_addrs: Arc<std::sync::RwLock<BTreeMap<NodeId, crate::node::PeerAddrs>>>,
    /// The configuration the peers and addresses were last brought in line with (empty before
    /// the first sync); the status shares it, so publishing a status copies no set.
    synced_membership: Arc<dmq_raft::Membership>,
    /// The term in which this leader proposed to record the bootstrap configuration.
    membership_record_term: Option<Term>,
    runtime: tokio::runtime::Handle,
    /// For the peer senders started as members join.
    peer_inbox: super::handle::Inbox,
    status_tx: watch::Sender<NodeStatus>,
    /// Published only when the role changes (see [`NodeHandle::watch_status`]).
    role_status_tx: watch::Sender<NodeStatus>,
    proposals: BTreeMap<Index, ProposalWaiter>,
    /// (deadline, index) in proposal order, to time proposals out cheaply.
    proposal_deadlines: VecDeque<(Instant, Index)>,
    next_read_ctx: u64,
    /// Read barriers taken in this iteration: they share one ReadIndex request.
    reads_new: Vec<Reply<()>>,
    /// Reads waiting for their ReadState, by ReadIndex request.
    reads_unconfirmed: HashMap<u64, (Instant, Vec<Reply<()>>)>,
    /// How many replies `reads_unconfirmed` holds.
    reads_unconfirmed_count: usize,
    /// Confirmed reads waiting for the applied index to reach theirs.
    reads_confirmed: Vec<(Index, Reply<()>)>,
    reply_slots: HashMap<(NodeId, ResponseKind), VecDeque<oneshot::Sender<Option<Message>>>>,
    role: Role,
}

pub(crate) fn spawn(
    cfg: NodeConfig,
    storage: SledStorage,
    metadata: Arc<MetadataStore>,
    runtime: tokio::runtime::Handle,
) -> Result<NodeHandle, StartError> {
    let recovered = storage.recover()?;
    if let Some(snap) = &recovered.snapshot {
        // The metadata trees are synced with the log but may lag a snapshot the log was
        // compacted to (or one installed from the leader): catch up from the snapshot.
        if metadata.applied_index() < snap.meta.last_index {
            let ms = MetadataSnapshot::decode(&snap.data[..]).map_err(StartError::Snapshot)?;
            metadata.restore_owned(ms)?;
        }
    }
    let applied = metadata.applied_index();
    let logged_cluster_id = recovered
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::Normal)
        .find_map(|e| super::cluster_id::named_in(&e.data));
    let raft = Raft::new(cfg.raft_config(), recovered, applied)?;
    let (inbox, inbox_rx) = Inbox::new(cfg.peer_inbox_depth, cfg.client_queue_depth);
    let inbox_for_peers = inbox.clone();
    let status = status_of(
        &cfg,
        &cfg.peers,
        &raft,
        &Arc::new(raft.membership().clone()),
        true,
    );
    let (status_tx, status_rx) = watch::channel(status.clone());
    let (role_status_tx, role_status_rx) = watch::channel(status);
    let cluster_id = Arc::new(super::ClusterId::new(&metadata.cluster_id()));
    if let Some(id) = logged_cluster_id {
        cluster_id.set_logged(&id);
    }
    tracing::info!(
        node_id = cfg.id,
        cluster_id = %cluster_id.get(),
        "cluster id (empty: not named yet)"
    );
    let shared_addrs = Arc::new(std::sync::RwLock::new(cfg.peers.clone()));
    let follower_view = Arc::new(FollowerView::default());
    let lease = Arc::new(LeaderLease::default());
    let handle = NodeHandle {
        lease: lease.clone(),
        faults: cfg.faults.clone(),
        cluster_id: cluster_id.clone(),
        data_dir: cfg.data_dir.clone(),
        snapshot_min_rate_bytes_per_sec: cfg.snapshot_min_rate_bytes_per_sec,
        inbox,
        follower_view: follower_view.clone(),
        // Half a heartbeat interval: an idle Raft thread answers within microseconds.
        busy_answer_after: cfg.tick * cfg.heartbeat_interval_ticks / 2,
        status: status_rx,
        role_status: role_status_rx,
        replication_timeout: cfg.replication_timeout,
        max_command_bytes: COMMAND_BYTES_MAX,
        addrs: shared_addrs.clone(),
    };
    let role = raft.role();
    let addrs = cfg.peers.clone();
    let mut driver = Driver {
        addrs,
        shared_addrs,
        synced_membership: Arc::new(dmq_raft::Membership::default()),
        membership_record_term: None,
        runtime,
        peer_inbox: inbox_for_peers,
        cfg,
        raft,
        storage,
        metadata,
        inbox: inbox_rx,
        follower_view,
        cluster_id: cluster_id.clone(),
        lease,
        lease_tracker: LeaseTracker::default(),
        peer_levels: BTreeMap::new(),
        level_proposal: None,
        term_start_index: Index::MAX,
        unsent_snapshots: Vec::new(),
        peers: BTreeMap::new(),
        status_tx,
        role_status_tx,
        proposals: BTreeMap::new(),
        proposal_deadlines: VecDeque::new(),
        next_read_ctx: 1,
        reads_new: Vec::new(),
        reads_unconfirmed: HashMap::new(),
        reads_unconfirmed_count: 0,
        reads_confirmed: Vec::new(),
        reply_slots: HashMap::new(),
        role,
    };
    // Peers from the configuration the storage recovered (or the bootstrap one).
    driver.sync_peers();
    std::thread::Builder::new()
        .name(format!("raft-{}", driver.cfg.id))
        .spawn(move || driver.run())
        .map_err(StartError::Thread)?;
    Ok(handle)
}

fn status_of(
    cfg: &NodeConfig,
    addrs: &BTreeMap<NodeId, crate::node::PeerAddrs>,
    raft: &Raft,
    membership: &Arc<dmq_raft::Membership>,
    running: bool,
) -> NodeStatus {
    let leader_id = raft.leader_id();
    NodeStatus {
        id: cfg.id,
        role: raft.role(),
        term: raft.term(),
        leader_id,
        leader_addr: leader_id
            .and_then(|l| addrs.get(&l))
            .map(|a| a.client.clone()),
        commit_index: raft.commit_index(),
        applied_index: raft.applied_index(),
        match_indexes: raft.match_indexes(),
        running,
        catching_up: raft.is_catching_up(),
        membership: membership.clone(),
    }
}

/// A failure the node cannot continue after.
#[derive(Debug)]
enum Fatal {
    /// A write to (or read of) its storage failed: what is on disk is unknown.
    Storage(String),
    /// The log holds an entry (or the leader sent a snapshot) this version cannot apply: it
    /// stops rather than apply it differently from the others.
    CannotApply(String),
}

impl Driver {
    fn run(mut self) {
        tracing::info!(
            node_id = self.cfg.id,
            term = self.raft.term(),
            "raft thread started"
        );
        let mut next_tick = Instant::now() + self.cfg.tick;
        let mut more_clients = false;
        let outcome = loop {
            // Client work left from the last iteration: do not wait for the bell.
            let wait = if more_clients {
                std::time::Duration::ZERO
            } else {
                next_tick.saturating_duration_since(Instant::now())
            };
            match self.inbox.bell.recv_timeout(wait) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break Ok(()),
            }
            match self.take_inputs() {
                Some(more) => more_clients = more,
                None => break Ok(()),
            }
            let now = Instant::now();
            if now >= next_tick {
                self.raft.tick();
                next_tick += self.cfg.tick;
                if next_tick < now {
                    // We fell behind (a long fsync): skip the missed ticks rather than firing
                    // a burst that would start an election at once.
                    next_tick = now + self.cfg.tick;
                }
            }
            if let Err(e) = self.process_readies() {
                break Err(e);
            }
            self.expire_waiters(Instant::now());
            self.maybe_raise_feature_level();
            self.maybe_record_membership();
            self.sync_peers();
            self.publish_status(true);
        };
        let why = match outcome {
            Ok(()) => {
                tracing::info!(node_id = self.cfg.id, "raft thread stopped");
                Unknown::Stopped
            }
            Err(Fatal::Storage(e)) => {
                tracing::error!(node_id = self.cfg.id, error = %e, "raft thread failed; the node stops");
                Unknown::StorageFailed(e)
            }
            Err(Fatal::CannotApply(e)) => {
                tracing::error!(node_id = self.cfg.id, error = %e, "the log holds what this version cannot apply; the node stops");
                Unknown::CannotApply(e)
            }
        };
        self.fail_all(why);
        self.publish_status(false);
    }

    /// Takes every queued peer input, then at most [`CLIENT_INPUTS_PER_ITERATION_MAX`] client
    /// inputs, so peers always go first and a flood of clients cannot starve them, the ticks
    /// or the syncs. Returns whether client inputs are left over, or `None` on shutdown.
    fn take_inputs(&mut self) -> Option<bool> {
        for (to, index) in std::mem::take(&mut self.unsent_snapshots) {
            self.raft.report_snapshot(to, index, false);
        }
        for _ in 0..PEER_INPUTS_PER_ITERATION_MAX {
            match self.inbox.peers.try_recv() {
                Ok(input) => {
                    if !self.handle(input) {
                        return None;
                    }
                }
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
            }
        }
        let mut more = true;
        for _ in 0..CLIENT_INPUTS_PER_ITERATION_MAX {
            match self.inbox.clients.try_recv() {
                Ok(input) => {
                    if !self.handle(input) {
                        return None;
                    }
                }
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => {
                    more = false;
                    break;
                }
            }
        }
        self.start_reads();
        Some(more)
    }

    /// One ReadIndex request for every read barrier taken in this iteration: each request
    /// costs a heartbeat round, however many reads share it.
    fn start_reads(&mut self) {
        if self.reads_new.is_empty() {
            return;
        }
        let replies = std::mem::take(&mut self.reads_new);
        let ctx = self.next_read_ctx;
        self.next_read_ctx += 1;
        match self.raft.read_index(ctx) {
            Ok(()) => {
                let deadline = Instant::now() + self.cfg.replication_timeout;
                self.reads_unconfirmed_count += replies.len();
                self.reads_unconfirmed.insert(ctx, (deadline, replies));
            }
            Err(e) => {
                let error = self.propose_error(e);
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// Takes one input. Returns false on shutdown.
    fn handle(&mut self, input: Input) -> bool {
        match input {
            Input::Peer(m) => self.raft.step(m),
            Input::SnapshotReport { to, index, ok } => self.raft.report_snapshot(to, index, ok),
            Input::Response {
                message,
                sent_at,
                request_term,
                liveness_only,
                feature_level_max,
            } => {
                if let MessageBody::AppendEntriesResponse { .. } = message.body {
                    self.peer_levels.insert(message.from, feature_level_max);
                }
                let term = self.raft.term();
                let counts = self.raft.role() == Role::Leader
                    && !liveness_only
                    && message.term == term
                    && request_term == term
                    && matches!(
                        message.body,
                        MessageBody::AppendEntriesResponse { .. }
                            | MessageBody::InstallSnapshotResponse { .. }
                    );
                // Only voters' acknowledgments extend the lease: a learner's cannot keep a
                // majority from electing another leader.
                if counts && self.raft.membership().is_voter(message.from) {
                    self.lease_tracker.acked(message.from, term, sent_at);
                }
                self.raft.step(message);
            }
            Input::PeerRequest {
                message: m,
                reply,
                from_named_cluster,
            } => {
                if from_named_cluster
                    && !self.raft.is_catching_up()
                    && self.raft.last_index() == 0
                    && self.metadata.cluster_id().is_empty()
                {
                    // An empty log, and a peer of a named cluster: this node lost its disk (or
                    // is new) while the cluster runs; it forgot its votes and its log. (A
                    // leader names the cluster only once every voter answered its appends, so
                    // no member of a named cluster has an empty log otherwise. Its term may
                    // have moved already: answers to its own pre-votes carry theirs.)
                    tracing::warn!(
                        node_id = self.cfg.id,
                        from = m.from,
                        "empty storage in a running cluster: not voting or counting toward \
                         commits until caught up with a leader"
                    );
                    self.raft.rejoin();
                }
                let kind = match m.body {
                    MessageBody::RequestVote { .. } => Some(ResponseKind::Vote),
                    MessageBody::AppendEntries { .. } => Some(ResponseKind::Append),
                    MessageBody::InstallSnapshot { .. } => Some(ResponseKind::Snapshot),
                    _ => None,
                };
                match kind {
                    Some(k) => self
                        .reply_slots
                        .entry((m.from, k))
                        .or_default()
                        .push_back(reply),
                    None => {
                        let _ = reply.send(None);
                    }
                }
                self.raft.step(m);
            }
            Input::Propose { reply, .. }
                if self.proposals.len() >= self.cfg.pending_proposals_max =>
            {
                let _ = reply.send(Err(NodeError::Overloaded(format!(
                    "{} proposals are waiting for their commit",
                    self.proposals.len()
                ))));
            }
            Input::Propose { data, reply } => match self.raft.propose(data) {
                Ok((index, term)) => {
                    let deadline = Instant::now() + self.cfg.replication_timeout;
                    self.proposals.insert(index, ProposalWaiter { term, reply });
                    self.proposal_deadlines.push_back((deadline, index));
                }
                Err(e) => {
                    let _ = reply.send(Err(self.propose_error(e)));
                }
            },
            Input::ReadBarrier { reply } => {
                let waiting = self.reads_unconfirmed_count
                    + self.reads_confirmed.len()
                    + self.reads_new.len();
                if waiting >= self.cfg.pending_reads_max {
                    let _ = reply.send(Err(NodeError::Overloaded(format!(
                        "{waiting} reads are waiting for their read index"
                    ))));
                } else {
                    self.reads_new.push(reply);
                }
            }
            Input::TransferLeadership { to, reply } => {
                let target = to.or_else(|| {
                    // The most up-to-date follower takes over fastest.
                    self.raft
                        .transfer_candidates()
                        .into_iter()
                        .max_by_key(|&(id, m)| (m, id))
                        .map(|(id, _)| id)
                });
                let result = match target {
                    None => Err(self.not_leader()),
                    Some(t) => self
                        .raft
                        .transfer_leadership(t)
                        .map(|()| t)
                        .map_err(|e| self.propose_error(e)),
                };
                let _ = reply.send(result);
            }
            Input::ProposeMembership { from, to, reply } => {
                self.propose_membership(from, to, reply)
            }
            Input::Shutdown => return false,
        }
        true
    }

    fn not_leader(&self) -> NodeError {
        match self.raft.leader_id() {
            Some(l) if l != self.cfg.id => match self.addrs.get(&l) {
                Some(addr) => NodeError::NotLeader {
                    leader_id: l,
                    leader_addr: addr.client.clone(),
                },
                None => NodeError::NoLeader,
            },
            _ => NodeError::NoLeader,
        }
    }

    fn propose_error(&self, e: ProposeError) -> NodeError {
        match e {
            ProposeError::NotLeader { .. } => self.not_leader(),
            ProposeError::LeadershipTransferInProgress => NodeError::NoLeader,
            ProposeError::Backpressure { .. } => NodeError::Overloaded(e.to_string()),
            ProposeError::UnknownNode { node } => {
                NodeError::Unconfirmed(format!("node {node} is not a controller"))
            }
            ProposeError::NoCommitInTerm | ProposeError::MembershipChangePending { .. } => {
                NodeError::MembershipChangeBusy(e.to_string())
            }
            ProposeError::InvalidMembership(_) => NodeError::InvalidMembership(e.to_string()),
        }
    }

    fn process_readies(&mut self) -> Result<(), Fatal> {
        while self.raft.has_ready() {
            let rd = self.raft.ready();
            // What may happen before the write and what must wait for it (the simulator runs
            // the same plan): a leader's appends go out while it syncs (thesis §10.2.1), and
            // committed entries already durable here are applied and answered now, not after
            // this Ready's new entries are synced: that sync does not concern them.
            let ReadyPlan {
                soft_state,
                send_before_persist,
                apply_before_persist,
                persist,
                send_after_persist,
                apply_after_persist,
                read_states,
            } = ReadyPlan::new(
                rd,
                self.raft.role() == Role::Leader,
                self.storage.synced_index(),
                self.raft.stable_index(),
            );
            for m in send_before_persist {
                self.route(m);
            }
            let durable = self.storage.synced_index().min(self.raft.stable_index());
            assert_holds(ready_plan::check_apply(&apply_before_persist, durable));
            self.apply_timed(&apply_before_persist)?;
            // 1. Persist: one sync for everything in this Ready.
            let t = Instant::now();
            self.storage
                .persist(
                    persist.snapshot.as_ref(),
                    &persist.entries,
                    persist.hard_state.as_ref(),
                )
                .map_err(|e| Fatal::Storage(format!("persisting the Raft log failed: {e}")))?;
            let synced = self.storage.synced_index();
            crate::metrics::raft_persisted(persist.entries.len(), t.elapsed());
            if let Some(id) = persist
                .entries
                .iter()
                .filter(|e| e.kind == EntryKind::Normal)
                .find_map(|e| super::cluster_id::named_in(&e.data))
            {
                self.cluster_id.set_logged(&id);
            }
            assert_holds(ready_plan::check_persisted(&persist, synced));
            if let Some(s) = &persist.snapshot {
                let ms = MetadataSnapshot::decode(&s.data[..]).map_err(|e| {
                    Fatal::CannotApply(format!(
                        "the snapshot from the leader cannot be decoded by this version: {e}"
                    ))
                })?;
                self.metadata.restore_owned(ms).map_err(|e| match e {
                    crate::metadata::StoreError::InvalidSnapshot { .. } => Fatal::CannotApply(
                        format!("the snapshot from the leader cannot be installed: {e}"),
                    ),
                    e => Fatal::Storage(format!("restoring the metadata snapshot failed: {e}")),
                })?;
                tracing::info!(
                    node_id = self.cfg.id,
                    index = s.meta.last_index,
                    bytes = s.data.len(),
                    "installed snapshot"
                );
            }
            // 2. Send: everything a message promises is durable now (asserted).
            let durable = synced.max(self.raft.snapshot_meta().last_index);
            let persisted = self.storage.hard_state();
            for m in send_after_persist {
                assert_holds(ready_plan::check_send(&m, durable, &persisted));
                self.route(m);
            }
            // 3. Apply the rest.
            assert_holds(ready_plan::check_apply(&apply_after_persist, durable));
            self.apply_timed(&apply_after_persist)?;
            for ReadState { ctx, index } in read_states {
                if let Some((_, replies)) = self.reads_unconfirmed.remove(&ctx) {
                    self.reads_unconfirmed_count -= replies.len();
                    self.reads_confirmed
                        .extend(replies.into_iter().map(|reply| (index, reply)));
                }
            }
            if let Some(soft) = soft_state {
                self.on_role(soft.role);
            }
            self.raft.advance();
            let applied = self.raft.applied_index();
            let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_confirmed)
                .into_iter()
                .partition(|(i, _)| *i <= applied);
            self.reads_confirmed = waiting;
            for (_, reply) in ready {
                let _ = reply.send(Ok(()));
            }
            self.maybe_snapshot()?;
        }
        // Requests the core chose not to answer get an empty answer.
        for (_, slots) in self.reply_slots.drain() {
            for reply in slots {
                let _ = reply.send(None);
            }
        }
        Ok(())
    }

    fn route(&mut self, m: Message) {
        let kind = match m.body {
            MessageBody::RequestVoteResponse { .. } => Some(ResponseKind::Vote),
            MessageBody::AppendEntriesResponse { .. } => Some(ResponseKind::Append),
            MessageBody::InstallSnapshotResponse { .. } => Some(ResponseKind::Snapshot),
            _ => None,
        };
        if let Some(k) = kind {
            if let MessageBody::AppendEntriesResponse {
                success: true,
                match_index,
                ..
            } = m.body
            {
                // Durable (asserted before sending): the transport may lean on it.
                self.follower_view.acked(m.term, m.to, match_index);
            }
            match self
                .reply_slots
                .get_mut(&(m.to, k))
                .and_then(VecDeque::pop_front)
            {
                Some(reply) => {
                    let _ = reply.send(Some(m));
                }
                None => tracing::debug!(
                    node_id = self.cfg.id,
                    to = m.to,
                    "response without a waiting request dropped"
                ),
            }
            return;
        }
        if let Some(tx) = self.peers.get(&m.to) {
            // A full queue means the peer is slow or down: Raft retransmits what matters. A
            // snapshot that did not even leave is a failed transfer, reported as such.
            let snapshot = match &m.body {
                MessageBody::InstallSnapshot { snapshot } => Some(snapshot.meta.last_index),
                _ => None,
            };
            let to = m.to;
            if tx.try_send(m).is_err()
                && let Some(index) = snapshot
            {
                self.unsent_snapshots.push((to, index));
            }
        }
    }

    fn on_role(&mut self, role: Role) {
        if self.role == Role::Leader && role != Role::Leader {
            tracing::info!(
                node_id = self.cfg.id,
                term = self.raft.term(),
                "lost leadership"
            );
            self.fail_all(Unknown::LeadershipLost);
        }
        if role == Role::Leader && self.role != Role::Leader {
            // Its no-op: once applied, the applied state includes every earlier term.
            self.term_start_index = self.raft.last_index();
            tracing::info!(
                node_id = self.cfg.id,
                term = self.raft.term(),
                "became leader"
            );
        }
        self.role = role;
    }

    /// Answers every waiter: proposals with an unknown outcome (`why`), reads as unconfirmed.
    fn fail_all(&mut self, why: Unknown) {
        for (_, w) in std::mem::take(&mut self.proposals) {
            let _ = w.reply.send(Err(NodeError::OutcomeUnknown(why.clone())));
        }
        self.proposal_deadlines.clear();
        let read = NodeError::Unconfirmed(format!("read barrier failed: {why}"));
        let unconfirmed = self.reads_unconfirmed.drain().flat_map(|(_, (_, r))| r);
        for reply in unconfirmed.chain(std::mem::take(&mut self.reads_new)) {
            let _ = reply.send(Err(read.clone()));
        }
        self.reads_unconfirmed_count = 0;
        for (_, reply) in self.reads_confirmed.drain(..) {
            let _ = reply.send(Err(read.clone()));
        }
    }

    fn expire_waiters(&mut self, now: Instant) {
        let timeout = self.cfg.replication_timeout;
        while let Some(&(deadline, index)) = self.proposal_deadlines.front() {
            if deadline > now {
                break;
            }
            self.proposal_deadlines.pop_front();
            if let Some(w) = self.proposals.remove(&index) {
                let _ = w
                    .reply
                    .send(Err(NodeError::OutcomeUnknown(Unknown::Timeout(timeout))));
            }
        }
        let expired: Vec<u64> = self
            .reads_unconfirmed
            .iter()
            .filter(|(_, (d, _))| *d <= now)
            .map(|(&c, _)| c)
            .collect();
        for ctx in expired {
            if let Some((_, replies)) = self.reads_unconfirmed.remove(&ctx) {
                self.reads_unconfirmed_count -= replies.len();
                for reply in replies {
                    let _ = reply.send(Err(NodeError::Unconfirmed(format!(
                        "leadership not confirmed within {timeout:?}"
                    ))));
                }
            }
        }
    }

    fn maybe_snapshot(&mut self) -> Result<(), Fatal> {
        let applied = self.raft.applied_index();
        if applied < self.raft.snapshot_meta().last_index + self.cfg.snapshot_every_entries {
            return Ok(());
        }
        let t = Instant::now();
        let (at, data) = self.metadata.snapshot_bytes();
        debug_assert_eq!(at, applied);
        let bytes = data.len();
        self.raft.compact(applied, data);
        self.storage
            .compact(self.raft.snapshot())
            .map_err(|e| Fatal::Storage(format!("storing a snapshot failed: {e}")))?;
        tracing::info!(
            node_id = self.cfg.id,
            index = applied,
            bytes,
            took = ?t.elapsed(),
            "snapshot taken, log compacted"
        );
        Ok(())
    }

    fn publish_status(&mut self, running: bool) {
        self.cluster_id.set_applied(&self.metadata.cluster_id());
        self.follower_view
            .set(self.raft.term(), self.raft.role(), self.raft.leader_id());
        self.publish_lease();
        let status = status_of(
            &self.cfg,
            &self.addrs,
            &self.raft,
            &self.synced_membership,
            running,
        );
        self.role_status_tx.send_if_modified(|s| {
            let changed = !s.same_role(&status);
            if changed {
                *s = status.clone();
            }
            changed
        });
        self.status_tx.send_if_modified(|s| {
            if *s != status {
                crate::metrics::raft_status(s, &status);
                *s = status;
                true
            } else {
                false
            }
        });
    }
}

/// Nothing is acknowledged, voted on or applied beyond what is durable: a broken promise is a
/// bug of this node, and it stops rather than let a peer rely on it.
fn assert_holds(check: Result<(), Undurable>) {
    if let Err(broken) = check {
        panic!("{}: {broken}", broken.invariant());
    }
}
