//! `dmq bench produce` and `dmq bench consume`, in the style of kafka-producer-perf-test and
//! kafka-consumer-perf-test: 1 KiB records, one partition, replication factor 3, acks=all,
//! every acknowledgment after an fsync. Each starts its own local cluster (3 controllers,
//! 3 brokers) unless given `--bootstrap`, and reports the brokers' peak resident memory and
//! what they wrote during the timed part (`/proc/PID/io`), and how many partition leaderships
//! moved and controller elections happened during the run (a saturating run, `--duration-s`,
//! must move none: issue 12's "no false failovers").

use std::time::{Duration, Instant};

use dmq_client::{
    Acks, Admin, AdminOptions, Consumer, ConsumerConfig, MetadataView, Producer, ProducerConfig,
    Record, Start,
};
use serde::Serialize;

use super::stability::{LeaderEpochs, leader_changes, leader_epochs, max_term};
use super::stats::{Latencies, Summary};
use crate::local_cluster::{LocalCluster, LocalClusterSpec};

#[derive(clap::Args, Clone, Debug)]
pub struct DataBenchArgs {
    /// Controllers of an existing cluster; without it a local cluster (3 controllers, 3
    /// brokers) is started in a temporary directory.
    #[arg(long, env = "DMQ_BOOTSTRAP", value_delimiter = ',')]
    pub bootstrap: Vec<String>,
    /// Records to send (produce) or to read back (consume).
    #[arg(long, default_value_t = 100_000)]
    pub num_records: u64,
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Records outstanding at once: 1 measures sequential latency, more measures throughput
    /// with batching and pipelining.
    #[arg(long, default_value_t = 4096)]
    pub in_flight: usize,
    /// Producer linger before a batch is sent, in milliseconds.
    #[arg(long, default_value_t = 2)]
    pub linger_ms: u64,
    #[arg(long, default_value_t = 3)]
    pub replication_factor: u32,
    /// Bytes of records per Produce request at most (the producer's batch size, as the
    /// producer counts a record: its encoded size plus a few bytes).
    #[arg(long, default_value_t = 256 * 1024, conflicts_with = "records_per_request")]
    pub batch_max_bytes: usize,
    /// Records per Produce request at most: sets the batch size to what holds exactly this
    /// many `--record-size` records (1: one record per request, none batched).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub records_per_request: Option<u32>,
    /// Produce requests in flight to the partition at once (pipelining). Above 1, a retried
    /// batch may land after a later one, as in Kafka without idempotence.
    #[arg(long, default_value_t = 4)]
    pub max_in_flight_requests: usize,
    /// Produce: keep sending for this many seconds (a saturating run) instead of
    /// `--num-records` records.
    #[arg(long)]
    pub duration_s: Option<u64>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct DataReport {
    pub records: u64,
    /// Value bytes per record.
    pub record_size: usize,
    /// Replicas of the partition (every broker's writes are summed in `broker_io`).
    pub replication_factor: u32,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    /// Per-record latency (send to acknowledgment) for produce; empty for consume.
    pub latency: Option<Summary>,
    pub errors: u64,
    /// Highest resident memory seen among the local brokers, in MiB (local cluster only).
    pub broker_rss_max_mib: Option<f64>,
    /// What the local brokers wrote during the timed part, summed over them (`/proc/PID/io`;
    /// local cluster only).
    pub broker_io: Option<ProcIo>,
    /// Partition leaderships that moved during the timed part (over every topic that existed
    /// before it); `None` if the metadata could not be read.
    pub leader_changes: Option<u64>,
    /// Controller terms that began during the timed part.
    pub elections: u64,
}

/// A running cluster to measure: either ours or the caller's.
struct Target {
    _tmp: Option<tempfile::TempDir>,
    cluster: Option<LocalCluster>,
    controllers: Vec<String>,
}

async fn target(args: &DataBenchArgs) -> Result<Target, String> {
    if !args.bootstrap.is_empty() {
        return Ok(Target {
            _tmp: None,
            cluster: None,
            controllers: args.bootstrap.clone(),
        });
    }
    let tmp =
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let spec = LocalClusterSpec {
        controllers: 3,
        brokers: 3,
        base_port: None,
        data_dir: tmp.path().to_path_buf(),
        controller_args: Vec::new(),
        broker_args: Vec::new(),
        binary: None,
    };
    let mut cluster = LocalCluster::start(&spec).map_err(|e| e.to_string())?;
    cluster.wait_ready(Duration::from_secs(60)).await?;
    let controllers = cluster.client_addrs();
    Ok(Target {
        _tmp: Some(tmp),
        cluster: Some(cluster),
        controllers,
    })
}

/// Bytes written by a set of processes, from `/proc/PID/io`: `write_bytes` is what they caused
/// to be sent to the storage layer (counted when a page is dirtied: page-cache writes that
/// reach the disk later count too), `wchar` what they passed to write(2) and its kin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProcIo {
    pub write_bytes: u64,
    pub wchar: u64,
}

