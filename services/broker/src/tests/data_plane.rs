//! The data plane with 1–3 in-process brokers against a [`MiniController`], over real gRPC on
//! loopback: produce with every acks, fetch and its long poll, ListOffsets, Consume, the error
//! answers, replication, ISR shrink and expansion, min ISR, KIP-320 truncation after a leader
//! change, and topic deletion. Short timings; every wait polls with a deadline.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use dmq_proto::v1 as pb;
use dmq_proto::v1::broker_service_client::BrokerServiceClient;
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::eventually;
use super::mini_controller::MiniController;
use crate::{BrokerConfig, BrokerError, serve};

/// One broker, restartable on the same port and data dir.
pub(super) struct Node {
    pub id: u64,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    controller: String,
    lag: Duration,
    fetch_wait: Duration,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), BrokerError>>>,
    client: BrokerServiceClient<Channel>,
    /// This broker's fault points (kept across restarts).
    pub faults: crate::FaultPoints,
    /// Applied to the configuration at every (re)start.
    pub tune: fn(&mut BrokerConfig),
}

impl Node {
    async fn start(
        id: u64,
        controller: &MiniController,
        dir: &std::path::Path,
        lag: Duration,
        fetch_wait: Duration,
        tune: fn(&mut BrokerConfig),
    ) -> Node {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let mut node = Node {
            id,
            addr,
            data_dir: dir.join(format!("broker-{id}")),
            controller: controller.address(),
            lag,
            fetch_wait,
            stop: None,
            task: None,
            client: BrokerServiceClient::new(channel),
            faults: crate::FaultPoints::default(),
            tune,
        };
        node.spawn(listener);
        node
    }

    fn config(&self) -> BrokerConfig {
        let mut cfg = BrokerConfig::new(
            self.id,
            self.addr,
            self.addr.to_string(),
            vec![self.controller.clone()],
            &self.data_dir,
        );
        cfg.heartbeat_interval = Duration::from_millis(20);
        cfg.heartbeat_retry_interval = Duration::from_millis(10);
        cfg.rpc_timeout = Duration::from_secs(1);
        cfg.shutdown_timeout = Duration::from_secs(2);
        cfg.discovery.call_timeout = Duration::from_millis(500);
        cfg.discovery.backoff_initial = Duration::from_millis(10);
        cfg.discovery.backoff_max = Duration::from_millis(50);
        cfg.replica_lag_time_max = self.lag;
        cfg.replica_fetch_max_wait = self.fetch_wait;
        cfg.replica_fetch_backoff_max = Duration::from_millis(100);
        cfg.high_watermark_checkpoint_interval = Duration::from_millis(50);
        cfg.max_request_bytes = 256 * 1024;
        cfg.faults = self.faults.clone();
        (self.tune)(&mut cfg);
        cfg
    }

    fn spawn(&mut self, listener: TcpListener) {
        let (stop, stopped) = oneshot::channel::<()>();
        self.stop = Some(stop);
        self.task = Some(tokio::spawn(serve(self.config(), listener, async {
            let _ = stopped.await;
        })));
    }

    pub(super) async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("broker stopped in time")
                .unwrap()
                .unwrap();
        }
    }

    /// Waits until the broker stopped on its own and returns how it ended.
    pub(super) async fn exited(&mut self) -> Result<(), BrokerError> {
        // The stop sender stays: dropping it would ask the broker to stop.
        let task = self.task.take().expect("the broker runs");
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the broker stopped by itself in time")
            .unwrap()
    }

    /// Starts again on the same port and data dir (retrying while the old store is closing).
    pub(super) async fn restart(&mut self) {
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            let listener = TcpListener::bind(self.addr).await.unwrap();
            self.spawn(listener);
            tokio::time::sleep(Duration::from_millis(50)).await;
            if !self.task.as_ref().unwrap().is_finished() {
                return;
            }
            let exit = self.task.take().unwrap().await.unwrap();
            assert!(
                Instant::now() < give_up,
                "broker {} did not restart: {exit:?}",
                self.id
            );
        }
    }
}

/// A controller and `n` brokers (ids 1..=n).
pub(super) struct Cluster {
    pub controller: MiniController,
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub(super) async fn start(n: u64, lag: Duration) -> Cluster {
        Cluster::start_with_fetch_wait(n, lag, Duration::from_millis(100)).await
    }

