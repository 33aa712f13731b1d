//! The fault injector: partitions, crashes (with their writes in flight torn), restarts (with
//! storage found corrupt), pauses, lossy links, leadership transfers, stalled, failing and
//! lost disks.

use rand::Rng;

use super::checker;
use super::disk::Kept;
use super::node::decode_sm;
use super::world::*;
use crate::config::PlantedBug;
use crate::raft::Raft;
use crate::ready_plan::{Persist, ReadyPlan};
use crate::types::*;

impl World {
    // ----- faults -----

    pub(super) fn inject_fault(&mut self) -> Step {
        let n = self.nodes.len();
        let minority = n / 2;
        match self.rng.random_range(0..1000) {
            0..150 => {
                let x = self.rng.random_range(0..n);
                self.log(|| format!("isolate node {}", x + 1));
                for y in 0..n {
                    if y != x {
                        self.blocked.insert((x, y));
                        self.blocked.insert((y, x));
                    }
                }
            }
            150..300 => {
                // A majority|minority split: 2|1 of three, 3|2 of five.
                let mut order: Vec<usize> = (0..n).collect();
                for k in (1..n).rev() {
                    let j = self.rng.random_range(0..=k);
                    order.swap(k, j);
                }
                let (small, big) = order.split_at(minority);
                self.log(|| format!("split {small:?} | {big:?}"));
                for &a in small {
                    for &b in big {
                        self.blocked.insert((a, b));
                        self.blocked.insert((b, a));
                    }
                }
            }
            300..400 => {
                let a = self.rng.random_range(0..n);
                let b = (a + self.rng.random_range(1..n)) % n;
                self.log(|| format!("one-way link: {} -/-> {}", a + 1, b + 1));
                self.blocked.insert((a, b));
            }
            400..585 => {
                self.log(|| "heal network".to_string());
                self.blocked.clear();
            }
            585..785 => {
                // Half the crashes hit a leader: that is where the interesting histories are.
                let leaders = self.leaders();
                let x = if !leaders.is_empty() && self.rng.random_bool(0.5) {
                    leaders[self.rng.random_range(0..leaders.len())]
                } else {
                    self.rng.random_range(0..n)
                };
                if self.nodes[x].raft.is_some() && self.rng.random_bool(0.25) {
                    // Power lost in the middle of an fsync: where torn writes come from.
                    self.log(|| format!("node {} will crash during its next disk write", x + 1));
                    self.nodes[x].crash_in_next_write = true;
                } else if self.nodes[x].raft.is_some() {
                    self.crash_and_restart_later(x)?;
                }
            }
            785..885 => {
                let x = self.rng.random_range(0..n);
                if self.nodes[x].raft.is_some() && !self.nodes[x].paused {
                    let pause = self.rng.random_range(5_000..=300_000);
                    self.nodes[x].paused = true;
                    let generation = self.nodes[x].generation;
                    self.log(|| format!("pause node {} for {} ms", x + 1, pause / 1000));
                    self.schedule(pause, Kind::Unpause(x, generation));
                }
            }
            885..925 => {
                self.profile.drop_per_mille = self.rng.random_range(0..=200);
                self.profile.dup_per_mille = self.rng.random_range(0..=80);
            }
            925..955 => {
                // Leadership transfer (thesis §3.10), as a controller shutting down asks for.
                let leader = (0..n).find(|&i| self.nodes[i].is_leader() && !self.nodes[i].busy());
                if let Some(x) = leader {
                    let to = self.nodes[(x + self.rng.random_range(1..n)) % n].id;
                    let raft = self.nodes[x].raft.as_mut().expect("leading");
                    if raft.transfer_leadership(to).is_ok() {
                        self.counts.transfers += 1;
                        self.log(|| format!("node {} transfers leadership to {to}", x + 1));
                        self.pump(x)?;
                    }
                }
            }
            955..965 => {
                // A lost disk: the node comes back empty.
                let x = self.rng.random_range(0..n);
                if self.may_wipe(x) {
                    if self.nodes[x].raft.is_some() {
                        self.crash(x, false)?;
                    }
                    self.wipe(x);
                    self.restart_later(x, 200_000);
                }
            }
            965..985 => {
                let x = self.rng.random_range(0..n);
                let stall = self.rng.random_range(STALL_MIN_US..=STALL_MAX_US);
                self.counts.stalls += 1;
                self.log(|| {
                    format!(
                        "node {}'s next disk write stalls {} ms",
                        x + 1,
                        stall / 1000
                    )
                });
                self.nodes[x].stall_next_us = Some(stall);
            }
            _ => {
                let x = self.rng.random_range(0..n);
                self.log(|| format!("node {}'s next disk write fails", x + 1));
                self.nodes[x].fail_next_write = true;
            }
        }
        Ok(())
    }