impl ProcIo {
    /// The sum over `pids` (processes that cannot be read count 0).
    pub fn of(pids: &[u32]) -> ProcIo {
        let mut sum = ProcIo::default();
        for &pid in pids {
            let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
            let io = ProcIo::parse(&io);
            sum.write_bytes += io.write_bytes;
            sum.wchar += io.wchar;
        }
        sum
    }

    /// The fields of one `/proc/PID/io` text (missing ones are 0).
    pub fn parse(text: &str) -> ProcIo {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        ProcIo {
            write_bytes: field("write_bytes"),
            wchar: field("wchar"),
        }
    }

    /// What was written since `before` (counters of exited processes do not go back).
    pub fn since(self, before: ProcIo) -> ProcIo {
        ProcIo {
            write_bytes: self.write_bytes.saturating_sub(before.write_bytes),
            wchar: self.wchar.saturating_sub(before.wchar),
        }
    }
}

/// Peak RSS (MiB) of `pids`, sampled every 100 ms while `work` runs, and what they wrote
/// meanwhile; both `None` without pids.
pub async fn watch_processes<T>(
    pids: &[u32],
    work: impl Future<Output = T>,
) -> (T, Option<f64>, Option<ProcIo>) {
    if pids.is_empty() {
        return (work.await, None, None);
    }
    let sample = || pids.iter().filter_map(|&p| rss_kib(p)).max().unwrap_or(0);
    let io_before = ProcIo::of(pids);
    let mut peak = sample();
    tokio::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let out = loop {
        tokio::select! {
            out = &mut work => break out,
            _ = tick.tick() => peak = peak.max(sample()),
        }
    };
    peak = peak.max(sample());
    let io = ProcIo::of(pids).since(io_before);
    (out, Some(peak as f64 / 1024.0), Some(io))
}

/// [`watch_processes`] over the local brokers (nothing to watch with `--bootstrap`).
async fn with_brokers<T>(
    cluster: Option<&LocalCluster>,
    work: impl Future<Output = T>,
) -> (T, Option<f64>, Option<ProcIo>) {
    let pids: Vec<u32> = cluster
        .map(|c| c.brokers.iter().filter_map(|b| b.pid()).collect())
        .unwrap_or_default();
    watch_processes(&pids, work).await
}

pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Leader epochs and the controller term before a timed part, to report what moved.
struct Watch {
    epochs: Option<LeaderEpochs>,
    term: u64,
}

impl Watch {
    async fn start(admin: &Admin, controllers: &[String]) -> Watch {
        Watch {
            epochs: leader_epochs(admin)
                .await
                .map_err(|e| eprintln!("warning: partition leader changes will not be known: {e}"))
                .ok(),
            term: max_term(controllers).await,
        }
    }

