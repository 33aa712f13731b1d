//! In-process, one real metadata node driven over its RaftService by a test playing the other
//! controllers, with the test-only fault points (`--features fault-injection`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dmq_controller::metadata::MetadataStore;
use dmq_controller::node::{self, NodeConfig, NodeHandle, PeerAddrs};
use dmq_controller::transport::RaftServer;
use dmq_proto::v1 as pb;
use dmq_proto::v1::raft_service_client::RaftServiceClient;
use dmq_proto::v1::{MetadataCommand, RegisterBrokerCommand, metadata_command::Command};
use prost::Message as _;
use tokio::net::TcpListener;
use tonic::transport::Channel;

/// Node 1 of a 3-node configuration whose peers 2 and 3 are played by the test.
struct Lone {
    _dir: tempfile::TempDir,
    handle: NodeHandle,
    store: Arc<MetadataStore>,
    faults: Arc<dmq_controller::faults::Faults>,
    client: RaftServiceClient<Channel>,
}

async fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().to_string()
}

impl Lone {
    async fn start() -> Lone {
        let dir = tempfile::tempdir().unwrap();
        let mut peers = BTreeMap::new();
        for id in 1..=3 {
            peers.insert(
                id,
                PeerAddrs {
                    raft: free_addr().await,
                    client: format!("127.0.0.1:{}", 10_000 + id),
                },
            );
        }
        let raft_addr = peers[&1].raft.clone();
        let mut cfg = NodeConfig::new(1, peers, dir.path().to_path_buf());
        cfg.tick = Duration::from_millis(20);
        // It must not campaign while the test drives it.
        cfg.election_timeout_min_ticks = 500;
        cfg.election_timeout_max_ticks = 1000;
        let faults = Arc::new(dmq_controller::faults::Faults::none());
        cfg.faults = faults.clone();
        let (handle, store) = node::start(cfg).expect("node starts");
        let listener = TcpListener::bind(&raft_addr).await.unwrap();
        let svc = RaftServer::new(&handle, 64 << 20).into_service();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        let client = RaftServiceClient::connect(format!("http://{raft_addr}"))
            .await
            .unwrap();
        Lone {
            _dir: dir,
            handle,
            store,
            faults,
            client,
        }
    }