    /// With `fetch_wait` as every broker's `replica_fetch_max_wait`.
    pub(super) async fn start_with_fetch_wait(
        n: u64,
        lag: Duration,
        fetch_wait: Duration,
    ) -> Cluster {
        Cluster::start_with(n, lag, fetch_wait, |_| {}).await
    }

    /// With `tune` applied to every broker's configuration.
    pub(super) async fn start_with(
        n: u64,
        lag: Duration,
        fetch_wait: Duration,
        tune: fn(&mut BrokerConfig),
    ) -> Cluster {
        let controller = MiniController::start().await;
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for id in 1..=n {
            nodes.push(Node::start(id, &controller, dir.path(), lag, fetch_wait, tune).await);
        }
        let cluster = Cluster {
            controller,
            nodes,
            _dir: dir,
        };
        eventually("every broker registered", || async {
            cluster.controller.model().brokers.len() == n as usize
        })
        .await;
        cluster
    }

    /// Waits until broker `id` holds the controller's current metadata.
    pub(super) async fn wait_metadata(&self, id: u64) {
        let version = self.controller.model().version;
        let client = self.client(id);
        eventually("the broker's metadata to catch up", || {
            let mut client = client.clone();
            async move {
                client
                    .get_broker_info(pb::GetBrokerInfoRequest {})
                    .await
                    .is_ok_and(|i| i.into_inner().metadata_version >= version)
            }
        })
        .await;
    }

    pub(super) fn node(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[id as usize - 1]
    }

    pub(super) fn client(&self, id: u64) -> BrokerServiceClient<Channel> {
        self.nodes[id as usize - 1].client.clone()
    }
}

pub(super) fn records(values: &[&str]) -> Vec<pb::Record> {
    values
        .iter()
        .map(|v| pb::Record {
            value: v.as_bytes().to_vec(),
            ..Default::default()
        })
        .collect()
}

pub(super) async fn produce(
    client: &BrokerServiceClient<Channel>,
    topic: &str,
    acks: pb::Acks,
    values: &[&str],
) -> Result<pb::ProduceResponse, Status> {
    produce_within(client, topic, acks, values, 5000).await
}

