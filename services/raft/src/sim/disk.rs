//! A node's simulated disk: what survives a crash, the write in flight, and the synced index as
//! the controllers' sled storage (`SledStorage::synced_index`) reports it.
//!
//! # To ensure correctness
//! - `durable` holds exactly what survives a crash: a write reaches it when it completes; one
//!   that does not complete (its fsync failed, or the node crashed during it) leaves none, a
//!   prefix or all of itself ([`Kept`]).
//! - A write that lands only in part keeps its snapshot and a prefix of its entries, and its
//!   hard state with them: never the hard state alone (its commit could then cover stored
//!   entries the write was replacing) and never entries without it (the first write after a
//!   wipe carries the catching-up mark, and sled's transaction keeps the two together).
//! - `synced_index` follows sled: before a write it counts every stored entry, including those
//!   the write is about to replace (a conflicting suffix); when the write starts it drops to
//!   just below the first index the write touches, and it rises to the last stored index only
//!   when the write completes. A node reads it before the write (to plan the Ready) and checks
//!   against it during and after, so a plan that trusted it alone would be caught applying
//!   entries the write has yet to store.

use rand::Rng;

use crate::ready_plan::Persist;
use crate::storage::{MemStorage, Storage};
use crate::types::{HardState, Index, RecoveredState, Snapshot};

#[derive(Clone, Debug, Default)]
pub(super) struct Disk {
    durable: MemStorage,
    synced_index: Index,
}

impl Disk {
    /// What survives a crash.
    pub(super) fn storage(&self) -> &MemStorage {
        &self.durable
    }

    /// What survives a crash, taken out of the disk (no copy of the log).
    pub(super) fn into_storage(self) -> MemStorage {
        self.durable
    }

    pub(super) fn hard_state(&self) -> HardState {
        self.durable.hard_state()
    }

    pub(super) fn recover(&self) -> RecoveredState {
        self.durable.recover().unwrap_or_else(|e| match e {})
    }

    /// As `Storage::synced_index` of the controllers' storage.
    pub(super) fn synced_index(&self) -> Index {
        self.synced_index
    }

    /// The highest log index durable here: the synced index, or the snapshot's if higher.
    pub(super) fn durable_index(&self) -> Index {
        self.synced_index.max(self.durable.snapshot_index())
    }

    /// A write starts: until it completes, only what it leaves untouched counts as synced.
    pub(super) fn begin(&mut self, p: &Persist) {
        let mut first_touched = Index::MAX;
        if p.snapshot.is_some() {
            first_touched = self.durable.snapshot_index() + 1;
        }
        if let Some(e) = p.entries.first() {
            first_touched = first_touched.min(e.index);
        }
        self.synced_index = self.synced_index.min(first_touched.saturating_sub(1));
    }

    /// The write started by [`Disk::begin`] completes: all of it is durable.
    pub(super) fn finish(&mut self, p: &Persist) {
        self.write(p.snapshot.as_ref(), &p.entries, p.hard_state.as_ref());
    }

    fn write(
        &mut self,
        snapshot: Option<&Snapshot>,
        entries: &[crate::types::Entry],
        hard_state: Option<&HardState>,
    ) {
        let _ = self.durable.persist(snapshot, entries, hard_state);
        self.synced_index = self.durable.synced_index();
    }

    /// The node crashed: a write in flight is lost. At the next start everything stored counts
    /// as synced again (sled syncs what it recovered before it returns from `open`).
    pub(super) fn crash(&mut self) {
        self.synced_index = self.durable.synced_index();
    }

    /// A write that did not complete leaves `kept` of itself on disk; everything stored counts
    /// as synced at the next start.
    pub(super) fn keep(&mut self, p: &Persist, kept: Kept) {
        match kept {
            Kept::Nothing => self.crash(),
            Kept::Prefix(k) => {
                self.write(p.snapshot.as_ref(), &p.entries[..k], p.hard_state.as_ref())
            }
            Kept::All => self.finish(p),
        }
    }

    /// The application snapshotted its state: the log it covers goes.
    pub(super) fn compact(&mut self, snapshot: &Snapshot) {
        let _ = self.durable.compact(snapshot);
    }
}

/// What of a write that did not complete reached the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kept {
    Nothing,
    /// Its snapshot (if any), its first `.0` entries and its hard state: a part, not all.
    Prefix(usize),
    All,
}

impl Kept {
    /// Whether `p` has a part that is not all of it: the snapshot without the entries, or
    /// some entries but not all.
    pub(super) fn can_tear(p: &Persist) -> bool {
        let lo = if p.snapshot.is_some() { 0 } else { 1 };
        p.entries.len() > lo
    }

    /// None, a part or all of `p`, each as likely (a part only where `p` has one).
    pub(super) fn draw(rng: &mut impl Rng, p: &Persist) -> Kept {
        let lo = if p.snapshot.is_some() { 0 } else { 1 };
        let choice = rng.random_range(0..if Kept::can_tear(p) { 3 } else { 2 });
        match choice {
            0 => Kept::Nothing,
            1 => Kept::All,
            _ => Kept::Prefix(rng.random_range(lo..p.entries.len())),
        }
    }

