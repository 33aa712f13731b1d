//! One simulated node: its Raft core, its disk and state machine, and how the world feeds it
//! (ticks, messages, completed writes) and hands out its Readies.

use std::collections::VecDeque;

use rand::Rng;

use super::checker::{self, Violation, entry_digest};
use super::disk::{Disk, Kept};
use super::world::*;
use crate::config::Config;
use crate::raft::Raft;
use crate::ready_plan::{self, ReadyPlan, Undurable};
use crate::storage::MemStorage;
use crate::types::*;

pub(super) struct Node {
    pub(super) id: NodeId,
    pub(super) cfg: Config,
    pub(super) raft: Option<Raft>,
    pub(super) disk: Disk,
    /// Bumped by every crash (and by the restart of a crashed node when the faults stop) so
    /// events of an earlier life are ignored. A pause does not bump it: a paused node is in
    /// the same life.
    pub(super) generation: u64,
    /// The plan of a Ready whose write is under way: what is left once it completes.
    pub(super) persisting: Option<ReadyPlan>,
    pub(super) inbox: VecDeque<Message>,
    /// Snapshot transfers whose end the transport reported: (to, index, ok).
    pub(super) snapshot_reports: VecDeque<(NodeId, Index, bool)>,
    pub(super) tick_owed: bool,
    pub(super) paused: bool,
    /// The next persist hangs (a stalled disk), for this long.
    pub(super) stall_next_us: Option<u64>,
    /// The next persist fails (an fsync error), and whether the one under way does.
    pub(super) fail_next_write: bool,
    pub(super) write_fails: bool,
    /// The node crashes at a random moment of its next persist that can be torn.
    pub(super) crash_in_next_write: bool,
    /// Its storage was wiped and has not yet persisted anything since: every start finds it
    /// empty and must rejoin, as the controllers decide from an empty data dir at each start.
    pub(super) wiped: bool,
    /// What its storage held before its last wipe: an entry it durably acknowledged then
    /// counted toward the majority, though the disk was lost before the leader learned of
    /// the loss (see `resolve`).
    pub(super) before_wipe: Option<MemStorage>,
    pub(super) sm_applied: Index,
    pub(super) sm_hash: u64,
    /// Within one life: the last term and commit seen.
    pub(super) last_term: Term,
    pub(super) last_commit: Index,
    /// Across lives: the highest term this node ever sent (so it must have persisted it).
    pub(super) max_sent_term: Term,
    pub(super) persisted_commit: Index,
    pub(super) leader_term_checked: Option<Term>,
    pub(super) reads: Vec<ReadState>,
}

impl Node {
    pub(super) fn is_leader(&self) -> bool {
        self.raft.as_ref().is_some_and(|r| r.role() == Role::Leader)
    }

    pub(super) fn busy(&self) -> bool {
        self.paused || self.persisting.is_some()
    }
}

impl World {
    // ----- node inputs -----

    pub(super) fn on_tick(&mut self, i: usize) -> Step {
        let n = &mut self.nodes[i];
        if n.raft.is_none() {
            return Ok(());
        }
        if n.busy() {
            n.tick_owed = true;
            return Ok(());
        }
        n.raft.as_mut().expect("live").tick();
        self.pump(i)
    }

    pub(super) fn on_deliver(&mut self, m: Message) -> Step {
        let from = (m.from - 1) as usize;
        let to = (m.to - 1) as usize;
        if self.faults_on && self.blocked.contains(&(from, to)) {
            return Ok(());
        }
        self.receive(m)
    }

    /// `m` reached its node (through the network or, for a snapshot, its last chunk).
    pub(super) fn receive(&mut self, m: Message) -> Step {
        let to = (m.to - 1) as usize;
        if matches!(m.body, MessageBody::InstallSnapshotResponse { .. }) {
            // The answer ends the transfer on the sender's side (it travels on the RPC).
            self.on_snapshot_answer(&m);
        }
        let n = &mut self.nodes[to];
        if n.raft.is_none() {
            return Ok(());
        }
        if n.busy() {
            n.inbox.push_back(m);
            return Ok(());
        }
        if self.cfg.verbose {
            self.log(|| format!("deliver {m:?}"));
        }
        let n = &mut self.nodes[to];
        n.raft.as_mut().expect("live").step(m);
        self.pump(to)
    }