    /// Whether node `x`'s disk may be lost (wiped, or found corrupt and wiped by the operator):
    /// one at a time, and only while every other node holds its log, since losing a majority's
    /// disks loses committed entries for real.
    pub(super) fn may_wipe(&self, x: usize) -> bool {
        // With membership changes, "the others hold its log" must mean the other voters: a
        // node just demoted or removed may be the only other one holding the latest commits,
        // and it does not vote for them. So every other voter of the cluster's configuration
        // must have committed what any node has.
        if self.profile.membership_interval_us.is_some() {
            let commit_of = |n: &super::node::Node| match &n.raft {
                Some(r) => r.commit_index(),
                None => n.disk.hard_state().commit,
            };
            let max_commit = self.nodes.iter().map(commit_of).max().unwrap_or(0);
            let Some(members) = self.cluster_membership() else {
                return false;
            };
            let voters_caught_up = self
                .nodes
                .iter()
                .enumerate()
                .filter(|&(y, n)| y != x && members.is_voter(n.id))
                .all(|(_, n)| commit_of(n) >= max_commit);
            if !voters_caught_up {
                return false;
            }
        }
        (0..self.nodes.len()).all(|y| {
            let other = &self.nodes[y];
            let catching_up = match &other.raft {
                Some(r) => r.is_catching_up(),
                None => other.disk.hard_state().catching_up,
            };
            y == x || (!other.wiped && !catching_up)
        })
    }

    /// Loses everything the node had not persisted: its memory, its state machine (rebuilt
    /// from the snapshot and the log at restart) and, unless `tear`, its write in flight. With
    /// `tear` that write may have reached the disk in part or whole before the crash.
    pub(super) fn crash(&mut self, i: usize, tear: bool) -> Step {
        self.log(|| format!("crash node {}", i + 1));
        self.counts.crashes += 1;
        let in_flight = self.nodes[i].persisting.take();
        match in_flight {
            Some(plan) if tear => {
                self.lose_write(i, &plan.persist, |kept| {
                    format!("node {}'s write in flight at the crash: {kept}", i + 1)
                })?;
            }
            _ => self.nodes[i].disk.crash(),
        }
        self.drop_transfers_from(i);
        let n = &mut self.nodes[i];
        n.raft = None;
        n.write_fails = false;
        n.crash_in_next_write = false;
        n.inbox.clear();
        n.snapshot_reports.clear();
        n.tick_owed = false;
        n.paused = false;
        n.generation += 1;
        n.reads.clear();
        n.leader_term_checked = None;
        self.forget_reads_of(i);
        Ok(())
    }

    /// Crashes node `x` (tearing its write in flight, if any) and restarts it a moment later.
    pub(super) fn crash_and_restart_later(&mut self, x: usize) -> Step {
        self.crash(x, true)?;
        self.restart_later(x, 400_000);
        Ok(())
    }

    /// Schedules the restart of the (crashed) node `x` in its current life, 1 ms to
    /// `max_down_us` from now.
    fn restart_later(&mut self, x: usize, max_down_us: u64) {
        let down = self.rng.random_range(1_000..=max_down_us);
        let generation = self.nodes[x].generation;
        self.schedule(down, Kind::Restart(x, generation));
    }

    /// The node's write failed (an fsync error): the controllers stop the node
    /// (`Fatal::Storage`), and what the write left on disk is unknown. It restarts later.
    pub(super) fn fsync_error(&mut self, i: usize, plan: ReadyPlan) -> Step {
        self.counts.fsync_errors += 1;
        self.lose_write(i, &plan.persist, |kept| {
            format!(
                "node {}'s disk write fails (fsync error), {kept}: the node stops",
                i + 1
            )
        })?;
        self.crash(i, false)?;
        self.restart_later(i, 400_000);
        Ok(())
    }

    /// A write of node `i` that did not complete (a crash during it, or an fsync error): draws
    /// how much of it reached the disk, logs that with `say` (given the description), counts a
    /// part as a torn write and keeps it.
    fn lose_write(&mut self, i: usize, p: &Persist, say: impl FnOnce(String) -> String) -> Step {
        let kept = Kept::draw(&mut self.rng, p);
        self.log(|| say(kept.describe(p)));
        if matches!(kept, Kept::Prefix(_)) {
            self.counts.torn_writes += 1;
        }
        self.keep_part(i, p, kept)
    }

