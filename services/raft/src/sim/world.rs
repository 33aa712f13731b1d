//! The simulated cluster: one seeded RNG, one event queue, the run and its liveness phase.
//! The rest is split by concept: `node.rs` (a node, its Readies and the network it sends on),
//! `disk.rs` (what survives a crash, the synced index), `transfer.rs` (InstallSnapshot
//! transfers), `clients.rs` (proposals and reads), `faults.rs` (the fault injector, crashes,
//! restarts).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::checker::{self, Checker, Violation};
use super::clients::Pending;
use super::disk::Disk;
pub(super) use super::membership::MEMBERSHIP_VOTERS_MIN;
use super::node::Node;
use super::transfer::{SnapshotLinks, Transfer};
use super::{Counts, SimConfig, SimReport};
use crate::config::Config;
use crate::raft::Raft;
use crate::types::*;

/// Simulated microseconds per Raft tick.
pub(super) const TICK_US: u64 = 10_000;
pub(super) const HEARTBEAT_TICKS: u32 = 1;
pub(super) const ELECTION_MIN_TICKS: u32 = 10;
pub(super) const ELECTION_MAX_TICKS: u32 = 20;
/// After the faults stop: a leader within this long, and every pending proposal resolved
/// within twice this long.
pub(super) const LIVENESS_LEADER_US: u64 = 10 * ELECTION_MAX_TICKS as u64 * TICK_US;
pub(super) const LIVENESS_STEPS_MAX: u64 = 500_000;
/// After the faults stop: some leader must then lead without interruption for this long
/// (5 election timeouts), ...
pub(super) const STABLE_LEADER_US: u64 = 5 * ELECTION_MAX_TICKS as u64 * TICK_US;
/// ... and no more than this many new terms may begin before it does.
pub(super) const NEW_TERMS_AFTER_HEAL_MAX: u64 = 12;
/// A stalled disk (an fsync that hangs) takes this long, 1.5 to 3 election timeouts: long
/// enough for the others to elect someone else meanwhile.
pub(super) const STALL_MIN_US: u64 = 3 * ELECTION_MAX_TICKS as u64 * TICK_US / 2;
pub(super) const STALL_MAX_US: u64 = 3 * ELECTION_MAX_TICKS as u64 * TICK_US;
/// Proposals a client keeps outstanding at most.
pub(super) const PENDING_PROPOSALS_MAX: usize = 256;

pub(super) enum Kind {
    Tick(usize),
    Deliver(Message),
    PersistDone(usize, u64),
    /// Node `.0` (in life `.1`) crashes in the middle of its write.
    CrashInWrite(usize, u64),
    Propose,
    Read,
    Fault,
    Restart(usize, u64),
    Unpause(usize, u64),
    /// The transport of node `.0` (in life `.4`) reports the end of its snapshot transfer of
    /// index `.2` to `.1`, failed or ok (`.3`): [`Raft::report_snapshot`].
    SnapshotReport(usize, NodeId, Index, bool, u64),
    /// The next chunk of transfer `.2` from node `.0` to node `.1` arrives (`transfer.rs`).
    SnapshotChunk(usize, usize, u64),
    /// Transfer `.2` from node `.0` to node `.1` reaches its deadline.
    SnapshotDeadline(usize, usize, u64),
    /// An operator asks the leader for a membership change (`membership.rs`).
    Membership,
}

pub(super) struct Event {
    at_us: u64,
    seq: u64,
    kind: Kind,
}

