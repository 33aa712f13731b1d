//! Runs the deterministic Raft simulator over many seeds, or replays one.
//!
//! ```text
//! raft-sim [--seeds N] [--start-seed S] [--steps K] [--nodes 3|5|mixed] [--threads T]
//!          [--bug NAME] [--seed S --verbose]
//! ```

use std::process::ExitCode;
use std::time::Instant;

use dmq_raft::PlantedBug;
use dmq_raft::sim::{self, SimConfig};

struct Args {
    seeds: u64,
    start_seed: u64,
    steps: u64,
    nodes: Option<usize>,
    threads: usize,
    bug: Option<PlantedBug>,
    verbose: bool,
    stop_at_first: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        seeds: 1000,
        start_seed: 0,
        steps: 5_000,
        nodes: None,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        bug: None,
        verbose: false,
        stop_at_first: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let num = |v: String, name: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{name}: not a number: {v}"))
        };
        match flag.as_str() {
            "--seeds" => a.seeds = num(value("--seeds")?, "--seeds")?,
            "--start-seed" => a.start_seed = num(value("--start-seed")?, "--start-seed")?,
            "--seed" => {
                a.start_seed = num(value("--seed")?, "--seed")?;
                a.seeds = 1;
            }
            "--steps" => a.steps = num(value("--steps")?, "--steps")?,
            "--threads" => a.threads = num(value("--threads")?, "--threads")? as usize,
            "--nodes" => {
                a.nodes = match value("--nodes")?.as_str() {
                    "3" => Some(3),
                    "5" => Some(5),
                    "mixed" => None,
                    v => return Err(format!("--nodes: 3, 5 or mixed, not {v}")),
                }
            }
            "--bug" => {
                let v = value("--bug")?;
                a.bug = Some(PlantedBug::from_name(&v).ok_or_else(|| {
                    let names: Vec<&str> = PlantedBug::ALL.iter().map(|b| b.name()).collect();
                    format!("--bug: unknown bug {v}; one of {}", names.join(", "))
                })?);
                a.stop_at_first = true;
            }
            "--verbose" => a.verbose = true,
            "-h" | "--help" => {
                println!(
                    "raft-sim: deterministic simulation of the dmq Raft core\n\n  --seeds N        \
                     seeds to run (default 1000)\n  --start-seed S   first seed (default 0)\n  \
                     --seed S         replay one seed\n  --steps K        fault-phase steps per seed \
                     (default 5000)\n  --nodes 3|5|mixed  cluster size (default mixed: odd seeds run 5)\n  \
                     --threads T      worker threads (default: all cores)\n  --bug NAME       plant a \
                     known bug and stop at the first seed that catches it\n  --verbose        print \
                     every event (with --seed)"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other}; see --help")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("raft-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let mut total = sim::SweepSummary::default();
    let sizes: Vec<usize> = match args.nodes {
        Some(n) => vec![n],
        None if args.seeds == 1 => vec![if args.start_seed % 2 == 1 { 5 } else { 3 }],
        None => vec![3, 5],
    };
    for (k, &nodes) in sizes.iter().enumerate() {
        // With both sizes, each runs half the seeds (3 nodes the first half).
        let count = if sizes.len() == 1 {
            args.seeds
        } else {
            args.seeds / 2 + (k as u64 * (args.seeds % 2))
        };
        let first = args.start_seed + if k == 0 { 0 } else { args.seeds / 2 };
        let template = SimConfig {
            seed: 0,
            nodes,
            steps: args.steps,
            planted_bug: args.bug,
            verbose: args.verbose,
        };
        let s = sim::sweep(&template, first, count, args.threads, args.stop_at_first);
        total.seeds_run += s.seeds_run;
        total.steps += s.steps;
        total.counts.add(&s.counts);
        total.failures.extend(s.failures);
        if args.stop_at_first && !total.failures.is_empty() {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "seeds run: {}  steps: {}  violations: {}  seeds/s: {:.1}  steps/s: {:.0}  ({:.1} s)",
        total.seeds_run,
        total.steps,
        total.failures.len(),
        total.seeds_run as f64 / secs,
        total.steps as f64 / secs,
        secs
    );
    let c = &total.counts;
    println!(
        "committed entries: {}  leader changes: {}  snapshots installed: {}  reads: {}  \
         sent before persist: {}  applied before persist: {}",
        c.committed,
        c.leader_changes,
        c.snapshots_installed,
        c.reads_served,
        c.sent_before_persist,
        c.applied_before_persist
    );
    println!(
        "faults: crashes: {}  transfers: {}  disk stalls: {}  wipes: {}  fsync errors: {}  \
         torn writes: {}  corrupt at restart: {}",
        c.crashes, c.transfers, c.stalls, c.wipes, c.fsync_errors, c.torn_writes, c.corruptions
    );
    println!(
        "snapshot transfers: {}  slower than an election timeout: {}  chunks lost: {}  \
         past their deadline: {}",
        c.snapshot_transfers,
        c.slow_snapshot_transfers,
        c.snapshot_chunks_lost,
        c.snapshot_deadlines_missed
    );
    println!(
        "membership changes: {}  of them removing the leader: {}",
        c.membership_changes, c.leader_removals
    );
    for (cfg, v) in total.failures.iter().take(20) {
        println!("seed {}: {v}\n  replay: {}", cfg.seed, cfg.replay_command());
    }
    if total.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