    /// Feeds what piled up while the node was busy, then hands out its Readies.
    pub(super) fn drain(&mut self, i: usize) -> Step {
        loop {
            let n = &mut self.nodes[i];
            if n.raft.is_none() || n.busy() {
                return Ok(());
            }
            if n.tick_owed {
                n.tick_owed = false;
                n.raft.as_mut().expect("live").tick();
            } else if let Some((to, index, ok)) = n.snapshot_reports.pop_front() {
                n.raft
                    .as_mut()
                    .expect("live")
                    .report_snapshot(to, index, ok);
            } else if let Some(m) = n.inbox.pop_front() {
                n.raft.as_mut().expect("live").step(m);
            } else {
                return self.pump(i);
            }
            self.pump(i)?;
        }
    }

    /// Hands out Readies until the node has none or must wait for its disk. Each Ready runs
    /// as the controllers' driver runs it ([`ReadyPlan`]): its early messages leave and its
    /// durable committed entries are applied as the write starts, the rest once it completes
    /// ([`World::complete_ready`]).
    pub(super) fn pump(&mut self, i: usize) -> Step {
        loop {
            self.check_node(i)?;
            let n = &mut self.nodes[i];
            if n.busy() {
                return Ok(());
            }
            let Some(raft) = n.raft.as_mut() else {
                return Ok(());
            };
            if !raft.has_ready() {
                return Ok(());
            }
            let is_leader = raft.role() == Role::Leader;
            let stable = raft.stable_index();
            let rd = raft.ready();
            let mut plan = ReadyPlan::with_planted_bug(
                rd,
                is_leader,
                n.disk.synced_index(),
                stable,
                n.cfg.planted_bug,
            );
            let needs_disk = !plan.persist.is_empty();
            if needs_disk {
                n.disk.begin(&plan.persist);
                n.write_fails = std::mem::take(&mut n.fail_next_write);
            }
            let early = std::mem::take(&mut plan.send_before_persist);
            let early_applies = std::mem::take(&mut plan.apply_before_persist);
            if needs_disk {
                self.counts.sent_before_persist += early.len() as u64;
                self.counts.applied_before_persist += early_applies.len() as u64;
            }
            self.send_all(i, early)?;
            self.apply(i, &early_applies)?;
            if !needs_disk {
                self.complete_ready(i, plan)?;
                continue;
            }
            let delay = match self.nodes[i].stall_next_us.take() {
                Some(stall) => stall,
                None => self.rng.random_range(1..=self.profile.persist_max_us),
            };
            let generation = self.nodes[i].generation;
            self.nodes[i].persisting = Some(plan);
            self.schedule(delay, Kind::PersistDone(i, generation));
            let n = &mut self.nodes[i];
            let can_tear = n
                .persisting
                .as_ref()
                .is_some_and(|p| Kept::can_tear(&p.persist));
            if can_tear && std::mem::take(&mut n.crash_in_next_write) {
                let at = self.rng.random_range(0..delay);
                self.schedule(at, Kind::CrashInWrite(i, generation));
            }
            return Ok(());
        }
    }

