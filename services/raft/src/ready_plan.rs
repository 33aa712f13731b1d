//! What a caller does with a [`Ready`], and in which order: the decisions the controller's
//! driver makes, kept pure here so that the simulator makes exactly the same ones.
//!
//! A Ready is handled around its one durable write, [`Persist`] (one sync):
//!
//! 1. Before the write, or while it is under way: a leader's `AppendEntries` and
//!    `InstallSnapshot` go out ([`ReadyPlan::send_before_persist`]), and the committed entries
//!    already durable here are applied ([`ReadyPlan::apply_before_persist`]).
//! 2. The write: the received snapshot, the entries, the hard state.
//! 3. Once it returned: every other message ([`ReadyPlan::send_after_persist`]), the rest of
//!    the committed entries ([`ReadyPlan::apply_after_persist`]), the read states, the soft
//!    state; then [`crate::Raft::advance`].
//!
//! The [`check_send`], [`check_persisted`] and [`check_apply`] functions state what must hold
//! at each point; the driver asserts them and the simulator reports a broken one as a
//! violation of the invariant it names ([`Undurable::invariant`]).
//!
//! # To ensure correctness
//! - A message that promises something about this node's disk leaves only after the write
//!   returned: a successful `AppendEntriesResponse` or an `InstallSnapshotResponse` (its match
//!   index is durable here, else the leader could commit an entry a majority does not hold),
//!   and a granted vote (term and vote persisted first, Raft Figure 2, else a restart could
//!   vote twice in one term).
//! - A leader's appends go out before its own write (thesis §10.2.1) because they promise
//!   nothing about its disk: a follower checks them against its own log, and the leader counts
//!   its own entries toward a commit only once `advance` made them stable. Its term is durable
//!   already: it persisted its vote for itself before it asked for votes.
//! - A committed entry is applied before the write only if it is durable already: at or below
//!   both the storage's synced index and the core's stable index. Both are needed: after a
//!   truncation (a conflicting suffix replaced by the leader's entries, §5.3) the storage still
//!   counts the replaced entries as synced until this write returns, while the core has
//!   already lowered its stable index below them; the core alone would not know of a write in
//!   progress. With a snapshot in the Ready nothing is applied early: the snapshot must be
//!   restored first.
//! - Entries are applied in index order, each once: the two apply lists are one run cut in two.

use crate::config::PlantedBug;
use crate::raft::Ready;
use crate::types::{
    Entry, HardState, Index, Message, MessageBody, NodeId, ReadState, Snapshot, SoftState, Term,
};

/// What one Ready asks to be made durable, in one write and in this order (see
/// [`crate::Storage::persist`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Persist {
    /// A snapshot received from the leader: it replaces the whole log.
    pub snapshot: Option<Snapshot>,
    /// Replaces any stored suffix from `entries[0].index`.
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
}

impl Persist {
    /// Nothing to write: the Ready's other halves run back to back.
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.entries.is_empty() && self.hard_state.is_none()
    }
}

/// One Ready cut into what happens before its write, the write, and what happens after.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadyPlan {
    /// The role and leader, when they changed: take them after the apply.
    pub soft_state: Option<SoftState>,
    /// Sent before (or while) the write: a leader's appends and snapshots.
    pub send_before_persist: Vec<Message>,
    /// Applied before (or while) the write: committed entries durable already.
    pub apply_before_persist: Vec<Entry>,
    pub persist: Persist,
    /// Sent once the write returned.
    pub send_after_persist: Vec<Message>,
    /// Applied once the write returned (after restoring `persist.snapshot`, if any).
    pub apply_after_persist: Vec<Entry>,
    /// Confirmed ReadIndex requests: serve each once its index is applied.
    pub read_states: Vec<ReadState>,
}

impl ReadyPlan {
    /// Plans `rd`, which a node that `is_leader` handed out while its storage's synced index
    /// was `storage_synced` and its core's stable index `core_stable`
    /// ([`crate::Raft::stable_index`], read before [`crate::Raft::advance`]).
    pub fn new(rd: Ready, is_leader: bool, storage_synced: Index, core_stable: Index) -> Self {
        Self::with_planted_bug(rd, is_leader, storage_synced, core_stable, None)
    }