impl PartialEq for Event {
    fn eq(&self, o: &Self) -> bool {
        (self.at_us, self.seq) == (o.at_us, o.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Event {
    /// Reversed: the heap pops the earliest event first.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at_us, o.seq).cmp(&(self.at_us, self.seq))
    }
}

/// Per-seed fault and workload profile.
pub(super) struct Profile {
    pub(super) drop_per_mille: u32,
    pub(super) dup_per_mille: u32,
    pub(super) delay_max_us: u64,
    pub(super) fault_interval_us: u64,
    pub(super) propose_interval_us: u64,
    pub(super) read_interval_us: u64,
    pub(super) persist_max_us: u64,
    pub(super) compact_every: u64,
    /// Snapshot sizes, link bandwidths and chunking (`transfer.rs`).
    pub(super) snapshots: SnapshotLinks,
    /// Of the restarts during the faults, how many (per mille) find an entry corrupt.
    pub(super) corrupt_per_mille: u32,
    /// Membership changes are asked for about this often; `None` on seeds without them.
    pub(super) membership_interval_us: Option<u64>,
}

pub(super) struct World {
    pub(super) cfg: SimConfig,
    pub(super) rng: StdRng,
    pub(super) now_us: u64,
    pub(super) seq: u64,
    pub(super) queue: BinaryHeap<Event>,
    pub(super) nodes: Vec<Node>,
    pub(super) checker: Checker,
    pub(super) profile: Profile,
    pub(super) faults_on: bool,
    pub(super) blocked: HashSet<(usize, usize)>,
    /// index -> proposals accepted at that index (term).
    pub(super) proposals: BTreeMap<Index, Vec<Pending>>,
    pub(super) proposals_pending: usize,
    pub(super) acked_max_index: Index,
    pub(super) reads: HashMap<u64, (usize, Index)>,
    pub(super) next_read_ctx: u64,
    pub(super) next_proposal: u64,
    pub(super) trace: u64,
    pub(super) steps: u64,
    // stats
    pub(super) counts: Counts,
    /// Snapshot transfers under way, by (from, to).
    pub(super) transfers: HashMap<(usize, usize), Transfer>,
    pub(super) next_transfer_id: u64,
    pub(super) acked_after_heal: u64,
    /// Nodes durably holding an acknowledged entry at least (the smallest majority any
    /// configuration of the run has; the commit-time check holds each commit to its own).
    pub(super) ack_majority: usize,
}

pub(super) type Step = Result<(), Violation>;

impl World {
    pub(super) fn new(cfg: &SimConfig) -> World {
        // Whether this seed changes membership comes from its own stream, so seeds without
        // changes draw exactly what they drew before membership changes existed.
        let mut membership_rng = StdRng::seed_from_u64(cfg.seed ^ 0x6d65_6d62_6572_7321);
        let membership_interval_us = membership_rng
            .random_bool(0.5)
            .then(|| membership_rng.random_range(2_000..=30_000));
        // With changes: two more nodes start empty, knowing no configuration (as `--join`
        // starts a controller), to be added as learners and promoted.
        let total_nodes = cfg.nodes
            + if membership_interval_us.is_some() {
                2
            } else {
                0
            };
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let small_batches = rng.random_bool(0.5);
        let profile = Profile {
            drop_per_mille: rng.random_range(0..=100),
            dup_per_mille: rng.random_range(0..=50),
            delay_max_us: rng.random_range(500..=30_000),
            fault_interval_us: rng.random_range(10_000..=200_000),
            propose_interval_us: rng.random_range(1_000..=10_000),
            read_interval_us: rng.random_range(3_000..=30_000),
            persist_max_us: rng.random_range(50..=3_000),
            compact_every: rng.random_range(5..=80),
            corrupt_per_mille: rng.random_range(0..=60),
            snapshots: SnapshotLinks::draw(&mut rng, total_nodes),
            membership_interval_us,
        };
        let mut pre_vote = rng.random_bool(0.8);
        let check_quorum = rng.random_bool(0.8);
        if membership_interval_us.is_some() && !check_quorum {
            // A removed node that never learnt of its removal campaigns on; without both
            // pre-vote and check-quorum it disrupts the cluster (thesis §4.2.3). The
            // controllers always run both.
            pre_vote = true;
        }
        let inflight = rng.random_range(1..=16);
        let voters: Vec<NodeId> = (1..=cfg.nodes as u64).collect();
        let mut nodes = Vec::new();
        for id in 1..=total_nodes as u64 {
            let bootstrap = if voters.contains(&id) {
                voters.clone()
            } else {
                Vec::new()
            };
            let mut c = Config::new(id, bootstrap);
            c.heartbeat_interval_ticks = HEARTBEAT_TICKS;
            c.election_timeout_min_ticks = ELECTION_MIN_TICKS;
            c.election_timeout_max_ticks = ELECTION_MAX_TICKS;
            c.pre_vote = pre_vote;
            c.check_quorum = check_quorum;
            c.max_inflight_appends = inflight;
            c.max_append_bytes = if small_batches {
                rng.random_range(24..=120)
            } else {
                64 * 1024
            };
            c.seed = cfg.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ id;
            c.planted_bug = cfg.planted_bug;
            let raft =
                Raft::new(c.clone(), RecoveredState::default(), 0).expect("valid sim config");
            nodes.push(Node {
                id,
                cfg: c,
                raft: Some(raft),
                disk: Disk::default(),
                generation: 0,
                persisting: None,
                inbox: VecDeque::new(),
                snapshot_reports: VecDeque::new(),
                tick_owed: false,
                paused: false,
                stall_next_us: None,
                fail_next_write: false,
                write_fails: false,
                crash_in_next_write: false,
                wiped: false,
                before_wipe: None,
                sm_applied: 0,
                sm_hash: 0,
                last_term: 0,
                last_commit: 0,
                max_sent_term: 0,
                persisted_commit: 0,
                leader_term_checked: None,
                reads: Vec::new(),
            });
        }
        let mut w = World {
            cfg: cfg.clone(),
            rng,
            now_us: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            checker: Checker::default(),
            profile,
            faults_on: true,
            blocked: HashSet::new(),
            proposals: BTreeMap::new(),
            proposals_pending: 0,
            acked_max_index: 0,
            reads: HashMap::new(),
            next_read_ctx: 1,
            next_proposal: 1,
            trace: 0,
            steps: 0,
            counts: Counts::default(),
            transfers: HashMap::new(),
            next_transfer_id: 0,
            acked_after_heal: 0,
            ack_majority: if membership_interval_us.is_some() {
                MEMBERSHIP_VOTERS_MIN / 2 + 1
            } else {
                cfg.nodes / 2 + 1
            },
        };
        for i in 0..w.nodes.len() {
            let offset = w.rng.random_range(0..TICK_US);
            w.schedule(offset, Kind::Tick(i));
        }
        let (p, r, f) = (
            w.profile.propose_interval_us,
            w.profile.read_interval_us,
            w.profile.fault_interval_us,
        );
        w.schedule(p, Kind::Propose);
        w.schedule(r, Kind::Read);
        w.schedule(f, Kind::Fault);
        if let Some(m) = membership_interval_us {
            w.schedule(m, Kind::Membership);
        }
        w
    }

    /// The nodes that are leaders now (of any term), in order.
    pub(super) fn leaders(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_leader())
            .collect()
    }

    pub(super) fn schedule(&mut self, after_us: u64, kind: Kind) {
        self.seq += 1;
        self.queue.push(Event {
            at_us: self.now_us + after_us,
            seq: self.seq,
            kind,
        });
    }

    pub(super) fn mix(&mut self, v: u64) {
        self.trace = (self.trace ^ v)
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(7);
    }

    pub(super) fn log(&self, what: impl FnOnce() -> String) {
        if self.cfg.verbose {
            eprintln!("[{:>10}us #{:>6}] {}", self.now_us, self.steps, what());
        }
    }

    pub(super) fn run(mut self) -> SimReport {
        let outcome = self.run_inner();
        SimReport {
            seed: self.cfg.seed,
            steps: self.steps,
            violation: outcome.err(),
            trace_hash: self.trace,
            counts: Counts {
                committed: self.checker.highest_applied(),
                ..self.counts
            },
        }
    }

    fn run_inner(&mut self) -> Step {
        while self.steps < self.cfg.steps {
            self.step_once()?;
        }
        self.heal()?;
        let heal_at = self.now_us;
        let pending_at_heal = self.proposals_pending;
        // Every proposal pending now is resolved (acknowledged or lost) once its index is
        // applied somewhere; applies are in order, so the highest index suffices.
        let heal_max_index = self.proposals.keys().next_back().copied().unwrap_or(0);
        self.log(|| {
            format!("faults stop; {pending_at_heal} proposals pending up to {heal_max_index}")
        });
        let mut leader_seen = false;
        let terms_at_heal = self.max_term();
        // The leader (id, term) holding since when, once there is one.
        let mut holding: Option<(NodeId, Term, u64)> = None;
        let mut stable = false;
        let limit = self.steps + LIVENESS_STEPS_MAX;
        loop {
            let new_terms = self.max_term().saturating_sub(terms_at_heal);
            if !stable && new_terms > NEW_TERMS_AFTER_HEAL_MAX {
                return Err(self.checker.violation(
                    checker::LIVENESS_STABLE,
                    format!(
                        "{new_terms} new terms began after the faults stopped (at most \
                         {NEW_TERMS_AFTER_HEAL_MAX} before a leader holds)"
                    ),
                ));
            }
            let max_term = self.max_term();
            let now_leading = self
                .member_rafts()
                .into_iter()
                .find(|r| r.role() == Role::Leader && r.term() == max_term)
                .map(|r| (r.id(), r.term()));
            holding = match (holding, now_leading) {
                (Some((id, term, since)), Some(now)) if (id, term) == now => {
                    Some((id, term, since))
                }
                (_, Some((id, term))) => Some((id, term, self.now_us)),
                (_, None) => None,
            };
            if !stable
                && holding.is_some_and(|(_, _, since)| self.now_us - since >= STABLE_LEADER_US)
            {
                stable = true;
            }
            if !leader_seen {
                leader_seen = self.member_rafts().iter().any(|r| r.role() == Role::Leader);
                if !leader_seen && self.now_us > heal_at + LIVENESS_LEADER_US {
                    return Err(self.checker.violation(
                        checker::LIVENESS_LEADER,
                        format!(
                            "no leader {} ms after the faults stopped; {}",
                            LIVENESS_LEADER_US / 1000,
                            self.describe_nodes()
                        ),
                    ));
                }
            }
            if leader_seen
                && stable
                && self.checker.highest_applied() >= heal_max_index
                && self.acked_after_heal > 0
            {
                return self.check_log_matching();
            }
            if (self.now_us > heal_at + 2 * LIVENESS_LEADER_US || self.steps > limit) && !stable {
                return Err(self.checker.violation(
                    checker::LIVENESS_STABLE,
                    format!(
                        "no leader held for {} ms within {} ms after the faults stopped \
                         ({new_terms} new terms)",
                        STABLE_LEADER_US / 1000,
                        (self.now_us - heal_at) / 1000
                    ),
                ));
            }
            if self.now_us > heal_at + 2 * LIVENESS_LEADER_US || self.steps > limit {
                return Err(self.checker.violation(
                    checker::LIVENESS_COMMIT,
                    format!(
                        "applied up to {} of {heal_max_index} pending at heal, {} acknowledged since, \
                         {} ms after the faults stopped",
                        self.checker.highest_applied(),
                        self.acked_after_heal,
                        (self.now_us - heal_at) / 1000
                    ),
                ));
            }
            self.step_once()?;
        }
    }

    /// Each node's state, for a liveness violation's detail.
    fn describe_nodes(&self) -> String {
        let parts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| match &n.raft {
                None => format!("node {}: down", n.id),
                Some(r) => format!(
                    "node {}: {:?} term {} last {} commit {} voter {} catching up {} busy {} \
                     paused {} voters {:?} learners {:?}",
                    n.id,
                    r.role(),
                    r.term(),
                    r.last_index(),
                    r.commit_index(),
                    r.is_voter(),
                    r.is_catching_up(),
                    n.busy(),
                    n.paused,
                    r.membership().voters,
                    r.membership().learners
                ),
            })
            .collect();
        parts.join("; ")
    }

