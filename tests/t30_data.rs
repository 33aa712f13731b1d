//! The data plane as real processes: 3 controllers and 3 brokers on loopback, the Rust client
//! (`dmq-client`) as producer and consumer.
//!
//! - 10,000 records with acks=ALL to a topic of 3 partitions, RF 3, min ISR 2, while the leader
//!   of a partition is killed (-9) twice (each restarted once the controllers moved its
//!   leaderships): afterwards every acknowledged record is read back at its offset, offsets are
//!   dense, each partition keeps the send order, and nothing appears that was not produced.
//! - acks=ALL with the ISR below min ISR is refused (NOT_ENOUGH_REPLICAS, nothing appended) and
//!   none of the refused records ever reaches a consumer.
//!
//! Timings: controllers fence a broker after 2 s without heartbeats (brokers send one every
//! 400 ms). Every wait polls with a deadline; measured times are printed (`-- --nocapture`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dmq_client::{
    Acks, Admin, ClientError, MetadataView, Producer, ProducerConfig, Record, RetryPolicy,
};
use dmq_proto::v1::{BrokerStatus, TopicConfig};
use dmq_tests::brokers::{BrokerOpts, BrokerProcs, process_test_slot, wait_brokers};
use dmq_tests::data::{
    admin, produce_raw, read_partition, wait_broker_metadata, wait_fully_replicated, wait_partition,
};
use dmq_tests::{ClusterOpts, ControllerCluster, LeaderRouter, deadline, wait_until};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::SemaphorePermit;
use tokio::time::Instant;
use tonic::Code;

/// Generous bound for anything that normally takes a few seconds.
const SLOW: Duration = Duration::from_secs(45);

/// Three controllers, three brokers and an admin. Fields drop in order: brokers, controllers,
/// then the slot.
struct Setup {
    brokers: BrokerProcs,
    _controllers: ControllerCluster,
    router: LeaderRouter,
    admin: Admin,
    _slot: SemaphorePermit<'static>,
}

impl Setup {
    async fn start() -> Setup {
        Setup::start_with(&[]).await
    }

    /// As [`start`](Self::start), with `extra` controller flags.
    async fn start_with(extra: &[&str]) -> Setup {
        let slot = process_test_slot().await;
        let mut controllers = ControllerCluster::start(
            3,
            ClusterOpts {
                broker_session_timeout_ms: 2000,
                broker_heartbeat_interval_ms: 400,
                extra_args: extra.iter().map(|a| a.to_string()).collect(),
                ..ClusterOpts::default()
            },
        )
        .await;
        controllers.wait_for_leader(SLOW).await;
        let brokers = BrokerProcs::start(3, controllers.addrs(), BrokerOpts::default()).await;
        let router = controllers.router();
        let admin = admin(&controllers.addrs()).await;
        let s = Setup {
            brokers,
            _controllers: controllers,
            router,
            admin,
            _slot: slot,
        };
        s.wait_online(&[1, 2, 3]).await;
        s
    }

    /// Waits until the controllers list every broker in `ids` ONLINE.
    async fn wait_online(&self, ids: &[u64]) {
        let ids = ids.to_vec();
        wait_brokers(&self.router, SLOW, move |brokers| {
            for id in &ids {
                match brokers.get(id) {
                    Some(b) if b.status() == BrokerStatus::Online => {}
                    _ => return Err(format!("want broker {id} ONLINE")),
                }
            }
            Ok(())
        })
        .await;
    }

    async fn create_topic(&self, name: &str, partitions: u32, min_isr: u32) {
        let config = TopicConfig {
            min_insync_replicas: min_isr,
            ..TopicConfig::default()
        };
        self.admin
            .create_topic(name, partitions, 3, config)
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
        wait_fully_replicated(&self.admin, name, SLOW).await;
    }

    /// kill -9 the leader of `topic`-`partition`, wait until the controllers moved its
    /// leadership, restart it and wait until it is ONLINE again. Returns the killed broker.
    async fn kill_leader(&mut self, topic: &str, partition: u32) -> u64 {
        let before =
            self.admin.describe_topic(topic).await.unwrap().partitions[partition as usize].clone();
        let victim = before.leader;
        assert_ne!(victim, 0, "{topic}-{partition} has a leader");
        self.brokers.kill(victim);
        let killed = Instant::now();
        let moved = wait_partition(&self.admin, topic, partition, SLOW, |p| {
            if p.leader != 0 && p.leader != victim && p.leader_epoch > before.leader_epoch {
                Ok(())
            } else {
                Err("leadership not moved yet".into())
            }
        })
        .await;
        println!(
            "killed broker {victim} (leader of {topic}-{partition} at epoch {}); broker {} leads \
             at epoch {} after {:?}",
            before.leader_epoch,
            moved.leader,
            moved.leader_epoch,
            killed.elapsed()
        );
        self.brokers.restart(victim).await;
        self.wait_online(&[victim]).await;
        victim
    }
}

