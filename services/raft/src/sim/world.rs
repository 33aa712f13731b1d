//! The simulated cluster: nodes, their disks, the network, the clients and the fault injector,
//! all driven from one seeded RNG and one event queue.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::checker::{self, Checker, Violation, entry_digest};
use super::{SimConfig, SimReport};
use crate::config::{Config, PlantedBug};
use crate::raft::{Raft, Ready};
use crate::storage::{MemStorage, Storage};
use crate::types::*;

/// Simulated microseconds per Raft tick.
const TICK_US: u64 = 10_000;
const HEARTBEAT_TICKS: u32 = 1;
const ELECTION_MIN_TICKS: u32 = 10;
const ELECTION_MAX_TICKS: u32 = 20;
/// After the faults stop: a leader within this long, and every pending proposal resolved
/// within twice this long.
const LIVENESS_LEADER_US: u64 = 10 * ELECTION_MAX_TICKS as u64 * TICK_US;
const LIVENESS_STEPS_MAX: u64 = 500_000;
/// After the faults stop: some leader must then lead without interruption for this long
/// (5 election timeouts), ...
const STABLE_LEADER_US: u64 = 5 * ELECTION_MAX_TICKS as u64 * TICK_US;
/// ... and no more than this many new terms may begin before it does.
const NEW_TERMS_AFTER_HEAL_MAX: u64 = 12;
/// A stalled disk (an fsync that hangs) takes this long, 1.5 to 3 election timeouts: long
/// enough for the others to elect someone else meanwhile.
const STALL_MIN_US: u64 = 3 * ELECTION_MAX_TICKS as u64 * TICK_US / 2;
const STALL_MAX_US: u64 = 3 * ELECTION_MAX_TICKS as u64 * TICK_US;
/// Proposals a client keeps outstanding at most.
const PENDING_PROPOSALS_MAX: usize = 256;

enum Kind {
    Tick(usize),
    Deliver(Message),
    PersistDone(usize, u64),
    Propose,
    Read,
    Fault,
    Restart(usize, u64),
    Unpause(usize, u64),
    /// The transport of node `.0` (in life `.3`) gives up on its snapshot transfer of index `.2`
    /// to `.1`, as a real one does at its deadline: [`Raft::report_snapshot`].
    SnapshotReport(usize, NodeId, Index, u64),
}

