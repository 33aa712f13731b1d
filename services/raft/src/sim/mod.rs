//! A deterministic simulator: a whole 3- or 5-node cluster in one thread, driven by one seed.
//!
//! Simulated time advances by events (ticks, message deliveries, completed disk writes, client
//! proposals and reads, faults). Faults are drawn per seed: message drop, duplication,
//! reordering and delay, partitions (one node isolated, majority|minority splits, one-way links),
//! crashes that lose everything not yet persisted, restarts and pauses. After every step the
//! [`checker`] verifies the safety invariants; once the fault phase ends, the network heals and
//! liveness is required: a leader within 10 election timeouts and every pending proposal
//! resolved. The same seed always produces the same run (its trace hash is reported).

pub mod checker;
mod clients;
mod faults;
mod node;
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

/// What one run did.
#[derive(Clone, Debug)]
pub struct SimReport {
    pub seed: u64,
    pub steps: u64,
    pub violation: Option<Violation>,
    /// A hash over every event: equal for equal seeds.
    pub trace_hash: u64,
    pub committed: u64,
    pub leader_changes: u64,
    pub proposals_acked: u64,
    pub reads_served: u64,
    pub crashes: u64,
    pub snapshots_installed: u64,
    /// Leadership transfers started, disk stalls longer than an election timeout, disks wiped.
    pub transfers: u64,
    pub stalls: u64,
    pub wipes: u64,
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
                committed: 0,
                leader_changes: 0,
                proposals_acked: 0,
                reads_served: 0,
                crashes: 0,
                snapshots_installed: 0,
                transfers: 0,
                stalls: 0,
                wipes: 0,
            }
        }
    }
}

/// What a sweep over many seeds found.
#[derive(Clone, Debug, Default)]
pub struct SweepSummary {
    pub seeds_run: u64,
    pub steps: u64,
    pub committed: u64,
    pub leader_changes: u64,
    pub crashes: u64,
    pub transfers: u64,
    pub stalls: u64,
    pub wipes: u64,
    pub snapshots_installed: u64,
    pub reads_served: u64,
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
                    local.committed += r.committed;
                    local.leader_changes += r.leader_changes;
                    local.crashes += r.crashes;
                    local.snapshots_installed += r.snapshots_installed;
                    local.transfers += r.transfers;
                    local.stalls += r.stalls;
                    local.wipes += r.wipes;
                    local.reads_served += r.reads_served;
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
                t.committed += local.committed;
                t.leader_changes += local.leader_changes;
                t.crashes += local.crashes;
                t.snapshots_installed += local.snapshots_installed;
                t.transfers += local.transfers;
                t.stalls += local.stalls;
                t.wipes += local.wipes;
                t.reads_served += local.reads_served;
                t.failures.extend(local.failures);
            });
        }
    });
    let mut t = total.into_inner().expect("workers done");
    t.failures.sort_by_key(|(c, _)| c.seed);
    t
}