    /// [`ReadyPlan::new`], with a bug the simulator plants to prove it catches it.
    #[doc(hidden)]
    pub fn with_planted_bug(
        rd: Ready,
        is_leader: bool,
        storage_synced: Index,
        core_stable: Index,
        bug: Option<PlantedBug>,
    ) -> Self {
        let Ready {
            soft_state,
            hard_state,
            snapshot,
            entries,
            messages,
            mut committed_entries,
            read_states,
        } = rd;
        let (send_before_persist, send_after_persist) = if bug == Some(PlantedBug::AckBeforeFlush) {
            (messages, Vec::new())
        } else if is_leader {
            messages
                .into_iter()
                .partition(|m| promises_nothing(&m.body))
        } else {
            (Vec::new(), messages)
        };
        let durable = if bug == Some(PlantedBug::ApplyBeforeDurable) {
            storage_synced
        } else {
            storage_synced.min(core_stable)
        };
        let early = durable_prefix_len(&committed_entries, durable, snapshot.is_some());
        let apply_after_persist = committed_entries.split_off(early);
        ReadyPlan {
            soft_state,
            send_before_persist,
            apply_before_persist: committed_entries,
            persist: Persist {
                snapshot,
                entries,
                hard_state,
            },
            send_after_persist,
            apply_after_persist,
            read_states,
        }
    }
}

/// A leader's message that promises nothing about its own disk.
fn promises_nothing(body: &MessageBody) -> bool {
    matches!(
        body,
        MessageBody::AppendEntries { .. } | MessageBody::InstallSnapshot { .. }
    )
}

/// How many of `committed` (in index order) are at or below `durable`; none with a snapshot.
fn durable_prefix_len(committed: &[Entry], durable: Index, has_snapshot: bool) -> usize {
    if has_snapshot {
        return 0;
    }
    committed.iter().take_while(|e| e.index <= durable).count()
}

/// A promise about this node's disk that would be broken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Undurable {
    /// An answer acknowledges a match index beyond what is durable here.
    AckNotDurable {
        to: NodeId,
        match_index: Index,
        durable: Index,
    },
    /// A granted vote leaves before the term and vote it grants are persisted.
    VoteNotPersisted {
        to: NodeId,
        term: Term,
        persisted: HardState,
    },
    /// The write returned, yet the storage does not count all of its entries as synced.
    EntryNotSynced { index: Index, synced: Index },
    /// A committed entry is applied while this node does not hold it durably.
    ApplyNotDurable { index: Index, durable: Index },
}

pub const ACK_DURABLE_HERE: &str = "no acknowledgment of a match index that is not durable here";
pub const VOTE_PERSISTED: &str = "no vote sent before it is persisted";
pub const PERSIST_SYNCED: &str = "a returned write counts all its entries as synced";
pub const APPLY_DURABLE: &str = "nothing applied that is not durable here";

impl Undurable {
    /// The name of the invariant this breaks (the simulator's checker reports it).
    pub fn invariant(&self) -> &'static str {
        match self {
            Undurable::AckNotDurable { .. } => ACK_DURABLE_HERE,
            Undurable::VoteNotPersisted { .. } => VOTE_PERSISTED,
            Undurable::EntryNotSynced { .. } => PERSIST_SYNCED,
            Undurable::ApplyNotDurable { .. } => APPLY_DURABLE,
        }
    }
}

impl std::fmt::Display for Undurable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Undurable::AckNotDurable {
                to,
                match_index,
                durable,
            } => write!(
                f,
                "acknowledging {match_index} to node {to} but only {durable} is durable"
            ),
            Undurable::VoteNotPersisted {
                to,
                term,
                persisted,
            } => write!(
                f,
                "vote for node {to} in term {term} sent before it was persisted (persisted: term \
                 {}, vote {:?})",
                persisted.term, persisted.vote
            ),
            Undurable::EntryNotSynced { index, synced } => {
                write!(f, "entry {index} handed out but only {synced} is synced")
            }
            Undurable::ApplyNotDurable { index, durable } => {
                write!(f, "applying entry {index} but only {durable} is durable")
            }
        }
    }
}

impl std::error::Error for Undurable {}

