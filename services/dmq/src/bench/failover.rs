//! `dmq bench failover`: how long writes stop when a leader dies.
//!
//! - `--kind controller` (default): sequential metadata writes on a local 3-controller
//!   cluster; each round kill -9s the controller leader and measures the time from the kill to
//!   the next acknowledged write, then restarts the killed node and waits for it to catch up.
//! - `--kind broker`: a local cluster of 3 controllers and 3 brokers, one partition with
//!   replication factor 3 and min ISR 2, and a producer sending acks=all records one at a time
//!   (the Rust client, following leader hints and the metadata). Each round kill -9s the
//!   partition's leader (or, with `--graceful`, stops it with SIGTERM) and measures the time
//!   from the kill to the acknowledgment of the first write sent after it; then restarts the
//!   broker and waits until it is back in the ISR.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{MetaWriter, register_request};
use crate::local_cluster::{LocalCluster, LocalClusterSpec, controller_info};

/// What `bench failover` kills.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailoverKind {
    /// The controller leader (metadata writes).
    Controller,
    /// The leader of the benchmark partition (acks=all produce).
    Broker,
}

#[derive(clap::Args, Clone, Debug)]
pub struct FailoverArgs {
    #[arg(long, value_enum, default_value_t = FailoverKind::Controller)]
    pub kind: FailoverKind,
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Acknowledged writes before each kill.
    #[arg(long, default_value_t = 200)]
    pub writes_before_kill: u64,
    /// `--kind broker`: stop the leader with SIGTERM (a controlled shutdown) instead of kill -9.
    #[arg(long)]
    pub graceful: bool,
    /// Extra flags for every controller (e.g. "--tick-ms=50").
    #[arg(long, allow_hyphen_values = true, value_delimiter = ' ')]
    pub controller_args: Vec<String>,
    /// Extra flags for every broker (`--kind broker`).
    #[arg(long, allow_hyphen_values = true, value_delimiter = ' ')]
    pub broker_args: Vec<String>,
    /// Run the cluster's controllers and brokers from this `dmq` program instead of this one
    /// (to measure another build with the same client).
    #[arg(long)]
    pub server_binary: Option<std::path::PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct FailoverReport {
    /// Kill to next acknowledged write, per round, in milliseconds.
    pub rounds_ms: Vec<f64>,
    pub mean_ms: f64,
    pub max_ms: f64,
    /// `--kind broker`: writes that failed for good (after the client's retries), in all.
    pub failed_writes: u64,
}

fn report(rounds_ms: Vec<f64>, failed_writes: u64, json: bool, what: &str) {
    let mean_ms = rounds_ms.iter().sum::<f64>() / rounds_ms.len().max(1) as f64;
    let max_ms = rounds_ms.iter().copied().fold(0.0, f64::max);
    let rounds = rounds_ms.len();
    let report = FailoverReport {
        rounds_ms,
        mean_ms,
        max_ms,
        failed_writes,
    };
    if json {
        println!("{}", serde_json::to_string(&report).expect("serializable"));
    } else {
        println!(
            "failover ({what}): mean {:.0} ms, max {:.0} ms over {rounds} rounds; {failed_writes} \
             writes failed for good",
            report.mean_ms, report.max_ms
        );
    }
}

fn non_empty(args: &[String]) -> Vec<String> {
    args.iter().filter(|a| !a.is_empty()).cloned().collect()
}

pub async fn run(args: FailoverArgs) -> Result<(), String> {
    match args.kind {
        FailoverKind::Controller => run_controller(args).await,
        FailoverKind::Broker => run_broker(args).await,
    }
}

async fn run_controller(args: FailoverArgs) -> Result<(), String> {
    let tmp =
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let spec = LocalClusterSpec {
        controllers: 3,
        brokers: 0,
        base_port: None,
        data_dir: tmp.path().to_path_buf(),
        controller_args: non_empty(&args.controller_args),
        broker_args: Vec::new(),
        binary: args.server_binary.clone(),
    };
    let mut cluster = LocalCluster::start(&spec).map_err(|e| e.to_string())?;
    cluster
        .wait_for_leader(Duration::from_secs(15))
        .await
        .map_err(|e| e.to_string())?;
    let mut writer = MetaWriter::new(cluster.client_addrs());
    let mut next_id = 2_000_000_000u64;
    let mut rounds_ms = Vec::new();
    for round in 1..=args.rounds {
        for _ in 0..args.writes_before_kill {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            writer
                .register(register_request(next_id, 256), deadline)
                .await
                .map_err(|e| e.to_string())?;
            next_id += 1;
        }
        let (leader, _) = cluster
            .wait_for_leader(Duration::from_secs(15))
            .await
            .map_err(|e| e.to_string())?;
        let killed_at = Instant::now();
        cluster.kill(leader);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        writer
            .register(register_request(next_id, 256), deadline)
            .await
            .map_err(|e| e.to_string())?;
        next_id += 1;
        let ms = killed_at.elapsed().as_secs_f64() * 1000.0;
        if !args.json {
            println!(
                "round {round}: killed leader {leader}; next acknowledged write after {ms:.0} ms"
            );
        }
        rounds_ms.push(ms);
        cluster
            .start_controller(leader)
            .map_err(|e| e.to_string())?;
        wait_caught_up(&cluster, leader).await?;
    }
    report(rounds_ms, 0, args.json, "controller leader, kill -9");
    Ok(())
}

/// What the producer task has seen: when each acknowledged write was sent and acknowledged,
/// and how many failed for good.
#[derive(Default)]
struct Acks {
    times: Vec<(Instant, Instant)>,
    failed: u64,
}

async fn run_broker(args: FailoverArgs) -> Result<(), String> {
    use dmq_client::{Acks as Ack, Admin, AdminOptions, MetadataView, Producer, ProducerConfig};
    let tmp =
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let spec = LocalClusterSpec {
        controllers: 3,
        brokers: 3,
        base_port: None,
        data_dir: tmp.path().to_path_buf(),
        controller_args: non_empty(&args.controller_args),
        broker_args: non_empty(&args.broker_args),
        binary: args.server_binary.clone(),
    };
    let mut cluster = LocalCluster::start(&spec).map_err(|e| e.to_string())?;
    cluster.wait_ready(Duration::from_secs(60)).await?;
    let admin = Admin::connect(cluster.client_addrs(), AdminOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let topic = "failover";
    let config = dmq_client::pb::TopicConfig {
        min_insync_replicas: 2,
        ..Default::default()
    };
    admin
        .create_topic(topic, 1, 3, config)
        .await
        .map_err(|e| e.to_string())?;
    wait_full_isr(&admin, topic, Duration::from_secs(30)).await?;
    let producer = Producer::new(
        MetadataView::from(admin.clone()),
        ProducerConfig {
            acks: Ack::All,
            linger: Duration::ZERO,
            retry: dmq_client::RetryPolicy {
                retries: 1000,
                backoff_initial: Duration::from_millis(10),
                backoff_max: Duration::from_millis(100),
            },
            request_timeout: Duration::from_secs(2),
            ..ProducerConfig::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let acks = Arc::new(Mutex::new(Acks::default()));
    let writer = tokio::spawn({
        let acks = acks.clone();
        async move {
            let value = vec![b'x'; 1024];
            loop {
                let sent_at = Instant::now();
                let sent = producer
                    .send_and_wait(topic, Some(0), dmq_client::Record::new(value.clone()))
                    .await;
                let mut acks = acks
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match sent {
                    Ok(_) => acks.times.push((sent_at, Instant::now())),
                    Err(_) => acks.failed += 1,
                }
            }
        }
    });
    let acked = |acks: &Mutex<Acks>| {
        acks.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .times
            .len() as u64
    };
    let mut rounds_ms = Vec::new();
    for round in 1..=args.rounds {
        let until = acked(&acks) + args.writes_before_kill;
        let give_up = Instant::now() + Duration::from_secs(60);
        while acked(&acks) < until {
            if Instant::now() > give_up {
                writer.abort();
                return Err(format!(
                    "round {round}: writes did not get through within 60 s"
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let leader = admin
            .describe_topic(topic)
            .await
            .map_err(|e| e.to_string())?
            .partitions[0]
            .leader;
        let killed_at = Instant::now();
        if args.graceful {
            cluster.stop_broker(leader, Duration::from_secs(10));
        } else {
            cluster.kill_broker(leader);
        }
        let give_up = Instant::now() + Duration::from_secs(120);
        // The first acknowledged write sent after the kill (one acknowledged just before it may
        // still be on its way back).
        let next = loop {
            let first = acks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .times
                .iter()
                .rev()
                .take_while(|&&(sent, _)| sent > killed_at)
                .last()
                .map(|&(_, acked)| acked);
            if let Some(t) = first {
                break t;
            }
            if Instant::now() > give_up {
                writer.abort();
                return Err(format!(
                    "round {round}: no write acknowledged 120 s after the kill"
                ));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let ms = next.duration_since(killed_at).as_secs_f64() * 1000.0;
        if !args.json {
            let how = if args.graceful { "stopped" } else { "killed" };
            println!(
                "round {round}: {how} partition leader broker {leader}; next acknowledged write \
                 after {ms:.0} ms"
            );
        }
        rounds_ms.push(ms);
        cluster.start_broker(leader).map_err(|e| e.to_string())?;
        wait_full_isr(&admin, topic, Duration::from_secs(60)).await?;
    }
    writer.abort();
    let failed = acks
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .failed;
    let what = if args.graceful {
        "partition leader, SIGTERM"
    } else {
        "partition leader, kill -9"
    };
    report(rounds_ms, failed, args.json, what);
    Ok(())
}

/// Waits until the topic's partition 0 has a leader and every replica in its ISR.
async fn wait_full_isr(
    admin: &dmq_client::Admin,
    topic: &str,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(t) = admin.describe_topic(topic).await
            && let Some(p) = t.partitions.first()
            && p.leader != 0
            && p.isr.len() == p.replicas.len()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{topic}-0 did not get its full ISR back within {timeout:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the restarted node applied what the leader has committed.
async fn wait_caught_up(cluster: &LocalCluster, node: u64) -> Result<(), String> {
    let addr = cluster
        .controllers
        .iter()
        .find(|c| c.id == node)
        .expect("known")
        .client_addr
        .clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, leader_addr) = cluster
            .wait_for_leader(Duration::from_secs(15))
            .await
            .map_err(|e| e.to_string())?;
        if let (Some(me), Some(leader)) = (
            controller_info(&addr).await,
            controller_info(&leader_addr).await,
        ) && me.applied_index >= leader.commit_index
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "restarted controller {node} did not catch up within 30 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