struct Event {
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

struct Node {
    id: NodeId,
    cfg: Config,
    raft: Option<Raft>,
    storage: MemStorage,
    /// Bumped by every crash and pause so events of an earlier life are ignored.
    generation: u64,
    /// A Ready being persisted, and whether its messages already left (planted bug only).
    persisting: Option<(Ready, bool)>,
    inbox: VecDeque<Message>,
    /// Snapshot transfers the transport reported failed: (to, index).
    snapshot_reports: VecDeque<(NodeId, Index)>,
    tick_owed: bool,
    paused: bool,
    /// The next persist hangs (a stalled disk), for this long.
    stall_next_us: Option<u64>,
    /// Its storage was wiped and has not yet persisted anything since: every start finds it
    /// empty and must rejoin, as the controllers decide from an empty data dir at each start.
    wiped: bool,
    /// What its storage held before its last wipe: an entry it durably acknowledged then
    /// counted toward the majority, though the disk was lost before the leader learned of
    /// the loss (see `resolve`).
    before_wipe: Option<MemStorage>,
    sm_applied: Index,
    sm_hash: u64,
    /// Within one life: the last term and commit seen.
    last_term: Term,
    last_commit: Index,
    /// Across lives: the highest term this node ever sent (so it must have persisted it).
    max_sent_term: Term,
    persisted_commit: Index,
    leader_term_checked: Option<Term>,
    reads: Vec<ReadState>,
}

impl Node {
    fn busy(&self) -> bool {
        self.paused || self.persisting.is_some()
    }
}

/// Per-seed fault and workload profile.
struct Profile {
    drop_per_mille: u32,
    dup_per_mille: u32,
    delay_max_us: u64,
    fault_interval_us: u64,
    propose_interval_us: u64,
    read_interval_us: u64,
    persist_max_us: u64,
    compact_every: u64,
}

struct Pending {
    term: Term,
}

pub(super) struct World {
    cfg: SimConfig,
    rng: StdRng,
    now_us: u64,
    seq: u64,
    queue: BinaryHeap<Event>,
    nodes: Vec<Node>,
    checker: Checker,
    profile: Profile,
    faults_on: bool,
    blocked: HashSet<(usize, usize)>,
    /// index -> proposals accepted at that index (term).
    proposals: BTreeMap<Index, Vec<Pending>>,
    proposals_pending: usize,
    acked_max_index: Index,
    reads: HashMap<u64, (usize, Index)>,
    next_read_ctx: u64,
    next_proposal: u64,
    trace: u64,
    steps: u64,
    // stats
    leader_changes: u64,
    acked: u64,
    acked_after_heal: u64,
    reads_served: u64,
    crashes: u64,
    snapshots_installed: u64,
    transfers: u64,
    stalls: u64,
    wipes: u64,
}

type Step = Result<(), Violation>;

impl World {
    pub(super) fn new(cfg: &SimConfig) -> World {
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
        };
        let pre_vote = rng.random_bool(0.8);
        let check_quorum = rng.random_bool(0.8);
        let inflight = rng.random_range(1..=16);
        let voters: Vec<NodeId> = (1..=cfg.nodes as u64).collect();
        let mut nodes = Vec::new();
        for &id in &voters {
            let mut c = Config::new(id, voters.clone());
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
                storage: MemStorage::new(),
                generation: 0,
                persisting: None,
                inbox: VecDeque::new(),
                snapshot_reports: VecDeque::new(),
                tick_owed: false,
                paused: false,
                stall_next_us: None,
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
            leader_changes: 0,
            acked: 0,
            acked_after_heal: 0,
            reads_served: 0,
            crashes: 0,
            snapshots_installed: 0,
            transfers: 0,
            stalls: 0,
            wipes: 0,
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
        w
    }

    fn schedule(&mut self, after_us: u64, kind: Kind) {
        self.seq += 1;
        self.queue.push(Event {
            at_us: self.now_us + after_us,
            seq: self.seq,
            kind,
        });
    }

    fn mix(&mut self, v: u64) {
        self.trace = (self.trace ^ v)
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(7);
    }

