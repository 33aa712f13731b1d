//! The handlers and the background work over a fake node that applies proposals to a real
//! metadata store at once (no Raft).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dmq_proto::v1::controller_service_server::ControllerService;
use dmq_raft::NodeId;
use tokio::sync::watch;
use tonic::Code;

use super::*;
use crate::node::{NodeError, PeerAddrs};
use crate::service::push::tests::{RecordingBroker, serve};
use crate::service::{LEADER_METADATA_KEY, leader_hint};

#[derive(Clone)]
struct FakeNode(Arc<Fake>);

struct Fake {
    store: Arc<MetadataStore>,
    status: watch::Sender<NodeStatus>,
    peers: BTreeMap<NodeId, PeerAddrs>,
    index: Mutex<u64>,
    proposals: AtomicUsize,
    barriers: AtomicUsize,
    /// The leader's lease has lapsed (it was paused or cut off).
    lease_lapsed: std::sync::atomic::AtomicBool,
}

impl FakeNode {
    /// Node 1 of controllers 1..=3, with an empty store.
    fn new() -> FakeNode {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store = Arc::new(MetadataStore::open(&db).unwrap());
        let peers = (1..=3)
            .map(|id| {
                (
                    id,
                    PeerAddrs {
                        raft: format!("127.0.0.1:{}", 8000 + id),
                        client: format!("127.0.0.1:{}", 9000 + id),
                    },
                )
            })
            .collect();
        let (status, _) = watch::channel(NodeStatus {
            id: 1,
            role: Role::Follower,
            term: 1,
            leader_id: None,
            leader_addr: None,
            commit_index: 0,
            applied_index: 0,
            match_indexes: BTreeMap::new(),
            running: true,
            catching_up: false,
            membership: Arc::new(dmq_raft::Membership::from_voters(1..=3)),
        });
        FakeNode(Arc::new(Fake {
            store,
            status,
            peers,
            index: Mutex::new(0),
            proposals: AtomicUsize::new(0),
            barriers: AtomicUsize::new(0),
            lease_lapsed: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    fn leader() -> FakeNode {
        let node = FakeNode::new();
        node.set_role(Role::Leader, 2, Some(1));
        node
    }

    fn set_role(&self, role: Role, term: u64, leader: Option<NodeId>) {
        self.0.status.send_modify(|s| {
            s.role = role;
            s.term = term;
            s.leader_id = leader;
            s.leader_addr = leader.map(|id| self.0.peers[&id].client.clone());
            s.match_indexes = if role == Role::Leader {
                BTreeMap::from([(2, 5), (3, 4)])
            } else {
                BTreeMap::new()
            };
        });
    }

    /// Applies `command` as the next log entry, whoever leads.
    fn apply(&self, command: &MetadataCommand) -> ApplyOutcome {
        let mut index = self.0.index.lock().unwrap();
        *index += 1;
        let outcome = self.0.store.apply(*index, command).unwrap();
        let applied = *index;
        self.0.status.send_modify(|s| {
            s.commit_index = applied;
            s.applied_index = applied;
        });
        outcome
    }

    fn store(&self) -> Arc<MetadataStore> {
        self.0.store.clone()
    }

    fn proposals(&self) -> usize {
        self.0.proposals.load(Ordering::SeqCst)
    }
}

impl Consensus for FakeNode {
    fn status(&self) -> NodeStatus {
        self.0.status.borrow().clone()
    }

    fn watch_status(&self) -> watch::Receiver<NodeStatus> {
        self.0.status.subscribe()
    }

    fn watch_progress(&self) -> watch::Receiver<NodeStatus> {
        self.0.status.subscribe()
    }

    fn not_leader(&self) -> NodeError {
        let s = self.status();
        match (s.leader_id, s.leader_addr) {
            (Some(id), Some(addr)) if id != s.id => NodeError::NotLeader {
                leader_id: id,
                leader_addr: addr,
            },
            _ => NodeError::NoLeader,
        }
    }

    fn peers(&self) -> BTreeMap<NodeId, PeerAddrs> {
        self.0.peers.clone()
    }

    async fn propose_membership(
        &self,
        _from: dmq_raft::Membership,
        _to: dmq_raft::Membership,
    ) -> Result<ApplyOutcome, NodeError> {
        Err(NodeError::InvalidMembership(
            "the fake node does not change membership".into(),
        ))
    }

    async fn propose(&self, command: &MetadataCommand) -> Result<ApplyOutcome, NodeError> {
        if self.status().role != Role::Leader {
            return Err(self.not_leader());
        }
        self.0.proposals.fetch_add(1, Ordering::SeqCst);
        Ok(self.apply(command))
    }

    fn feature_level_max(&self) -> u32 {
        crate::metadata::features::FEATURE_LEVEL_MAX
    }

    fn leader_lease(&self) -> Option<std::time::Instant> {
        (self.status().role == Role::Leader && !self.0.lease_lapsed.load(Ordering::SeqCst))
            .then(|| std::time::Instant::now() + Duration::from_secs(3600))
    }

    async fn read_barrier(&self) -> Result<(), NodeError> {
        self.0.barriers.fetch_add(1, Ordering::SeqCst);
        if self.status().role == Role::Leader {
            Ok(())
        } else {
            Err(self.not_leader())
        }
    }
}

fn service(node: &FakeNode, cfg: ServiceConfig) -> ControllerServiceImpl<FakeNode> {
    ControllerServiceImpl::new(node.clone(), node.store(), cfg)
}

fn register_request(id: u64, port: u32) -> RegisterBrokerRequest {
    RegisterBrokerRequest {
        broker_id: id,
        host: "127.0.0.1".into(),
        port,
        rack: String::new(),
        ..Default::default()
    }
}

async fn register(svc: &ControllerServiceImpl<FakeNode>, id: u64) -> u64 {
    svc.register_broker(Request::new(register_request(id, 9100 + id as u32)))
        .await
        .unwrap()
        .into_inner()
        .broker_epoch
}

async fn heartbeat(
    svc: &ControllerServiceImpl<FakeNode>,
    id: u64,
    epoch: u64,
    leaving: bool,
) -> Result<BrokerHeartbeatResponse, Status> {
    svc.broker_heartbeat(Request::new(BrokerHeartbeatRequest {
        broker_id: id,
        broker_epoch: epoch,
        metadata_version: 0,
        leaving,
    }))
    .await
    .map(Response::into_inner)
}

fn create_request(name: &str, partitions: u32, rf: u32) -> CreateTopicRequest {
    CreateTopicRequest {
        name: name.into(),
        partitions,
        replication_factor: rf,
        config: None,
    }
}

async fn create(
    svc: &ControllerServiceImpl<FakeNode>,
    name: &str,
    partitions: u32,
    rf: u32,
) -> Result<CreateTopicResponse, Status> {
    svc.create_topic(Request::new(create_request(name, partitions, rf)))
        .await
        .map(Response::into_inner)
}

/// Polls `f` until it holds, for at most 10 s.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn any_node_describes_itself_and_its_leader() {
    let node = FakeNode::new();
    node.set_role(Role::Follower, 4, Some(2));
    let svc = service(&node, ServiceConfig::default());
    let info = svc
        .get_controller_info(Request::new(GetControllerInfoRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        info,
        GetControllerInfoResponse {
            node_id: 1,
            role: ControllerRole::Follower as i32,
            term: 4,
            leader_id: 2,
            leader_address: "127.0.0.1:9002".into(),
            commit_index: 0,
            applied_index: 0,
            address: "127.0.0.1:9001".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            feature_level: 0,
            cluster_id: String::new(),
            feature_level_max: crate::metadata::features::FEATURE_LEVEL_MAX,
            catching_up: false,
        }
    );
    node.set_role(Role::Candidate, 5, None);
    let info = svc
        .get_controller_info(Request::new(GetControllerInfoRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (info.role, info.leader_id, info.leader_address.as_str()),
        (ControllerRole::Candidate as i32, 0, "")
    );
}

#[tokio::test]
async fn a_follower_redirects_mutations_to_the_leader() {
    let node = FakeNode::new();
    node.set_role(Role::Follower, 3, Some(2));
    let svc = service(&node, ServiceConfig::default());
    let errors = [
        create(&svc, "orders", 1, 1).await.unwrap_err(),
        svc.register_broker(Request::new(register_request(1, 9101)))
            .await
            .unwrap_err(),
        heartbeat(&svc, 1, 1, false).await.unwrap_err(),
        svc.delete_topic(Request::new(DeleteTopicRequest {
            name: "orders".into(),
        }))
        .await
        .unwrap_err(),
        svc.unregister_broker(Request::new(UnregisterBrokerRequest {
            broker_id: 1,
            broker_epoch: 1,
        }))
        .await
        .unwrap_err(),
    ];
    for status in errors {
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert_eq!(
            status.message(),
            "not the leader; retry on node 2 at 127.0.0.1:9002"
        );
        assert_eq!(
            status.metadata().get(LEADER_METADATA_KEY).unwrap(),
            "127.0.0.1:9002"
        );
        assert_eq!(leader_hint(&status).unwrap().leader_id, 2);
    }
    // Bad input is refused as such, wherever it lands.
    let status = create(&svc, "bad name", 1, 1).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    // No leader known: UNAVAILABLE.
    node.set_role(Role::Candidate, 4, None);
    let status = create(&svc, "orders", 1, 1).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(node.proposals(), 0);
}

#[tokio::test]
async fn reads_are_linearizable_unless_stale_reads_are_allowed() {
    let node = FakeNode::leader();
    let svc = service(&node, ServiceConfig::default());
    register(&svc, 1).await;
    create(&svc, "orders", 2, 1).await.unwrap();
    node.set_role(Role::Follower, 3, Some(2));
    let barriers = node.0.barriers.load(Ordering::SeqCst);

    let status = svc
        .describe_topic(Request::new(DescribeTopicRequest {
            name: "orders".into(),
            allow_stale: false,
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(node.0.barriers.load(Ordering::SeqCst), barriers + 1);

    let topic = svc
        .describe_topic(Request::new(DescribeTopicRequest {
            name: "orders".into(),
            allow_stale: true,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(topic.topic.unwrap().partitions.len(), 2);
    let metadata = svc
        .get_metadata(Request::new(GetMetadataRequest { allow_stale: true }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            metadata.brokers.len(),
            metadata.topics.len(),
            metadata.leader_id,
            metadata.term
        ),
        (1, 1, 2, 3)
    );
    assert_eq!(metadata.metadata_version, node.store().version());
    let page = svc
        .list_topics(Request::new(ListTopicsRequest {
            page_size: 0,
            page_token: String::new(),
            allow_stale: true,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.topics.len(), 1);
    assert_eq!(node.0.barriers.load(Ordering::SeqCst), barriers + 1);
}

#[tokio::test]
async fn broker_lifecycle_register_heartbeat_leave_return_and_fence() {
    let node = FakeNode::leader();
    let svc = service(&node, ServiceConfig::default());
    let epoch = register(&svc, 7).await;
    assert!(epoch > 0);

    let ok = heartbeat(&svc, 7, epoch, false).await.unwrap();
    assert_eq!(ok.status(), BrokerStatus::Online);
    assert_eq!((ok.term, ok.metadata_version), (2, node.store().version()));
    let proposals = node.proposals();
    heartbeat(&svc, 7, epoch, false).await.unwrap();
    assert_eq!(
        node.proposals(),
        proposals,
        "a heartbeat of an ONLINE broker stays out of the log"
    );

    // Stale or unknown epochs and unknown brokers: FENCED, nothing proposed.
    for (id, e) in [(7, epoch - 1), (7, epoch + 10), (8, 1)] {
        let fenced = heartbeat(&svc, id, e, false).await.unwrap();
        assert_eq!(
            fenced.status(),
            BrokerStatus::Fenced,
            "broker {id} epoch {e}"
        );
    }
    assert_eq!(node.proposals(), proposals);
    assert_eq!(
        heartbeat(&svc, 0, 1, false).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // Leaving: OFFLINE at once; the next heartbeat brings it back ONLINE.
    let left = heartbeat(&svc, 7, epoch, true).await.unwrap();
    assert_eq!(left.status(), BrokerStatus::Offline);
    assert_eq!(
        node.store().broker(7).unwrap().status(),
        BrokerStatus::Offline
    );
    let left_again = heartbeat(&svc, 7, epoch, true).await.unwrap();
    assert_eq!(left_again.status(), BrokerStatus::Offline);
    assert_eq!(node.proposals(), proposals + 1, "one fence only");
    let back = heartbeat(&svc, 7, epoch, false).await.unwrap();
    assert_eq!(back.status(), BrokerStatus::Online);
    assert_eq!(back.metadata_version, node.store().version());

    // Re-registering fences the old incarnation.
    let epoch2 = register(&svc, 7).await;
    assert!(epoch2 > epoch);
    assert_eq!(
        heartbeat(&svc, 7, epoch, false).await.unwrap().status(),
        BrokerStatus::Fenced
    );
    assert_eq!(
        heartbeat(&svc, 7, epoch2, false).await.unwrap().status(),
        BrokerStatus::Online
    );

    // Unregister: a stale epoch is refused before the log; then the broker is gone.
    let proposals = node.proposals();
    let status = svc
        .unregister_broker(Request::new(UnregisterBrokerRequest {
            broker_id: 7,
            broker_epoch: epoch,
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(node.proposals(), proposals);
    svc.unregister_broker(Request::new(UnregisterBrokerRequest {
        broker_id: 7,
        broker_epoch: epoch2,
    }))
    .await
    .unwrap();
    assert!(node.store().broker(7).is_none());
    assert_eq!(
        heartbeat(&svc, 7, epoch2, false).await.unwrap().status(),
        BrokerStatus::Fenced
    );
}

#[tokio::test]
async fn registrations_are_validated_before_the_log() {
    let node = FakeNode::leader();
    let svc = service(&node, ServiceConfig::default());
    for bad in [
        register_request(0, 9000),
        register_request(1, 0),
        RegisterBrokerRequest {
            host: String::new(),
            ..register_request(1, 9000)
        },
    ] {
        let status = svc.register_broker(Request::new(bad)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    }
    assert_eq!(node.proposals(), 0);
}

#[tokio::test]
async fn topics_are_validated_assigned_over_online_brokers_and_described() {
    let node = FakeNode::leader();
    let svc = service(
        &node,
        ServiceConfig {
            max_partitions: 8,
            ..ServiceConfig::default()
        },
    );
    for id in 1..=3 {
        register(&svc, id).await;
    }
    let proposals = node.proposals();
    let bad = [
        (create_request("", 1, 1), Code::InvalidArgument),
        (create_request("a/b", 1, 1), Code::InvalidArgument),
        (create_request("t", 0, 1), Code::InvalidArgument),
        (create_request("t", 9, 1), Code::InvalidArgument),
        (create_request("t", 1, 0), Code::InvalidArgument),
        (create_request("t", 1, 4), Code::FailedPrecondition),
    ];
    for (request, code) in bad {
        let status = svc
            .create_topic(Request::new(request.clone()))
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{request:?}: {status:?}");
    }
    assert_eq!(
        node.proposals(),
        proposals,
        "nothing malformed reaches the log"
    );

    let created = create(&svc, "orders", 6, 3).await.unwrap();
    let topic = created.topic.unwrap();
    assert_eq!(created.metadata_version, node.store().version());
    assert_eq!(topic.partitions.len(), 6);
    for p in &topic.partitions {
        assert_eq!(p.replicas.len(), 3);
        assert_eq!(p.leader, p.replicas[0]);
    }
    let leaders: std::collections::BTreeSet<u64> =
        topic.partitions.iter().map(|p| p.leader).collect();
    assert_eq!(leaders.len(), 3, "leaders spread over the brokers");

    // A duplicate is refused without a log entry.
    let proposals = node.proposals();
    let status = create(&svc, "orders", 1, 1).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(node.proposals(), proposals);

    // Only ONLINE brokers count: with broker 3 OFFLINE, rf 3 no longer fits.
    let epoch3 = node.store().broker(3).unwrap().broker_epoch;
    heartbeat(&svc, 3, epoch3, true).await.unwrap();
    let status = create(&svc, "more", 1, 3).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let two = create(&svc, "more", 4, 2).await.unwrap().topic.unwrap();
    assert!(two.partitions.iter().all(|p| !p.replicas.contains(&3)));

    let described = svc
        .describe_topic(Request::new(DescribeTopicRequest {
            name: "more".into(),
            allow_stale: false,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(described.topic.unwrap(), two);
    let missing = svc
        .describe_topic(Request::new(DescribeTopicRequest {
            name: "nope".into(),
            allow_stale: false,
        }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let page = svc
        .list_topics(Request::new(ListTopicsRequest {
            page_size: 1,
            page_token: String::new(),
            allow_stale: false,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.topics[0].name, "more");
    let next = svc
        .list_topics(Request::new(ListTopicsRequest {
            page_size: 1,
            page_token: page.next_page_token,
            allow_stale: false,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (next.topics[0].name.as_str(), next.next_page_token.as_str()),
        ("orders", "")
    );
    let bad_token = svc
        .list_topics(Request::new(ListTopicsRequest {
            page_size: 1,
            page_token: "zz".into(),
            allow_stale: false,
        }))
        .await
        .unwrap_err();
    assert_eq!(bad_token.code(), Code::InvalidArgument);

    // Delete: unknown topics are refused before the log.
    let proposals = node.proposals();
    let status = svc
        .delete_topic(Request::new(DeleteTopicRequest {
            name: "nope".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(node.proposals(), proposals);
    svc.delete_topic(Request::new(DeleteTopicRequest {
        name: "orders".into(),
    }))
    .await
    .unwrap();
    assert!(node.store().describe_topic("orders").is_err());
}

#[tokio::test]
async fn isr_changes_need_the_current_leader_and_epoch() {
    let node = FakeNode::leader();
    let svc = service(&node, ServiceConfig::default());
    let epochs: Vec<u64> = [
        register(&svc, 1).await,
        register(&svc, 2).await,
        register(&svc, 3).await,
    ]
    .into();
    let topic = create(&svc, "t", 1, 3).await.unwrap().topic.unwrap();
    let p = topic.partitions[0].clone();
    let leader = p.leader;
    let follower = *p.replicas.iter().find(|&&r| r != leader).unwrap();
    let alter = |broker_id: u64, leader_epoch: u64, new_isr: Vec<u64>| AlterPartitionRequest {
        broker_id,
        broker_epoch: epochs[broker_id as usize - 1],
        topic: "t".into(),
        partition: 0,
        leader_epoch,
        new_isr,
        partition_epoch: p.partition_epoch,
    };
    let proposals = node.proposals();
    let refused = [
        (alter(leader, p.leader_epoch, vec![]), Code::InvalidArgument),
        (
            alter(leader, p.leader_epoch + 1, vec![leader]),
            Code::FailedPrecondition,
        ),
        (
            alter(follower, p.leader_epoch, vec![follower]),
            Code::FailedPrecondition,
        ),
        (
            AlterPartitionRequest {
                partition: 5,
                ..alter(leader, p.leader_epoch, vec![leader])
            },
            Code::NotFound,
        ),
    ];
    for (request, code) in refused {
        let status = svc
            .alter_partition(Request::new(request.clone()))
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{request:?}: {status:?}");
    }
    assert_eq!(node.proposals(), proposals);
    let altered = svc
        .alter_partition(Request::new(alter(leader, p.leader_epoch, vec![leader])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(altered.partition.unwrap().isr, vec![leader]);
    assert_eq!(altered.metadata_version, node.store().version());
}

#[tokio::test]
async fn describe_cluster_shows_controllers_and_brokers() {
    let node = FakeNode::leader();
    let svc = service(&node, ServiceConfig::default());
    register(&svc, 1).await;
    let cluster = svc
        .describe_cluster(Request::new(DescribeClusterRequest { allow_stale: false }))
        .await
        .unwrap()
        .into_inner();
    let roles: Vec<(u64, i32, u64)> = cluster
        .controllers
        .iter()
        .map(|c| (c.node_id, c.role, c.match_index))
        .collect();
    let commit = node.status().commit_index;
    assert_eq!(
        roles,
        vec![
            (1, ControllerRole::Leader as i32, commit),
            (2, ControllerRole::Follower as i32, 5),
            (3, ControllerRole::Follower as i32, 4),
        ]
    );
    assert_eq!(cluster.controllers[1].address, "127.0.0.1:9002");
    assert_eq!(
        (cluster.leader_id, cluster.term, cluster.brokers.len()),
        (1, 2, 1)
    );
    assert_eq!(cluster.metadata_version, node.store().version());

    node.set_role(Role::Follower, 3, Some(3));
    let cluster = svc
        .describe_cluster(Request::new(DescribeClusterRequest { allow_stale: true }))
        .await
        .unwrap()
        .into_inner();
    let roles: Vec<i32> = cluster.controllers.iter().map(|c| c.role).collect();
    assert_eq!(
        roles,
        vec![
            ControllerRole::Follower as i32,
            ControllerRole::Unspecified as i32,
            ControllerRole::Leader as i32,
        ]
    );
}

#[tokio::test]
async fn the_leader_fences_silent_brokers_and_heartbeats_bring_them_back() {
    let node = FakeNode::leader();
    let svc = service(
        &node,
        ServiceConfig {
            session_timeout: Duration::from_millis(800),
            heartbeat_interval: Duration::from_millis(100),
            liveness_check_interval: Duration::from_millis(20),
            ..ServiceConfig::default()
        },
    );
    let background = svc.spawn_background();
    let live = register(&svc, 1).await;
    let silent = register(&svc, 2).await;
    let store = node.store();
    let beating = {
        let svc = svc.clone();
        tokio::spawn(async move {
            loop {
                heartbeat(&svc, 1, live, false).await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    eventually("broker 2 is OFFLINE", || {
        store.broker(2).unwrap().status() == BrokerStatus::Offline
    })
    .await;
    assert_eq!(store.broker(1).unwrap().status(), BrokerStatus::Online);
    let fences = node.proposals();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        node.proposals(),
        fences,
        "an OFFLINE broker is not fenced again"
    );

    let back = heartbeat(&svc, 2, silent, false).await.unwrap();
    assert_eq!(back.status(), BrokerStatus::Online);
    beating.abort();
    background.abort();
}

#[tokio::test]
async fn a_leader_whose_lease_lapsed_vouches_for_no_broker_and_names_no_leader() {
    let node = FakeNode::leader();
    let svc = service(
        &node,
        ServiceConfig {
            session_timeout: Duration::from_millis(300),
            heartbeat_interval: Duration::from_millis(100),
            liveness_check_interval: Duration::from_millis(20),
            ..ServiceConfig::default()
        },
    );
    let background = svc.spawn_background();
    let epoch = register(&svc, 1).await;
    assert_eq!(
        heartbeat(&svc, 1, epoch, false).await.unwrap().status(),
        BrokerStatus::Online
    );
    node.0.lease_lapsed.store(true, Ordering::SeqCst);
    let err = heartbeat(&svc, 1, epoch, false).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(
        tonic_types::StatusExt::get_details_error_info(&err)
            .unwrap()
            .reason,
        "NO_LEADER"
    );
    let info = svc
        .get_controller_info(Request::new(GetControllerInfoRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (info.role(), info.leader_id, info.leader_address.as_str()),
        (ControllerRole::Candidate, 0, "")
    );
    // Silent for far longer than the session, but not fenced: nobody listened.
    let proposals = node.proposals();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(node.proposals(), proposals, "fenced without a lease");
    assert_eq!(
        node.store().broker(1).unwrap().status(),
        BrokerStatus::Online
    );
    background.abort();
}

#[tokio::test]
async fn a_new_leader_gives_grace_and_pushes_controller_changed() {
    let node = FakeNode::new();
    node.set_role(Role::Follower, 1, Some(2));
    let recording = RecordingBroker::default();
    let addr = serve(recording.clone()).await;
    // Registered under the previous leader; never heard by this node.
    node.apply(&command(Command::RegisterBroker(RegisterBrokerCommand {
        broker_id: 5,
        host: addr.ip().to_string(),
        port: u32::from(addr.port()),
        rack: String::new(),
        ..Default::default()
    })));
    let svc = service(
        &node,
        ServiceConfig {
            session_timeout: Duration::from_millis(1500),
            heartbeat_interval: Duration::from_millis(100),
            liveness_check_interval: Duration::from_millis(20),
            ..ServiceConfig::default()
        },
    );
    let background = svc.spawn_background();
    // Long after any heartbeat it may have sent elsewhere.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let became_leader = Instant::now();
    node.set_role(Role::Leader, 9, Some(1));

    eventually("the broker got CONTROLLER_CHANGED", || {
        !recording.pushes.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(
        *recording.pushes.lock().unwrap(),
        vec![ControllerChangedRequest {
            term: 9,
            leader_id: 1,
            leader_address: "127.0.0.1:9001".into(),
        }]
    );
    // Grace: the broker is not marked OFFLINE within a session of the failover...
    let store = node.store();
    while became_leader.elapsed() < Duration::from_millis(1200) {
        assert_eq!(store.broker(5).unwrap().status(), BrokerStatus::Online);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...but is after it, since it never heartbeats.
    eventually("broker 5 is OFFLINE", || {
        store.broker(5).unwrap().status() == BrokerStatus::Offline
    })
    .await;
    assert!(became_leader.elapsed() >= Duration::from_millis(1500));

    // Another term, another push; stepping down stops the checks.
    node.set_role(Role::Follower, 10, Some(2));
    node.set_role(Role::Leader, 11, Some(1));
    eventually("the second push", || {
        recording.pushes.lock().unwrap().len() == 2
    })
    .await;
    assert_eq!(recording.pushes.lock().unwrap()[1].term, 11);
    background.abort();
}

#[tokio::test]
async fn the_background_task_ends_when_the_node_stops() {
    let node = FakeNode::leader();
    let svc = service(&node, ServiceConfig::default());
    let background = svc.spawn_background();
    node.0.status.send_modify(|s| s.running = false);
    tokio::time::timeout(Duration::from_secs(5), background)
        .await
        .expect("stopped")
        .unwrap();
}

#[test]
fn start_offsets_differ_between_names_and_are_stable() {
    assert_eq!(start_offset("orders"), start_offset("orders"));
    assert_ne!(start_offset("orders"), start_offset("orders2"));
    assert_eq!(start_offset(""), 0xcbf2_9ce4_8422_2325);
}

#[tokio::test]
async fn get_snapshot_streams_a_checksummed_consistent_snapshot_from_the_leader_only() {
    use futures::StreamExt;
    let node = FakeNode::leader();
    let svc = service(&node, ServiceConfig::default());
    register(&svc, 1).await;
    create(&svc, "t", 2, 1).await.unwrap();
    let mut stream = svc
        .get_snapshot(Request::new(GetSnapshotRequest {}))
        .await
        .unwrap()
        .into_inner();
    let mut header = None;
    let mut data = Vec::new();
    let mut crc = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        header = header.or(chunk.header);
        data.extend_from_slice(&chunk.data);
        if chunk.done {
            crc = Some(chunk.data_crc32);
        }
    }
    let header = header.expect("a header");
    assert_eq!(header.data_bytes as usize, data.len());
    assert_eq!(crc, Some(crc32fast::hash(&data)));
    assert_eq!(
        (header.applied_index, data),
        node.store().snapshot_bytes(),
        "the snapshot is the applied state"
    );
    assert!(
        node.0.barriers.load(Ordering::SeqCst) > 0,
        "taken after a read barrier"
    );

    node.set_role(Role::Follower, 3, Some(2));
    let err = svc
        .get_snapshot(Request::new(GetSnapshotRequest {}))
        .await
        .err()
        .expect("a follower refuses");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(leader_hint(&err).is_some());
}