    /// The per-node invariants, and election safety / leader completeness for a new leader.
    pub(super) fn check_node(&mut self, i: usize) -> Step {
        let n = &self.nodes[i];
        let Some(raft) = n.raft.as_ref() else {
            return Ok(());
        };
        let (id, term, commit, applied) =
            (n.id, raft.term(), raft.commit_index(), raft.applied_index());
        if term < n.last_term {
            return Err(self.checker.violation(
                checker::TERM_MONOTONIC,
                format!("node {id} went from term {} to {term}", n.last_term),
            ));
        }
        if commit < n.last_commit {
            return Err(self.checker.violation(
                checker::COMMIT_MONOTONIC,
                format!("node {id} commit went from {} to {commit}", n.last_commit),
            ));
        }
        if applied > commit {
            return Err(self.checker.violation(
                checker::APPLIED_LE_COMMITTED,
                format!("node {id} applied {applied} > committed {commit}"),
            ));
        }
        // A leader commits by counting replicas only entries of its own term; the earlier ones
        // commit with them (§5.4.2). Checked as it happens: the history it allows (Figure 8)
        // needs a lost append and a crash within a few milliseconds to show.
        let leading = raft.role() == Role::Leader && n.leader_term_checked == Some(term);
        if leading && commit > n.last_commit {
            self.check_commit_on_voters(i, commit)?;
        }
        let n = &self.nodes[i];
        let raft = n.raft.as_ref().expect("live");
        if leading && commit > n.last_commit && raft.term_at(commit) != Some(term) {
            return Err(self.checker.violation(
                checker::COMMIT_OWN_TERM,
                format!(
                    "node {id} leads term {term} and moved its commit from {} to {commit}, an \
                     entry of term {:?}",
                    n.last_commit,
                    raft.term_at(commit)
                ),
            ));
        }
        let new_leader = raft.role() == Role::Leader && n.leader_term_checked != Some(term);
        if new_leader {
            self.checker.leader(id, term)?;
            self.checker
                .elected_by_voters(id, term, &raft.membership().voters)?;
            let snap = raft.snapshot_meta().last_index;
            self.checker
                .leader_completeness(id, term, snap, |idx| raft.term_at(idx))?;
            self.counts.leader_changes += 1;
            self.log(|| format!("node {id} leads term {term}"));
        }
        let n = &mut self.nodes[i];
        n.last_term = term;
        n.last_commit = commit;
        if new_leader {
            n.leader_term_checked = Some(term);
        }
        Ok(())
    }

    /// The Ready's write completed: the rest of its plan runs.
    pub(super) fn complete_ready(&mut self, i: usize, plan: ReadyPlan) -> Step {
        let id = self.nodes[i].id;
        let ReadyPlan {
            persist,
            send_after_persist,
            apply_after_persist,
            read_states,
            ..
        } = plan;
        // 1. Persisted.
        self.persisted(i, &persist.entries, persist.hard_state)?;
        let n = &mut self.nodes[i];
        if !persist.is_empty() {
            n.disk.finish(&persist);
        }
        let synced = n.disk.synced_index();
        if let Err(broken) = ready_plan::check_persisted(&persist, synced) {
            return Err(self.undurable(id, broken));
        }
        let n = &mut self.nodes[i];
        if let Some(s) = &persist.snapshot {
            let (applied, hash) = decode_sm(&s.data);
            n.sm_applied = applied;
            n.sm_hash = hash;
            n.reads.clear();
            self.forget_reads_of(i);
            self.counts.snapshots_installed += 1;
            self.checker.snapshot_installed(id, applied, hash)?;
            self.log(|| format!("node {id} installs snapshot at {applied}"));
        }
        // 2. Send.
        self.send_all(i, send_after_persist)?;
        // 3. Apply.
        self.apply(i, &apply_after_persist)?;
        self.nodes[i].reads.extend(read_states);
        self.nodes[i].raft.as_mut().expect("live").advance();
        self.serve_reads(i)?;
        self.maybe_compact(i);
        Ok(())
    }

    /// `entries` and `hard_state` reach node `i`'s disk: the same index and term must mean the
    /// same entry everywhere, and the persisted commit never goes back.
    pub(super) fn persisted(
        &mut self,
        i: usize,
        entries: &[Entry],
        hard_state: Option<HardState>,
    ) -> Step {
        let id = self.nodes[i].id;
        for e in entries {
            self.checker.entry_held(id, e)?;
        }
        if let Some(hs) = hard_state {
            if hs.commit < self.nodes[i].persisted_commit {
                return Err(self.checker.violation(
                    checker::COMMIT_MONOTONIC,
                    format!(
                        "node {id} persisted commit {} after {}",
                        hs.commit, self.nodes[i].persisted_commit
                    ),
                ));
            }
            self.nodes[i].persisted_commit = hs.commit;
        }
        Ok(())
    }