/// Whether `m` may leave now, given `durable` (the highest log index durable here: the
/// storage's synced index, or its snapshot's index if higher) and the `persisted` hard state.
pub fn check_send(m: &Message, durable: Index, persisted: &HardState) -> Result<(), Undurable> {
    match m.body {
        MessageBody::AppendEntriesResponse {
            success: true,
            match_index,
            ..
        }
        | MessageBody::InstallSnapshotResponse { match_index, .. }
            if match_index > durable =>
        {
            Err(Undurable::AckNotDurable {
                to: m.to,
                match_index,
                durable,
            })
        }
        MessageBody::RequestVoteResponse {
            pre_vote: false,
            granted: true,
        } if persisted.term != m.term || persisted.vote != Some(m.to) => {
            Err(Undurable::VoteNotPersisted {
                to: m.to,
                term: m.term,
                persisted: *persisted,
            })
        }
        _ => Ok(()),
    }
}

/// Whether the storage, whose synced index is `synced` after `p` was written, holds all of it.
pub fn check_persisted(p: &Persist, synced: Index) -> Result<(), Undurable> {
    match p.entries.last() {
        Some(last) if last.index > synced => Err(Undurable::EntryNotSynced {
            index: last.index,
            synced,
        }),
        _ => Ok(()),
    }
}