    async fn wait_stopped(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.handle.status().running {
            assert!(Instant::now() < deadline, "the node did not stop");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn register(id: u64) -> Vec<u8> {
    MetadataCommand {
        command: Some(Command::RegisterBroker(RegisterBrokerCommand {
            broker_id: id,
            host: "127.0.0.1".into(),
            port: 9000 + id as u32,
            rack: String::new(),
            ..Default::default()
        })),
    }
    .encode_to_vec()
}

fn entry(index: u64, term: u64, data: Vec<u8>) -> pb::LogEntry {
    pb::LogEntry {
        index,
        term,
        r#type: pb::EntryType::Normal as i32,
        data,
    }
}

fn append(
    term: u64,
    prev: (u64, u64),
    entries: Vec<pb::LogEntry>,
    commit: u64,
) -> pb::AppendEntriesRequest {
    pb::AppendEntriesRequest {
        term,
        leader_id: 2,
        prev_log_index: prev.0,
        prev_log_term: prev.1,
        entries,
        leader_commit: commit,
        read_round: 0,
        to: 1,
        cluster_id: String::new(),
    }
}

/// Item 6: the driver applies committed entries that are "already durable" before it syncs a
/// Ready. After a truncation the storage's synced index still counts the replaced entries, so
/// it must use the index the core agrees is stable too. Here the new entries 8 and 9 of term 2
/// replace stored ones and are committed in the same Ready, whose write fails: they were never
/// durable here and must not be applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t11_6_entries_replacing_a_truncated_suffix_are_not_applied_before_they_are_durable() {
    let mut n = Lone::start().await;
    let old: Vec<_> = (1..=10).map(|i| entry(i, 1, register(i))).collect();
    let r = n
        .client
        .append_entries(append(1, (0, 0), old, 0))
        .await
        .unwrap()
        .into_inner();
    assert!(r.success && r.match_index == 10, "{r:?}");

    // A new leader of term 2 keeps 1..=7 and replaces 8.. with its own, committed up to 9; the
    // write of that Ready fails.
    n.faults.set_fail_writes(true);
    let new = vec![entry(8, 2, register(100)), entry(9, 2, register(101))];
    let r = n.client.append_entries(append(2, (7, 1), new, 9)).await;
    assert!(r.is_err() || !r.unwrap().into_inner().success);
    n.wait_stopped().await;
    assert!(
        n.store.applied_index() <= 7,
        "applied up to {} although entries 8 and 9 were never durable here",
        n.store.applied_index()
    );
    assert!(
        n.store.broker(100).is_none() && n.store.broker(101).is_none(),
        "a command that was never durable here was applied"
    );
}

/// Three real nodes over loopback gRPC, each with its own fault points.
struct Trio {
    _dirs: Vec<tempfile::TempDir>,
    peers: BTreeMap<u64, PeerAddrs>,
    nodes: BTreeMap<
        u64,
        (
            NodeHandle,
            Arc<MetadataStore>,
            Arc<dmq_controller::faults::Faults>,
        ),
    >,
}

impl Trio {
    async fn start(configure: impl Fn(u64, &dmq_controller::faults::Faults)) -> Trio {
        let mut peers = BTreeMap::new();
        for id in 1..=3 {
            peers.insert(
                id,
                PeerAddrs {
                    raft: free_addr().await,
                    client: format!("127.0.0.1:{}", 10_000 + id),
                },
            );
        }
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut nodes = BTreeMap::new();
        for id in 1..=3u64 {
            let mut cfg = NodeConfig::new(id, peers.clone(), dirs[id as usize - 1].path().into());
            cfg.tick = Duration::from_millis(20);
            cfg.election_timeout_min_ticks = 5;
            cfg.election_timeout_max_ticks = 10;
            let faults = Arc::new(dmq_controller::faults::Faults::none());
            configure(id, &faults);
            cfg.faults = faults.clone();
            let (handle, store) = node::start(cfg).expect("node starts");
            let listener = TcpListener::bind(&peers[&id].raft).await.unwrap();
            let svc = RaftServer::new(&handle, 64 << 20).into_service();
            tokio::spawn(async move {
                tonic::transport::Server::builder()
                    .add_service(svc)
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                    .await
                    .unwrap();
            });
            nodes.insert(id, (handle, store, faults));
        }
        Trio {
            _dirs: dirs,
            peers,
            nodes,
        }
    }

    async fn leader(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let leaders: Vec<u64> = self
                .nodes
                .iter()
                .filter(|(_, (h, _, _))| h.status().role == dmq_raft::Role::Leader)
                .map(|(&id, _)| id)
                .collect();
            if let [l] = leaders[..] {
                return l;
            }
            assert!(Instant::now() < deadline, "no single leader");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn wait(&self, what: &str, f: impl Fn(&Trio) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f(self) {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Item 9: a command unknown to this version (here: a `MetadataCommand` whose only field is
/// one from the future, number 99) decoded as empty and was rejected on every node alike,
/// while a newer controller would have applied it: in a rolling upgrade the logs agree but
/// the states diverge. A node must stop at that entry instead, before applying it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t11_9_a_command_from_the_future_stops_every_node_before_it_is_applied() {
    let trio = Trio::start(|_, _| {}).await;
    let leader = trio.leader().await;
    let (handle, _, _) = &trio.nodes[&leader];
    handle
        .propose(&MetadataCommand {
            command: Some(Command::RegisterBroker(RegisterBrokerCommand {
                broker_id: 1,
                host: "127.0.0.1".into(),
                port: 9001,
                rack: String::new(),
                ..Default::default()
            })),
        })
        .await
        .unwrap();
    // Nothing else in flight (the leader's own SetFeatureLevel applied), so the next index is
    // the command from the future.
    trio.wait("the feature level is agreed", |t| {
        t.nodes.values().all(|(_, s, _)| {
            s.feature_level() == dmq_controller::metadata::features::FEATURE_LEVEL_MAX
        })
    })
    .await;
    handle.read_barrier().await.unwrap();
    let before = handle.status().commit_index;
    // Field 99, length-delimited, empty: a command variant this version does not have.
    let future = vec![0x9a, 0x06, 0x00];
    let outcome = handle.propose_raw(future).await;
    assert!(
        matches!(
            outcome,
            Err(dmq_controller::node::NodeError::OutcomeUnknown(
                dmq_controller::node::Unknown::CannotApply(_)
            ))
        ),
        "the proposer must hear that the outcome is unknown, got {outcome:?}"
    );
    // The leader applies it first; a follower only once it learns the commit, which a leader
    // that stopped may never have sent (then it waits for a leader, still not applying it).
    trio.wait("the leader stopped", |t| {
        !t.nodes[&leader].0.status().running
    })
    .await;
    for (id, (_, store, _)) in &trio.nodes {
        assert!(
            store.applied_index() <= before,
            "node {id} applied up to {}, past the command it does not know (after {before})",
            store.applied_index()
        );
    }
    assert!(
        trio.nodes[&leader].1.broker(1).is_some(),
        "the leader lost what came before"
    );
}

/// Item 9: the agreed feature level (and with it the cluster id) rises only once every voter
/// supports it; a node playing an older version (feature level 0) holds it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t11_9_the_feature_level_rises_only_once_every_controller_supports_it() {
    let trio = Trio::start(|id, faults| {
        if id == 3 {
            faults.set_feature_level_max(Some(0));
        }
    })
    .await;
    let leader = trio.leader().await;
    let (handle, _, _) = &trio.nodes[&leader];
    handle.read_barrier().await.unwrap();
    // Several heartbeat rounds: node 3's answers say 0.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (id, (_, store, _)) in &trio.nodes {
        assert_eq!(
            (store.feature_level(), store.cluster_id()),
            (0, String::new()),
            "node {id}: raised although node 3 supports only level 0"
        );
    }
    trio.nodes[&3].2.set_feature_level_max(None);
    trio.wait(
        "every node agrees on the highest level and a cluster id",
        |t| {
            let ids: std::collections::BTreeSet<String> =
                t.nodes.values().map(|(_, s, _)| s.cluster_id()).collect();
            t.nodes.values().all(|(_, s, _)| {
                s.feature_level() == dmq_controller::metadata::features::FEATURE_LEVEL_MAX
            }) && ids.len() == 1
                && !ids.iter().next().unwrap().is_empty()
        },
    )
    .await;
}

/// Item 2: Raft RPCs carry the cluster id, and a node of another cluster is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t11_2_a_request_from_another_cluster_is_refused() {
    let trio = Trio::start(|_, _| {}).await;
    trio.wait("the cluster is named", |t| {
        t.nodes.values().all(|(_, s, _)| !s.cluster_id().is_empty())
    })
    .await;
    let addr = format!("http://{}", trio.peers[&1].raft);
    let mut client = RaftServiceClient::connect(addr).await.unwrap();
    let mut request = append(99, (0, 0), Vec::new(), 0);
    request.cluster_id = "another-cluster".into();
    let err = client.append_entries(request).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("cluster id mismatch"),
        "{}",
        err.message()
    );
    let term = trio.nodes[&1].0.status().term;
    assert!(term < 99, "the refused request moved the term to {term}");
}