    /// (leader changes, elections) since [`start`](Self::start).
    async fn finish(self, admin: &Admin, controllers: &[String]) -> (Option<u64>, u64) {
        let after = leader_epochs(admin)
            .await
            .map_err(|e| eprintln!("warning: partition leader changes will not be known: {e}"))
            .ok();
        let moved = self.epochs.zip(after).map(|(b, a)| leader_changes(&b, &a));
        (moved, max_term(controllers).await.saturating_sub(self.term))
    }
}

async fn make_topic(admin: &Admin, rf: u32) -> Result<String, String> {
    let name = format!("bench-{}", std::process::id());
    let cfg = dmq_client::pb::TopicConfig {
        min_insync_replicas: rf.min(2),
        ..Default::default()
    };
    match admin.create_topic(&name, 1, rf, cfg).await {
        Ok(_) | Err(dmq_client::ClientError::AlreadyExists { .. }) => Ok(name),
        Err(e) => Err(e.to_string()),
    }
}

async fn produce_records(
    producer: &Producer,
    topic: &str,
    args: &DataBenchArgs,
) -> Result<(Latencies, u64, Duration), String> {
    let value = vec![b'x'; args.record_size];
    let mut lat = Latencies::default();
    let mut errors = 0;
    let mut pending = std::collections::VecDeque::new();
    let started = Instant::now();
    let until = args.duration_s.map(|s| started + Duration::from_secs(s));
    let mut sent = 0u64;
    loop {
        let more = match until {
            Some(t) => Instant::now() < t,
            None => sent < args.num_records,
        };
        if !more {
            break;
        }
        sent += 1;
        let sent_at = Instant::now();
        let delivery = producer
            .send(topic, Some(0), Record::new(value.clone()))
            .await
            .map_err(|e| e.to_string())?;
        pending.push_back((sent_at, delivery));
        while pending.len() >= args.in_flight.max(1) {
            let (t, d) = pending.pop_front().expect("non-empty");
            match d.await {
                Ok(_) => lat.record(t.elapsed()),
                Err(_) => errors += 1,
            }
        }
    }
    while let Some((t, d)) = pending.pop_front() {
        match d.await {
            Ok(_) => lat.record(t.elapsed()),
            Err(_) => errors += 1,
        }
    }
    Ok((lat, errors, started.elapsed()))
}

/// Bytes the producer counts for a record of `record_size` value bytes (no key, headers or
/// timestamp): its protobuf encoding (tag, length, value) plus the client's 16 bytes of
/// bookkeeping.
pub fn record_cost(record_size: usize) -> usize {
    let mut varint = 1;
    let mut n = record_size >> 7;
    while n > 0 {
        varint += 1;
        n >>= 7;
    }
    1 + varint + record_size + 16
}

/// The batch size that holds `records` records of `record_size` bytes and not one more: half
/// a record's cost of slack, so that a few bytes more or less per record change nothing.
pub fn batch_bytes_for(records: u32, record_size: usize) -> usize {
    let cost = record_cost(record_size);
    records as usize * cost + cost / 2
}

fn producer_config(args: &DataBenchArgs) -> ProducerConfig {
    let defaults = ProducerConfig::default();
    let batch_max_bytes = match args.records_per_request {
        Some(n) => batch_bytes_for(n, args.record_size),
        None => args.batch_max_bytes,
    };
    ProducerConfig {
        acks: Acks::All,
        linger: Duration::from_millis(if args.in_flight <= 1 {
            0
        } else {
            args.linger_ms
        }),
        batch_max_bytes,
        // A record must fit in a batch; the batch size bounds records, not the other way.
        max_record_bytes: defaults.max_record_bytes.min(batch_max_bytes),
        buffer_max_bytes: defaults.buffer_max_bytes.max(batch_max_bytes),
        max_in_flight_per_partition: args.max_in_flight_requests.max(1),
        ..defaults
    }
}

fn producer_for(metadata: MetadataView, args: &DataBenchArgs) -> Result<Producer, String> {
    Producer::new(metadata, producer_config(args)).map_err(|e| e.to_string())
}

