//! In-process: three metadata nodes over real loopback gRPC elect a leader, replicate and apply
//! proposals, survive the leader stopping, and catch a restarted node up by snapshot.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dmq_controller::metadata::{ApplyOutcome, CommandReply, MetadataStore};
use dmq_controller::node::{self, NodeConfig, NodeError, NodeHandle, PeerAddrs};
use dmq_controller::transport::RaftServer;
use dmq_proto::v1::{MetadataCommand, RegisterBrokerCommand, metadata_command::Command};
use dmq_raft::Role;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

struct Member {
    handle: NodeHandle,
    store: Arc<MetadataStore>,
    stop_server: Option<oneshot::Sender<()>>,
}

struct Cluster {
    dirs: Vec<tempfile::TempDir>,
    addrs: BTreeMap<u64, PeerAddrs>,
    members: BTreeMap<u64, Member>,
    snapshot_every_entries: u64,
}

async fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    async fn start(n: u64, snapshot_every_entries: u64) -> Cluster {
        let mut addrs = BTreeMap::new();
        for id in 1..=n {
            let raft = format!("127.0.0.1:{}", free_port().await);
            addrs.insert(
                id,
                PeerAddrs {
                    raft,
                    client: format!("127.0.0.1:{}", 10_000 + id),
                },
            );
        }
        let dirs = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut c = Cluster {
            dirs,
            addrs,
            members: BTreeMap::new(),
            snapshot_every_entries,
        };
        for id in 1..=n {
            c.start_node(id).await;
        }
        c
    }

    async fn start_node(&mut self, id: u64) {
        let mut cfg = NodeConfig::new(
            id,
            self.addrs.clone(),
            self.dirs[(id - 1) as usize].path().to_path_buf(),
        );
        cfg.tick = Duration::from_millis(20);
        cfg.election_timeout_min_ticks = 5;
        cfg.election_timeout_max_ticks = 10;
        cfg.snapshot_every_entries = self.snapshot_every_entries;
        let (handle, store) = node::start(cfg).expect("node starts");
        let listener = TcpListener::bind(&self.addrs[&id].raft).await.unwrap();
        let (stop_tx, stop_rx) = oneshot::channel();
        let svc = RaftServer::new(&handle, 64 << 20).into_service();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stop_rx.await;
                    },
                )
                .await
                .unwrap();
        });
        self.members.insert(
            id,
            Member {
                handle,
                store,
                stop_server: Some(stop_tx),
            },
        );
    }

    async fn stop_node(&mut self, id: u64) {
        let mut m = self.members.remove(&id).unwrap();
        m.handle.shutdown();
        let _ = m.stop_server.take().unwrap().send(());
        let mut status = m.handle.watch_status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while status.borrow().running {
            assert!(Instant::now() < deadline, "node {id} did not stop");
            let _ = tokio::time::timeout(Duration::from_millis(100), status.changed()).await;
        }
        // Wait until the server released its port and sled its lock.
        drop(m);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    async fn leader(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let leaders: Vec<u64> = self
                .members
                .iter()
                .filter(|(_, m)| m.handle.status().role == Role::Leader)
                .map(|(&id, _)| id)
                .collect();
            if leaders.len() == 1 {
                let l = leaders[0];
                let term = self.members[&l].handle.status().term;
                if self.members.values().all(|m| {
                    m.handle.status().leader_id == Some(l) && m.handle.status().term == term
                }) {
                    return l;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no single leader within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn register(id: u64) -> MetadataCommand {
    MetadataCommand {
        command: Some(Command::RegisterBroker(RegisterBrokerCommand {
            broker_id: id,
            host: "127.0.0.1".into(),
            port: 9000 + id as u32,
            rack: String::new(),
            ..Default::default()
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_elects_replicates_and_redirects() {
    let c = Cluster::start(3, 10_000).await;
    let leader = c.leader(Duration::from_secs(10)).await;
    let h = &c.members[&leader].handle;
    let out = h.propose(&register(1)).await.unwrap();
    assert!(
        matches!(
            out,
            ApplyOutcome::Applied {
                reply: CommandReply::BrokerRegistered { .. },
                ..
            }
        ),
        "{out:?}"
    );
    // A follower refuses and names the leader's client address.
    let follower = c.members.keys().copied().find(|&id| id != leader).unwrap();
    let err = c.members[&follower]
        .handle
        .propose(&register(2))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        NodeError::NotLeader {
            leader_id: leader,
            leader_addr: c.addrs[&leader].client.clone()
        }
    );
    // Linearizable read on the leader sees the write; followers apply it too.
    h.read_barrier().await.unwrap();
    assert!(c.members[&leader].store.broker(1).is_some());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !c.members.values().all(|m| m.store.broker(1).is_some()) {
        assert!(Instant::now() < deadline, "followers did not apply");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t11_concurrent_proposals_share_syncs_and_all_apply() {
    let c = Cluster::start(3, 10_000).await;
    let leader = c.leader(Duration::from_secs(10)).await;
    let h = c.members[&leader].handle.clone();
    let tasks: Vec<_> = (1..=200u64)
        .map(|i| {
            let h = h.clone();
            tokio::spawn(async move { h.propose(&register(i)).await })
        })
        .collect();
    for t in tasks {
        assert!(matches!(
            t.await.unwrap().unwrap(),
            ApplyOutcome::Applied { .. }
        ));
    }
    assert_eq!(c.members[&leader].store.brokers().len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t12_leader_stop_fails_over_and_lagging_node_catches_up_by_snapshot() {
    let mut c = Cluster::start(3, 20).await;
    let first = c.leader(Duration::from_secs(10)).await;
    let lagging = c.members.keys().copied().find(|&id| id != first).unwrap();
    c.stop_node(lagging).await;
    for i in 1..=60 {
        c.members[&first]
            .handle
            .propose(&register(i))
            .await
            .unwrap();
    }
    // The leader compacted past what the stopped node has: it must get a snapshot.
    c.start_node(lagging).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.members[&lagging].store.brokers().len() < 60 {
        assert!(Instant::now() < deadline, "restarted node did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Stop the leader: another takes over and keeps every acknowledged change.
    c.stop_node(first).await;
    let second = c.leader(Duration::from_secs(10)).await;
    assert_ne!(second, first);
    c.members[&second].handle.read_barrier().await.unwrap();
    assert_eq!(c.members[&second].store.brokers().len(), 60);
    c.members[&second]
        .handle
        .propose(&register(61))
        .await
        .unwrap();
}

/// Commits do not wake `watch_status` receivers (every waiter on it was woken once per write,
/// on every controller, while they only care about role changes); `status()` still has the
/// current indexes, and a role change still wakes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t13_commits_do_not_wake_role_watchers() {
    let mut c = Cluster::start(3, 10_000).await;
    let leader = c.leader(Duration::from_secs(10)).await;
    let follower = c.members.keys().copied().find(|&id| id != leader).unwrap();
    let h = c.members[&leader].handle.clone();
    let mut watchers: Vec<_> = c
        .members
        .values()
        .map(|m| {
            let mut w = m.handle.watch_status();
            w.borrow_and_update();
            w
        })
        .collect();
    let before = h.status().commit_index;
    for i in 1..=20u64 {
        h.propose(&register(i)).await.unwrap();
    }
    assert!(h.status().commit_index >= before + 20);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !c.members.values().all(|m| m.store.brokers().len() == 20) {
        assert!(Instant::now() < deadline, "followers did not apply");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for w in &watchers {
        assert!(
            !w.has_changed().unwrap(),
            "20 commits woke a role watcher: {:?}",
            *w.borrow()
        );
    }
    // A role change does wake them: the leader stops, so the others see a new term.
    c.stop_node(leader).await;
    let watcher = &mut watchers[(follower - 1) as usize];
    tokio::time::timeout(Duration::from_secs(10), watcher.changed())
        .await
        .expect("no role change seen within 10 s")
        .unwrap();
}

/// A membership change is a compare-and-set on the configuration it was computed from: one
/// computed from a configuration that another change replaced is refused, retryable, with
/// nothing applied. (Without it, a retried AddController reverted a promotion that got in
/// meanwhile: both were one valid step.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t14_a_membership_change_from_a_stale_configuration_is_refused() {
    let c = Cluster::start(3, 10_000).await;
    let leader = c.leader(Duration::from_secs(10)).await;
    let h = &c.members[&leader].handle;
    // The first leader records the bootstrap configuration (with addresses) in the log.
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.status().membership.context.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "bootstrap configuration not recorded"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let base = (*h.status().membership).clone();
    let mut with_learner = base.clone();
    with_learner.learners.insert(4);
    // The recorded configuration shows as soon as it is appended; until it commits a change
    // is refused as busy (retryable): poll until it is taken.
    loop {
        match h
            .propose_membership(base.clone(), with_learner.clone())
            .await
        {
            Ok(_) => break,
            Err(NodeError::MembershipChangeBusy(why)) => {
                assert!(Instant::now() < deadline, "still busy: {why}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("a change from the configuration in effect: {e}"),
        }
    }
    let mut stale = base.clone();
    stale.learners.insert(5);
    let err = h
        .propose_membership(base, stale)
        .await
        .expect_err("a change from a replaced configuration");
    assert!(matches!(err, NodeError::MembershipChangeBusy(_)), "{err:?}");
    assert!(err.is_retryable() && !err.outcome_unknown());
    assert_eq!(
        *h.status().membership,
        with_learner,
        "the stale change was applied"
    );
}