    /// `(entries, of)` kept, for the log.
    pub(super) fn describe(self, p: &Persist) -> String {
        let n = p.entries.len();
        let (entries, rest) = match self {
            Kept::Nothing => (0, false),
            Kept::Prefix(k) => (k, true),
            Kept::All => (n, true),
        };
        let mut s = format!("kept {entries} of {n} entries");
        if rest && p.hard_state.is_some() {
            s.push_str(", the hard state");
        }
        if rest && p.snapshot.is_some() {
            s.push_str(", the snapshot");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Entry, EntryKind, SnapshotMeta};
    use rand::SeedableRng;

    fn entries(indexes: std::ops::RangeInclusive<Index>, term: u64) -> Vec<Entry> {
        indexes
            .map(|index| Entry {
                index,
                term,
                kind: EntryKind::Normal,
                data: Vec::new(),
            })
            .collect()
    }

    fn write(entries: Vec<Entry>) -> Persist {
        Persist {
            entries,
            ..Persist::default()
        }
    }

    #[test]
    fn a_truncating_write_counts_the_replaced_entries_synced_until_it_starts() {
        let mut d = Disk::default();
        let first = write(entries(1..=10, 1));
        d.begin(&first);
        assert_eq!(d.synced_index(), 0);
        d.finish(&first);
        assert_eq!(d.synced_index(), 10);
        // The leader replaces 8..=10: before the write they still count (the plan reads this).
        let replace = write(entries(8..=9, 2));
        assert_eq!(d.synced_index(), 10);
        d.begin(&replace);
        assert_eq!(
            d.synced_index(),
            7,
            "during the write only 1..=7 are synced"
        );
        d.finish(&replace);
        assert_eq!(d.synced_index(), 9);
        assert_eq!(d.storage().entry(9).map(|e| e.term), Some(2));
    }

    #[test]
    fn an_append_or_a_hard_state_leaves_the_synced_entries_synced() {
        let mut d = Disk::default();
        d.finish(&write(entries(1..=3, 1)));
        d.begin(&write(entries(4..=5, 1)));
        assert_eq!(d.synced_index(), 3);
        d.crash();
        assert_eq!(d.synced_index(), 3, "the append was lost");
        assert!(d.storage().entry(4).is_none());
        let hs = Persist {
            hard_state: Some(HardState {
                term: 2,
                ..HardState::default()
            }),
            ..Persist::default()
        };
        d.begin(&hs);
        assert_eq!(d.synced_index(), 3);
    }

    #[test]
    fn a_write_that_did_not_complete_leaves_none_a_prefix_or_all_of_itself() {
        let hs = HardState {
            term: 2,
            commit: 9,
            ..HardState::default()
        };
        let replace = Persist {
            entries: entries(8..=9, 2),
            hard_state: Some(hs),
            ..Persist::default()
        };
        let base = || {
            let mut d = Disk::default();
            d.finish(&write(entries(1..=10, 1)));
            d.begin(&replace);
            d
        };
        let mut d = base();
        d.keep(&replace, Kept::Nothing);
        assert_eq!(d.synced_index(), 10, "the old suffix is intact");
        assert_eq!(d.hard_state(), HardState::default());
        let mut d = base();
        d.keep(&replace, Kept::Prefix(1));
        assert_eq!(
            d.synced_index(),
            8,
            "the new prefix replaced the old suffix"
        );
        assert_eq!(d.storage().entry(8).map(|e| e.term), Some(2));
        assert_eq!(d.hard_state(), hs, "the hard state lands with any part");
        let mut d = base();
        d.keep(&replace, Kept::All);
        assert_eq!(d.synced_index(), 9);
        // A single entry has no part; a snapshot has one (without its entries).
        let one = write(entries(1..=1, 1));
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..100 {
            assert!(!matches!(Kept::draw(&mut rng, &one), Kept::Prefix(_)));
            match Kept::draw(&mut rng, &replace) {
                Kept::Prefix(k) => assert_eq!(k, 1),
                Kept::Nothing | Kept::All => {}
            }
        }
    }

    #[test]
    fn a_received_snapshot_counts_only_the_old_snapshot_while_it_is_written() {
        let mut d = Disk::default();
        d.finish(&write(entries(1..=5, 1)));
        let snap = Persist {
            snapshot: Some(Snapshot {
                meta: SnapshotMeta {
                    last_index: 20,
                    last_term: 3,
                    membership: crate::Membership::from_voters([1, 2, 3]),
                },
                data: Default::default(),
            }),
            ..Persist::default()
        };
        d.begin(&snap);
        assert_eq!(d.synced_index(), 0);
        assert_eq!(d.durable_index(), 0);
        d.finish(&snap);
        assert_eq!(d.durable_index(), 20);
        assert!(d.storage().entry(5).is_none());
    }
}
