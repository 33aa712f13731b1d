//! `dmq-nats-bench`: `dmq bench produce` and `dmq bench consume`'s workloads against NATS
//! JetStream (issue 11, "a partition log that runs at the disk's speed"), with the async-nats
//! client, for `tests/bench/produce_vs_nats.sh`.
//!
//! Each run creates its own stream (`--replicas`, file storage, one subject, as `dmq bench`
//! creates its own one-partition topic), finds the server that leads it and publishes to that
//! server (as dmq's producer sends to the partition leader), and deletes the stream at the end.
//! - `produce`: one warm-up publish, then `--num-records` publishes of `--record-size` bytes with
//!   at most `--in-flight` acks pending, awaited in order: a record's latency is from its
//!   publish to its ack being taken, as `dmq bench produce` measures (1 in flight: sequential
//!   publish+ack; more: NATS's pipelined "async publish").
//! - `consume`: fills the stream the same way (4,096 in flight), then times reading
//!   `--num-records` back from the start with an ephemeral pull consumer without acks
//!   (`--pull-batch` messages per pull request), as `dmq bench consume` reads the partition
//!   from the beginning.
//!
//! The report is `dmq bench`'s [`DataReport`], printed by the same function, so text and JSON
//! compare field by field: `broker_rss_max_mib` and `broker_io` are those of `--server-pids`
//! (the NATS servers), sampled around the timed part as `dmq bench` samples its brokers;
//! `leader_changes` is whether the stream's leader moved during it; `elections` is not counted
//! for NATS (0).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, context::ContextBuilder, stream};
use bytes::Bytes;
use dmq::bench::data::{DataReport, print_report, watch_processes};
use dmq::bench::stats::Latencies;
use futures::StreamExt;

