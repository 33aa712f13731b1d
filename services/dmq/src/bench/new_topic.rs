//! `dmq bench new-topic`: how soon a new topic takes acks=all writes. Each round creates a
//! topic (1 partition, replication factor 3, min ISR 2) and sends one acks=all record as soon as
//! CreateTopic returned, retrying what the brokers refuse while they take their roles; it
//! reports the time from CreateTopic's answer to the record's acknowledgment.

use std::time::{Duration, Instant};

use dmq_client::{Acks, Admin, AdminOptions, MetadataView, Producer, ProducerConfig, Record};
use serde::Serialize;

use super::stats::{Latencies, Summary};
use crate::local_cluster::{LocalCluster, LocalClusterSpec};

#[derive(clap::Args, Clone, Debug)]
pub struct NewTopicArgs {
    #[arg(long, default_value_t = 20)]
    pub rounds: u32,
    /// Controllers of an existing cluster; without it a local cluster (3 controllers, 3
    /// brokers) is started in a temporary directory.
    #[arg(long, env = "DMQ_BOOTSTRAP", value_delimiter = ',')]
    pub bootstrap: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct NewTopicReport {
    pub rounds: u32,
    /// CreateTopic's answer to the first acknowledged acks=all record.
    pub first_ack: Summary,
    /// CreateTopic itself (request to answer).
    pub create: Summary,
}

pub async fn run(args: NewTopicArgs) -> Result<(), String> {
    let tmp =
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let (_cluster, controllers) = if args.bootstrap.is_empty() {
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
        let addrs = cluster.client_addrs();
        (Some(cluster), addrs)
    } else {
        (None, args.bootstrap.clone())
    };
    let admin = Admin::connect(controllers, AdminOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let producer = Producer::new(
        MetadataView::from(admin.clone()),
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::ZERO,
            retry: dmq_client::RetryPolicy {
                retries: 500,
                backoff_initial: Duration::from_millis(2),
                backoff_max: Duration::from_millis(20),
            },
            ..ProducerConfig::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let mut first_ack = Latencies::default();
    let mut create = Latencies::default();
    let config = dmq_client::pb::TopicConfig {
        min_insync_replicas: 2,
        ..Default::default()
    };
    let run = std::process::id();
    for round in 0..args.rounds {
        let name = format!("new-topic-{run}-{round}");
        let asked = Instant::now();
        admin
            .create_topic(&name, 1, 3, config)
            .await
            .map_err(|e| format!("create {name}: {e}"))?;
        let created = Instant::now();
        create.record(created - asked);
        producer
            .send_and_wait(&name, Some(0), Record::new("first"))
            .await
            .map_err(|e| format!("first record to {name}: {e}"))?;
        first_ack.record(created.elapsed());
        if !args.json {
            println!(
                "round {}: CreateTopic took {:?}, the first acks=all record {:?} after it",
                round + 1,
                created - asked,
                created.elapsed()
            );
        }
    }
    let report = NewTopicReport {
        rounds: args.rounds,
        first_ack: first_ack.summary(),
        create: create.summary(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report).expect("serializable"));
    } else {
        println!(
            "new topic: first acks=all ack after CreateTopic: {}; CreateTopic: {}",
            report.first_ack, report.create
        );
    }
    Ok(())
}
