//! The leader-epoch history of a partition: which leader epoch wrote the offsets from where, as
//! Kafka's leader-epoch cache (KIP-101/KIP-279). A follower asks the new leader where its own
//! last epoch ends ([`EpochHistory::end_offset_for`]) and truncates its log there.
//!
//! Entries are strictly increasing in both epoch and start offset.

/// Leader epoch `epoch` wrote the offsets from `start_offset` until the next entry's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: u64,
    pub start_offset: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochHistory {
    entries: Vec<EpochEntry>,
}

impl EpochHistory {
    /// A history from stored entries; `None` if they are not strictly increasing.
    pub fn from_entries(entries: Vec<EpochEntry>) -> Option<EpochHistory> {
        let increasing = entries
            .windows(2)
            .all(|w| w[0].epoch < w[1].epoch && w[0].start_offset < w[1].start_offset);
        increasing.then_some(EpochHistory { entries })
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The newest epoch, if any.
    pub fn latest_epoch(&self) -> Option<u64> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` writes from `start_offset` on. Like Kafka's `assign`: nothing changes
    /// if it is already the latest entry with a start at or before `start_offset`; otherwise
    /// entries that conflict (an epoch at or above `epoch`, or a start at or after
    /// `start_offset`) are dropped first. Returns whether the history changed.
    pub fn assign(&mut self, epoch: u64, start_offset: u64) -> bool {
        if let Some(last) = self.entries.last()
            && last.epoch == epoch
            && last.start_offset <= start_offset
        {
            return false;
        }
        self.entries
            .retain(|e| e.epoch < epoch && e.start_offset < start_offset);
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// After the log was truncated to end at `end_offset`: drops entries starting at or after
    /// it. Returns whether the history changed.
    pub fn truncate_from_end(&mut self, end_offset: u64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        self.entries.len() != before
    }

    /// After the log start moved to `start_offset`: entries wholly before it go, and the last one
    /// starting before it now starts there. Returns whether the history changed.
    pub fn truncate_from_start(&mut self, start_offset: u64) -> bool {
        let covering = self
            .entries
            .iter()
            .rposition(|e| e.start_offset <= start_offset);
        let Some(i) = covering else {
            return false;
        };
        let changed = i > 0 || self.entries[i].start_offset != start_offset;
        self.entries.drain(..i);
        self.entries[0].start_offset = start_offset;
        changed
    }

    /// Forgets everything (the log restarts from an empty state).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The first offset written in `epoch`, if the history has that epoch.
    pub fn start_offset_of(&self, epoch: u64) -> Option<u64> {
        self.entries
            .iter()
            .find(|e| e.epoch == epoch)
            .map(|e| e.start_offset)
    }

    /// Kafka's OffsetsForLeaderEpoch answer for `requested`, given this log's end offset:
    /// `(epoch, end_offset)` where `epoch` is the largest known epoch at or below `requested` and
    /// `end_offset` is the start of the first epoch above it (the log end offset if `requested`
    /// is the latest epoch). A requested epoch below every known one answers
    /// `(requested, start of the first epoch)`. `None` (Kafka's UNDEFINED) when the history is
    /// empty or `requested` is above every known epoch.
    pub fn end_offset_for(&self, requested: u64, log_end_offset: u64) -> Option<(u64, u64)> {
        let latest = self.latest_epoch()?;
        if requested == latest {
            return Some((requested, log_end_offset));
        }
        let higher = self.entries.iter().find(|e| e.epoch > requested)?;
        let floor = self.entries.iter().rev().find(|e| e.epoch <= requested);
        match floor {
            Some(floor) => Some((floor.epoch, higher.start_offset)),
            None => Some((requested, higher.start_offset)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(pairs: &[(u64, u64)]) -> EpochHistory {
        EpochHistory::from_entries(
            pairs
                .iter()
                .map(|&(epoch, start_offset)| EpochEntry {
                    epoch,
                    start_offset,
                })
                .collect(),
        )
        .unwrap()
    }

    fn pairs(h: &EpochHistory) -> Vec<(u64, u64)> {
        h.entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    #[test]
    fn assign_appends_and_drops_conflicts() {
        let mut h = EpochHistory::default();
        assert!(h.assign(1, 0));
        assert!(!h.assign(1, 5));
        assert!(h.assign(3, 10));
        assert_eq!(pairs(&h), [(1, 0), (3, 10)]);
        // A new epoch starting where the previous one started replaces it.
        assert!(h.assign(4, 10));
        assert_eq!(pairs(&h), [(1, 0), (4, 10)]);
        // A lower epoch (a follower copying a log that diverged) drops the higher ones.
        assert!(h.assign(2, 12));
        assert_eq!(pairs(&h), [(1, 0), (2, 12)]);
        assert!(
            EpochHistory::from_entries(vec![
                EpochEntry {
                    epoch: 2,
                    start_offset: 0
                },
                EpochEntry {
                    epoch: 1,
                    start_offset: 5
                }
            ])
            .is_none()
        );
    }

    #[test]
    fn end_offsets_follow_kafka() {
        let h = history(&[(2, 0), (4, 10), (7, 25)]);
        assert_eq!(h.end_offset_for(7, 40), Some((7, 40)));
        assert_eq!(h.end_offset_for(4, 40), Some((4, 25)));
        assert_eq!(h.end_offset_for(5, 40), Some((4, 25)));
        assert_eq!(h.end_offset_for(2, 40), Some((2, 10)));
        assert_eq!(h.end_offset_for(1, 40), Some((1, 0)));
        assert_eq!(h.end_offset_for(8, 40), None);
        assert_eq!(EpochHistory::default().end_offset_for(1, 0), None);
        assert_eq!(h.start_offset_of(4), Some(10));
        assert_eq!(h.start_offset_of(5), None);
    }

    #[test]
    fn truncation_from_both_ends() {
        let mut h = history(&[(2, 0), (4, 10), (7, 25)]);
        assert!(!h.truncate_from_end(26));
        assert!(h.truncate_from_end(25));
        assert_eq!(pairs(&h), [(2, 0), (4, 10)]);
        assert!(h.truncate_from_start(12));
        assert_eq!(pairs(&h), [(4, 12)]);
        assert!(!h.truncate_from_start(12));
        assert!(!h.truncate_from_start(5));
    }
}
