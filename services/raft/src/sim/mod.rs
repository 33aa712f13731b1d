//! A deterministic simulator: a whole 3- or 5-node cluster in one thread, driven by one seed.
//!
//! Simulated time advances by events (ticks, message deliveries, completed disk writes, client
//! proposals and reads, faults). Each node handles its Readies as the controllers' driver does,
//! through the same [`crate::ReadyPlan`]: a leader's appends leave as its write starts and
//! committed entries already durable are applied then, the rest once the write completes; its
//! disk reports the synced index as the controllers' sled storage does (`disk.rs`).
//!
//! Faults, drawn per seed (`faults.rs`), each counted in [`Counts`]:
//! - the network: message drop, duplication, reordering and delay; partitions (one node
//!   isolated, majority|minority splits, one-way links); InstallSnapshot transfers that take
//!   the time their (simulated) size needs on their link's bandwidth, drawn per seed so that
//!   on some seeds a transfer takes several election timeouts, in chunks any of which can be
//!   lost, given up at a deadline that grows with the size, one per follower at a time, each
//!   end reported to the sender's core (`transfer.rs`);
//! - nodes: crashes that lose everything not yet persisted, restarts, pauses, leadership
//!   transfers;
//! - disks: writes that stall for 1.5 to 3 election timeouts; lost disks (the node comes back
//!   empty and must rejoin, one at a time, only while every other node holds its log);
//!   fsync errors (the write fails, the node stops as the controllers do on a storage error,
//!   and none, a prefix or all of the write is on disk when it restarts); torn writes (a crash,
//!   sometimes planted in the middle of a write, leaves a prefix of it on disk); entries found
//!   corrupt at restart (the node refuses to start, as `SledStorage::open` does, and is wiped
//!   as the README tells the operator, so it rejoins empty; only where a lost disk is allowed).
//! - membership (half the seeds, `membership.rs`): two more nodes start knowing no
//!   configuration, and the leader is asked now and then for one step (add a learner, promote
//!   one, demote or remove a voter, the leader included, drop a learner).
//!
//! After every step the [`checker`] verifies the safety invariants, and every message sent
//! and entry applied is checked against the sender's disk with the plan's checks (no ack of
//! what is not durable, no vote before it is persisted, nothing applied that is not durable).
//! Once the fault phase ends, the network heals and liveness is required: a leader within 10
//! election timeouts, one that then holds, and every pending proposal resolved. The same seed
//! always produces the same run (its trace hash is reported).

pub mod checker;
mod clients;
mod disk;
mod faults;
mod membership;
mod node;
mod transfer;
mod world;

pub use checker::Violation;

use crate::config::PlantedBug;

/// One simulated run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    /// 3 or 5.
    pub nodes: usize,
    /// Steps of the fault phase; the liveness phase that follows adds its own.
    pub steps: u64,
    pub planted_bug: Option<PlantedBug>,
    /// Print every event to stderr (for replaying a failing seed).
    pub verbose: bool,
}

impl SimConfig {
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            nodes: 3,
            steps: 5_000,
            planted_bug: None,
            verbose: false,
        }
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        let bug = self
            .planted_bug
            .map(|b| format!(" --bug {}", b.name()))
            .unwrap_or_default();
        format!(
            "cargo run --release -p dmq-raft --bin raft-sim -- --seed {} --nodes {} --steps {}{} --verbose",
            self.seed, self.nodes, self.steps, bug
        )
    }
}

