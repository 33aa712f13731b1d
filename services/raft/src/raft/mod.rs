//! The Raft state machine of one node (Raft paper, Figure 2, with the thesis' pre-vote,
//! check-quorum, ReadIndex and leadership transfer).
//!
//! # To ensure correctness
//! - The caller persists each [`Ready`] (snapshot, entries, hard state) before it sends its
//!   messages or applies its committed entries, except what [`crate::ReadyPlan`] allows earlier
//!   (a leader's appends, entries durable already), then calls [`Raft::advance`]. Nothing may
//!   be stepped, ticked or proposed between [`Raft::ready`] and [`Raft::advance`] (asserted).
//! - A leader counts only its *durable* entries toward a commit, so a committed entry is on disk
//!   on a majority, the leader included.
//! - Only entries of the current term are committed by counting replicas (§5.4.2).
//! - `term` never decreases; `vote` changes only when `term` grows or from `None`.

use std::collections::{BTreeMap, VecDeque};

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::config::{Config, ConfigError, PlantedBug};
use crate::error::ProposeError;
use crate::log::RaftLog;
use crate::membership::Membership;
use crate::progress::{Progress, ProgressState};
use crate::types::*;

mod election;
mod membership_change;
mod replication;

/// What the caller must do next: persist, send, apply. See [`Raft::ready`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// The node's role and known leader now.
    pub soft_state: Option<SoftState>,
    /// Persist before sending anything (changed since the last Ready).
    pub hard_state: Option<HardState>,
    /// A snapshot received from the leader: persist it (it replaces the log) and restore the
    /// state machine from it before applying `committed_entries`.
    pub snapshot: Option<Snapshot>,
    /// Append to the log, replacing any stored suffix from `entries[0].index`.
    pub entries: Vec<Entry>,
    /// Send once the above is durable (a leader's appends may go before: [`crate::ReadyPlan`]).
    pub messages: Vec<Message>,
    /// Apply in order, once durable here (those durable already may go before the write:
    /// [`crate::ReadyPlan`]). Each index is handed out exactly once.
    pub committed_entries: Vec<Entry>,
    /// Confirmed ReadIndex requests.
    pub read_states: Vec<ReadState>,
}

#[derive(Clone, Copy, Debug)]
struct Handout {
    last_index: Index,
    applied_to: Index,
    hard_state: HardState,
}

#[derive(Clone, Copy, Debug)]
struct PendingRead {
    ctx: u64,
    index: Index,
    round: u64,
}

/// One Raft node. Deterministic: the same config (seed included), recovered state and sequence
/// of calls produce the same Readies.
pub struct Raft {
    cfg: Config,
    term: Term,
    vote: Option<NodeId>,
    role: Role,
    leader_id: Option<NodeId>,
    log: RaftLog,
    rng: StdRng,
    election_elapsed_ticks: u32,
    heartbeat_elapsed_ticks: u32,
    randomized_election_timeout_ticks: u32,
    votes: BTreeMap<NodeId, bool>,
    progress: BTreeMap<NodeId, Progress>,
    read_round: u64,
    pending_reads: VecDeque<PendingRead>,
    reads_awaiting_commit: Vec<u64>,
    read_states: Vec<ReadState>,
    transferee: Option<NodeId>,
    transfer_elapsed_ticks: u32,
    msgs: Vec<Message>,
    persisted_hard_state: HardState,
    last_soft_state: SoftState,
    pending_snapshot: Option<Snapshot>,
    uncommitted_bytes: usize,
    handout: Option<Handout>,
    /// Proposals were appended since the last broadcast (leader only).
    append_pending: bool,
    /// Back with empty storage in an existing cluster: no vote, no campaign, answers marked so
    /// that they count for nothing, until the log reaches `catch_up_target` (see
    /// [`Raft::rejoin`]). Persisted in the hard state.
    catching_up: bool,
    /// The highest commit index a leader told it while catching up; it ends catching up only
    /// once that index holds an entry of its current term.
    catch_up_target: Index,
}