#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "dmq-nats-bench",
    about = "dmq bench produce / consume's workloads (1 KiB records, R3, acks awaited) against NATS JetStream"
)]
pub struct NatsBenchArgs {
    #[command(subcommand)]
    pub workload: NatsWorkload,
    /// Client URLs of every NATS server (nats://host:port); required (clap cannot require a
    /// global flag given after the subcommand, so `run` checks it).
    #[arg(long, env = "NATS_SERVERS", value_delimiter = ',', global = true)]
    pub servers: Vec<String>,
    /// Records to publish (produce) or to read back (consume).
    #[arg(long, default_value_t = 100_000, global = true)]
    pub num_records: u64,
    #[arg(long, default_value_t = 1024, global = true)]
    pub record_size: usize,
    /// Publish acks pending at once: 1 measures sequential latency, more pipelines.
    #[arg(long, default_value_t = 4096, global = true)]
    pub in_flight: usize,
    /// Replicas of the stream.
    #[arg(long, default_value_t = 3, global = true)]
    pub replicas: usize,
    /// Messages per pull request when consuming.
    #[arg(long, default_value_t = 1000, global = true)]
    pub pull_batch: usize,
    /// PIDs of the NATS servers: their peak RSS and what they wrote during the timed part are
    /// reported.
    #[arg(long, value_delimiter = ',', global = true)]
    pub server_pids: Vec<u32>,
    /// Seconds to wait for JetStream to accept the stream (a new cluster elects its
    /// meta leader first).
    #[arg(long, default_value_t = 30, global = true)]
    pub wait_s: u64,
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(clap::Subcommand, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatsWorkload {
    /// Publish records and await their acks (`dmq bench produce`'s workload).
    Produce,
    /// Fill the stream, then read it back from the start (`dmq bench consume`'s workload).
    Consume,
}

/// Runs the workload and prints the report (which server leads the stream goes to stderr).
pub async fn run(args: NatsBenchArgs) -> Result<(), String> {
    if args.servers.is_empty() {
        return Err("--servers (or NATS_SERVERS) is required".into());
    }
    let deadline = Instant::now() + Duration::from_secs(args.wait_s);
    let admin = connect(&args.servers).await?;
    // Short API timeouts, retried until the deadline: a new cluster ignores the first
    // requests (its JetStream is not up yet), which would otherwise wait out the client's
    // default 10 s request timeout.
    let admin_js = ContextBuilder::new()
        .timeout(Duration::from_secs(1))
        .build(admin.clone());
    let name = format!("bench-{}", std::process::id());
    let subject = format!("bench.{}", std::process::id());
    let config = stream::Config {
        name: name.clone(),
        subjects: vec![subject.clone()],
        storage: stream::StorageType::File,
        num_replicas: args.replicas,
        ..Default::default()
    };
    let mut created = create_stream(&admin_js, config, deadline).await?;
    let result = async {
        let leader = stream_leader(&mut created, deadline).await?;
        let (client, addr) = connect_to_server(&args.servers, &leader).await?;
        eprintln!(
            "nats {}: stream {name} (R{}, file) led by {leader} at {addr}; publishing there",
            client.server_info().version,
            args.replicas
        );
        let js = context(client.clone(), args.in_flight);
        let report = match args.workload {
            NatsWorkload::Produce => produce(&args, &js, &subject, &mut created, &leader).await?,
            NatsWorkload::Consume => consume(&args, &js, &subject, &mut created, &leader).await?,
        };
        client.flush().await.ok();
        Ok::<_, String>(report)
    }
    .await;
    // The stream's files go with it; a failure to delete is no reason to hide the figures.
    if let Err(e) = admin_js.delete_stream(&name).await {
        eprintln!("warning: cannot delete stream {name}: {e}");
    }
    let (name_of_run, report) = result?;
    print_report(name_of_run, &report, args.json);
    Ok(())
}

/// A connection to any of `servers` (the first that answers).
async fn connect(servers: &[String]) -> Result<async_nats::Client, String> {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(servers)
        .await
        .map_err(|e| format!("cannot connect to NATS at {servers:?}: {e}"))
}

/// A JetStream context over `client` that lets `in_flight` acks be pending without waiting
/// (publish would otherwise stop at async-nats's own cap), each awaited for at most 30 s.
fn context(client: async_nats::Client, in_flight: usize) -> jetstream::Context {
    ContextBuilder::new()
        .timeout(Duration::from_secs(30))
        .max_ack_inflight(in_flight.max(1) + 1)
        .backpressure_on_inflight(true)
        .build(client)
}

/// Creates the stream, retrying until `deadline` while JetStream is not ready yet.
async fn create_stream(
    js: &jetstream::Context,
    config: stream::Config,
    deadline: Instant,
) -> Result<stream::Stream, String> {
    loop {
        match js.create_stream(config.clone()).await {
            Ok(s) => return Ok(s),
            Err(e) => {
                if Instant::now() >= deadline {
                    return Err(format!("cannot create stream {}: {e}", config.name));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The name of the server that leads the stream, polled until `deadline`.
async fn stream_leader(s: &mut stream::Stream, deadline: Instant) -> Result<String, String> {
    loop {
        let leader = match s.info().await {
            Ok(info) => info.cluster.as_ref().and_then(|c| c.leader.clone()),
            Err(_) => None,
        };
        if let Some(l) = leader.filter(|l| !l.is_empty()) {
            return Ok(l);
        }
        if Instant::now() >= deadline {
            return Err("the stream has no leader".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A connection to the server named `name`, found by asking each of `servers` its name.
async fn connect_to_server(
    servers: &[String],
    name: &str,
) -> Result<(async_nats::Client, String), String> {
    for addr in servers {
        let Ok(client) = connect(std::slice::from_ref(addr)).await else {
            continue;
        };
        if client.server_info().server_name == name {
            return Ok((client, addr.clone()));
        }
    }
    Err(format!("no server among {servers:?} is named {name}"))
}

/// Publishes `n` records with at most `in_flight` acks pending, awaited in order.
async fn publish_records(
    js: &jetstream::Context,
    subject: &str,
    n: u64,
    in_flight: usize,
    payload: &Bytes,
) -> Result<(Latencies, u64, Duration), String> {
    let mut lat = Latencies::default();
    let mut errors = 0;
    let mut pending = VecDeque::new();
    let started = Instant::now();
    for _ in 0..n {
        let sent_at = Instant::now();
        let ack = js
            .publish(subject.to_string(), payload.clone())
            .await
            .map_err(|e| format!("publish: {e}"))?;
        pending.push_back((sent_at, ack));
        while pending.len() >= in_flight.max(1) {
            let (t, ack) = pending.pop_front().expect("non-empty");
            match ack.await {
                Ok(_) => lat.record(t.elapsed()),
                Err(_) => errors += 1,
            }
        }
    }
    while let Some((t, ack)) = pending.pop_front() {
        match ack.await {
            Ok(_) => lat.record(t.elapsed()),
            Err(_) => errors += 1,
        }
    }
    Ok((lat, errors, started.elapsed()))
}

fn report(
    args: &NatsBenchArgs,
    records: u64,
    took: Duration,
    latency: Option<&Latencies>,
    errors: u64,
    (rss, io): (Option<f64>, Option<dmq::bench::data::ProcIo>),
    leader_moved: bool,
) -> DataReport {
    let secs = took.as_secs_f64().max(1e-9);
    DataReport {
        records,
        record_size: args.record_size,
        replication_factor: args.replicas as u32,
        records_per_s: records as f64 / secs,
        mb_per_s: records as f64 * args.record_size as f64 / secs / 1_048_576.0,
        latency: latency.map(Latencies::summary),
        errors,
        broker_rss_max_mib: rss,
        broker_io: io,
        leader_changes: Some(u64::from(leader_moved)),
        elections: 0,
    }
}

/// Whether the stream is led by another server than `leader` now (unknown counts as moved).
async fn leader_moved(s: &mut stream::Stream, leader: &str) -> bool {
    let now = s
        .info()
        .await
        .ok()
        .and_then(|i| i.cluster.as_ref().and_then(|c| c.leader.clone()));
    now.as_deref() != Some(leader)
}

async fn produce(
    args: &NatsBenchArgs,
    js: &jetstream::Context,
    subject: &str,
    s: &mut stream::Stream,
    leader: &str,
) -> Result<(&'static str, DataReport), String> {
    let payload = Bytes::from(vec![b'x'; args.record_size]);
    // Warm up: the connection's first publish, the stream's first message.
    js.publish(
        subject.to_string(),
        Bytes::from(vec![b'w'; args.record_size]),
    )
    .await
    .map_err(|e| format!("publish: {e}"))?
    .await
    .map_err(|e| format!("warm-up ack: {e}"))?;
    let (result, rss, io) = watch_processes(
        &args.server_pids,
        publish_records(js, subject, args.num_records, args.in_flight, &payload),
    )
    .await;
    let (lat, errors, took) = result?;
    let moved = leader_moved(s, leader).await;
    let n = lat.summary().count;
    Ok((
        "produce",
        report(args, n, took, Some(&lat), errors, (rss, io), moved),
    ))
}

async fn consume(
    args: &NatsBenchArgs,
    js: &jetstream::Context,
    subject: &str,
    s: &mut stream::Stream,
    leader: &str,
) -> Result<(&'static str, DataReport), String> {
    let payload = Bytes::from(vec![b'x'; args.record_size]);
    let fill = context(js.client(), 4096);
    let (_, errors, _) = publish_records(&fill, subject, args.num_records, 4096, &payload).await?;
    // Ephemeral (R1, on the stream's leader), no acks, from the first message.
    let reader: consumer::PullConsumer = s
        .create_consumer(consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot create a consumer: {e}"))?;
    let want = args.num_records - errors;
    let work = async {
        let started = Instant::now();
        let mut messages = reader
            .stream()
            .max_messages_per_batch(args.pull_batch.max(1))
            .messages()
            .await
            .map_err(|e| format!("cannot pull: {e}"))?;
        let mut got = 0u64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        while got < want {
            match tokio::time::timeout_at(deadline, messages.next()).await {
                Ok(Some(Ok(_))) => got += 1,
                Ok(Some(Err(e))) => return Err(format!("pull: {e}")),
                Ok(None) | Err(_) => break,
            }
        }
        Ok::<_, String>((got, started.elapsed()))
    };
    let (result, rss, io) = watch_processes(&args.server_pids, work).await;
    let (got, took) = result?;
    let moved = leader_moved(s, leader).await;
    Ok((
        "consume",
        report(
            args,
            got,
            took,
            None,
            want.saturating_sub(got),
            (rss, io),
            moved,
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn flags_go_before_or_after_the_workload_and_servers_are_checked_by_run() {
        let args = NatsBenchArgs::try_parse_from([
            "dmq-nats-bench",
            "--num-records",
            "10",
            "produce",
            "--servers",
            "nats://127.0.0.1:1,nats://127.0.0.1:2",
            "--in-flight",
            "1",
            "--server-pids",
            "7,8,9",
        ])
        .unwrap();
        assert_eq!(args.workload, NatsWorkload::Produce);
        assert_eq!(args.servers.len(), 2);
        assert_eq!((args.num_records, args.in_flight), (10, 1));
        assert_eq!(args.server_pids, vec![7, 8, 9]);
        assert_eq!(
            (args.record_size, args.replicas, args.pull_batch),
            (1024, 3, 1000)
        );

        // Without --servers (and NATS_SERVERS), run refuses before connecting anywhere.
        let none = NatsBenchArgs::try_parse_from(["dmq-nats-bench", "consume"]).unwrap();
        if std::env::var_os("NATS_SERVERS").is_none() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let err = rt.block_on(run(none)).unwrap_err();
            assert!(err.contains("--servers"), "{err}");
        }
        assert!(NatsBenchArgs::try_parse_from(["dmq-nats-bench"]).is_err());
    }
}
