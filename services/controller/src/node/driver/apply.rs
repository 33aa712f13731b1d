//! Applying committed entries: what may be applied before a Ready is durable, and applying a
//! Ready's committed entries to the metadata (stopping at one this version cannot apply) and
//! answering their proposers.

use std::time::Instant;

use dmq_proto::v1::MetadataCommand;
use dmq_raft::{Entry, EntryKind, Index};
use prost::Message as _;

use super::{Driver, Fatal};
use crate::metadata::{ApplyOutcome, features};
use crate::node::{NodeError, Unknown};

/// How many of a Ready's `committed` entries (in index order) may be applied before the Ready
/// is persisted: those that are durable already, i.e. at or below both the storage's synced
/// index and the core's stable index. Both are needed: after a truncation (a conflicting
/// suffix replaced by the leader's entries) the storage still counts the replaced entries as
/// synced until this Ready's write returns, while the core has already lowered its stable
/// index below them; the core alone would not know about a write in progress. With a
/// snapshot in the Ready nothing is applied early: the snapshot must be restored first.
pub(super) fn durable_prefix_len(
    committed: &[Entry],
    storage_synced: Index,
    core_stable: Index,
    has_snapshot: bool,
) -> usize {
    if has_snapshot {
        return 0;
    }
    let durable = storage_synced.min(core_stable);
    committed.iter().take_while(|e| e.index <= durable).count()
}

impl Driver {
    pub(super) fn apply_timed(&mut self, entries: &[Entry]) -> Result<(), Fatal> {
        if entries.is_empty() {
            return Ok(());
        }
        let t = Instant::now();
        self.apply(entries)?;
        crate::metrics::raft_applied(entries.len(), t.elapsed());
        Ok(())
    }

    /// Applies a Ready's committed entries in one metadata transaction and answers their
    /// proposers.
    pub(super) fn apply(&mut self, entries: &[Entry]) -> Result<(), Fatal> {
        if entries.is_empty() {
            return Ok(());
        }
        // An entry this version cannot apply stops the node after the entries before it: it
        // must never apply it as empty or rejected while newer controllers apply it.
        let mut commands: Vec<Option<MetadataCommand>> = Vec::with_capacity(entries.len());
        let mut cannot_apply = None;
        for e in entries {
            let command = match e.kind {
                EntryKind::Noop => None,
                EntryKind::Normal => match MetadataCommand::decode(e.data.as_slice()) {
                    Ok(command) => match features::check_known(e.index, &command) {
                        Ok(()) => Some(command),
                        Err(why) => {
                            cannot_apply = Some(why);
                            break;
                        }
                    },
                    Err(err) => {
                        cannot_apply = Some(format!(
                            "log entry {} cannot be decoded by this version ({err}): a newer \
                             (or a broken) controller wrote it",
                            e.index
                        ));
                        break;
                    }
                },
            };
            commands.push(command);
        }
        let entries = &entries[..commands.len()];
        let stop = |why: String| {
            Fatal::CannotApply(format!(
                "{why}. This controller stops rather than apply it differently from the others: \
                 run a version that knows it (upgrade this controller), then restart it"
            ))
        };
        if entries.is_empty() {
            return match cannot_apply {
                Some(why) => Err(stop(why)),
                None => Ok(()),
            };
        }
        let batch: Vec<(Index, Option<&MetadataCommand>)> = entries
            .iter()
            .zip(&commands)
            .map(|(e, c)| (e.index, c.as_ref()))
            .collect();
        if entries
            .iter()
            .any(|e| self.proposals.contains_key(&e.index))
        {
            // A proposer that sees its answer must see a status that includes it.
            self.publish_status(true);
        }
        let proposals = &mut self.proposals;
        let answer = |outcomes: Vec<ApplyOutcome>| {
            for (e, outcome) in entries.iter().zip(outcomes) {
                if let Some(w) = proposals.remove(&e.index) {
                    let answer = if w.term == e.term {
                        Ok(outcome)
                    } else {
                        Err(NodeError::OutcomeUnknown(Unknown::LeadershipLost))
                    };
                    let _ = w.reply.send(answer);
                }
            }
        };
        self.metadata.apply_batch(&batch, answer).map_err(|err| {
            Fatal::Storage(format!(
                "applying entries {}..={} failed: {err}",
                entries[0].index,
                entries[entries.len() - 1].index
            ))
        })?;
        match cannot_apply {
            Some(why) => Err(stop(why)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn only_entries_both_the_storage_and_the_core_hold_durable_are_applied_early() {
        let committed = entries(5..=9);
        // Steady state: storage and core agree.
        assert_eq!(durable_prefix_len(&committed, 9, 9, false), 5);
        assert_eq!(durable_prefix_len(&committed, 7, 7, false), 3);
        // A truncation from 8: the storage still counts the old 8..=10 as synced.
        assert_eq!(durable_prefix_len(&committed, 10, 7, false), 3);
        // The core may run ahead of a write the storage has not finished.
        assert_eq!(durable_prefix_len(&committed, 6, 9, false), 2);
        assert_eq!(durable_prefix_len(&committed, 9, 9, true), 0);
        assert_eq!(durable_prefix_len(&[], 9, 9, false), 0);
    }
}