/// What the producer was told about each record: (partition, offset) by payload index.
type Acked = BTreeMap<usize, (u32, u64)>;

fn payload(i: usize) -> String {
    format!("record-{i:05}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_records_survive_two_leader_kills() {
    const TOTAL: usize = 10_000;
    /// Records sent but not yet acknowledged at most: the producer runs alongside the kills.
    const WINDOW: usize = 500;
    let mut s = Setup::start().await;
    s.create_topic("events", 3, 2).await;

    let metadata = MetadataView::from(s.admin.clone());
    let config = ProducerConfig {
        acks: Acks::All,
        retry: RetryPolicy {
            retries: 60,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
        },
        request_timeout: Duration::from_secs(10),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(metadata.clone(), config).unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let sending = tokio::spawn({
        let producer = producer.clone();
        let done = done.clone();
        async move {
            let mut acked = Acked::new();
            let mut failed = Vec::new();
            let mut pending = FuturesUnordered::new();
            let mut absorb =
                |(i, result): (usize, Result<dmq_client::RecordMetadata, ClientError>)| {
                    done.fetch_add(1, Ordering::SeqCst);
                    match result {
                        Ok(m) => {
                            acked.insert(i, (m.partition, m.offset.expect("acks=ALL has offsets")));
                        }
                        Err(e) => failed.push((i, e)),
                    }
                };
            for i in 0..TOTAL {
                while pending.len() >= WINDOW {
                    absorb(pending.next().await.unwrap());
                }
                let delivery = producer
                    .send("events", None, Record::new(payload(i)))
                    .await
                    .expect("queued");
                pending.push(async move { (i, delivery.await) });
            }
            while let Some(outcome) = pending.next().await {
                absorb(outcome);
            }
            (acked, failed)
        }
    });

    // Two leader kills while records flow.
    for (at, partition) in [(2_500, 0), (6_000, 1)] {
        wait_until(deadline(SLOW), || async {
            let n = done.load(Ordering::SeqCst);
            if n >= at {
                Ok(())
            } else {
                Err(format!("{n} of {TOTAL} delivered"))
            }
        })
        .await
        .unwrap();
        s.kill_leader("events", partition).await;
        assert!(
            done.load(Ordering::SeqCst) < TOTAL,
            "the kill happened while records were still being produced"
        );
    }
    let (acked, failed) = tokio::time::timeout(Duration::from_secs(90), sending)
        .await
        .expect("every record delivered or failed in time")
        .unwrap();
    producer.close().await;
    println!(
        "{} of {TOTAL} records acknowledged, {} failed, in {:?}",
        acked.len(),
        failed.len(),
        started.elapsed()
    );
    assert!(
        failed.is_empty(),
        "with generous retries every record is acknowledged: {:?}",
        &failed[..failed.len().min(5)]
    );

    // Healed: every partition fully replicated again; read each from the beginning.
    wait_fully_replicated(&s.admin, "events", SLOW).await;
    let produced: HashSet<String> = (0..TOTAL).map(payload).collect();
    let mut by_partition: HashMap<u32, Vec<(usize, u64)>> = HashMap::new();
    for (&i, &(p, offset)) in &acked {
        by_partition.entry(p).or_default().push((i, offset));
    }
    let mut duplicates = 0;
    for p in 0..3u32 {
        let mine = by_partition.remove(&p).unwrap_or_default();
        let min_hw = mine.iter().map(|&(_, o)| o + 1).max().unwrap_or(0);
        let read = read_partition(&metadata, "events", p, min_hw, SLOW).await;
        // Dense offsets from 0 (nothing was deleted), each once (a map), in order.
        let offsets: Vec<u64> = read.keys().copied().collect();
        assert_eq!(
            offsets,
            (0..read.len() as u64).collect::<Vec<_>>(),
            "partition {p}: offsets are dense"
        );
        // Nothing that was not produced; a retried batch may appear twice (at-least-once).
        let mut seen = HashSet::new();
        for r in read.values() {
            let value = String::from_utf8(r.value.clone()).unwrap();
            assert!(
                produced.contains(&value),
                "partition {p}: unknown record {value:?}"
            );
            if !seen.insert(value) {
                duplicates += 1;
            }
        }
        // Every acknowledged record at its offset, and the send order kept.
        let mut last = None;
        for &(i, offset) in &mine {
            let r = read
                .get(&offset)
                .unwrap_or_else(|| panic!("partition {p}: acknowledged offset {offset} missing"));
            assert_eq!(
                r.value,
                payload(i).as_bytes(),
                "partition {p}: offset {offset} holds another record than the one acknowledged"
            );
            assert!(last < Some(offset), "partition {p}: send order kept");
            last = Some(offset);
        }
        println!(
            "partition {p}: {} records read, {} acknowledged here",
            read.len(),
            mine.len()
        );
    }
    println!("{duplicates} duplicates from retried batches");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_below_min_isr_is_refused_and_never_visible() {
    let mut s = Setup::start().await;
    s.create_topic("strict", 1, 2).await;
    let metadata = MetadataView::from(s.admin.clone());
    let strict = |retries| ProducerConfig {
        acks: Acks::All,
        retry: RetryPolicy {
            retries,
            ..RetryPolicy::default()
        },
        ..ProducerConfig::default()
    };
    let producer = Producer::new(metadata.clone(), strict(30)).unwrap();
    for i in 0..5 {
        producer
            .send_and_wait("strict", None, Record::new(format!("before-{i}")))
            .await
            .unwrap();
    }

    // Both followers die: the controllers fence them and shrink the ISR to the leader alone.
    let leader = s.admin.describe_topic("strict").await.unwrap().partitions[0].leader;
    let followers: Vec<u64> = (1..=3).filter(|&b| b != leader).collect();
    for &f in &followers {
        s.brokers.kill(f);
    }
    let shrunk = Instant::now();
    wait_partition(&s.admin, "strict", 0, SLOW, |p| {
        if p.isr == [leader] {
            Ok(())
        } else {
            Err("ISR not shrunk yet".into())
        }
    })
    .await;
    let version = s.admin.get_metadata().await.unwrap().metadata_version;
    wait_broker_metadata(&s.brokers, leader, version, SLOW).await;
    println!(
        "ISR shrank to [{leader}] {:?} after the kills",
        shrunk.elapsed()
    );

    // Refused, with nothing appended: raw calls, then the client (no retries).
    let mut refused = Vec::new();
    for i in 0..5 {
        let values = vec![format!("refused-{i}-a"), format!("refused-{i}-b")];
        let status = produce_raw(&s.brokers, leader, "strict", 0, &values)
            .await
            .expect_err("acks=ALL below min ISR must be refused");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains("nothing was appended"),
            "{status:?}"
        );
        refused.extend(values);
    }
    let once = Producer::new(metadata.clone(), strict(0)).unwrap();
    let error = once
        .send_and_wait("strict", None, Record::new("refused-client"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClientError::NotEnoughReplicas { .. }),
        "{error:?}"
    );
    refused.push("refused-client".into());

    // The followers come back, catch up and rejoin; acks=ALL works again.
    for &f in &followers {
        s.brokers.restart(f).await;
    }
    wait_fully_replicated(&s.admin, "strict", SLOW).await;
    for i in 0..5 {
        producer
            .send_and_wait("strict", None, Record::new(format!("after-{i}")))
            .await
            .unwrap();
    }
    producer.close().await;

    let read = read_partition(&metadata, "strict", 0, 10, SLOW).await;
    let values: Vec<String> = read
        .values()
        .map(|r| String::from_utf8(r.value.clone()).unwrap())
        .collect();
    for r in &refused {
        assert!(
            !values.contains(r),
            "refused record {r} is visible: {values:?}"
        );
    }
    let expected: Vec<String> = (0..5)
        .map(|i| format!("before-{i}"))
        .chain((0..5).map(|i| format!("after-{i}")))
        .collect();
    assert_eq!(values, expected);
}

/// Copies directory `from` to `to` (a disk image, for the test).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(status.success(), "cp -a {from:?} {to:?}");
}

/// Issue 10, path 13: the last ISR member of a partition lost its disk and came back empty.
/// Before, the controllers elected it at its registration and it answered acks=ALL with
/// offsets of acknowledged records it no longer had. Now the partition stays leaderless (its
/// storage id differs from the one that held the records) until the old disk is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_last_replica_is_not_elected_until_its_disk_returns() {
    let mut s = Setup::start().await;
    s.admin
        .create_topic("solo", 1, 1, TopicConfig::default())
        .await
        .unwrap();
    wait_fully_replicated(&s.admin, "solo", SLOW).await;
    let holder = s.admin.describe_topic("solo").await.unwrap().partitions[0].leader;
    let acked: Vec<String> = (0..3).map(|i| format!("kept-{i}")).collect();
    let first = produce_raw(&s.brokers, holder, "solo", 0, &acked)
        .await
        .unwrap();
    assert_eq!((first.base_offset, first.last_offset), (0, 2));
    let epoch_before = s.brokers.info(holder).await.unwrap().broker_epoch;

    // The disk is lost: kill -9, keep a copy of the data dir (the "old disk"), wipe it.
    s.brokers.kill(holder);
    let data_dir = s.brokers.data_dir(holder).to_path_buf();
    let spare = tempfile::tempdir().unwrap();
    let old_disk = spare.path().join("old-disk");
    copy_dir(&data_dir, &old_disk);
    std::fs::remove_dir_all(&data_dir).unwrap();
    s.brokers.restart(holder).await;
    let info = s
        .brokers
        .wait_info(holder, SLOW, |i| {
            if i.broker_epoch > epoch_before && i.status() == BrokerStatus::Online {
                Ok(())
            } else {
                Err("not registered again yet".into())
            }
        })
        .await;
    // Electing happens in the registration itself: the state after it is final.
    let p = s.admin.describe_topic("solo").await.unwrap().partitions[0].clone();
    assert_eq!(
        (p.leader, p.isr.clone()),
        (0, vec![holder]),
        "an empty disk must not lead what the old one held (broker epoch {})",
        info.broker_epoch
    );
    assert_ne!(p.last_isr_storage_id, 0);
    let refused = produce_raw(&s.brokers, holder, "solo", 0, &["reused?".to_string()])
        .await
        .expect_err("no leader: offsets 0..2 must not be handed out again");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");

    // The operator puts the old disk back: the broker leads again, with every record.
    s.brokers.kill(holder);
    std::fs::remove_dir_all(&data_dir).unwrap();
    copy_dir(&old_disk, &data_dir);
    s.brokers.restart(holder).await;
    wait_partition(&s.admin, "solo", 0, SLOW, |p| {
        if p.leader == holder {
            Ok(())
        } else {
            Err("not elected yet".into())
        }
    })
    .await;
    let metadata = MetadataView::from(s.admin.clone());
    let read = read_partition(&metadata, "solo", 0, 3, SLOW).await;
    let values: Vec<String> = read
        .values()
        .map(|r| String::from_utf8(r.value.clone()).unwrap())
        .collect();
    assert_eq!(values, acked);
}