impl Raft {
    /// Builds a node from its configuration and what its storage recovered. `applied` is the
    /// index the caller's state machine already holds (0 when it is rebuilt from the snapshot
    /// and the log); it is clamped to what the log can justify.
    pub fn new(
        cfg: Config,
        recovered: RecoveredState,
        applied: Index,
    ) -> Result<Raft, ConfigError> {
        cfg.validate()?;
        let hs = recovered.hard_state;
        let bootstrap = Membership::from_voters(cfg.voters.iter().copied());
        let mut log = RaftLog::new(recovered.snapshot, recovered.entries, hs.commit, bootstrap)
            .map_err(|(index, err)| ConfigError::BadMembershipEntry {
                index,
                reason: err.to_string(),
            })?;
        log.applied = applied.clamp(log.snapshot_index(), log.committed);
        let mut raft = Raft {
            rng: StdRng::seed_from_u64(cfg.seed),
            cfg,
            term: hs.term,
            vote: hs.vote,
            role: Role::Follower,
            leader_id: None,
            log,
            election_elapsed_ticks: 0,
            heartbeat_elapsed_ticks: 0,
            randomized_election_timeout_ticks: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            read_round: 0,
            pending_reads: VecDeque::new(),
            reads_awaiting_commit: Vec::new(),
            read_states: Vec::new(),
            transferee: None,
            transfer_elapsed_ticks: 0,
            msgs: Vec::new(),
            persisted_hard_state: HardState { commit: 0, ..hs },
            last_soft_state: SoftState {
                role: Role::Follower,
                leader_id: None,
            },
            pending_snapshot: None,
            uncommitted_bytes: 0,
            handout: None,
            append_pending: false,
            catching_up: hs.catching_up,
            catch_up_target: 0,
        };
        raft.persisted_hard_state.commit = raft.log.committed;
        raft.reset_election_timer();
        Ok(raft)
    }

