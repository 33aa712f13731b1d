//! Data-plane helpers for the process suites (`t30_data.rs`): topics and partition state through
//! the Rust client's [`Admin`], raw Produce calls to one broker, and reading whole partitions
//! with the client's [`Consumer`]. Every wait polls with a deadline.

use std::collections::BTreeMap;
use std::time::Duration;

use dmq_client::{
    Admin, AdminOptions, ConsumedRecord, Consumer, ConsumerConfig, MetadataView, RetryPolicy, Start,
};
use dmq_proto::v1::broker_service_client::BrokerServiceClient;
use dmq_proto::v1::{Acks, PartitionMetadata, ProduceRequest, ProduceResponse, Record};
use tonic::Status;
use tonic::transport::Channel;

use crate::brokers::BrokerProcs;
use crate::wait::{deadline, wait_until};

/// An admin of the controllers at `addrs`, with patient retries (controllers may be electing).
pub async fn admin<A: ToString>(addrs: &[A]) -> Admin {
    let opts = AdminOptions {
        retry: RetryPolicy {
            retries: 30,
            ..RetryPolicy::default()
        },
        ..AdminOptions::default()
    };
    Admin::connect(addrs.iter().map(ToString::to_string).collect(), opts)
        .await
        .expect("admin")
}

/// Polls the topic's metadata (linearizable, from the controller leader) until `check` accepts
/// partition `partition` (`Err(why)`: not yet), within `timeout`; panics otherwise.
pub async fn wait_partition<F>(
    admin: &Admin,
    topic: &str,
    partition: u32,
    timeout: Duration,
    check: F,
) -> PartitionMetadata
where
    F: Fn(&PartitionMetadata) -> Result<(), String>,
{
    let check = &check;
    wait_until(deadline(timeout), || async move {
        let t = admin
            .describe_topic(topic)
            .await
            .map_err(|e| e.to_string())?;
        let p = t
            .partitions
            .get(partition as usize)
            .ok_or_else(|| format!("no partition {partition}"))?;
        check(p).map_err(|why| format!("{why}; partition: {p:?}"))?;
        Ok::<_, String>(p.clone())
    })
    .await
    .unwrap_or_else(|e| panic!("{topic}-{partition}: {e}"))
}

/// Waits until every partition of `topic` has a leader and all its replicas in the ISR.
pub async fn wait_fully_replicated(admin: &Admin, topic: &str, timeout: Duration) {
    let partitions = admin.describe_topic(topic).await.expect("topic").partitions;
    for p in 0..partitions.len() as u32 {
        wait_partition(admin, topic, p, timeout, |p| {
            let mut isr = p.isr.clone();
            let mut replicas = p.replicas.clone();
            isr.sort_unstable();
            replicas.sort_unstable();
            if p.leader != 0 && isr == replicas {
                Ok(())
            } else {
                Err("not fully replicated".into())
            }
        })
        .await;
    }
}

/// Waits until broker `id` holds metadata at least at `version` (GetBrokerInfo).
pub async fn wait_broker_metadata(brokers: &BrokerProcs, id: u64, version: u64, timeout: Duration) {
    brokers
        .wait_info(id, timeout, |i| {
            if i.metadata_version >= version {
                Ok(())
            } else {
                Err(format!(
                    "metadata version {} < {version}",
                    i.metadata_version
                ))
            }
        })
        .await;
}

/// One Produce call of `values` to broker `id` (no retries), acks=ALL.
pub async fn produce_raw(
    brokers: &BrokerProcs,
    id: u64,
    topic: &str,
    partition: u32,
    values: &[String],
) -> Result<ProduceResponse, Status> {
    let mut client: BrokerServiceClient<Channel> = brokers.client(id);
    let request = ProduceRequest {
        topic: topic.to_string(),
        partition,
        acks: Acks::All as i32,
        records: values
            .iter()
            .map(|v| Record {
                value: v.as_bytes().to_vec(),
                ..Record::default()
            })
            .collect(),
        timeout_ms: 5000,
    };
    match tokio::time::timeout(Duration::from_secs(10), client.produce(request)).await {
        Ok(r) => r.map(tonic::Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded("no answer to Produce")),
    }
}

/// Reads `topic`-`partition` from its log start until the high watermark reaches at least
/// `min_high_watermark` and everything below it was read (the high watermark of a new leader
/// catches up once its followers fetched from it). Returns the records by offset.
pub async fn read_partition(
    metadata: &MetadataView,
    topic: &str,
    partition: u32,
    min_high_watermark: u64,
    timeout: Duration,
) -> BTreeMap<u64, ConsumedRecord> {
    let config = ConsumerConfig {
        max_wait: Duration::from_millis(200),
        retry: RetryPolicy {
            retries: 30,
            ..RetryPolicy::default()
        },
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(metadata.clone(), config).expect("consumer");
    let until = deadline(timeout);
    consumer
        .assign(topic, partition, Start::Beginning)
        .await
        .unwrap_or_else(|e| panic!("assign {topic}-{partition}: {e}"));
    let mut out = BTreeMap::new();
    loop {
        match consumer.poll().await {
            Ok(records) => {
                for r in records {
                    assert!(
                        out.insert(r.offset, r.clone()).is_none(),
                        "{topic}-{partition}: offset {} returned twice",
                        r.offset
                    );
                }
            }
            Err(e) if e.is_retryable() => {}
            Err(e) => panic!("reading {topic}-{partition}: {e}"),
        }
        let position = consumer.position(topic, partition).unwrap_or(0);
        let hw = consumer.high_watermark(topic, partition).unwrap_or(0);
        if hw >= min_high_watermark && position >= hw {
            return out;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{topic}-{partition}: read up to {position}, high watermark {hw}, want at least \
             {min_high_watermark} within {timeout:?}"
        );
    }
}
