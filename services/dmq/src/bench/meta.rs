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

/// What `bench meta` runs against a metadata store: a warm-up write, `sequential_ops` writes
/// one after another, then `concurrent_ops` (or `duration_s` of) writes with `in_flight`
/// outstanding, keys cycling through `keys`. Shared with the etcd side-by-side client
/// (`tests/src/etcd_bench.rs`), so both measure the same thing.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    pub sequential_ops: u64,
    pub concurrent_ops: u64,
    pub in_flight: usize,
    pub value_bytes: usize,
    pub keys: u64,
    pub duration_s: Option<u64>,
}

/// One write of the workload under key number `id`, retried until `deadline` (an error means
/// it did not succeed by then).
pub trait WorkloadWriter: Clone + Send + 'static {
    fn write(
        &mut self,
        id: u64,
        deadline: tokio::time::Instant,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// The most one write (with its retries) may take.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// Runs `workload` through `writer`: key 0 warms up, the sequential phase writes keys
/// `1 + i % keys`, the concurrent one `1 + sequential_ops + i % keys`. The report's
/// elections and leader changes are left for the caller, who knows the cluster.
pub async fn run_workload<W: WorkloadWriter>(
    mut writer: W,
    workload: &Workload,
) -> Result<MetaReport, String> {
    let keys = workload.keys.max(1);
    let errors = Arc::new(AtomicU64::new(0));
    writer
        .write(0, tokio::time::Instant::now() + WRITE_DEADLINE)
        .await
        .map_err(|e| format!("the warm-up write failed: {e}"))?;

    let mut sequential = Latencies::default();
    let started = Instant::now();
    for i in 0..workload.sequential_ops {
        let t = Instant::now();
        match writer
            .write(1 + i % keys, tokio::time::Instant::now() + WRITE_DEADLINE)
            .await
        {
            Ok(()) => sequential.record(t.elapsed()),
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let sequential_secs = started.elapsed().as_secs_f64();

    let next = Arc::new(AtomicU64::new(0));
    let limit = workload.concurrent_ops;
    let until = workload
        .duration_s
        .map(|s| Instant::now() + Duration::from_secs(s));
    let first = 1 + workload.sequential_ops;
    let started = Instant::now();
    let workers: Vec<_> = (0..workload.in_flight.max(1))
        .map(|_| {
            let mut writer = writer.clone();
            let next = next.clone();
            let errors = errors.clone();
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
                    let deadline = tokio::time::Instant::now() + WRITE_DEADLINE;
                    match writer.write(first + i % keys, deadline).await {
                        Ok(()) => lat.record(t.elapsed()),
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
    let seq = sequential.summary();
    let conc = concurrent.summary();
    Ok(MetaReport {
        sequential_ops_per_s: seq.count as f64 / sequential_secs,
        sequential: seq,
        concurrent_ops_per_s: conc.count as f64 / concurrent_secs,
        concurrent: conc,
        in_flight: workload.in_flight,
        value_bytes: workload.value_bytes,
        elections_during_run: 0,
        leader_changes_during_run: None,
        errors: errors.load(Ordering::Relaxed),
    })
}

/// RegisterBroker writes through the controller leader, broker ids from `base_id`.
#[derive(Clone)]
struct RegisterWriter {
    writer: MetaWriter,
    base_id: u64,
    value_bytes: usize,
}

impl WorkloadWriter for RegisterWriter {
    async fn write(&mut self, id: u64, deadline: tokio::time::Instant) -> Result<(), String> {
        self.writer
            .register(
                register_request(self.base_id + id, self.value_bytes),
                deadline,
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

impl MetaArgs {
    pub fn workload(&self) -> Workload {
        Workload {
            sequential_ops: self.sequential_ops,
            concurrent_ops: self.concurrent_ops,
            in_flight: self.in_flight,
            value_bytes: self.value_bytes,
            keys: self.keys,
            duration_s: self.duration_s,
        }
    }
}

pub async fn measure(args: &MetaArgs, controllers: Vec<String>) -> Result<MetaReport, String> {
    let writer = RegisterWriter {
        writer: MetaWriter::new(controllers.clone()),
        base_id: 1_000_000_000 + (std::process::id() as u64) * 10_000_000,
        value_bytes: args.value_bytes,
    };
    let term_before = max_term(&controllers).await;
    let mut report = run_workload(writer, &args.workload()).await?;
    report.elections_during_run = max_term(&controllers).await.saturating_sub(term_before);
    Ok(report)
}