    fn log(&self, what: impl FnOnce() -> String) {
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
            committed: self.checker.highest_applied(),
            leader_changes: self.leader_changes,
            proposals_acked: self.acked,
            reads_served: self.reads_served,
            crashes: self.crashes,
            snapshots_installed: self.snapshots_installed,
            transfers: self.transfers,
            stalls: self.stalls,
            wipes: self.wipes,
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
            let new_terms = self.max_term() - terms_at_heal;
            if !stable && new_terms > NEW_TERMS_AFTER_HEAL_MAX {
                return Err(self.checker.violation(
                    checker::LIVENESS_STABLE,
                    format!(
                        "{new_terms} new terms began after the faults stopped (at most \
                         {NEW_TERMS_AFTER_HEAL_MAX} before a leader holds)"
                    ),
                ));
            }
            let now_leading = self.nodes.iter().find_map(|n| {
                n.raft
                    .as_ref()
                    .filter(|r| r.role() == Role::Leader && r.term() == self.max_term())
                    .map(|r| (r.id(), r.term()))
            });
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
                leader_seen = self
                    .nodes
                    .iter()
                    .any(|n| n.raft.as_ref().is_some_and(|r| r.role() == Role::Leader));
                if !leader_seen && self.now_us > heal_at + LIVENESS_LEADER_US {
                    return Err(self.checker.violation(
                        checker::LIVENESS_LEADER,
                        format!(
                            "no leader {} ms after the faults stopped",
                            LIVENESS_LEADER_US / 1000
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
                let (rd, sent) = self.nodes[i]
                    .persisting
                    .take()
                    .expect("persist in progress");
                self.complete_ready(i, rd, sent)?;
                self.drain(i)
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
                if self.nodes[i].raft.is_none() && self.nodes[i].generation == generation {
                    self.restart(i)?;
                }
                Ok(())
            }
            Kind::SnapshotReport(i, to, index, generation) => {
                self.mix(800 + i as u64);
                let n = &mut self.nodes[i];
                if n.raft.is_some() && n.generation == generation {
                    n.snapshot_reports.push_back((to, index));
                    self.drain(i)?;
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

    // ----- node inputs -----

    fn on_tick(&mut self, i: usize) -> Step {
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

    fn on_deliver(&mut self, m: Message) -> Step {
        let from = (m.from - 1) as usize;
        let to = (m.to - 1) as usize;
        if self.faults_on && self.blocked.contains(&(from, to)) {
            return Ok(());
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
    fn drain(&mut self, i: usize) -> Step {
        loop {
            let n = &mut self.nodes[i];
            if n.raft.is_none() || n.busy() {
                return Ok(());
            }
            if n.tick_owed {
                n.tick_owed = false;
                n.raft.as_mut().expect("live").tick();
            } else if let Some((to, index)) = n.snapshot_reports.pop_front() {
                // Reported failed whether or not the answer got through: a late report after
                // a success changes nothing (the transfer is no longer pending).
                n.raft
                    .as_mut()
                    .expect("live")
                    .report_snapshot(to, index, false);
            } else if let Some(m) = n.inbox.pop_front() {
                n.raft.as_mut().expect("live").step(m);
            } else {
                return self.pump(i);
            }
            self.pump(i)?;
        }
    }

    /// Hands out Readies until the node has none or must wait for its disk.
    fn pump(&mut self, i: usize) -> Step {
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
            let rd = raft.ready();
            let needs_disk =
                rd.hard_state.is_some() || !rd.entries.is_empty() || rd.snapshot.is_some();
            if !needs_disk {
                self.complete_ready(i, rd, false)?;
                continue;
            }
            let ack_before_flush =
                self.nodes[i].cfg.planted_bug == Some(PlantedBug::AckBeforeFlush);
            let mut rd = rd;
            if ack_before_flush {
                let msgs = std::mem::take(&mut rd.messages);
                self.send_all(i, msgs)?;
            }
            let delay = match self.nodes[i].stall_next_us.take() {
                Some(stall) => stall,
                None => self.rng.random_range(1..=self.profile.persist_max_us),
            };
            let generation = self.nodes[i].generation;
            self.nodes[i].persisting = Some((rd, ack_before_flush));
            self.schedule(delay, Kind::PersistDone(i, generation));
            return Ok(());
        }
    }

    /// The per-node invariants, and election safety / leader completeness for a new leader.
    fn check_node(&mut self, i: usize) -> Step {
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
        let new_leader = raft.role() == Role::Leader && n.leader_term_checked != Some(term);
        if new_leader {
            self.checker.leader(id, term)?;
            let snap = raft.snapshot_meta().last_index;
            self.checker
                .leader_completeness(id, term, snap, |idx| raft.term_at(idx))?;
            self.leader_changes += 1;
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

    fn complete_ready(&mut self, i: usize, rd: Ready, messages_sent: bool) -> Step {
        let id = self.nodes[i].id;
        // 1. Persist.
        for e in &rd.entries {
            self.checker.entry_held(id, e)?;
        }
        if let Some(hs) = rd.hard_state {
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
        let n = &mut self.nodes[i];
        let _ = n
            .storage
            .persist(rd.snapshot.as_ref(), &rd.entries, rd.hard_state.as_ref());
        if let Some(s) = &rd.snapshot {
            let (applied, hash) = decode_sm(&s.data);
            n.sm_applied = applied;
            n.sm_hash = hash;
            n.reads.clear();
            self.snapshots_installed += 1;
            self.checker.snapshot_installed(id, applied, hash)?;
            self.log(|| format!("node {id} installs snapshot at {applied}"));
        }
        // 2. Send.
        if !messages_sent {
            self.send_all(i, rd.messages)?;
        }
        // 3. Apply.
        for e in &rd.committed_entries {
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
        self.nodes[i].reads.extend(rd.read_states);
        self.nodes[i].raft.as_mut().expect("live").advance();
        self.serve_reads(i)?;
        self.maybe_compact(i);
        Ok(())
    }

    fn send_all(&mut self, i: usize, msgs: Vec<Message>) -> Step {
        for m in msgs {
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

    fn send(&mut self, m: Message) {
        let from = (m.from - 1) as usize;
        let to = (m.to - 1) as usize;
        if let MessageBody::InstallSnapshot { snapshot } = &m.body {
            // The transfer's deadline: past the longest delivery and answer.
            let deadline = 2 * (1_000 + self.profile.delay_max_us) + TICK_US;
            let generation = self.nodes[from].generation;
            self.schedule(
                deadline,
                Kind::SnapshotReport(from, m.to, snapshot.meta.last_index, generation),
            );
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

    fn serve_reads(&mut self, i: usize) -> Step {
        let n = &mut self.nodes[i];
        let applied = n.sm_applied;
        let ready: Vec<ReadState> = n
            .reads
            .iter()
            .copied()
            .filter(|r| r.index <= applied)
            .collect();
        n.reads.retain(|r| r.index > applied);
        for r in ready {
            if let Some((_, acked_at_issue)) = self.reads.remove(&r.ctx) {
                if r.index < acked_at_issue {
                    return Err(self.checker.violation(
                        checker::LINEARIZABLE_READ,
                        format!(
                            "node {} served read {} at index {} but index {acked_at_issue} was \
                             acknowledged before the read began",
                            i + 1,
                            r.ctx,
                            r.index
                        ),
                    ));
                }
                self.reads_served += 1;
            }
        }
        Ok(())
    }

    fn maybe_compact(&mut self, i: usize) {
        let every = self.profile.compact_every;
        let n = &mut self.nodes[i];
        let raft = n.raft.as_mut().expect("live");
        if n.sm_applied >= raft.snapshot_meta().last_index + every {
            raft.compact(n.sm_applied, encode_sm(n.sm_applied, n.sm_hash));
            let _ = n.storage.compact(raft.snapshot());
        }
    }

    /// Index `index` was applied with `term`: proposals there are acknowledged or lost.
    fn resolve(&mut self, index: Index, term: Term) -> Step {
        let Some(list) = self.proposals.remove(&index) else {
            return Ok(());
        };
        self.proposals_pending -= list.len();
        for p in list {
            if p.term != term {
                continue; // lost: overwritten by another leader's entry, the client retries
            }
            // A node counts if its disk holds the entry, or held it before the disk was lost:
            // a leader cannot tell a lost disk from a slow one until the node answers again,
            // and one lost disk at a time is safe because the node cannot vote until it holds
            // what its leader committed (state machine safety and leader completeness check
            // that).
            let holds = |s: &MemStorage| {
                s.snapshot_index() >= index || s.entry(index).is_some_and(|e| e.term == term)
            };
            let durable = self
                .nodes
                .iter()
                .filter(|n| holds(&n.storage) || n.before_wipe.as_ref().is_some_and(holds))
                .count();
            if durable < self.nodes.len() / 2 + 1 {
                return Err(self.checker.violation(
                    checker::ACK_DURABLE,
                    format!("entry {index} (term {term}) acknowledged while durable on {durable} node(s)"),
                ));
            }
            self.acked += 1;
            if !self.faults_on {
                self.acked_after_heal += 1;
            }
            self.acked_max_index = self.acked_max_index.max(index);
        }
        Ok(())
    }

    // ----- clients -----

    fn pick_leader(&mut self) -> Option<usize> {
        let leaders: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i]
                    .raft
                    .as_ref()
                    .is_some_and(|r| r.role() == Role::Leader)
            })
            .collect();
        if !leaders.is_empty() && self.rng.random_bool(0.9) {
            let k = self.rng.random_range(0..leaders.len());
            Some(leaders[k])
        } else {
            let k = self.rng.random_range(0..self.nodes.len());
            Some(k)
        }
    }

    fn on_propose(&mut self) -> Step {
        // After the faults stop the client keeps proposing regardless, so that proposals lost
        // beyond a new leader's log are resolved once the log grows past them.
        if self.faults_on && self.proposals_pending >= PENDING_PROPOSALS_MAX {
            return Ok(());
        }
        let Some(i) = self.pick_leader() else {
            return Ok(());
        };
        let n = &mut self.nodes[i];
        if n.busy() {
            return Ok(());
        }
        let Some(raft) = n.raft.as_mut() else {
            return Ok(());
        };
        let id = self.next_proposal;
        if let Ok((index, term)) = raft.propose(id.to_le_bytes().to_vec()) {
            self.next_proposal += 1;
            self.proposals
                .entry(index)
                .or_default()
                .push(Pending { term });
            self.proposals_pending += 1;
            self.log(|| {
                format!(
                    "node {} accepts proposal {id} at {index} term {term}",
                    i + 1
                )
            });
        }
        self.pump(i)
    }

    fn on_read(&mut self) -> Step {
        let Some(i) = self.pick_leader() else {
            return Ok(());
        };
        let n = &mut self.nodes[i];
        if n.busy() || self.reads.len() > 64 {
            return Ok(());
        }
        let Some(raft) = n.raft.as_mut() else {
            return Ok(());
        };
        let ctx = self.next_read_ctx;
        if raft.read_index(ctx).is_ok() {
            self.next_read_ctx += 1;
            self.reads.insert(ctx, (i, self.acked_max_index));
        }
        self.pump(i)
    }

    /// The highest term any live node is in.
    fn max_term(&self) -> Term {
        self.nodes
            .iter()
            .filter_map(|n| n.raft.as_ref().map(Raft::term))
            .max()
            .unwrap_or(0)
    }

    // ----- faults -----

    fn inject_fault(&mut self) -> Step {
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
                        self.transfers += 1;
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
                        None => other.storage.hard_state().catching_up,
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
                self.stalls += 1;
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
    fn crash(&mut self, i: usize) {
        self.log(|| format!("crash node {}", i + 1));
        self.crashes += 1;
        let n = &mut self.nodes[i];
        n.raft = None;
        n.persisting = None;
        n.inbox.clear();
        n.snapshot_reports.clear();
        n.tick_owed = false;
        n.paused = false;
        n.generation += 1;
        n.reads.clear();
        n.leader_term_checked = None;
    }

    /// Loses the (crashed) node's storage and what the checker knew of its past lives.
    fn wipe(&mut self, i: usize) {
        self.log(|| format!("wipe node {}'s disk", i + 1));
        self.wipes += 1;
        let n = &mut self.nodes[i];
        n.before_wipe = Some(std::mem::replace(&mut n.storage, MemStorage::new()));
        n.wiped = true;
        n.max_sent_term = 0;
        n.persisted_commit = 0;
        n.sm_applied = 0;
        n.sm_hash = 0;
    }

    fn restart(&mut self, i: usize) -> Step {
        let n = &mut self.nodes[i];
        let recovered = n.storage.recover().unwrap_or_else(|e| match e {});
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

    fn heal(&mut self) -> Step {
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

fn encode_sm(applied: Index, hash: u64) -> Vec<u8> {
    let mut v = applied.to_le_bytes().to_vec();
    v.extend_from_slice(&hash.to_le_bytes());
    v
}

fn decode_sm(data: &[u8]) -> (Index, u64) {
    let a = u64::from_le_bytes(data[..8].try_into().expect("16-byte sim snapshot"));
    let h = u64::from_le_bytes(data[8..16].try_into().expect("16-byte sim snapshot"));
    (a, h)
}