/// Prints a report as `dmq bench produce` / `consume` do: text in the style of the Kafka perf
/// tools, or one JSON object.
pub fn print_report(name: &str, r: &DataReport, json: bool) {
    if json {
        println!("{}", serde_json::to_string(r).expect("serializable"));
        return;
    }
    let mut line = format!(
        "{name}: {} records, {:.1} records/sec ({:.2} MB/sec)",
        r.records, r.records_per_s, r.mb_per_s
    );
    if let Some(l) = &r.latency {
        line.push_str(&format!(", {l}"));
    }
    println!("{line}");
    if let Some(m) = r.broker_rss_max_mib {
        println!("broker peak RSS: {m:.0} MiB; errors: {}", r.errors);
    }
    if let Some(io) = r.broker_io {
        // Per replica: what one copy of the records cost the broker that holds it.
        let copies =
            (r.records as f64 * r.record_size as f64 * r.replication_factor as f64).max(1.0);
        println!(
            "brokers wrote {:.1} MB to storage, {:.2} bytes per byte of records per replica \
             (write(2) and kin: {:.1} MB, {:.2})",
            io.write_bytes as f64 / 1e6,
            io.write_bytes as f64 / copies,
            io.wchar as f64 / 1e6,
            io.wchar as f64 / copies
        );
    }
    let moved = r
        .leader_changes
        .map_or("unknown".to_string(), |n| n.to_string());
    println!(
        "partition leader changes during the run: {moved}; controller elections: {}",
        r.elections
    );
}