/// Issue 12, "the Rust client follows a leader change from the metadata stream": a client's
/// metadata view learns that a partition moved to another broker without sending a request
/// that fails first (it follows the controller leader's WatchMetadata). Before, the view only
/// changed on a refresh, i.e. after a failed request or its max age (60 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_view_learns_a_leader_change_from_the_metadata_stream() {
    let mut s = Setup::start().await;
    s.create_topic("moving", 1, 2).await;
    let view = MetadataView::from(s.admin.clone());
    let before = view.leader("moving", 0).await.unwrap();
    s.brokers.kill(before.broker_id);
    let moved = wait_partition(&s.admin, "moving", 0, SLOW, |p| {
        if p.leader != 0 && p.leader != before.broker_id {
            Ok(())
        } else {
            Err("not moved yet".into())
        }
    })
    .await;
    // Only the view's cache is read: no request, no refresh.
    wait_until(deadline(Duration::from_secs(5)), || async {
        let snapshot = view.snapshot();
        let p = &snapshot.topics["moving"].partitions[0];
        if p.leader == moved.leader && p.leader_epoch == moved.leader_epoch {
            Ok(())
        } else {
            Err(format!("the view still says {p:?}"))
        }
    })
    .await
    .unwrap();
}

/// Issue 12, "leadership goes back to preferred replicas": a partition leader that is killed
/// and comes back catches up, rejoins the ISR and, through the controllers' automatic
/// rebalance, leads its partition again (here checked every 300 ms; 30 s by default). Before,
/// it stayed a follower until its new leader failed in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_broker_gets_its_preferred_leadership_back() {
    let mut s = Setup::start_with(&["--leader-rebalance-interval-ms", "300"]).await;
    s.create_topic("preferred", 1, 2).await;
    let first = s
        .admin
        .describe_topic("preferred")
        .await
        .unwrap()
        .partitions[0]
        .clone();
    let preferred = first.replicas[0];
    assert_eq!(
        first.leader, preferred,
        "a new partition is led by its first replica"
    );
    let victim = s.kill_leader("preferred", 0).await;
    assert_eq!(victim, preferred);
    let back = wait_partition(&s.admin, "preferred", 0, SLOW, |p| {
        if p.leader == preferred && p.isr.contains(&preferred) {
            Ok(())
        } else {
            Err(format!("led by {} with ISR {:?}", p.leader, p.isr))
        }
    })
    .await;
    assert!(back.leader_epoch >= first.leader_epoch + 2, "{back:?}");
    // It leads for real: it acknowledges an acks=all write itself (all replicas in sync).
    // (Its role reaches it over the metadata stream, milliseconds after the controllers.)
    let ack = wait_until(deadline(Duration::from_secs(10)), || async {
        produce_raw(
            &s.brokers,
            preferred,
            "preferred",
            0,
            &["after".to_string()],
        )
        .await
        .map_err(|e| format!("{e:?}"))
    })
    .await
    .expect("the preferred replica takes acks=all writes again");
    assert_eq!(ack.base_offset, ack.last_offset);
}
