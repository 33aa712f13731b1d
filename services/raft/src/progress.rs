//! What a leader knows of one follower's log, and how it sends to it.
//!
//! # To ensure correctness
//! - `match_index < next_index` always; `match_index` only grows within a term, except when the
//!   follower lost its storage ([`Progress::lost_log`]): then it starts over from nothing.
//! - In `Replicate` at most `max_inflight_appends` appends are unacknowledged; in `Probe` at most
//!   one (until the next heartbeat interval); in `Snapshot` none, and no second snapshot, until
//!   the snapshot is answered or its transfer is reported failed.

use std::collections::VecDeque;

use crate::types::Index;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProgressState {
    /// Finding the point where the logs match: one append at a time.
    Probe,
    /// Logs match up to `match_index`: stream appends optimistically (pipelining).
    Replicate,
    /// The entries it needs are compacted: a snapshot at `pending` is on its way.
    Snapshot { pending: Index },
}

#[derive(Clone, Debug)]
pub(crate) struct Progress {
    pub(crate) match_index: Index,
    pub(crate) next_index: Index,
    pub(crate) state: ProgressState,
    /// Last index of each unacknowledged append, oldest first (Replicate only).
    pub(crate) inflight: VecDeque<Index>,
    /// Probe: an append is outstanding; wait for its answer or the next heartbeat.
    pub(crate) probe_sent: bool,
    /// Heard from in the current check-quorum period.
    pub(crate) recent_active: bool,
    /// The highest heartbeat round it echoed (ReadIndex).
    pub(crate) acked_read_round: u64,
    /// After a failed snapshot transfer: ticks before another may start.
    pub(crate) snapshot_retry_ticks: u32,
    /// Heartbeats in a row that saw no progress while behind (Replicate only).
    pub(crate) stalled_heartbeats: u32,
    pub(crate) match_at_last_heartbeat: Index,
    /// The highest commit index this follower can have learnt from what we sent it.
    pub(crate) commit_sent: Index,
    /// Its last answer said it is catching up after coming back empty: it counts for nothing.
    pub(crate) catching_up: bool,
}

impl Progress {
    pub(crate) fn new(next_index: Index) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            inflight: VecDeque::new(),
            probe_sent: false,
            recent_active: false,
            acked_read_round: 0,
            snapshot_retry_ticks: 0,
            stalled_heartbeats: 0,
            match_at_last_heartbeat: 0,
            commit_sent: 0,
            catching_up: false,
        }
    }

    pub(crate) fn become_probe(&mut self) {
        if let ProgressState::Snapshot { pending } = self.state {
            self.next_index = (self.match_index + 1).max(pending + 1);
        } else {
            self.next_index = self.match_index + 1;
        }
        self.state = ProgressState::Probe;
        self.inflight.clear();
        self.probe_sent = false;
        self.stalled_heartbeats = 0;
    }

    /// The follower came back with empty storage (it answers as catching up): nothing it
    /// acknowledged before holds any more. Probe again from the end of the log; its
    /// rejections' hints lead back to where its log ends.
    pub(crate) fn lost_log(&mut self, last_index: Index) {
        self.match_index = 0;
        self.next_index = last_index + 1;
        self.state = ProgressState::Probe;
        self.inflight.clear();
        self.probe_sent = false;
        self.stalled_heartbeats = 0;
        self.match_at_last_heartbeat = 0;
        self.commit_sent = 0;
        self.catching_up = true;
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.inflight.clear();
        self.probe_sent = false;
    }

    pub(crate) fn become_snapshot(&mut self, pending: Index) {
        self.state = ProgressState::Snapshot { pending };
        self.inflight.clear();
    }

    /// Whether the window allows another append now.
    pub(crate) fn is_paused(&self, max_inflight: usize) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflight.len() >= max_inflight,
            ProgressState::Snapshot { .. } => true,
        }
    }

    /// Records an append whose last entry is `last`.
    pub(crate) fn sent_append(&mut self, last: Index) {
        match self.state {
            ProgressState::Replicate => {
                self.next_index = last + 1;
                self.inflight.push_back(last);
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot { .. } => unreachable!("append sent while snapshotting"),
        }
    }

    /// A success up to `index`. Returns whether it told us something new.
    pub(crate) fn maybe_update(&mut self, index: Index) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index + 1);
        while self.inflight.front().is_some_and(|&i| i <= index) {
            self.inflight.pop_front();
        }
        updated
    }

    /// A rejection of `rejected` (a prev_log_index) with the next index to try. Returns false
    /// when the rejection is stale (an answer to an earlier append).
    pub(crate) fn maybe_decrease_to(&mut self, rejected: Index, next: Index) -> bool {
        match self.state {
            ProgressState::Replicate => {
                if rejected <= self.match_index {
                    return false;
                }
                self.next_index = next.min(rejected).max(self.match_index + 1);
                self.state = ProgressState::Probe;
                self.inflight.clear();
                self.probe_sent = false;
                true
            }
            ProgressState::Probe => {
                if self.next_index == 0 || rejected != self.next_index - 1 {
                    return false;
                }
                self.next_index = next.min(rejected).max(self.match_index + 1);
                self.probe_sent = false;
                true
            }
            ProgressState::Snapshot { .. } => false,
        }
    }
}
