//! Controller operations the `t1x` suites share: topic creation that counts a retried create as
//! acknowledged, paged listing, cluster views, convergence of every node's metadata, fake broker
//! fleets, log searches, and a cap on the clusters one test process runs at once.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::Path;
use std::time::Duration;

use dmq_proto::v1::controller_service_client::ControllerServiceClient;
use dmq_proto::v1::{
    BrokerMetadata, BrokerStatus, CreateTopicRequest, DescribeClusterRequest,
    DescribeClusterResponse, GetMetadataRequest, GetMetadataResponse, ListTopicsRequest,
    TopicMetadata,
};
use tokio::sync::{Semaphore, SemaphorePermit};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::cluster::ControllerCluster;
use crate::fake_broker::FakeBroker;
use crate::router::LeaderRouter;
use crate::wait::{deadline, wait_until};

/// Controller clusters one test process runs at once: the timing of a 3-node cluster (50 ms
/// ticks, 2 s broker sessions) holds with two of them on a 2-core machine, so `cargo test` with
/// any `--test-threads` runs at most two.
static CLUSTER_SLOTS: Semaphore = Semaphore::const_new(2);

/// Waits for one of the process's cluster slots; hold it for the whole test.
pub async fn cluster_slot() -> SemaphorePermit<'static> {
    CLUSTER_SLOTS
        .acquire()
        .await
        .expect("the semaphore is never closed")
}

/// The error of `r`, which must have failed with `code`; panics naming `what` otherwise.
pub fn expect_code<T: Debug>(r: Result<T, Status>, code: Code, what: &str) -> Status {
    match r {
        Ok(v) => panic!("{what}: expected {code:?}, got OK: {v:?}"),
        Err(s) if s.code() == code => s,
        Err(s) => panic!(
            "{what}: expected {code:?}, got {:?}: {}",
            s.code(),
            s.message()
        ),
    }
}

/// A CreateTopic request.
pub fn create_request(name: &str, partitions: u32, replication_factor: u32) -> CreateTopicRequest {
    CreateTopicRequest {
        name: name.to_string(),
        partitions,
        replication_factor,
        config: None,
    }
}

/// How a create was acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateAck {
    /// OK: this call created it.
    Created,
    /// ALREADY_EXISTS: an earlier attempt (whose answer was lost) created it.
    AlreadyExisted,
}

/// CreateTopic through `router`; ALREADY_EXISTS counts as acknowledged (the router retries,
/// so an attempt whose answer was lost may have created the topic).
pub async fn create_topic(
    router: &LeaderRouter,
    name: &str,
    partitions: u32,
    replication_factor: u32,
) -> Result<CreateAck, Status> {
    let req = create_request(name, partitions, replication_factor);
    let r = router
        .call(|mut c| {
            let req = req.clone();
            async move { c.create_topic(req).await }
        })
        .await;
    match r {
        Ok(_) => Ok(CreateAck::Created),
        Err(s) if s.code() == Code::AlreadyExists => Ok(CreateAck::AlreadyExisted),
        Err(s) => Err(s),
    }
}

/// DescribeTopic (linearizable) through `router`.
pub async fn describe_topic(
    router: &LeaderRouter,
    name: &str,
) -> Result<dmq_proto::v1::TopicMetadata, Status> {
    let name = name.to_string();
    let r = router
        .call(|mut c| {
            let name = name.clone();
            async move {
                c.describe_topic(dmq_proto::v1::DescribeTopicRequest {
                    name,
                    allow_stale: false,
                })
                .await
            }
        })
        .await?;
    r.topic
        .ok_or_else(|| Status::internal("DescribeTopic answered no topic"))
}

/// Every topic, page by page (pages of 7, so paging is exercised).
pub async fn list_all_topics(
    client: &mut ControllerServiceClient<Channel>,
    allow_stale: bool,
) -> Result<Vec<TopicMetadata>, Status> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_topics(ListTopicsRequest {
                page_size: 7,
                page_token: token.clone(),
                allow_stale,
            })
            .await?
            .into_inner();
        all.extend(page.topics);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        token = page.next_page_token;
    }
}

/// GetMetadata of one node.
pub async fn metadata(
    client: &mut ControllerServiceClient<Channel>,
    allow_stale: bool,
) -> Result<GetMetadataResponse, Status> {
    client
        .get_metadata(GetMetadataRequest { allow_stale })
        .await
        .map(tonic::Response::into_inner)
}

