//! The fault injector: partitions, crashes, restarts, pauses, lossy links, leadership
//! transfers, stalled and lost disks.

use rand::Rng;

use super::checker;
use super::node::decode_sm;
use super::world::*;
use crate::config::PlantedBug;
use crate::raft::Raft;
use crate::types::*;

impl World {
    // ----- faults -----

    pub(super) fn inject_fault(&mut self) -> Step {
        let n = self.nodes.len();
        let minority = n / 2;
        match self.rng.random_range(0..100) {
            0..=14 => {
                let x = self.rng.random_range(0..n);
                self.log(|| format!("isolate node {}", x + 1));
                for y in 0..n {
                    if y != x {
                        self.blocked.insert((x, y));
                        self.blocked.insert((y, x));
                    }
                }
            }
            15..=29 => {
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
            30..=39 => {
                let a = self.rng.random_range(0..n);
                let b = (a + self.rng.random_range(1..n)) % n;
                self.log(|| format!("one-way link: {} -/-> {}", a + 1, b + 1));
                self.blocked.insert((a, b));
            }
            40..=59 => {
                self.log(|| "heal network".to_string());
                self.blocked.clear();
            }
            60..=79 => {
                // Half the crashes hit a leader: that is where the interesting histories are.
                let leaders: Vec<usize> = (0..n)
                    .filter(|&i| {
                        self.nodes[i]
                            .raft
                            .as_ref()
                            .is_some_and(|r| r.role() == Role::Leader)
                    })
                    .collect();
                let x = if !leaders.is_empty() && self.rng.random_bool(0.5) {
                    leaders[self.rng.random_range(0..leaders.len())]
                } else {
                    self.rng.random_range(0..n)
                };
                if self.nodes[x].raft.is_some() {
                    self.crash(x);
                    let down = self.rng.random_range(1_000..=400_000);
                    let generation = self.nodes[x].generation;
                    self.schedule(down, Kind::Restart(x, generation));
                }
            }
            80..=89 => {
                let x = self.rng.random_range(0..n);
                if self.nodes[x].raft.is_some() && !self.nodes[x].paused {
                    let pause = self.rng.random_range(5_000..=300_000);
                    self.nodes[x].paused = true;
                    let generation = self.nodes[x].generation;
                    self.log(|| format!("pause node {} for {} ms", x + 1, pause / 1000));
                    self.schedule(pause, Kind::Unpause(x, generation));
                }
            }
            90..=93 => {
                self.profile.drop_per_mille = self.rng.random_range(0..=200);
                self.profile.dup_per_mille = self.rng.random_range(0..=80);
            }
            94..=96 => {
                // Leadership transfer (thesis §3.10), as a controller shutting down asks for.
                let leader = (0..n).find(|&i| {
                    self.nodes[i]
                        .raft
                        .as_ref()
                        .is_some_and(|r| r.role() == Role::Leader && !self.nodes[i].busy())
                });
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
            97 => {
                // A lost disk: the node comes back empty. One at a time, and only while every
                // other node holds its log: wiping a majority loses committed entries for real.
                let x = self.rng.random_range(0..n);
                let others_whole = (0..n).all(|y| {
                    let other = &self.nodes[y];
                    let catching_up = match &other.raft {
                        Some(r) => r.is_catching_up(),
                        None => other.disk.hard_state().catching_up,
                    };
                    y == x || (!other.wiped && !catching_up)
                });
                if others_whole {
                    if self.nodes[x].raft.is_some() {
                        self.crash(x);
                    }
                    self.wipe(x);
                    let down = self.rng.random_range(1_000..=200_000);
                    let generation = self.nodes[x].generation;
                    self.schedule(down, Kind::Restart(x, generation));
                }
            }
            _ => {
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
        }
        Ok(())
    }

    /// Loses everything the node had not persisted: its memory, its Ready in flight, its
    /// state machine (rebuilt from the snapshot and the log at restart).
    pub(super) fn crash(&mut self, i: usize) {
        self.log(|| format!("crash node {}", i + 1));
        self.counts.crashes += 1;
        let n = &mut self.nodes[i];
        n.raft = None;
        n.persisting = None;
        n.disk.crash();
        n.inbox.clear();
        n.snapshot_reports.clear();
        n.tick_owed = false;
        n.paused = false;
        n.generation += 1;
        n.reads.clear();
        n.leader_term_checked = None;
    }

    /// Loses the (crashed) node's storage and what the checker knew of its past lives.
    pub(super) fn wipe(&mut self, i: usize) {
        self.log(|| format!("wipe node {}'s disk", i + 1));
        self.counts.wipes += 1;
        let n = &mut self.nodes[i];
        n.before_wipe = Some(std::mem::take(&mut n.disk).storage().clone());
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