/// [`produce`] to partition 0 with the broker waiting at most `timeout_ms` for the acks.
pub(super) async fn produce_within(
    client: &BrokerServiceClient<Channel>,
    topic: &str,
    acks: pb::Acks,
    values: &[&str],
    timeout_ms: u32,
) -> Result<pb::ProduceResponse, Status> {
    client
        .clone()
        .produce(pb::ProduceRequest {
            topic: topic.into(),
            partition: 0,
            acks: acks as i32,
            records: records(values),
            timeout_ms,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Produces until the broker leads the partition and accepts (the metadata reaches it first).
pub(super) async fn produce_eventually(
    client: &BrokerServiceClient<Channel>,
    topic: &str,
    acks: pb::Acks,
    values: &[&str],
) -> pb::ProduceResponse {
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        match produce(client, topic, acks, values).await {
            Ok(r) => return r,
            Err(s) if Instant::now() < give_up && is_transient(&s) => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(s) => panic!("produce to {topic}: {s:?}"),
        }
    }
}

pub(super) fn is_transient(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::NotFound | Code::FailedPrecondition | Code::Unavailable
    )
}

pub(super) async fn fetch(
    client: &BrokerServiceClient<Channel>,
    topic: &str,
    offset: u64,
    max_wait_ms: u32,
) -> Result<pb::FetchResponse, Status> {
    client
        .clone()
        .fetch(pb::FetchRequest {
            topic: topic.into(),
            partition: 0,
            offset,
            max_bytes: 0,
            max_wait_ms,
            raw_batches: false,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Every committed value from offset 0, read from `client` once it leads.
pub(super) async fn read_all(client: &BrokerServiceClient<Channel>, topic: &str) -> Vec<String> {
    let give_up = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    loop {
        match fetch(client, topic, out.len() as u64, 0).await {
            Ok(r) => {
                for rec in &r.records {
                    assert_eq!(rec.offset, out.len() as u64, "dense, in order");
                    out.push(String::from_utf8(rec.value.clone()).unwrap());
                }
                if r.records.is_empty() && out.len() as u64 >= r.high_watermark {
                    return out;
                }
            }
            Err(s) if Instant::now() < give_up && is_transient(&s) => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(s) => panic!("fetch {topic}: {s:?}"),
        }
    }
}

pub(super) async fn high_watermark(
    client: &BrokerServiceClient<Channel>,
    topic: &str,
) -> Result<u64, Status> {
    client
        .clone()
        .list_offsets(pb::ListOffsetsRequest {
            topic: topic.into(),
            partition: 0,
            spec: pb::OffsetSpec::Latest as i32,
            timestamp_ms: 0,
        })
        .await
        .map(|r| r.into_inner().offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_broker_serves_produce_fetch_list_offsets_and_consume() {
    let mut c = Cluster::start(1, Duration::from_secs(10)).await;
    c.controller.model().create_topic("t", &[&[1]], 0);
    let b = c.client(1);

    let first = produce_eventually(&b, "t", pb::Acks::All, &["a", "b", "c"]).await;
    assert_eq!((first.base_offset, first.last_offset), (0, 2));
    let leader = produce(&b, "t", pb::Acks::Leader, &["d"]).await.unwrap();
    assert_eq!((leader.base_offset, leader.last_offset), (3, 3));
    let none = produce(&b, "t", pb::Acks::None, &["e"]).await.unwrap();
    assert_eq!((none.base_offset, none.last_offset), (0, 0));
    eventually("the acks=NONE record committed", || async {
        high_watermark(&b, "t").await.unwrap() == 5
    })
    .await;
    assert_eq!(read_all(&b, "t").await, ["a", "b", "c", "d", "e"]);

    // A long poll at the high watermark waits for the next record.
    let waiting = tokio::spawn({
        let b = b.clone();
        async move { fetch(&b, "t", 5, 5000).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "the fetch waits for records");
    produce(&b, "t", pb::Acks::All, &["f"]).await.unwrap();
    let woken = waiting.await.unwrap().unwrap();
    assert_eq!(woken.records.len(), 1);
    assert_eq!((woken.records[0].offset, woken.next_offset), (5, 6));
    // ...and answers empty after max_wait.
    let started = Instant::now();
    let empty = fetch(&b, "t", 6, 100).await.unwrap();
    assert!(empty.records.is_empty() && empty.next_offset == 6);
    assert!(started.elapsed() >= Duration::from_millis(90));

    // Issue 11: raw batches are the stored RecordBatch v2 bytes, whole (the first from before
    // the offset asked), committed only, and decode to the same records.
    let raw = b
        .clone()
        .fetch(pb::FetchRequest {
            topic: "t".into(),
            partition: 0,
            offset: 1,
            max_bytes: 0,
            max_wait_ms: 0,
            raw_batches: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(raw.records.is_empty() && !raw.batches.is_empty());
    assert_eq!(raw.next_offset, 6);
    let mut from_raw = Vec::new();
    for batch in &raw.batches {
        let header = crate::log::batch_v2::check(batch).unwrap();
        assert_eq!(header.compression(), 0);
        for r in crate::log::batch_v2::records(batch).unwrap() {
            from_raw.push((r.offset as u64, r.value.unwrap().to_vec()));
        }
    }
    assert_eq!(
        from_raw[0].0, 0,
        "whole batches: the first starts before offset 1"
    );
    let decoded = dmq_client::decode_raw_fetch(raw.clone()).unwrap();
    let plain = fetch(&b, "t", 0, 0).await.unwrap();
    assert_eq!(
        decoded.records, plain.records,
        "the client's decoding equals the broker's"
    );
    assert_eq!(
        from_raw,
        plain
            .records
            .iter()
            .map(|r| (r.offset, r.value.clone()))
            .collect::<Vec<_>>()
    );

    // Out of range: past the log end, with the valid range in the details.
    let err = fetch(&b, "t", 99, 0).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    let client_error = dmq_client::ClientError::from_broker_status(err, "b", "t", 0, 99);
    assert!(
        matches!(
            client_error,
            dmq_client::ClientError::OffsetOutOfRange {
                log_start: 0,
                high_watermark: 6,
                ..
            }
        ),
        "{client_error:?}"
    );

    // ListOffsets: earliest, latest, by timestamp.
    let list = |spec: pb::OffsetSpec, ts: i64| {
        let mut b = b.clone();
        async move {
            b.list_offsets(pb::ListOffsetsRequest {
                topic: "t".into(),
                partition: 0,
                spec: spec as i32,
                timestamp_ms: ts,
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    assert_eq!(list(pb::OffsetSpec::Earliest, 0).await.offset, 0);
    assert_eq!(list(pb::OffsetSpec::Latest, 0).await.offset, 6);
    let ts = woken.records[0].timestamp_ms;
    assert_eq!(list(pb::OffsetSpec::Timestamp, ts).await.offset, 5);
    assert_eq!(list(pb::OffsetSpec::Timestamp, ts + 60_000).await.offset, 6);

    // Consume with stop_at_end: everything, then the stream ends.
    let mut stream = b
        .clone()
        .consume(pb::ConsumeRequest {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            from_beginning: true,
            stop_at_end: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut offsets = Vec::new();
    while let Some(r) = stream.next().await {
        offsets.extend(r.unwrap().records.iter().map(|r| r.offset));
    }
    assert_eq!(offsets, (0..6).collect::<Vec<_>>());
    // A following stream gets new records as they commit.
    let mut follow = b
        .clone()
        .consume(pb::ConsumeRequest {
            topic: "t".into(),
            partition: 0,
            offset: 6,
            from_beginning: false,
            stop_at_end: false,
        })
        .await
        .unwrap()
        .into_inner();
    produce(&b, "t", pb::Acks::All, &["g", "h"]).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), follow.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.records[0].value, b"g");
    drop(follow);

    // Refusals.
    let unknown = produce(&b, "nope", pb::Acks::All, &["x"])
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let big = "x".repeat(70_000);
    let too_big = produce(&b, "t", pb::Acks::All, &[&big]).await.unwrap_err();
    assert_eq!(too_big.code(), Code::InvalidArgument, "{too_big:?}");
    assert!(too_big.message().contains("limit"), "{too_big:?}");
    let many = vec!["y".repeat(60_000); 5];
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let request_too_big = produce(&b, "t", pb::Acks::All, &many).await.unwrap_err();
    assert_eq!(
        request_too_big.code(),
        Code::ResourceExhausted,
        "{request_too_big:?}"
    );
    // A large request under the limits is split into several stored batches.
    let split = vec!["z".repeat(30_000); 6];
    let split: Vec<&str> = split.iter().map(String::as_str).collect();
    let r = produce(&b, "t", pb::Acks::All, &split).await.unwrap();
    assert_eq!(r.last_offset - r.base_offset, 5);
    assert_eq!(read_all(&b, "t").await.len(), 14);
    c.node(1).stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_replicate_and_refuse_acks_all_below_min_isr() {
    let mut c = Cluster::start(3, Duration::from_secs(10)).await;
    c.controller.model().create_topic("r", &[&[1, 2, 3]], 2);
    let b1 = c.client(1);
    produce_eventually(&b1, "r", pb::Acks::All, &["a", "b"]).await;
    assert_eq!(high_watermark(&b1, "r").await.unwrap(), 2);

    // Broker 3 goes away (fenced by the controller): the ISR shrinks to 2, acks=ALL still works.
    c.node(3).stop().await;
    eventually("ISR [1, 2]", || async {
        c.controller.model().partition("r", 0).isr == vec![1, 2]
    })
    .await;
    let r = produce_eventually(&b1, "r", pb::Acks::All, &["c"]).await;
    assert_eq!(r.base_offset, 2);

    // Broker 2 too: ISR [1] < min 2: refused, nothing appended.
    c.node(2).stop().await;
    eventually("ISR [1]", || async {
        c.controller.model().partition("r", 0).isr == vec![1]
    })
    .await;
    // Once the leader knows (otherwise an acks=ALL append could be waiting when the ISR
    // shrinks: NOT_ENOUGH_REPLICAS after the append, and the records may become visible).
    c.wait_metadata(1).await;
    let refused = produce(&b1, "r", pb::Acks::All, &["refused"])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let (reason, info) = crate::errors::error_info(&refused).unwrap();
    assert_eq!(reason, "NOT_ENOUGH_REPLICAS");
    assert_eq!(
        (
            info["isr_size"].as_str(),
            info["min_insync_replicas"].as_str()
        ),
        ("1", "2")
    );
    assert!(
        refused.message().contains("nothing was appended"),
        "{refused:?}"
    );
    assert!(matches!(
        dmq_client::ClientError::from_broker_status(refused, "b1", "r", 0, 0),
        dmq_client::ClientError::NotEnoughReplicas { .. }
    ));
    assert_eq!(read_all(&b1, "r").await, ["a", "b", "c"]);
    // acks=1 still works (the leader alone).
    produce(&b1, "r", pb::Acks::Leader, &["d"]).await.unwrap();

    // Both come back: they catch up, rejoin the ISR (the leader asks), and acks=ALL works again.
    c.node(2).restart().await;
    c.node(3).restart().await;
    eventually("ISR [1, 2, 3] again", || async {
        c.controller.model().partition("r", 0).isr == vec![1, 2, 3]
    })
    .await;
    produce(&b1, "r", pb::Acks::All, &["e"]).await.unwrap();
    // A follower asked directly refuses, naming the leader.
    let b2 = c.client(2);
    let not_leader = produce(&b2, "r", pb::Acks::All, &["x"]).await.unwrap_err();
    let hint = dmq_client::partition_leader_hint(&not_leader).expect("a leader hint");
    assert_eq!(hint.leader_id, 1);
    assert_eq!(
        hint.leader_address.as_deref(),
        Some(c.nodes[0].addr.to_string().as_str())
    );

    // Leadership moves to broker 2 (broker 1 fenced): every committed record is there (once
    // the followers have fetched from the new leader, its high watermark catches up).
    c.controller.model().fence(1);
    eventually("everything committed readable from broker 2", || async {
        read_all(&b2, "r").await == ["a", "b", "c", "d", "e"]
    })
    .await;
    for id in 1..=3 {
        c.node(id).stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_shrinks_the_isr_on_lag_and_expands_it_when_caught_up() {
    let lag = Duration::from_millis(300);
    let mut c = Cluster::start(3, lag).await;
    // Stops look like crashes: the controller keeps broker 3 ONLINE and in the ISR.
    c.controller.model().ignore_leaving = true;
    c.controller.model().create_topic("l", &[&[1, 2, 3]], 1);
    let b1 = c.client(1);
    produce_eventually(&b1, "l", pb::Acks::All, &["a"]).await;

    c.node(3).stop().await;
    let started = Instant::now();
    // acks=ALL waits for broker 3 until the leader drops it from the ISR, then commits.
    let r = produce(&b1, "l", pb::Acks::All, &["b"]).await.unwrap();
    assert_eq!(r.base_offset, 1);
    assert!(started.elapsed() >= lag / 2, "{:?}", started.elapsed());
    assert_eq!(c.controller.model().partition("l", 0).isr, vec![1, 2]);
    let shrink = c.controller.model().alter_requests.last().cloned().unwrap();
    assert_eq!((shrink.broker_id, shrink.new_isr), (1, vec![1, 2]));

    c.node(3).restart().await;
    eventually("broker 3 back in the ISR", || async {
        c.controller.model().partition("l", 0).isr == vec![1, 2, 3]
    })
    .await;
    for id in 1..=3 {
        c.node(id).stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_makes_the_old_one_truncate_what_was_never_committed() {
    let mut c = Cluster::start(2, Duration::from_secs(30)).await;
    c.controller.model().ignore_leaving = true;
    c.controller.model().create_topic("d", &[&[1, 2]], 1);
    let (b1, b2) = (c.client(1), c.client(2));
    produce_eventually(&b1, "d", pb::Acks::All, &["a0", "a1", "a2"]).await;

    // Broker 2 "crashes"; broker 1 appends records only it has (acks=1: not committed).
    c.node(2).stop().await;
    let x = produce(&b1, "d", pb::Acks::Leader, &["x0", "x1", "x2"])
        .await
        .unwrap();
    assert_eq!(x.base_offset, 3);
    assert_eq!(high_watermark(&b1, "d").await.unwrap(), 3);

    // Broker 1 "crashes" too; the controller makes broker 2 the leader; it takes new records.
    c.node(1).stop().await;
    c.controller.model().fence(1);
    assert_eq!(c.controller.model().partition("d", 0).leader, 2);
    c.node(2).restart().await;
    let y = produce_eventually(&b2, "d", pb::Acks::All, &["y0", "y1"]).await;
    assert_eq!(
        y.base_offset, 3,
        "the new leader continues after the committed records"
    );

    // Broker 1 comes back as a follower: it truncates x0..x2 (epoch boundary), copies y0, y1,
    // and rejoins the ISR.
    c.node(1).restart().await;
    eventually("broker 1 back in the ISR", || async {
        c.controller.model().partition("d", 0).isr == vec![1, 2]
    })
    .await;
    // Broker 1 leads again: it has exactly the new leader's log.
    c.controller.model().fence(2);
    assert_eq!(c.controller.model().partition("d", 0).leader, 1);
    eventually("exactly the new leader's records on broker 1", || async {
        let read = read_all(&b1, "d").await;
        assert!(!read.iter().any(|v| v.starts_with('x')), "{read:?}");
        read == ["a0", "a1", "a2", "y0", "y1"]
    })
    .await;
    for id in 1..=2 {
        c.node(id).stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_topic_removes_its_data_on_every_replica() {
    let mut c = Cluster::start(2, Duration::from_secs(10)).await;
    c.controller.model().create_topic("gone", &[&[1, 2]], 1);
    c.controller.model().create_topic("kept", &[&[2, 1]], 1);
    produce_eventually(&c.client(1), "gone", pb::Acks::All, &["a"]).await;
    produce_eventually(&c.client(2), "kept", pb::Acks::All, &["b"]).await;
    c.node(2).stop().await;
    // Deleted while broker 2 is down, and on broker 1 while it runs.
    c.controller.model().delete_topic("gone");
    let b1 = c.client(1);
    eventually("NOT_FOUND on broker 1", || async {
        matches!(fetch(&b1, "gone", 0, 0).await, Err(s) if s.code() == Code::NotFound)
    })
    .await;
    c.node(2).restart().await;
    eventually("broker 2 back in the ISR of kept", || async {
        c.controller.model().partition("kept", 0).isr == vec![2, 1]
    })
    .await;
    assert_eq!(read_all(&b1, "kept").await, ["b"]);
    for id in 1..=2 {
        c.node(id).stop().await;
    }
    for id in 1..=2u64 {
        let dir = c.nodes[id as usize - 1].data_dir.join("logs");
        let give_up = Instant::now() + Duration::from_secs(10);
        let store = loop {
            match crate::log::LogStore::open(&dir) {
                Ok(store) => break store,
                Err(e) => {
                    assert!(Instant::now() < give_up, "broker {id}'s store: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let topics: Vec<String> = store
            .stored_partitions()
            .unwrap()
            .into_iter()
            .map(|p| p.topic)
            .collect();
        assert_eq!(topics, ["kept"], "broker {id}");
    }
}

pub(super) async fn replica_state(
    client: &BrokerServiceClient<Channel>,
    topic: &str,
) -> pb::ReplicaState {
    let info = client
        .clone()
        .get_broker_info(pb::GetBrokerInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    info.replicas
        .into_iter()
        .find(|r| r.topic == topic && r.partition == 0)
        .unwrap_or_else(|| panic!("broker {} holds no replica of {topic}-0", info.broker_id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_broker_info_shows_replicas_and_a_follower_learns_the_watermark_without_more_records() {
    // Parked replica fetches would otherwise answer only after 30 s: a follower must learn the
    // high watermark from the leader's notice, including when its own fetch moved it (the only
    // follower here).
    let c =
        Cluster::start_with_fetch_wait(2, Duration::from_secs(10), Duration::from_secs(30)).await;
    c.controller.model().create_topic("w", &[&[1, 2]], 2);
    let (b1, b2) = (c.client(1), c.client(2));
    produce_eventually(&b1, "w", pb::Acks::All, &["a", "b"]).await;

    let leader = replica_state(&b1, "w").await;
    assert_eq!(leader.role(), pb::ReplicaRole::Leader);
    assert_eq!((leader.leader_id, leader.isr.clone()), (1, vec![1, 2]));
    assert_eq!((leader.log_end_offset, leader.high_watermark), (2, 2));
    eventually("the follower learns high watermark 2", || async {
        replica_state(&b2, "w").await.high_watermark == 2
    })
    .await;
    let follower = replica_state(&b2, "w").await;
    assert_eq!(follower.role(), pb::ReplicaRole::Follower);
    assert_eq!(
        (
            follower.leader_id,
            follower.leader_epoch,
            follower.log_end_offset
        ),
        (1, leader.leader_epoch, 2)
    );
    assert!(follower.isr.is_empty(), "only the leader reports an ISR");
}