/// Whether `entries` may be applied now, given `durable` (as for [`check_send`]).
pub fn check_apply(entries: &[Entry], durable: Index) -> Result<(), Undurable> {
    match entries.last() {
        Some(last) if last.index > durable => Err(Undurable::ApplyNotDurable {
            index: last.index,
            durable,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{EntryKind, SnapshotMeta};

    fn entries(indexes: std::ops::RangeInclusive<Index>) -> Vec<Entry> {
        indexes
            .map(|index| Entry {
                index,
                term: 1,
                kind: EntryKind::Normal,
                data: Vec::new(),
            })
            .collect()
    }

    fn msg(body: MessageBody) -> Message {
        Message {
            from: 1,
            to: 2,
            term: 3,
            body,
        }
    }

    fn append() -> Message {
        msg(MessageBody::AppendEntries {
            prev_log_index: 0,
            prev_log_term: 0,
            entries: Vec::new(),
            leader_commit: 0,
            read_round: 0,
        })
    }

    fn ack(match_index: Index) -> Message {
        msg(MessageBody::AppendEntriesResponse {
            success: true,
            match_index,
            rejected_index: 0,
            conflict: None,
            read_round: 0,
            catching_up: false,
        })
    }

    fn vote() -> Message {
        msg(MessageBody::RequestVoteResponse {
            pre_vote: false,
            granted: true,
        })
    }

    fn snapshot_ready() -> Ready {
        Ready {
            snapshot: Some(Snapshot {
                meta: SnapshotMeta {
                    last_index: 4,
                    last_term: 1,
                    membership: crate::Membership::from_voters([1, 2, 3]),
                },
                data: Default::default(),
            }),
            committed_entries: entries(5..=6),
            ..Ready::default()
        }
    }

    fn plan(committed: Vec<Entry>, synced: Index, stable: Index) -> ReadyPlan {
        let rd = Ready {
            committed_entries: committed,
            ..Ready::default()
        };
        ReadyPlan::new(rd, false, synced, stable)
    }

    fn indexes(es: &[Entry]) -> Vec<Index> {
        es.iter().map(|e| e.index).collect()
    }

    #[test]
    fn only_entries_both_the_storage_and_the_core_hold_durable_are_applied_early() {
        let cases = [
            // Steady state: storage and core agree.
            (9, 9, 5),
            (7, 7, 3),
            // A truncation from 8: the storage still counts the old 8..=10 as synced.
            (10, 7, 3),
            // The core may run ahead of a write the storage has not finished.
            (6, 9, 2),
        ];
        for (synced, stable, early) in cases {
            let p = plan(entries(5..=9), synced, stable);
            assert_eq!(p.apply_before_persist.len(), early, "{synced} {stable}");
            let all: Vec<Index> = indexes(&p.apply_before_persist)
                .into_iter()
                .chain(indexes(&p.apply_after_persist))
                .collect();
            assert_eq!(all, (5..=9).collect::<Vec<_>>(), "one run, in order");
        }
        assert!(plan(Vec::new(), 9, 9).apply_before_persist.is_empty());
    }

    #[test]
    fn with_a_snapshot_nothing_is_applied_before_it_is_restored() {
        let p = ReadyPlan::new(snapshot_ready(), false, 9, 9);
        assert!(p.apply_before_persist.is_empty());
        assert_eq!(indexes(&p.apply_after_persist), vec![5, 6]);
        assert!(p.persist.snapshot.is_some());
    }

    #[test]
    fn a_leader_sends_its_appends_before_the_write_and_its_answers_after() {
        let rd = || Ready {
            messages: vec![append(), vote(), ack(1)],
            entries: entries(1..=1),
            ..Ready::default()
        };
        let leader = ReadyPlan::new(rd(), true, 0, 0);
        assert_eq!(leader.send_before_persist, vec![append()]);
        assert_eq!(leader.send_after_persist, vec![vote(), ack(1)]);
        assert_eq!(leader.persist.entries, entries(1..=1));
        let follower = ReadyPlan::new(rd(), false, 0, 0);
        assert!(follower.send_before_persist.is_empty());
        assert_eq!(follower.send_after_persist.len(), 3);
    }

    #[test]
    fn the_planted_ack_before_flush_sends_everything_before_the_write() {
        let rd = Ready {
            messages: vec![ack(9)],
            committed_entries: entries(5..=9),
            ..Ready::default()
        };
        let p = ReadyPlan::with_planted_bug(rd, false, 10, 7, Some(PlantedBug::AckBeforeFlush));
        assert_eq!(p.send_before_persist, vec![ack(9)]);
        assert_eq!(p.apply_before_persist.len(), 3);
    }

    #[test]
    fn the_planted_apply_before_durable_trusts_the_storage_alone_after_a_truncation() {
        // A truncation from 8: the storage still counts the old 8..=10, the core 7.
        let rd = Ready {
            committed_entries: entries(5..=9),
            ..Ready::default()
        };
        let p = ReadyPlan::with_planted_bug(
            rd.clone(),
            false,
            10,
            7,
            Some(PlantedBug::ApplyBeforeDurable),
        );
        assert_eq!(indexes(&p.apply_before_persist), vec![5, 6, 7, 8, 9]);
        assert!(check_apply(&p.apply_before_persist, 7).is_err());
        assert_eq!(
            ReadyPlan::new(rd, false, 10, 7).apply_before_persist.len(),
            3
        );
    }

    #[test]
    fn an_ack_needs_its_match_index_durable_and_a_vote_its_persisted_grant() {
        let hs = HardState {
            term: 3,
            vote: Some(2),
            ..HardState::default()
        };
        assert_eq!(check_send(&ack(5), 5, &hs), Ok(()));
        let err = check_send(&ack(6), 5, &hs).unwrap_err();
        assert_eq!(err.invariant(), ACK_DURABLE_HERE);
        let snap_ack = msg(MessageBody::InstallSnapshotResponse {
            match_index: 6,
            catching_up: false,
        });
        assert!(check_send(&snap_ack, 5, &hs).is_err());
        assert_eq!(check_send(&append(), 0, &HardState::default()), Ok(()));
        assert_eq!(check_send(&vote(), 0, &hs), Ok(()));
        for persisted in [
            HardState::default(),
            HardState { term: 2, ..hs },
            HardState {
                vote: Some(3),
                ..hs
            },
        ] {
            let err = check_send(&vote(), 0, &persisted).unwrap_err();
            assert_eq!(err.invariant(), VOTE_PERSISTED, "{persisted:?}");
        }
        // A refusal or a pre-vote promises nothing.
        let refusal = msg(MessageBody::RequestVoteResponse {
            pre_vote: false,
            granted: false,
        });
        assert_eq!(check_send(&refusal, 0, &HardState::default()), Ok(()));
    }

    #[test]
    fn a_write_must_count_its_entries_synced_and_an_apply_its_entries_durable() {
        let p = Persist {
            entries: entries(3..=5),
            ..Persist::default()
        };
        assert_eq!(check_persisted(&p, 5), Ok(()));
        assert_eq!(
            check_persisted(&p, 4).unwrap_err().invariant(),
            PERSIST_SYNCED
        );
        assert_eq!(check_persisted(&Persist::default(), 0), Ok(()));
        assert_eq!(check_apply(&entries(3..=5), 5), Ok(()));
        assert_eq!(
            check_apply(&entries(3..=5), 4),
            Err(Undurable::ApplyNotDurable {
                index: 5,
                durable: 4
            })
        );
        assert_eq!(check_apply(&[], 0), Ok(()));
    }
}