pub async fn produce(args: DataBenchArgs) -> Result<(), String> {
    let t = target(&args).await?;
    let admin = Admin::connect(t.controllers.clone(), AdminOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let topic = make_topic(&admin, args.replication_factor).await?;
    let producer = producer_for(MetadataView::from(admin.clone()), &args)?;
    // Warm up: connections, leader discovery, the partition's first batch.
    producer
        .send_and_wait(&topic, Some(0), Record::new(vec![b'w'; args.record_size]))
        .await
        .map_err(|e| e.to_string())?;
    let watch = Watch::start(&admin, &t.controllers).await;
    let (result, rss, io) = with_brokers(
        t.cluster.as_ref(),
        produce_records(&producer, &topic, &args),
    )
    .await;
    let (leader_changes, elections) = watch.finish(&admin, &t.controllers).await;
    let (lat, errors, took) = result?;
    producer.close().await;
    let secs = took.as_secs_f64();
    let n = lat.summary().count;
    let report = DataReport {
        records: n,
        record_size: args.record_size,
        replication_factor: args.replication_factor,
        records_per_s: n as f64 / secs,
        mb_per_s: (n as f64 * args.record_size as f64) / secs / 1_048_576.0,
        latency: Some(lat.summary()),
        errors,
        broker_rss_max_mib: rss,
        broker_io: io,
        leader_changes,
        elections,
    };
    print_report("produce", &report, args.json);
    Ok(())
}

pub async fn consume(args: DataBenchArgs) -> Result<(), String> {
    let t = target(&args).await?;
    let admin = Admin::connect(t.controllers.clone(), AdminOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let topic = make_topic(&admin, args.replication_factor).await?;
    let metadata = MetadataView::from(admin.clone());
    // Fill the partition first (pipelined), then time reading it all back.
    let producer = producer_for(
        metadata.clone(),
        &DataBenchArgs {
            in_flight: 4096,
            ..args.clone()
        },
    )?;
    let (_, errors, _) = produce_records(&producer, &topic, &args).await?;
    producer.close().await;
    let watch = Watch::start(&admin, &t.controllers).await;
    let mut consumer =
        Consumer::new(metadata, ConsumerConfig::default()).map_err(|e| e.to_string())?;
    consumer
        .assign(&topic, 0, Start::Beginning)
        .await
        .map_err(|e| e.to_string())?;
    let want = args.num_records - errors;
    let work = async {
        let started = Instant::now();
        let mut got = 0u64;
        let deadline = started + Duration::from_secs(300);
        while got < want && Instant::now() < deadline {
            got += consumer.poll().await.map_err(|e| e.to_string())?.len() as u64;
        }
        Ok::<_, String>((got, started.elapsed()))
    };
    let (result, rss, io) = with_brokers(t.cluster.as_ref(), work).await;
    let (got, took) = result?;
    let (leader_changes, elections) = watch.finish(&admin, &t.controllers).await;
    let secs = took.as_secs_f64();
    let report = DataReport {
        records: got,
        record_size: args.record_size,
        replication_factor: args.replication_factor,
        records_per_s: got as f64 / secs,
        mb_per_s: (got as f64 * args.record_size as f64) / secs / 1_048_576.0,
        latency: None,
        errors: want.saturating_sub(got),
        broker_rss_max_mib: rss,
        broker_io: io,
        leader_changes,
        elections,
    };
    print_report("consume", &report, args.json);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_io_reads_the_write_counters_and_sums_deltas() {
        let text = "rchar: 10\nwchar: 4096\nsyscr: 1\nsyscw: 2\nread_bytes: 0\n\
                    write_bytes: 8192\ncancelled_write_bytes: 100\n";
        let io = ProcIo::parse(text);
        assert_eq!(
            io,
            ProcIo {
                write_bytes: 8192,
                wchar: 4096
            }
        );
        assert_eq!(ProcIo::parse(""), ProcIo::default());
        let later = ProcIo {
            write_bytes: 10_000,
            wchar: 5000,
        };
        assert_eq!(
            later.since(io),
            ProcIo {
                write_bytes: 1808,
                wchar: 904
            }
        );
        assert_eq!(io.since(later), ProcIo::default());
        // A process that cannot be read counts 0.
        assert_eq!(ProcIo::of(&[u32::MAX]), ProcIo::default());
    }

    #[test]
    fn a_record_costs_its_encoding_plus_the_clients_bookkeeping() {
        // Tag, length varint (1 byte below 128, 2 below 16 KiB, 3 below 2 MiB), value, 16.
        assert_eq!(record_cost(0), 18);
        assert_eq!(record_cost(127), 1 + 1 + 127 + 16);
        assert_eq!(record_cost(128), 1 + 2 + 128 + 16);
        assert_eq!(record_cost(1024), 1 + 2 + 1024 + 16);
        assert_eq!(record_cost(16_384), 1 + 3 + 16_384 + 16);
    }

    #[test]
    fn records_per_request_sizes_the_batch_to_hold_that_many_and_no_more() {
        for size in [0, 100, 1024, 10_000] {
            for n in [1, 2, 64, 1000] {
                let bytes = batch_bytes_for(n, size);
                let cost = record_cost(size);
                assert!(n as usize * cost <= bytes, "{n} x {size}");
                assert!((n as usize + 1) * cost > bytes, "{n} x {size}");
            }
        }
        let args = |extra: &[&str]| {
            use clap::Parser;
            #[derive(clap::Parser)]
            struct Cli {
                #[command(flatten)]
                a: DataBenchArgs,
            }
            let argv = std::iter::once("bench").chain(extra.iter().copied());
            Cli::try_parse_from(argv).map(|c| c.a)
        };
        let one = producer_config(&args(&["--records-per-request", "1"]).unwrap());
        assert_eq!(one.batch_max_bytes, batch_bytes_for(1, 1024));
        assert!(one.max_record_bytes <= one.batch_max_bytes);
        assert!(one.validate().is_ok());
        let piped = producer_config(&args(&["--max-in-flight-requests", "256"]).unwrap());
        assert_eq!(piped.max_in_flight_per_partition, 256);
        assert_eq!(piped.batch_max_bytes, 256 * 1024);
        assert_eq!(
            producer_config(&args(&[]).unwrap()).max_in_flight_per_partition,
            4
        );
        assert!(args(&["--records-per-request", "0"]).is_err());
        assert!(args(&["--records-per-request", "1", "--batch-max-bytes", "9"]).is_err());
    }
}