    /// Log Matching, second half (§5.3): if two logs hold an entry with the same index and
    /// term, they are identical in all entries up to it. (The first half is checked on every
    /// persisted entry.)
    fn check_log_matching(&self) -> Step {
        let live: Vec<&Raft> = self.nodes.iter().filter_map(|n| n.raft.as_ref()).collect();
        for (k, a) in live.iter().enumerate() {
            for b in &live[k + 1..] {
                let lo = a
                    .snapshot_meta()
                    .last_index
                    .max(b.snapshot_meta().last_index)
                    + 1;
                let mut hi = a.last_index().min(b.last_index());
                while hi >= lo && a.term_at(hi) != b.term_at(hi) {
                    hi -= 1;
                }
                for i in lo..=hi {
                    if a.entry(i) != b.entry(i) {
                        return Err(self.checker.violation(
                            checker::LOG_MATCHING,
                            format!(
                                "nodes {} and {} agree at index {hi} but differ at {i}",
                                a.id(),
                                b.id()
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn step_once(&mut self) -> Step {
        if self.steps.is_multiple_of(500) {
            self.check_log_matching()?;
        }
        let ev = self.queue.pop().expect("ticks keep the queue non-empty");
        self.now_us = ev.at_us;
        self.steps += 1;
        self.checker.step = self.steps;
        self.mix(ev.at_us);
        match ev.kind {
            Kind::Tick(i) => {
                self.mix(1 + i as u64);
                self.schedule(TICK_US, Kind::Tick(i));
                self.on_tick(i)
            }
            Kind::Deliver(m) => {
                self.mix(100 + m.to);
                self.on_deliver(m)
            }
            Kind::PersistDone(i, generation) => {
                self.mix(200 + i as u64);
                if self.nodes[i].generation != generation {
                    return Ok(());
                }
                let plan = self.nodes[i]
                    .persisting
                    .take()
                    .expect("persist in progress");
                if std::mem::take(&mut self.nodes[i].write_fails) {
                    return self.fsync_error(i, plan);
                }
                self.complete_ready(i, plan)?;
                self.drain(i)
            }
            Kind::CrashInWrite(i, generation) => {
                self.mix(250 + i as u64);
                if self.nodes[i].generation == generation && self.nodes[i].persisting.is_some() {
                    self.crash_and_restart_later(i)?;
                }
                Ok(())
            }
            Kind::Propose => {
                self.mix(300);
                let p = self.profile.propose_interval_us;
                let next = self.rng.random_range(1..=p);
                self.schedule(next, Kind::Propose);
                self.on_propose()
            }
            Kind::Read => {
                self.mix(400);
                let r = self.profile.read_interval_us;
                let next = self.rng.random_range(1..=r);
                self.schedule(next, Kind::Read);
                self.on_read()
            }
            Kind::Fault => {
                self.mix(500);
                if self.faults_on {
                    let f = self.profile.fault_interval_us;
                    let next = self.rng.random_range(f / 2..=f * 3 / 2);
                    self.schedule(next, Kind::Fault);
                    self.inject_fault()?;
                }
                Ok(())
            }
            Kind::Restart(i, generation) => {
                self.mix(600 + i as u64);
                if self.nodes[i].raft.is_none()
                    && self.nodes[i].generation == generation
                    && !self.corrupt_at_restart(i)
                {
                    self.restart(i)?;
                }
                Ok(())
            }
            Kind::SnapshotReport(i, to, index, ok, generation) => {
                self.mix(800 + i as u64);
                let n = &mut self.nodes[i];
                if n.raft.is_some() && n.generation == generation {
                    n.snapshot_reports.push_back((to, index, ok));
                    self.drain(i)?;
                }
                Ok(())
            }
            Kind::SnapshotChunk(from, to, id) => {
                self.mix(900 + from as u64);
                self.on_snapshot_chunk(from, to, id)
            }
            Kind::SnapshotDeadline(from, to, id) => {
                self.mix(1000 + from as u64);
                self.on_snapshot_deadline(from, to, id)
            }
            Kind::Membership => {
                self.mix(1100);
                if self.faults_on
                    && let Some(m) = self.profile.membership_interval_us
                {
                    let next = self.rng.random_range(m / 2..=m * 3 / 2);
                    self.schedule(next, Kind::Membership);
                    self.on_membership()?;
                }
                Ok(())
            }
            Kind::Unpause(i, generation) => {
                self.mix(700 + i as u64);
                if self.nodes[i].paused && self.nodes[i].generation == generation {
                    self.nodes[i].paused = false;
                    self.log(|| format!("node {} resumes", i + 1));
                    self.drain(i)?;
                }
                Ok(())
            }
        }
    }
}