/// How often each thing happened in a run (or, summed, in a sweep).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// The highest index applied anywhere.
    pub committed: u64,
    pub leader_changes: u64,
    pub proposals_acked: u64,
    pub reads_served: u64,
    pub snapshots_installed: u64,
    /// Messages sent and entries applied before their Ready's write completed, as
    /// [`crate::ReadyPlan`] allows (a leader's appends, entries durable already).
    pub sent_before_persist: u64,
    pub applied_before_persist: u64,
    // Faults.
    pub crashes: u64,
    /// Leadership transfers started.
    pub transfers: u64,
    /// Disk writes stalled past an election timeout.
    pub stalls: u64,
    /// Disks lost.
    pub wipes: u64,
    /// Disk writes that failed (the node stops, part of the write may be on disk).
    pub fsync_errors: u64,
    /// Crashes and failed writes (fsync errors) that left a part (not all) of the write on
    /// disk.
    pub torn_writes: u64,
    /// Restarts refused on a corrupt entry (the node is then wiped and rejoins).
    pub corruptions: u64,
    /// InstallSnapshot transfers started, those whose bytes take longer than an election
    /// timeout on their link, and those failed by a lost chunk or at their deadline.
    pub snapshot_transfers: u64,
    pub slow_snapshot_transfers: u64,
    pub snapshot_chunks_lost: u64,
    pub snapshot_deadlines_missed: u64,
    /// Membership changes appended, and those that removed the leader itself.
    pub membership_changes: u64,
    pub leader_removals: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        let Counts {
            committed,
            leader_changes,
            proposals_acked,
            reads_served,
            snapshots_installed,
            sent_before_persist,
            applied_before_persist,
            crashes,
            transfers,
            stalls,
            wipes,
            fsync_errors,
            torn_writes,
            corruptions,
            snapshot_transfers,
            slow_snapshot_transfers,
            snapshot_chunks_lost,
            snapshot_deadlines_missed,
            membership_changes,
            leader_removals,
        } = *o;
        self.committed += committed;
        self.leader_changes += leader_changes;
        self.proposals_acked += proposals_acked;
        self.reads_served += reads_served;
        self.snapshots_installed += snapshots_installed;
        self.sent_before_persist += sent_before_persist;
        self.applied_before_persist += applied_before_persist;
        self.crashes += crashes;
        self.transfers += transfers;
        self.stalls += stalls;
        self.wipes += wipes;
        self.fsync_errors += fsync_errors;
        self.torn_writes += torn_writes;
        self.corruptions += corruptions;
        self.snapshot_transfers += snapshot_transfers;
        self.slow_snapshot_transfers += slow_snapshot_transfers;
        self.snapshot_chunks_lost += snapshot_chunks_lost;
        self.snapshot_deadlines_missed += snapshot_deadlines_missed;
        self.membership_changes += membership_changes;
        self.leader_removals += leader_removals;
    }
}

/// What one run did.
#[derive(Clone, Debug)]
pub struct SimReport {
    pub seed: u64,
    pub steps: u64,
    pub violation: Option<Violation>,
    /// A hash over every event: equal for equal seeds.
    pub trace_hash: u64,
    pub counts: Counts,
}

/// Runs one seed to the end (or the first violation).
pub fn run(cfg: &SimConfig) -> SimReport {
    assert!(
        cfg.nodes == 3 || cfg.nodes == 5,
        "the simulator runs 3 or 5 nodes"
    );
    world::World::new(cfg).run()
}

/// Runs one seed and turns a panic of the core (a failed internal assertion) into a violation,
/// so a sweep reports it with its seed like any other.
pub fn run_catching(cfg: &SimConfig) -> SimReport {
    match std::panic::catch_unwind(|| run(cfg)) {
        Ok(report) => report,
        Err(panic) => {
            let detail = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            SimReport {
                seed: cfg.seed,
                steps: 0,
                violation: Some(Violation {
                    invariant: "core assertion",
                    detail,
                    step: 0,
                }),
                trace_hash: 0,
                counts: Counts::default(),
            }
        }
    }
}

/// What a sweep over many seeds found.
#[derive(Clone, Debug, Default)]
pub struct SweepSummary {
    pub seeds_run: u64,
    pub steps: u64,
    pub counts: Counts,
    /// The first violation of each failing seed, with its config (for the replay command).
    pub failures: Vec<(SimConfig, Violation)>,
}

/// Runs seeds `first..first + count` on `threads` threads. With `stop_at_first`, workers stop
/// once any seed fails (used to show a planted bug is caught).
pub fn sweep(
    template: &SimConfig,
    first: u64,
    count: u64,
    threads: usize,
    stop_at_first: bool,
) -> SweepSummary {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let next = AtomicU64::new(first);
    let stop = AtomicBool::new(false);
    let total = Mutex::new(SweepSummary::default());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut local = SweepSummary::default();
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= first + count {
                        break;
                    }
                    let cfg = SimConfig {
                        seed,
                        ..template.clone()
                    };
                    let r = run_catching(&cfg);
                    local.seeds_run += 1;
                    local.steps += r.steps;
                    local.counts.add(&r.counts);
                    if let Some(v) = r.violation {
                        local.failures.push((cfg, v));
                        if stop_at_first {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
                let mut t = total.lock().expect("no worker panics while holding it");
                t.seeds_run += local.seeds_run;
                t.steps += local.steps;
                t.counts.add(&local.counts);
                t.failures.extend(local.failures);
            });
        }
    });
    let mut t = total.into_inner().expect("workers done");
    t.failures.sort_by_key(|(c, _)| c.seed);
    t
}
