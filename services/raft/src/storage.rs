//! Where a node keeps what Raft requires to be durable. The core itself never calls a
//! `Storage`: the caller persists each [`crate::Ready`] through it and hands the recovered state
//! to [`crate::Raft::new`] on restart. The in-memory [`MemStorage`] serves tests and the
//! simulator; `dmq-controller` has the sled one.
//!
//! # To ensure correctness
//! - `persist` returns only once everything it was given is durable: the Ready's messages are
//!   sent after it returns, and they promise the receiver that the state is on disk.
//! - Appending entries that start at index `i` discards any stored entry at `i` or later first
//!   (a conflicting suffix, §5.3), so the stored log is always one contiguous run.
//! - `synced_index` never exceeds the last entry that is durable; callers assert that nothing
//!   above it is acknowledged or voted on.
//! - The one exception to "durable before `persist` returns": a hard state whose only change is
//!   `commit` may be written without a sync (it becomes durable with the next one). The commit
//!   index is a hint: a restarted node that recovers a lower one re-learns it from the leader,
//!   and nothing a node sends depends on it being on disk. Term and vote are always synced.

use crate::types::{Entry, HardState, Index, RecoveredState, Snapshot};

/// Durable storage of one node's Raft state.
pub trait Storage {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Reads back everything persisted: hard state, latest snapshot, entries after it.
    fn recover(&self) -> Result<RecoveredState, Self::Error>;

    /// Persists, durably and in this order, a received snapshot (replacing the whole log, even
    /// entries after its index),
    /// `entries` (replacing any stored suffix from `entries[0].index`), and the hard state.
    fn persist(
        &mut self,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), Self::Error>;

    /// Stores a snapshot the application took and drops the entries it covers.
    fn compact(&mut self, snapshot: &Snapshot) -> Result<(), Self::Error>;

    /// The highest log index that is durable.
    fn synced_index(&self) -> Index;
}

/// Storage in memory. Everything `persist` accepted counts as durable: the simulator models a
/// crash by dropping the node and any Ready it had not yet persisted, then recovering from here.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
}

/// `MemStorage` cannot fail; this error never occurs.
#[derive(Debug)]
pub enum Never {}

impl std::fmt::Display for Never {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

impl std::error::Error for Never {}

impl MemStorage {
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The durable entry at `index`, if it is stored (not compacted, not beyond the log).
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        let first = self.entries.first()?.index;
        if index < first {
            return None;
        }
        self.entries.get((index - first) as usize)
    }

    /// The durable snapshot's last index (0 without a snapshot).
    pub fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |s| s.meta.last_index)
    }

    /// The durable snapshot, if any.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    fn last_index(&self) -> Index {
        self.entries
            .last()
            .map_or(self.snapshot_index(), |e| e.index)
    }
}

impl Storage for MemStorage {
    type Error = Never;

    fn recover(&self) -> Result<RecoveredState, Never> {
        Ok(RecoveredState {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self.entries.clone(),
        })
    }

    fn persist(
        &mut self,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), Never> {
        if let Some(s) = snapshot {
            // A snapshot from the leader replaces the whole log, as the core did in memory: a
            // stored suffix may continue the index with entries of an old term.
            self.entries.clear();
            self.snapshot = Some(s.clone());
        }
        if let Some(first) = entries.first() {
            let first_index = first.index;
            assert!(
                first_index > self.snapshot_index(),
                "persisting entry {first_index} at or below the snapshot"
            );
            assert!(
                first_index <= self.last_index() + 1,
                "persisting entry {first_index} leaves a gap after {}",
                self.last_index()
            );
            self.entries.retain(|e| e.index < first_index);
            self.entries.extend_from_slice(entries);
        }
        if let Some(hs) = hard_state {
            assert!(
                hs.term >= self.hard_state.term,
                "term went backwards in storage"
            );
            self.hard_state = *hs;
        }
        Ok(())
    }

    fn compact(&mut self, snapshot: &Snapshot) -> Result<(), Never> {
        if snapshot.meta.last_index <= self.snapshot_index() {
            return Ok(());
        }
        self.entries.retain(|e| e.index > snapshot.meta.last_index);
        self.snapshot = Some(snapshot.clone());
        Ok(())
    }

    fn synced_index(&self) -> Index {
        self.last_index()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{EntryKind, SnapshotMeta};

    fn e(index: Index, term: u64) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal,
            data: vec![index as u8],
        }
    }

    #[test]
    fn appending_truncates_a_conflicting_suffix() {
        let mut s = MemStorage::new();
        s.persist(None, &[e(1, 1), e(2, 1), e(3, 1)], None).unwrap();
        s.persist(None, &[e(2, 2)], None).unwrap();
        let r = s.recover().unwrap();
        assert_eq!(r.entries, vec![e(1, 1), e(2, 2)]);
        assert_eq!(s.synced_index(), 2);
    }

    #[test]
    fn compaction_keeps_the_suffix_and_the_snapshot() {
        let mut s = MemStorage::new();
        s.persist(None, &[e(1, 1), e(2, 1), e(3, 1)], None).unwrap();
        let snap = Snapshot {
            meta: SnapshotMeta {
                last_index: 2,
                last_term: 1,
                membership: crate::Membership::from_voters([1]),
            },
            data: vec![9].into(),
        };
        s.compact(&snap).unwrap();
        let r = s.recover().unwrap();
        assert_eq!(r.entries, vec![e(3, 1)]);
        assert_eq!(r.snapshot, Some(snap));
    }
}