    /// `kept` of a write that did not complete reaches node `i`'s disk.
    fn keep_part(&mut self, i: usize, p: &Persist, kept: Kept) -> Step {
        let (entries, hard_state) = match kept {
            Kept::Nothing => (&p.entries[..0], None),
            Kept::Prefix(k) => (&p.entries[..k], p.hard_state),
            Kept::All => (&p.entries[..], p.hard_state),
        };
        self.persisted(i, entries, hard_state)?;
        let n = &mut self.nodes[i];
        n.disk.keep(p, kept);
        // A part keeps the hard state with a prefix of the entries, so its commit may lie past
        // the stored log: a restart clamps it to the last stored entry, and so does the check
        // that the persisted commit never goes back.
        n.persisted_commit = n.persisted_commit.min(n.disk.synced_index());
        Ok(())
    }

    /// A restart finds the node's storage corrupt (sometimes, during the faults): like
    /// `SledStorage::open`, it refuses to start, and the operator follows the README and wipes
    /// its data dir, so the node rejoins empty a moment later. Only where a wipe is allowed
    /// (see [`World::may_wipe`]); elsewhere the storage is found sound.
    pub(super) fn corrupt_at_restart(&mut self, i: usize) -> bool {
        let stored = self.nodes[i].disk.recover().entries;
        if !self.faults_on
            || stored.is_empty()
            || self.rng.random_range(0..1000) >= self.profile.corrupt_per_mille
            || !self.may_wipe(i)
        {
            return false;
        }
        let bad = stored[self.rng.random_range(0..stored.len())].index;
        self.counts.corruptions += 1;
        self.log(|| {
            format!(
                "node {} refuses to start: its entry {bad} is corrupt; the operator wipes its \
                 data dir",
                i + 1
            )
        });
        self.wipe(i);
        self.restart_later(i, 200_000);
        true
    }

    /// Loses the (crashed) node's storage and what the checker knew of its past lives.
    pub(super) fn wipe(&mut self, i: usize) {
        self.log(|| format!("wipe node {}'s disk", i + 1));
        self.counts.wipes += 1;
        let n = &mut self.nodes[i];
        n.before_wipe = Some(std::mem::take(&mut n.disk).into_storage());
        n.wiped = true;
        n.max_sent_term = 0;
        n.persisted_commit = 0;
        n.sm_applied = 0;
        n.sm_hash = 0;
    }

    pub(super) fn restart(&mut self, i: usize) -> Step {
        let n = &mut self.nodes[i];
        let recovered = n.disk.recover();
        let id = n.id;
        if recovered.hard_state.term < n.max_sent_term {
            return Err(self.checker.violation(
                checker::TERM_MONOTONIC,
                format!(
                    "node {id} restarted at term {} after sending messages in term {}",
                    recovered.hard_state.term, n.max_sent_term
                ),
            ));
        }
        let (applied, hash) = recovered
            .snapshot
            .as_ref()
            .map_or((0, 0), |s| decode_sm(&s.data));
        n.sm_applied = applied;
        n.sm_hash = hash;
        let empty = recovered.hard_state == HardState::default()
            && recovered.snapshot.is_none()
            && recovered.entries.is_empty();
        n.wiped &= empty;
        let mut raft = Raft::new(n.cfg.clone(), recovered, applied).expect("valid sim config");
        if n.wiped && n.cfg.planted_bug != Some(PlantedBug::WipedNodeVotesAtOnce) {
            raft.rejoin();
        }
        n.last_term = raft.term();
        n.last_commit = raft.commit_index();
        n.raft = Some(raft);
        self.log(|| format!("restart node {id}"));
        self.pump(i)
    }

    pub(super) fn heal(&mut self) -> Step {
        self.faults_on = false;
        self.blocked.clear();
        for n in &mut self.nodes {
            n.stall_next_us = None;
            // A write under way that was to fail completes: the faults have stopped.
            n.fail_next_write = false;
            n.write_fails = false;
            n.crash_in_next_write = false;
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].raft.is_none() {
                self.nodes[i].generation += 1;
                self.restart(i)?;
            } else if self.nodes[i].paused {
                self.nodes[i].paused = false;
                self.drain(i)?;
            }
        }
        Ok(())
    }
}
