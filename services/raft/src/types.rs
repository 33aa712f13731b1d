//! The values the core exchanges with its caller: log entries, hard state, snapshots and messages.
//! They mirror `proto/dmq/v1/raft.proto` but carry no protobuf dependency, so the core stays pure;
//! the controller converts at the transport boundary.

/// A controller's id in the Raft group. `0` is never a valid id (it means "none" on the wire).
pub type NodeId = u64;
/// A Raft term (Raft §5.1). Terms start at 0 and only grow.
pub type Term = u64;
/// A log index. The first real entry has index 1; index 0 is the empty prefix, with term 0.
pub type Index = u64;

/// What a log entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// An application command.
    Normal,
    /// The empty entry a new leader appends so that it can commit earlier terms' entries (§5.4.2).
    Noop,
    /// A new configuration ([`crate::Membership::encode`]): in effect on a node from the
    /// moment the node appends it (thesis §4.1).
    Membership,
}

/// One log entry. Two entries with the same `index` and `term` hold the same data (Log Matching,
/// §5.3): the simulator checks it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    pub index: Index,
    pub term: Term,
    pub kind: EntryKind,
    pub data: Vec<u8>,
}

impl Entry {
    /// The bytes this entry counts for when batching messages.
    pub fn size_bytes(&self) -> usize {
        self.data.len() + 24
    }
}

/// The state Raft must have on disk before it answers any message (Figure 2, "Persistent state").
/// `commit` is persisted too so a restart does not have to rediscover it; it is a hint, never
/// ahead of what a majority holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HardState {
    pub term: Term,
    pub vote: Option<NodeId>,
    pub commit: Index,
    /// This node came back with empty storage into a cluster that exists (see
    /// [`crate::Raft::rejoin`]): it forgot its votes and its log, so it must not vote,
    /// campaign or count toward a commit until its log reaches a commit index a leader told it.
    pub catching_up: bool,
}

/// What a snapshot replaces: the log up to and including `last_index`, whose entry had `last_term`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnapshotMeta {
    pub last_index: Index,
    pub last_term: Term,
    /// The configuration in effect at `last_index` (empty: none recorded, the bootstrap one).
    pub membership: crate::Membership,
}

pub use bytes::Bytes;

/// A state-machine snapshot (§7). `data` is opaque to the core and shared, not copied: a
/// leader sends the same bytes to every follower that needs them, and a clone of a snapshot
/// is a reference count.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Bytes,
}

/// Why a follower rejected an append: enough for the leader to skip back a whole term at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConflictHint {
    /// The follower's term at the rejected `prev_log_index`, or 0 when its log is shorter.
    pub term: Term,
    /// The first index the follower holds for `term` (or its last index + 1 when `term` is 0).
    pub first_index: Index,
}

/// The body of a Raft message. Field names follow the Raft paper.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MessageBody {
    /// §5.2; a pre-vote (thesis §9.6) when `pre_vote` is set. For a pre-vote the message term is
    /// the term the candidate would campaign at; the receiver changes no state.
    RequestVote {
        pre_vote: bool,
        last_log_index: Index,
        last_log_term: Term,
        /// The campaign follows a TimeoutNow: receivers skip the live-leader check.
        leadership_transfer: bool,
    },
    RequestVoteResponse {
        pre_vote: bool,
        granted: bool,
    },
    /// §5.3; empty `entries` make a heartbeat.
    AppendEntries {
        prev_log_index: Index,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
        /// The leader's heartbeat round, echoed back for ReadIndex (thesis §6.4).
        read_round: u64,
    },
    AppendEntriesResponse {
        success: bool,
        /// On success, the highest index known to match the leader's log.
        match_index: Index,
        /// On rejection, the `prev_log_index` that was rejected.
        rejected_index: Index,
        conflict: Option<ConflictHint>,
        read_round: u64,
        /// The follower is catching up after coming back empty: its answer must not count
        /// toward a commit, a read or check-quorum.
        catching_up: bool,
    },
    /// §7. The transport chunks `snapshot.data`; the core sees whole snapshots. The caller
    /// reports the end of each transfer ([`crate::Raft::report_snapshot`]).
    InstallSnapshot {
        snapshot: Snapshot,
    },
    InstallSnapshotResponse {
        /// The index the receiver now holds up to.
        match_index: Index,
        /// As for [`MessageBody::AppendEntriesResponse`].
        catching_up: bool,
    },
    /// Thesis §3.10: campaign at once (leadership transfer).
    TimeoutNow,
}

/// A Raft message between two controllers. `term` is the sender's term (for a pre-vote request,
/// the term it would campaign at; for a granted pre-vote response, the request's term).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub body: MessageBody,
}

/// The role a node plays in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// The volatile state the caller may want to show (not persisted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SoftState {
    pub role: Role,
    pub leader_id: Option<NodeId>,
}

/// A confirmed ReadIndex request: once the state machine has applied `index`, a read that
/// asked with `ctx` may be served and is linearizable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReadState {
    pub ctx: u64,
    pub index: Index,
}

/// What a restarted node recovers from its storage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveredState {
    pub hard_state: HardState,
    /// The latest snapshot, if the log was ever compacted.
    pub snapshot: Option<Snapshot>,
    /// The entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
}
