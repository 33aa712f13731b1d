//! The in-memory Raft log of one node: the snapshot it starts after, the entries since, and the
//! three marks on it (stable, committed, applied).
//!
//! # To ensure correctness
//! - `entries` is contiguous and starts at `snapshot_index + 1`.
//! - `applied <= committed`, `committed` never decreases, and `applied` never exceeds the last
//!   entry handed out for persistence (an entry is applied only after it is durable).
//! - `stable_index` is the last index the caller confirmed durable; truncating the log below it
//!   pulls it down so entries that changed are persisted again.

use std::collections::VecDeque;

use crate::membership::{Membership, MembershipError, MembershipLog};
use crate::types::{Bytes, Entry, EntryKind, Index, Snapshot, SnapshotMeta, Term};

#[derive(Clone, Debug)]
pub(crate) struct RaftLog {
    /// The latest snapshot (local or installed); its meta marks where `entries` begin.
    pub(crate) snapshot: Snapshot,
    pub(crate) entries: VecDeque<Entry>,
    /// The last index durable in storage (confirmed by `advance`).
    pub(crate) stable_index: Index,
    pub(crate) committed: Index,
    pub(crate) applied: Index,
    /// The configurations along the log (thesis §4.1: the latest one is in effect).
    pub(crate) memberships: MembershipLog,
}

impl RaftLog {
    /// `bootstrap` is the configuration in effect where neither the snapshot nor an entry
    /// holds one (a cluster that never changed its membership). Fails, with the entry's index,
    /// on a configuration entry that does not decode.
    pub(crate) fn new(
        snapshot: Option<Snapshot>,
        entries: Vec<Entry>,
        committed: Index,
        bootstrap: Membership,
    ) -> Result<RaftLog, (Index, MembershipError)> {
        let snapshot = snapshot.unwrap_or_default();
        let snap_index = snapshot.meta.last_index;
        let mut memberships = MembershipLog {
            base: if snapshot.meta.membership.is_empty() {
                bootstrap
            } else {
                snapshot.meta.membership.clone()
            },
            changes: Vec::new(),
        };
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(
                e.index,
                snap_index + 1 + i as u64,
                "recovered log is not contiguous"
            );
            if e.kind == EntryKind::Membership {
                let m = Membership::decode(&e.data).map_err(|err| (e.index, err))?;
                memberships.appended(e.index, m);
            }
        }
        let last = entries.last().map_or(snap_index, |e| e.index);
        let committed = committed.clamp(snap_index, last);
        Ok(RaftLog {
            snapshot,
            entries: entries.into(),
            stable_index: last,
            committed,
            applied: snap_index,
            memberships,
        })
    }

    pub(crate) fn snapshot_index(&self) -> Index {
        self.snapshot.meta.last_index
    }

    pub(crate) fn first_index(&self) -> Index {
        self.snapshot_index() + 1
    }

    pub(crate) fn last_index(&self) -> Index {
        self.entries
            .back()
            .map_or(self.snapshot_index(), |e| e.index)
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries
            .back()
            .map_or(self.snapshot.meta.last_term, |e| e.term)
    }

    /// The term of the entry at `index`: known for the snapshot's last index and every entry
    /// after it, `None` when compacted away or beyond the log.
    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        if index == self.snapshot_index() {
            return Some(self.snapshot.meta.last_term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub(crate) fn entry(&self, index: Index) -> Option<&Entry> {
        if index < self.first_index() {
            return None;
        }
        self.entries.get((index - self.first_index()) as usize)
    }

    /// Entries from `lo` on, at most `max_bytes` of them but always at least one.
    pub(crate) fn entries_from(&self, lo: Index, max_bytes: usize) -> Vec<Entry> {
        debug_assert!(lo >= self.first_index());
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let start = (lo - self.first_index()) as usize;
        for e in self.entries.iter().skip(start) {
            bytes += e.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        out
    }

    /// §5.4.1: is a log ending at (`last_index`, `last_term`) at least as up to date as ours?
    pub(crate) fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// The first index of the run of entries with the same term as `index`, searching back no
    /// further than the snapshot. Used for the conflict hint.
    pub(crate) fn first_index_of_term_at(&self, index: Index) -> Index {
        let Some(term) = self.term(index) else {
            return index;
        };
        let mut i = index;
        while i > self.first_index() && self.term(i - 1) == Some(term) {
            i -= 1;
        }
        i
    }

    /// The last index holding `term` at or before `hi`, if any entry has it.
    pub(crate) fn last_index_of_term(&self, term: Term, hi: Index) -> Option<Index> {
        let mut i = hi.min(self.last_index());
        while i >= self.snapshot_index() {
            match self.term(i) {
                Some(t) if t == term => return Some(i),
                Some(t) if t < term => return None,
                _ => {}
            }
            if i == 0 {
                break;
            }
            i -= 1;
        }
        None
    }

    /// Appends `entry`; a configuration entry takes effect at once (thesis §4.1). The caller
    /// checked that a configuration entry decodes (see `Membership::decode`).
    pub(crate) fn append(&mut self, entry: Entry) {
        assert_eq!(entry.index, self.last_index() + 1, "append leaves a gap");
        assert!(entry.term >= self.last_term(), "append with a smaller term");
        if entry.kind == EntryKind::Membership {
            let m = Membership::decode(&entry.data).expect("configuration entry checked");
            self.memberships.appended(entry.index, m);
        }
        self.entries.push_back(entry);
    }

    /// §5.3: drops every entry from `index` on (a conflicting suffix). Never below the commit.
    pub(crate) fn truncate_from(&mut self, index: Index) {
        assert!(index > self.committed, "truncating committed entry {index}");
        let keep = (index - self.first_index()) as usize;
        self.entries.truncate(keep);
        self.memberships.truncated_from(index);
        self.stable_index = self.stable_index.min(index - 1);
    }

    pub(crate) fn commit_to(&mut self, index: Index) -> bool {
        if index > self.committed {
            assert!(index <= self.last_index(), "commit {index} beyond the log");
            self.committed = index;
            true
        } else {
            false
        }
    }

    /// Replaces the whole log by an installed snapshot.
    pub(crate) fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.last_index;
        assert!(
            index > self.committed,
            "restoring a snapshot at or below the commit"
        );
        self.entries.clear();
        self.committed = index;
        self.applied = index;
        self.stable_index = index;
        self.memberships.restored(snapshot.meta.membership.clone());
        self.snapshot = snapshot;
    }

    /// Drops entries up to `index`, which the application snapshotted as `data`.
    pub(crate) fn compact(&mut self, index: Index, data: Bytes) {
        assert!(index <= self.applied, "compacting unapplied entry {index}");
        if index <= self.snapshot_index() {
            return;
        }
        let term = self.term(index).expect("term of an applied entry is known");
        let drop = (index - self.snapshot_index()) as usize;
        self.entries.drain(..drop);
        self.memberships.compacted_to(index);
        self.snapshot = Snapshot {
            meta: SnapshotMeta {
                last_index: index,
                last_term: term,
                membership: self.memberships.base.clone(),
            },
            data,
        };
    }
}