    /// Applies committed entries to the node's state machine, once each and in order, and
    /// only what its disk holds durably.
    fn apply(&mut self, i: usize, entries: &[Entry]) -> Step {
        let id = self.nodes[i].id;
        if let Err(broken) = ready_plan::check_apply(entries, self.nodes[i].disk.durable_index()) {
            return Err(self.undurable(id, broken));
        }
        for e in entries {
            let n = &mut self.nodes[i];
            if e.index != n.sm_applied + 1 {
                return Err(self.checker.violation(
                    checker::APPLY_ORDER,
                    format!(
                        "node {id} applied index {} right after {}",
                        e.index, n.sm_applied
                    ),
                ));
            }
            n.sm_hash = (n.sm_hash ^ entry_digest(e)).wrapping_mul(0x0000_0100_0000_01b3);
            n.sm_applied = e.index;
            let h = n.sm_hash;
            let apply_term = self.nodes[i].raft.as_ref().expect("live").term();
            self.checker.applied(id, e, h, apply_term)?;
            self.resolve(e.index, e.term)?;
        }
        Ok(())
    }

    /// A promise about node `id`'s disk was broken (see [`ready_plan`]).
    fn undurable(&self, id: NodeId, broken: Undurable) -> Violation {
        self.checker
            .violation(broken.invariant(), format!("node {id}: {broken}"))
    }

    /// Sends what a Ready planned to send now; each message must keep its promises about the
    /// sender's disk as it stands ([`ready_plan::check_send`]).
    pub(super) fn send_all(&mut self, i: usize, msgs: Vec<Message>) -> Step {
        for m in msgs {
            let disk = &self.nodes[i].disk;
            if let Err(broken) =
                ready_plan::check_send(&m, disk.durable_index(), &disk.hard_state())
            {
                return Err(self.undurable(m.from, broken));
            }
            let pre_vote_request =
                matches!(m.body, MessageBody::RequestVote { pre_vote: true, .. });
            let pre_vote_grant = matches!(
                m.body,
                MessageBody::RequestVoteResponse { pre_vote: true, .. }
            );
            if !pre_vote_request && !pre_vote_grant {
                let n = &mut self.nodes[i];
                n.max_sent_term = n.max_sent_term.max(m.term);
            }
            if let MessageBody::RequestVoteResponse {
                pre_vote: false,
                granted: true,
            } = m.body
            {
                self.checker.vote_granted(m.from, m.term, m.to)?;
            }
            self.send(m);
        }
        Ok(())
    }

    pub(super) fn send(&mut self, m: Message) {
        let from = (m.from - 1) as usize;
        let to = (m.to - 1) as usize;
        if let MessageBody::InstallSnapshot { .. } = &m.body {
            self.start_transfer(from, m);
            return;
        }
        let mut latency = self.rng.random_range(50..=1_000);
        if self.faults_on {
            if self.blocked.contains(&(from, to)) {
                return;
            }
            if self.rng.random_range(0..1000) < self.profile.drop_per_mille {
                return;
            }
            latency += self.rng.random_range(0..=self.profile.delay_max_us);
            if self.rng.random_range(0..1000) < self.profile.dup_per_mille {
                let again = latency + self.rng.random_range(0..=self.profile.delay_max_us);
                self.schedule(again, Kind::Deliver(m.clone()));
            }
        }
        self.schedule(latency, Kind::Deliver(m));
    }

    pub(super) fn maybe_compact(&mut self, i: usize) {
        let every = self.profile.compact_every;
        let n = &mut self.nodes[i];
        let raft = n.raft.as_mut().expect("live");
        if n.sm_applied >= raft.snapshot_meta().last_index + every {
            raft.compact(n.sm_applied, encode_sm(n.sm_applied, n.sm_hash));
            n.disk.compact(raft.snapshot());
        }
    }
}

pub(super) fn encode_sm(applied: Index, hash: u64) -> Vec<u8> {
    let mut v = applied.to_le_bytes().to_vec();
    v.extend_from_slice(&hash.to_le_bytes());
    v
}

pub(super) fn decode_sm(data: &[u8]) -> (Index, u64) {
    let a = u64::from_le_bytes(data[..8].try_into().expect("16-byte sim snapshot"));
    let h = u64::from_le_bytes(data[8..16].try_into().expect("16-byte sim snapshot"));
    (a, h)
}