/// DescribeCluster (linearizable) through the leader.
pub async fn describe_cluster(router: &LeaderRouter) -> Result<DescribeClusterResponse, Status> {
    router
        .call(|mut c| async move {
            c.describe_cluster(DescribeClusterRequest { allow_stale: false })
                .await
        })
        .await
}

/// Each broker's status, by id.
pub fn broker_statuses(brokers: &[BrokerMetadata]) -> BTreeMap<u64, BrokerStatus> {
    brokers.iter().map(|b| (b.broker_id, b.status())).collect()
}

/// Waits until DescribeCluster shows every broker in `ids` with `status`; returns the answer.
pub async fn wait_brokers_status(
    router: &LeaderRouter,
    ids: &[u64],
    status: BrokerStatus,
    timeout: Duration,
) -> DescribeClusterResponse {
    wait_until(deadline(timeout), || async {
        let d = describe_cluster(router)
            .await
            .map_err(|e| format!("DescribeCluster: {}: {}", e.code(), e.message()))?;
        let st = broker_statuses(&d.brokers);
        if ids.iter().all(|id| st.get(id) == Some(&status)) {
            Ok(d)
        } else {
            Err(format!("want {ids:?} {status:?}; brokers: {st:?}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("brokers {ids:?} not {status:?}: {e}"))
}

/// Fake brokers `ids` registered with `cluster` and heartbeating every `interval`, once every
/// one of them is ONLINE in DescribeCluster.
pub async fn start_brokers(
    cluster: &ControllerCluster,
    ids: &[u64],
    interval: Duration,
) -> Vec<FakeBroker> {
    let mut brokers = Vec::new();
    for &id in ids {
        let mut b = FakeBroker::start(id, cluster.addrs()).await;
        b.register()
            .await
            .unwrap_or_else(|e| panic!("broker {id} did not register: {e}"));
        b.start_heartbeats(interval);
        brokers.push(b);
    }
    wait_brokers_status(
        &cluster.router(),
        ids,
        BrokerStatus::Online,
        Duration::from_secs(30),
    )
    .await;
    brokers
}

/// The metadata all `ids` hold once they agree: each node's GetMetadata with `allow_stale` has
/// the same version, brokers and topics. Panics at once if two nodes hold different metadata at
/// the same version (state machine safety), or if they do not agree within `timeout`.
pub async fn wait_converged(
    cluster: &ControllerCluster,
    ids: &[u64],
    timeout: Duration,
) -> GetMetadataResponse {
    let r = wait_until(deadline(timeout), || async {
        let mut all = BTreeMap::new();
        for &id in ids {
            let m = metadata(&mut cluster.client(id), true)
                .await
                .map_err(|e| format!("node {id}: {}: {}", e.code(), e.message()))?;
            all.insert(id, m);
        }
        let versions: BTreeMap<u64, u64> = all
            .iter()
            .map(|(&id, m)| (id, m.metadata_version))
            .collect();
        let (&first_id, first) = all.iter().next().ok_or("no node")?;
        if versions.values().any(|&v| v != first.metadata_version) {
            return Err(format!("versions differ: {versions:?}"));
        }
        for (&id, m) in &all {
            assert!(
                m.brokers == first.brokers && m.topics == first.topics,
                "state machine safety: nodes {first_id} and {id} hold different metadata at \
                 version {}:\n{first_id}: {first:?}\n{id}: {m:?}",
                first.metadata_version
            );
        }
        Ok(first.clone())
    })
    .await;
    r.unwrap_or_else(|e| panic!("nodes {ids:?} did not converge: {e}"))
}

/// Waits until node `id` has applied at least `index`.
pub async fn wait_applied(cluster: &ControllerCluster, id: u64, index: u64, timeout: Duration) {
    wait_until(deadline(timeout), || async {
        let i = cluster
            .info(id)
            .await
            .map_err(|e| format!("{}: {}", e.code(), e.message()))?;
        if i.applied_index >= index {
            Ok(())
        } else {
            Err(format!("applied {} < {index}", i.applied_index))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("node {id} did not apply {index}: {e}"));
}

/// The part of a harness log written by the latest start of its process (the harness writes a
/// `===== harness: start #N` line before each start).
pub fn latest_run(log: &Path) -> String {
    let text = std::fs::read(log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    match text.rfind("===== harness: start #") {
        Some(i) => text[i..].to_string(),
        None => text,
    }
}

/// How many lines of `log` contain `needle`.
pub fn count_lines(log: &Path, needle: &str) -> usize {
    std::fs::read(log)
        .map(|b| {
            String::from_utf8_lossy(&b)
                .lines()
                .filter(|l| l.contains(needle))
                .count()
        })
        .unwrap_or(0)
}