    pub fn id(&self) -> NodeId {
        self.cfg.id
    }
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    pub fn term(&self) -> Term {
        self.term
    }
    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn leader_id(&self) -> Option<NodeId> {
        self.leader_id
    }
    pub fn commit_index(&self) -> Index {
        self.log.committed
    }
    pub fn applied_index(&self) -> Index {
        self.log.applied
    }
    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }
    pub fn last_term(&self) -> Term {
        self.log.last_term()
    }
    /// The last index the caller confirmed durable.
    pub fn stable_index(&self) -> Index {
        self.log.stable_index
    }
    pub fn snapshot_meta(&self) -> &SnapshotMeta {
        &self.log.snapshot.meta
    }
    /// The term of the entry at `index`, if the log still holds it.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        self.log.term(index)
    }
    /// The entry at `index`, if the log still holds it (not compacted).
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        self.log.entry(index)
    }
    /// On a leader handing leadership over (thesis §3.10), the node it hands it to.
    pub fn transferring_to(&self) -> Option<NodeId> {
        self.transferee
    }
    /// The number of votes (or acknowledgments) that make a majority of the voters.
    pub fn quorum(&self) -> usize {
        self.membership().quorum()
    }
    /// The configuration in effect here: the latest in the log, committed or not (thesis §4.1).
    pub fn membership(&self) -> &Membership {
        self.log.memberships.latest()
    }
    /// The index of the configuration entry in effect, `None` while the snapshot's (or the
    /// bootstrap) configuration is. A change is committed once the commit index reaches it.
    pub fn membership_index(&self) -> Option<Index> {
        self.log.memberships.latest_index()
    }
    /// Whether this node may vote and campaign: it is a voter of its own configuration. A
    /// learner, a removed node and one that has not learnt the configuration yet are not.
    pub fn is_voter(&self) -> bool {
        self.membership().is_voter(self.cfg.id)
    }

    /// Whether this node may start an election: a voter of its latest configuration, or one
    /// that an uncommitted change removes while it is a voter of the committed configuration.
    /// The second kind leads, if elected by the latest configuration's voters, only until the
    /// change commits, as a leader that removes itself does (thesis §4.2.2); forbidding it
    /// to campaign can leave no electable node: it may hold entries the others lack (so it
    /// refuses them its vote) while they, not having its configuration yet, need that vote.
    pub fn may_campaign(&self) -> bool {
        let m = &self.log.memberships;
        self.is_voter()
            || (m.latest_index().is_some_and(|i| i > self.log.committed)
                && m.at(self.log.committed).is_voter(self.cfg.id))
    }
    /// On a leader, each follower's match index; empty elsewhere.
    pub fn match_indexes(&self) -> BTreeMap<NodeId, Index> {
        self.progress
            .iter()
            .map(|(&id, p)| (id, p.match_index))
            .collect()
    }
    pub fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            leader_id: self.leader_id,
        }
    }
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
            catching_up: self.catching_up,
        }
    }

    /// Whether this node is catching up after coming back empty (see [`Raft::rejoin`]).
    pub fn is_catching_up(&self) -> bool {
        self.catching_up
    }

    /// Marks this node as a member that came back with empty (wiped or lost) storage into a
    /// cluster that exists. It forgot its votes and its log, so until its log durably reaches a
    /// commit index its leader told it, at an entry of the leader's term, it neither votes nor
    /// campaigns, and its answers say so, so that a leader does not count them toward a
    /// commit, a read or check-quorum. The entry must be of the leader's term because a
    /// commit index is a hint: a leader elected a moment ago may not know yet that entries it
    /// holds were committed, but once it committed one of its own term, every entry committed
    /// before (this node's lost ones included) is at or below its commit index (§5.4.2).
    /// Then it votes again, having taken the leader's term and counting its vote in it as
    /// given to that leader. Persisted with the hard state, so a restart keeps it. The caller
    /// decides when a node is such a member (the controllers: empty storage, and a peer that
    /// belongs to a named cluster); a brand-new cluster, every node empty, never calls it.
    pub fn rejoin(&mut self) {
        self.assert_not_in_ready();
        self.catching_up = true;
        self.catch_up_target = 0;
        if self.role != Role::Follower {
            let term = self.term;
            self.become_follower(term, None);
        }
    }

    /// Each voting follower's match index on a leader (learners and followers still catching
    /// up are left out: they cannot take over).
    pub fn transfer_candidates(&self) -> BTreeMap<NodeId, Index> {
        let membership = self.log.memberships.latest();
        self.progress
            .iter()
            .filter(|(id, p)| !p.catching_up && membership.is_voter(**id))
            .map(|(&id, p)| (id, p.match_index))
            .collect()
    }

    fn bug(&self, bug: PlantedBug) -> bool {
        self.cfg.planted_bug == Some(bug)
    }

    fn assert_not_in_ready(&self) {
        assert!(
            self.handout.is_none(),
            "Raft driven between ready() and advance()"
        );
    }

    // ----- inputs -----

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        self.assert_not_in_ready();
        self.election_elapsed_ticks = self.election_elapsed_ticks.saturating_add(1);
        if self.role == Role::Leader {
            self.tick_leader();
        } else if self.election_elapsed_ticks >= self.randomized_election_timeout_ticks
            && !self.catching_up
            && self.may_campaign()
        {
            self.election_elapsed_ticks = 0;
            self.campaign(self.cfg.pre_vote, false);
        }
        // A node that may not campaign (a learner, one not yet promoted or removed, one
        // catching up) keeps counting: past an election timeout without a leader it is out
        // of the leader's lease and answers votes again, which a cluster that counts on it
        // needs (a learner promoted while it was cut off is a voter to the others).
    }

    fn tick_leader(&mut self) {
        self.hand_off_if_removed();
        if self.role != Role::Leader {
            return;
        }
        self.forget_removed();
        self.heartbeat_elapsed_ticks += 1;
        if self.heartbeat_elapsed_ticks >= self.cfg.heartbeat_interval_ticks {
            self.heartbeat_elapsed_ticks = 0;
            self.broadcast_heartbeat();
            let last = self.log.last_index();
            for p in self.progress.values_mut() {
                // Appends were lost and nothing new is proposed to expose the gap: a follower
                // whose match did not move for two heartbeats is probed again.
                if p.state == ProgressState::Replicate && p.match_index < last {
                    if p.match_index == p.match_at_last_heartbeat {
                        p.stalled_heartbeats += 1;
                        if p.stalled_heartbeats >= 2 {
                            p.become_probe();
                        }
                    } else {
                        p.stalled_heartbeats = 0;
                    }
                } else {
                    p.stalled_heartbeats = 0;
                }
                p.match_at_last_heartbeat = p.match_index;
            }
        }
        let min = self.cfg.election_timeout_min_ticks;
        for p in self.progress.values_mut() {
            p.snapshot_retry_ticks = p.snapshot_retry_ticks.saturating_sub(1);
        }
        if let Some(_t) = self.transferee {
            self.transfer_elapsed_ticks += 1;
            if self.transfer_elapsed_ticks >= min {
                self.transferee = None;
            }
        }
        if self.election_elapsed_ticks >= min {
            self.election_elapsed_ticks = 0;
            if self.cfg.check_quorum {
                let membership = self.log.memberships.latest();
                let active = usize::from(membership.is_voter(self.cfg.id))
                    + self
                        .progress
                        .iter()
                        .filter(|(id, p)| p.recent_active && membership.is_voter(**id))
                        .count();
                let quorum = membership.quorum();
                for p in self.progress.values_mut() {
                    p.recent_active = false;
                }
                if active < quorum {
                    // Thesis §6.2: a leader that cannot reach a majority steps down.
                    let term = self.term;
                    self.become_follower(term, None);
                }
            }
        }
    }

    /// Starts an election now (tests, single-node bootstrap). Followers normally campaign on
    /// their own when the election timeout elapses.
    pub fn campaign_now(&mut self) {
        self.assert_not_in_ready();
        if self.role != Role::Leader && !self.catching_up && self.may_campaign() {
            self.campaign(false, false);
        }
    }

    /// Appends `data` as a new entry if this node leads. Returns the index and term the entry
    /// got; it is committed once an applied entry has that index *and* term.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(Index, Term), ProposeError> {
        self.assert_not_in_ready();
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader_id,
            });
        }
        if self.transferee.is_some() {
            return Err(ProposeError::LeadershipTransferInProgress);
        }
        let entry = Entry {
            index: self.log.last_index() + 1,
            term: self.term,
            kind: EntryKind::Normal,
            data,
        };
        let size = entry.size_bytes();
        if self.uncommitted_bytes + size > self.cfg.max_uncommitted_bytes {
            return Err(ProposeError::Backpressure {
                uncommitted_bytes: self.uncommitted_bytes,
                max_uncommitted_bytes: self.cfg.max_uncommitted_bytes,
            });
        }
        let at = (entry.index, entry.term);
        self.uncommitted_bytes += size;
        self.log.append(entry);
        // Sent once per Ready, so proposals taken together share one AppendEntries.
        self.append_pending = true;
        Ok(at)
    }

    /// Asks for a linearizable read point (thesis §6.4). Once leadership is confirmed by a
    /// heartbeat round, a [`ReadState`] with `ctx` and the read index comes out in a Ready.
    /// Reads asked before the leader committed an entry of its term wait for that commit.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        self.assert_not_in_ready();
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader_id,
            });
        }
        if self.log.term(self.log.committed) != Some(self.term) {
            self.reads_awaiting_commit.push(ctx);
            return Ok(());
        }
        self.register_reads(&[ctx]);
        Ok(())
    }

    fn register_reads(&mut self, ctxs: &[u64]) {
        if ctxs.is_empty() {
            return;
        }
        if self.membership().voters.iter().eq([&self.cfg.id]) {
            let index = self.log.committed;
            self.read_states
                .extend(ctxs.iter().map(|&ctx| ReadState { ctx, index }));
            return;
        }
        self.read_round += 1;
        for &ctx in ctxs {
            self.pending_reads.push_back(PendingRead {
                ctx,
                index: self.log.committed,
                round: self.read_round,
            });
        }
        self.broadcast_heartbeat();
    }

    /// Hands leadership to `to` (thesis §3.10): proposals stop, `to` is brought up to date and
    /// told to campaign at once. Gives up after the minimum election timeout.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), ProposeError> {
        self.assert_not_in_ready();
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader_id,
            });
        }
        if to == self.cfg.id {
            return Ok(());
        }
        if self.progress.get(&to).is_none_or(|p| p.catching_up) || !self.membership().is_voter(to) {
            return Err(ProposeError::UnknownNode { node: to });
        }
        self.transferee = Some(to);
        self.transfer_elapsed_ticks = 0;
        if self.progress[&to].match_index == self.log.last_index() {
            self.send(to, MessageBody::TimeoutNow);
        } else {
            self.send_append(to);
        }
        Ok(())
    }

    /// Records that the application snapshotted its state at `index` (at most the applied
    /// index) as `data`, and drops the log up to it. The caller stores the snapshot itself.
    pub fn compact(&mut self, index: Index, data: impl Into<Bytes>) {
        self.assert_not_in_ready();
        self.log.compact(index, data.into());
    }

    /// The caller's transport reports the end of the InstallSnapshot transfer of the snapshot
    /// at `index` to `to`: `ok` when the follower answered (its answer is stepped as usual),
    /// else it failed (unreachable, refused, past its deadline). One transfer per follower is
    /// under way at a time: the leader sends no other snapshot to it until this report (or the
    /// follower's answer), and after a failure waits the minimum election timeout before the
    /// next, so a snapshot that cannot get through is not resent over and over.
    pub fn report_snapshot(&mut self, to: NodeId, index: Index, ok: bool) {
        self.assert_not_in_ready();
        if self.role != Role::Leader || ok {
            return;
        }
        let retry = self.cfg.election_timeout_min_ticks;
        if let Some(p) = self.progress.get_mut(&to)
            && p.state == (ProgressState::Snapshot { pending: index })
        {
            p.become_probe();
            p.snapshot_retry_ticks = retry;
        }
    }

    /// The snapshot the log starts after (with data), for the caller to store after `compact`.
    pub fn snapshot(&self) -> &Snapshot {
        &self.log.snapshot
    }

    /// Feeds one message from a peer.
    pub fn step(&mut self, m: Message) {
        self.assert_not_in_ready();
        self.step_message(m);
        self.hand_off_if_removed();
    }

    fn step_message(&mut self, m: Message) {
        // Messages from nodes outside our configuration are taken too: a node that joins
        // learns the configuration from the leader's log, and a leader may be one being
        // removed. What keeps a removed node from disrupting is that it does not campaign once
        // it knows, and pre-vote and the live-leader check while it does not (§4.2.3).
        if m.to != self.cfg.id || m.from == self.cfg.id {
            return;
        }
        if m.term > self.term {
            match m.body {
                MessageBody::RequestVote {
                    pre_vote,
                    leadership_transfer,
                    ..
                } => {
                    let in_lease = self.cfg.check_quorum
                        && self.leader_id.is_some()
                        && self.election_elapsed_ticks < self.cfg.election_timeout_min_ticks;
                    if in_lease && !leadership_transfer {
                        // Thesis §4.2.3: a node that hears from a live leader ignores votes, so
                        // a partitioned node cannot disrupt the cluster when it returns.
                        return;
                    }
                    if !pre_vote {
                        self.observe_higher_term(m.term, None);
                    }
                }
                MessageBody::RequestVoteResponse {
                    pre_vote: true,
                    granted: true,
                } => {}
                MessageBody::AppendEntries { .. }
                | MessageBody::InstallSnapshot { .. }
                | MessageBody::TimeoutNow => self.observe_higher_term(m.term, Some(m.from)),
                _ => self.observe_higher_term(m.term, None),
            }
        } else if m.term < self.term {
            match m.body {
                MessageBody::AppendEntries {
                    prev_log_index,
                    read_round,
                    ..
                } if self.cfg.check_quorum || self.cfg.pre_vote => {
                    // A stale leader: tell it our term so it steps down (it may be stuck
                    // behind a partition that our pre-votes cannot cross).
                    self.send(
                        m.from,
                        MessageBody::AppendEntriesResponse {
                            success: false,
                            match_index: 0,
                            rejected_index: prev_log_index,
                            conflict: None,
                            read_round,
                            catching_up: self.catching_up,
                        },
                    );
                }
                MessageBody::RequestVote { pre_vote: true, .. } => {
                    self.send(
                        m.from,
                        MessageBody::RequestVoteResponse {
                            pre_vote: true,
                            granted: false,
                        },
                    );
                }
                _ => {}
            }
            return;
        }

        match m.body {
            MessageBody::RequestVote {
                pre_vote,
                last_log_index,
                last_log_term,
                ..
            } => self.handle_vote_request(m.from, m.term, pre_vote, last_log_index, last_log_term),
            MessageBody::RequestVoteResponse { pre_vote, granted } => {
                self.handle_vote_response(m.from, m.term, pre_vote, granted)
            }
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                read_round,
            } => {
                if self.role == Role::Leader {
                    // Two leaders in one term: impossible unless a planted bug allows it.
                    return;
                }
                self.become_follower(self.term, Some(m.from));
                self.election_elapsed_ticks = 0;
                self.handle_append(
                    m.from,
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                    read_round,
                );
            }
            MessageBody::AppendEntriesResponse {
                success,
                match_index,
                rejected_index,
                conflict,
                read_round,
                catching_up,
            } => {
                if self.role == Role::Leader {
                    self.note_catching_up(m.from, catching_up);
                    self.handle_append_response(
                        m.from,
                        success,
                        match_index,
                        rejected_index,
                        conflict,
                        read_round,
                    );
                }
            }
            MessageBody::InstallSnapshot { snapshot } => {
                if self.role == Role::Leader {
                    return;
                }
                self.become_follower(self.term, Some(m.from));
                self.election_elapsed_ticks = 0;
                self.handle_snapshot(m.from, snapshot);
            }
            MessageBody::InstallSnapshotResponse {
                match_index,
                catching_up,
            } => {
                if self.role == Role::Leader {
                    self.note_catching_up(m.from, catching_up);
                    self.handle_snapshot_response(m.from, match_index);
                }
            }
            MessageBody::TimeoutNow => {
                if self.role != Role::Leader && !self.catching_up && self.may_campaign() {
                    self.campaign(false, true);
                }
            }
        }
    }

    /// A follower's answer says whether it is catching up; one that newly is lost its log.
    fn note_catching_up(&mut self, from: NodeId, catching_up: bool) {
        let last = self.log.last_index();
        if let Some(p) = self.progress.get_mut(&from) {
            if catching_up && !p.catching_up {
                p.lost_log(last);
            }
            p.catching_up = catching_up;
        }
    }

    // ----- Ready / advance -----

    fn hard_state_to_persist(&self) -> HardState {
        let mut hs = self.hard_state();
        if self.bug(PlantedBug::VoteNotPersisted) {
            hs.vote = if self.persisted_hard_state.term == hs.term {
                self.persisted_hard_state.vote
            } else {
                None
            };
        }
        hs
    }

    /// Whether [`Raft::ready`] has anything to hand out.
    pub fn has_ready(&self) -> bool {
        !self.msgs.is_empty()
            || !self.read_states.is_empty()
            || self.pending_snapshot.is_some()
            || self.log.last_index() > self.log.stable_index
            || self.log.committed > self.log.applied
            || self.hard_state_to_persist() != self.persisted_hard_state
            || self.soft_state() != self.last_soft_state
    }

    /// Hands out what to persist, send and apply. Call [`Raft::advance`] once done.
    pub fn ready(&mut self) -> Ready {
        self.assert_not_in_ready();
        if std::mem::take(&mut self.append_pending) && self.role == Role::Leader {
            self.broadcast_append();
        }
        let hs = self.hard_state_to_persist();
        let soft = self.soft_state();
        let last_index = self.log.last_index();
        let entries = if last_index > self.log.stable_index {
            self.log.entries_from(self.log.stable_index + 1, usize::MAX)
        } else {
            Vec::new()
        };
        let applied_to = self.log.committed.min(last_index);
        let committed_entries: Vec<Entry> = (self.log.applied + 1..=applied_to)
            .map(|i| self.log.entry(i).expect("committed entry in log").clone())
            .collect();
        let rd = Ready {
            soft_state: (soft != self.last_soft_state).then_some(soft),
            hard_state: (hs != self.persisted_hard_state).then_some(hs),
            snapshot: self.pending_snapshot.take(),
            entries,
            messages: std::mem::take(&mut self.msgs),
            committed_entries,
            read_states: std::mem::take(&mut self.read_states),
        };
        self.last_soft_state = soft;
        self.handout = Some(Handout {
            last_index,
            applied_to,
            hard_state: hs,
        });
        rd
    }

    /// Tells the core the last Ready was persisted, sent and applied.
    pub fn advance(&mut self) {
        let h = self.handout.take().expect("advance() without ready()");
        assert!(h.last_index >= self.log.stable_index || h.last_index == self.log.last_index());
        self.log.stable_index = h.last_index;
        assert!(
            h.applied_to >= self.log.applied,
            "applied index went backwards"
        );
        self.log.applied = h.applied_to;
        assert!(
            h.hard_state.term >= self.persisted_hard_state.term,
            "persisted term went backwards"
        );
        self.persisted_hard_state = h.hard_state;
        debug_assert!(self.log.applied <= self.log.committed);
        debug_assert!(self.log.stable_index <= self.log.last_index());
        // Our own entries just became durable: they may complete a majority.
        if self.role == Role::Leader && self.maybe_commit() {
            self.broadcast_commit();
        }
        self.hand_off_if_removed();
        // Caught up: the log durably holds what the leader of this term said was committed, up
        // to an entry of this term, so it holds every entry committed before this node lost
        // its storage. An earlier term's entry is not enough: the leader may not know yet that
        // later entries it holds were committed (see `rejoin`).
        let target = self.catch_up_target;
        if self.catching_up
            && target > 0
            && self.log.stable_index >= target
            && self.log.committed >= target
            && self.log.term(target) == Some(self.term)
        {
            self.catching_up = false;
            // It may have voted in this term before it lost its storage: count the vote as
            // given to the leader it caught up with, so it gives no second one.
            if self.vote.is_none() {
                self.vote = self.leader_id;
            }
        }
    }
}
