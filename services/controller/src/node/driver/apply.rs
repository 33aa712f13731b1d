//! Applying committed entries to the metadata (stopping at one this version cannot apply) and
//! answering their proposers. Which of a Ready's entries may be applied before its write is
//! decided by `dmq_raft::ReadyPlan`.

use std::time::Instant;

use dmq_proto::v1::MetadataCommand;
use dmq_raft::{Entry, EntryKind, Index};
use prost::Message as _;

use super::{Driver, Fatal};
use crate::metadata::{ApplyOutcome, features};
use crate::node::{NodeError, Unknown};

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
                // The core keeps the configuration; the driver reads it from there.
                EntryKind::Noop | EntryKind::Membership => None,
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
