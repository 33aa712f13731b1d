//! `dmq bench meta`: 256-byte metadata writes (RegisterBroker for distinct broker ids) through
//! Raft with fsync on: (i) one client, sequential; (ii) many in flight. Reports latency
//! quantiles, throughput, how many elections happened during the run and how many partition
//! leaderships moved (with `--brokers N`, a local cluster also runs N brokers leading a topic of
//! N partitions: a metadata flood must not move them).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::stats::{Latencies, Summary};
use super::{MetaWriter, register_request};
use dmq_client::{Admin, AdminOptions};

use super::stability::{leader_changes, leader_epochs, max_term};
use crate::local_cluster::{LocalCluster, LocalClusterSpec};

#[derive(clap::Args, Clone, Debug)]
pub struct MetaArgs {
    /// Controllers to use (client addresses); without it a local 3-controller cluster is
    /// started in a temporary directory.
    #[arg(long, env = "DMQ_BOOTSTRAP", value_delimiter = ',')]
    pub bootstrap: Vec<String>,
    /// Writes issued one after another.
    #[arg(long, default_value_t = 2_000)]
    pub sequential_ops: u64,
    /// Writes issued with `--in-flight` outstanding.
    #[arg(long, default_value_t = 20_000)]
    pub concurrent_ops: u64,
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,
    /// Bytes per write.
    #[arg(long, default_value_t = 256)]
    pub value_bytes: usize,
    /// Distinct keys (broker ids) the writes cycle through, so a long run measures the
    /// write path rather than an ever-growing state (and ever-larger snapshots).
    #[arg(long, default_value_t = 20_000)]
    pub keys: u64,
    /// Keep the concurrent phase going for this many seconds (a saturating run) instead of
    /// `--concurrent-ops` writes.
    #[arg(long)]
    pub duration_s: Option<u64>,
    /// Brokers to start beside the local controllers, with a topic of as many partitions
    /// (replication factor up to 3) whose leaderships the report watches.
    #[arg(long, default_value_t = 0)]
    pub brokers: u32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct MetaReport {
    pub sequential: Summary,
    pub sequential_ops_per_s: f64,
    pub concurrent: Summary,
    pub concurrent_ops_per_s: f64,
    pub in_flight: usize,
    pub value_bytes: usize,
    /// Terms that began during the run: 0 means no election.
    pub elections_during_run: u64,
    /// Partition leaderships that moved during the run (over every topic that existed
    /// before it); `None` if the metadata could not be read.
    pub leader_changes_during_run: Option<u64>,
    pub errors: u64,
}

pub async fn run(args: MetaArgs) -> Result<(), String> {
    let tmp;
    let _cluster;
    let controllers = if args.bootstrap.is_empty() {
        tmp =
            tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let spec = LocalClusterSpec {
            controllers: 3,
            brokers: args.brokers as usize,
            base_port: None,
            data_dir: tmp.path().to_path_buf(),
            controller_args: Vec::new(),
            broker_args: Vec::new(),
            binary: None,
        };
        let mut cluster = LocalCluster::start(&spec).map_err(|e| e.to_string())?;
        if args.brokers > 0 {
            cluster.wait_ready(Duration::from_secs(60)).await?;
        } else {
            cluster
                .wait_for_leader(Duration::from_secs(15))
                .await
                .map_err(|e| e.to_string())?;
        }
        let addrs = cluster.client_addrs();
        if args.brokers > 0 {
            watched_topic(&addrs, args.brokers).await?;
        }
        _cluster = cluster;
        addrs
    } else {
        args.bootstrap.clone()
    };
    let admin = Admin::connect(controllers.clone(), AdminOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let epochs_before = leader_epochs(&admin)
        .await
        .map_err(|e| eprintln!("warning: partition leader changes will not be known: {e}"))
        .ok();
    let mut report = measure(&args, controllers).await?;
    let epochs_after = leader_epochs(&admin)
        .await
        .map_err(|e| eprintln!("warning: partition leader changes will not be known: {e}"))
        .ok();
    report.leader_changes_during_run = epochs_before
        .zip(epochs_after)
        .map(|(b, a)| leader_changes(&b, &a));
    print_report(&report, args.json);
    Ok(())
}

/// Prints a report as `dmq bench meta` does: three lines of text, or one JSON object. Other
/// metadata benchmarks (the etcd client in the `dmq-tests` crate) print theirs with it too, so
/// the two outputs compare field by field.
pub fn print_report(report: &MetaReport, json: bool) {
    if json {
        println!("{}", serde_json::to_string(report).expect("serializable"));
    } else {
        println!(
            "sequential: {} writes, {:.1} writes/sec, {}",
            report.sequential.count, report.sequential_ops_per_s, report.sequential
        );
        println!(
            "concurrent ({} in flight): {} writes, {:.1} writes/sec, {}",
            report.in_flight,
            report.concurrent.count,
            report.concurrent_ops_per_s,
            report.concurrent
        );
        let moved = report
            .leader_changes_during_run
            .map_or("unknown".to_string(), |n| n.to_string());
        println!(
            "elections during the run: {}, partition leader changes: {moved}, errors: {}",
            report.elections_during_run, report.errors
        );
    }
}

/// A topic of `brokers` partitions on the local brokers, fully replicated before the run.
async fn watched_topic(controllers: &[String], brokers: u32) -> Result<(), String> {
    let admin = Admin::connect(controllers.to_vec(), AdminOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let rf = brokers.min(3);
    admin
        .create_topic("bench-meta-watch", brokers, rf, Default::default())
        .await
        .map_err(|e| format!("cannot create the watched topic: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let topic = admin
            .describe_topic("bench-meta-watch")
            .await
            .map_err(|e| e.to_string())?;
        if topic
            .partitions
            .iter()
            .all(|p| p.leader != 0 && p.isr.len() == rf as usize)
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the watched topic has no full ISR after 30 s: {topic:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn measure(args: &MetaArgs, controllers: Vec<String>) -> Result<MetaReport, String> {
    let base_id = 1_000_000_000 + (std::process::id() as u64) * 10_000_000;
    let term_before = max_term(&controllers).await;
    let mut writer = MetaWriter::new(controllers.clone());
    let errors = Arc::new(AtomicU64::new(0));

    // Warm up the connection and the leader's caches.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    writer
        .register(register_request(base_id, args.value_bytes), deadline)
        .await
        .map_err(|e| e.to_string())?;

    let mut sequential = Latencies::default();
    let started = Instant::now();
    for i in 0..args.sequential_ops {
        let t = Instant::now();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        match writer
            .register(
                register_request(base_id + 1 + i % args.keys.max(1), args.value_bytes),
                deadline,
            )
            .await
        {
            Ok(_) => sequential.record(t.elapsed()),
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let sequential_secs = started.elapsed().as_secs_f64();

    let next = Arc::new(AtomicU64::new(0));
    let limit = args.concurrent_ops;
    let until = args
        .duration_s
        .map(|s| Instant::now() + Duration::from_secs(s));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.in_flight.max(1))
        .map(|_| {
            let mut writer = writer.clone();
            let next = next.clone();
            let errors = errors.clone();
            let bytes = args.value_bytes;
            let keys = args.keys.max(1);
            let first = base_id + 1 + args.sequential_ops;
            tokio::spawn(async move {
                let mut lat = Latencies::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let done = match until {
                        Some(t) => Instant::now() >= t,
                        None => i >= limit,
                    };
                    if done {
                        break;
                    }
                    let t = Instant::now();
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                    match writer
                        .register(register_request(first + i % keys, bytes), deadline)
                        .await
                    {
                        Ok(_) => lat.record(t.elapsed()),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                lat
            })
        })
        .collect();
    let mut concurrent = Latencies::default();
    for w in workers {
        concurrent.merge(&w.await.map_err(|e| e.to_string())?);
    }
    let concurrent_secs = started.elapsed().as_secs_f64();
    let term_after = max_term(&controllers).await;
    let seq = sequential.summary();
    let conc = concurrent.summary();
    Ok(MetaReport {
        sequential_ops_per_s: seq.count as f64 / sequential_secs,
        sequential: seq,
        concurrent_ops_per_s: conc.count as f64 / concurrent_secs,
        concurrent: conc,
        in_flight: args.in_flight,
        value_bytes: args.value_bytes,
        elections_during_run: term_after.saturating_sub(term_before),
        leader_changes_during_run: None,
        errors: errors.load(Ordering::Relaxed),
    })
}
