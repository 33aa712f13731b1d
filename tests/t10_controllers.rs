//! Controllers as real processes: election and follower redirects (t10), validation (t11),
//! failover under a write load (t12), catch-up by InstallSnapshot (t13), a restart of the whole
//! cluster (t14), broker liveness (t15) and graceful shutdown (t16).
//!
//! Each test starts its own 3-node cluster on loopback (short timeouts from [`ClusterOpts`]) and
//! holds one of the process's cluster slots ([`cluster_slot`]), so at most two clusters run at
//! once whatever `--test-threads` says. Conditions are polled with deadlines; measured figures
//! are printed (`-- --nocapture` shows them).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dmq_proto::v1::{
    BrokerStatus, ControllerRole, DeleteTopicRequest, DescribeTopicRequest,
    GetControllerInfoRequest, GetMetadataRequest, PartitionMetadata, RegisterBrokerRequest,
    TopicMetadata,
};
use dmq_tests::controller_ops::{
    CreateAck, broker_statuses, cluster_slot, count_lines, create_request, create_topic,
    describe_cluster, expect_code, latest_run, list_all_topics, start_brokers, wait_applied,
    wait_brokers_status, wait_converged,
};
use dmq_tests::{ClusterOpts, ControllerCluster, LeaderRouter, deadline, leader_hint, wait_until};
use tokio::time::Instant;
use tonic::Code;
use tonic_types::StatusExt;

/// Deadline of any condition: generous, the machine is shared with builds.
const WAIT: Duration = Duration::from_secs(30);

fn heartbeat_interval(cluster: &ControllerCluster) -> Duration {
    Duration::from_millis(cluster.opts().broker_heartbeat_interval_ms)
}

fn session_timeout(cluster: &ControllerCluster) -> Duration {
    Duration::from_millis(cluster.opts().broker_session_timeout_ms)
}

fn register_request(broker_id: u64) -> RegisterBrokerRequest {
    RegisterBrokerRequest {
        broker_id,
        host: "127.0.0.1".into(),
        port: 19_000 + broker_id as u32,
        rack: String::new(),
        ..Default::default()
    }
}

/// Linearizable GetMetadata through the leader.
async fn leader_metadata(router: &LeaderRouter) -> dmq_proto::v1::GetMetadataResponse {
    router
        .call(|mut c| async move {
            c.get_metadata(GetMetadataRequest { allow_stale: false })
                .await
        })
        .await
        .expect("GetMetadata through the leader")
}

async fn describe_topic(router: &LeaderRouter, name: &str) -> TopicMetadata {
    let name = name.to_string();
    router
        .call(|mut c| {
            let name = name.clone();
            async move {
                c.describe_topic(DescribeTopicRequest {
                    name,
                    allow_stale: false,
                })
                .await
            }
        })
        .await
        .unwrap_or_else(|e| panic!("DescribeTopic: {e}"))
        .topic
        .expect("a topic")
}

// ---------------------------------------------------------------------------------------------
// t10: election, agreement, redirects

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_one_leader_and_followers_redirect_with_the_hint() {
    let _slot = cluster_slot().await;
    let mut cluster = ControllerCluster::start(3, ClusterOpts::default()).await;
    let leader = cluster.wait_for_leader(WAIT).await;
    let leader_addr = cluster.addr(leader).to_string();

    let linfo = cluster
        .client(leader)
        .get_controller_info(GetControllerInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(linfo.node_id, leader);
    assert_eq!(linfo.role(), ControllerRole::Leader);
    assert_eq!(linfo.address, leader_addr);
    for id in cluster.ids() {
        let i = cluster.info(id).await.unwrap();
        assert_eq!(i.node_id, id);
        assert_eq!(i.address, cluster.addr(id).to_string(), "node {id}");
        assert_eq!(i.leader_id, leader, "node {id}");
        assert_eq!(i.leader_address, leader_addr, "node {id}");
        assert_eq!(i.term, linfo.term, "node {id}");
        assert_eq!(i.version, env!("CARGO_PKG_VERSION"), "node {id}");
        if id != leader {
            assert_eq!(i.role(), ControllerRole::Follower, "node {id}");
        }
    }

    // A mutation on a follower: FAILED_PRECONDITION naming the leader three ways.
    let follower = *cluster.ids().iter().find(|&&id| id != leader).unwrap();
    let err = expect_code(
        cluster
            .client(follower)
            .register_broker(register_request(7))
            .await,
        Code::FailedPrecondition,
        "RegisterBroker on a follower",
    );
    assert_eq!(
        leader_hint(&err).as_deref(),
        Some(leader_addr.as_str()),
        "x-controller-leader metadata of {err:?}"
    );
    let info = err
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no google.rpc.ErrorInfo in {err:?}"));
    assert_eq!(info.reason, "NOT_LEADER");
    assert_eq!(info.domain, "dmq.v1");
    assert_eq!(
        info.metadata.get("leader_id"),
        Some(&leader.to_string()),
        "{info:?}"
    );
    assert_eq!(info.metadata.get("leader_address"), Some(&leader_addr));
    assert!(
        err.message().contains(&format!("node {leader}")) && err.message().contains(&leader_addr),
        "the message should name the leader: {:?}",
        err.message()
    );
    let err = expect_code(
        cluster
            .client(follower)
            .create_topic(create_request("t10", 1, 1))
            .await,
        Code::FailedPrecondition,
        "CreateTopic on a follower",
    );
    assert_eq!(leader_hint(&err).as_deref(), Some(leader_addr.as_str()));

    // The follower proposed nothing; following its hint reaches the leader.
    let router = LeaderRouter::new([cluster.addr(follower)]);
    let before = describe_cluster(&router).await.unwrap();
    assert!(before.brokers.is_empty(), "{:?}", before.brokers);
    let r = router
        .call(|mut c| async move { c.register_broker(register_request(7)).await })
        .await
        .expect("RegisterBroker following the hint");
    assert!(r.broker_epoch > 0);
    assert_eq!(
        router.cached_leader().as_deref(),
        Some(leader_addr.as_str())
    );

    // No leader at all (a lone survivor): UNAVAILABLE, no hint.
    let lone = follower;
    for id in cluster.ids() {
        if id != lone {
            cluster.kill(id);
        }
    }
    wait_until(deadline(WAIT), || async {
        let i = cluster
            .info(lone)
            .await
            .map_err(|e| format!("{}: {}", e.code(), e.message()))?;
        if i.leader_id == 0 {
            Ok(())
        } else {
            Err(format!("still names leader {}", i.leader_id))
        }
    })
    .await
    .expect("the lone node forgets the dead leader");
    let err = expect_code(
        cluster
            .client(lone)
            .register_broker(register_request(8))
            .await,
        Code::Unavailable,
        "RegisterBroker with no leader",
    );
    assert_eq!(leader_hint(&err), None, "{err:?}");
    assert_eq!(
        err.get_details_error_info().map(|i| i.reason).as_deref(),
        Some("NO_LEADER"),
        "{err:?}"
    );
    assert!(err.get_details_retry_info().is_some(), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// t11: validation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t11_bad_input_gets_precise_statuses_and_never_reaches_the_log() {
    let _slot = cluster_slot().await;
    // A long session: a broker fenced by a slow heartbeat would move the commit index.
    let opts = ClusterOpts {
        broker_session_timeout_ms: 10_000,
        ..ClusterOpts::default()
    };
    let mut cluster = ControllerCluster::start(3, opts).await;
    let leader = cluster.wait_for_leader(WAIT).await;
    let _brokers = start_brokers(&cluster, &[1], heartbeat_interval(&cluster)).await;
    let mut c = cluster.client(leader);

    // The boundaries that are valid.
    let longest = "a".repeat(249);
    for name in [longest.as_str(), "t11.Dup_name-1"] {
        c.create_topic(create_request(name, 2, 1))
            .await
            .unwrap_or_else(|e| panic!("create {name:?}: {e}"));
    }
    let follower = *cluster.ids().iter().find(|&&id| id != leader).unwrap();
    let before = cluster.info(leader).await.unwrap();

    let reason = |s: &tonic::Status| {
        s.get_details_error_info()
            .map(|i| i.reason)
            .unwrap_or_else(|| panic!("no ErrorInfo in {s:?}"))
    };
    let too_long = "a".repeat(250);
    for name in [
        "",
        "bad/name",
        "bad name",
        "tōpic",
        ".",
        "..",
        "a*b",
        too_long.as_str(),
    ] {
        let what = format!("CreateTopic {name:?}");
        let s = expect_code(
            c.create_topic(create_request(name, 1, 1)).await,
            Code::InvalidArgument,
            &what,
        );
        assert_eq!(reason(&s), "INVALID_TOPIC_NAME", "{what}");
        // Validation comes first: a follower refuses it the same way.
        expect_code(
            cluster
                .client(follower)
                .create_topic(create_request(name, 1, 1))
                .await,
            Code::InvalidArgument,
            &format!("{what} on a follower"),
        );
        expect_code(
            c.describe_topic(DescribeTopicRequest {
                name: name.into(),
                allow_stale: false,
            })
            .await,
            Code::InvalidArgument,
            &format!("DescribeTopic {name:?}"),
        );
        expect_code(
            c.delete_topic(DeleteTopicRequest { name: name.into() })
                .await,
            Code::InvalidArgument,
            &format!("DeleteTopic {name:?}"),
        );
    }
    for partitions in [0, 1001, u32::MAX] {
        let s = expect_code(
            c.create_topic(create_request("t11-p", partitions, 1)).await,
            Code::InvalidArgument,
            &format!("{partitions} partitions"),
        );
        assert_eq!(reason(&s), "INVALID_PARTITION_COUNT");
        assert!(
            s.message().contains("1000"),
            "names the max: {}",
            s.message()
        );
    }
    let s = expect_code(
        c.create_topic(create_request("t11-rf", 1, 0)).await,
        Code::InvalidArgument,
        "replication factor 0",
    );
    assert_eq!(reason(&s), "INVALID_REPLICATION_FACTOR");
    // Above the ONLINE brokers: FAILED_PRECONDITION (MetadataError::NotEnoughBrokers), with the
    // ONLINE count in the message.
    for rf in [2, 3, 50] {
        let s = expect_code(
            c.create_topic(create_request("t11-rf", 1, rf)).await,
            Code::FailedPrecondition,
            &format!("replication factor {rf} with 1 ONLINE broker"),
        );
        assert_eq!(reason(&s), "NOT_ENOUGH_BROKERS");
        assert!(
            s.message().contains("1 ONLINE"),
            "the message should name the ONLINE count: {}",
            s.message()
        );
        assert_eq!(leader_hint(&s), None, "not a redirect");
    }
    for allow_stale in [false, true] {
        let s = expect_code(
            c.describe_topic(DescribeTopicRequest {
                name: "t11-missing".into(),
                allow_stale,
            })
            .await,
            Code::NotFound,
            "DescribeTopic of an unknown topic",
        );
        assert_eq!(reason(&s), "TOPIC_NOT_FOUND");
    }
    let s = expect_code(
        c.delete_topic(DeleteTopicRequest {
            name: "t11-missing".into(),
        })
        .await,
        Code::NotFound,
        "DeleteTopic of an unknown topic",
    );
    assert_eq!(reason(&s), "TOPIC_NOT_FOUND");
    for (p, rf) in [(2, 1), (5, 1)] {
        let s = expect_code(
            c.create_topic(create_request("t11.Dup_name-1", p, rf))
                .await,
            Code::AlreadyExists,
            "duplicate CreateTopic",
        );
        assert_eq!(reason(&s), "TOPIC_ALREADY_EXISTS");
    }

    let after = cluster.info(leader).await.unwrap();
    assert_eq!(
        (after.role(), after.term),
        (ControllerRole::Leader, before.term),
        "the leader changed during the test; the log comparison means nothing"
    );
    assert_eq!(
        after.commit_index, before.commit_index,
        "rejected requests reached the log"
    );
    let topics = list_all_topics(&mut c, false).await.unwrap();
    let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, vec![longest.as_str(), "t11.Dup_name-1"]);
    assert_eq!(
        topics[1].partitions.len(),
        2,
        "the duplicate changed nothing"
    );
}

// ---------------------------------------------------------------------------------------------
// t12: kill -9 the leader under a concurrent CreateTopic load

#[derive(Debug, Clone)]
struct Ack {
    name: String,
    partitions: u32,
    rf: u32,
    at: Instant,
    /// The controller that answered.
    by: Option<String>,
    how: CreateAck,
}

#[derive(Default)]
struct Load {
    acks: Mutex<Vec<Ack>>,
    attempted: Mutex<BTreeSet<String>>,
    errors: Mutex<Vec<String>>,
    retries: Mutex<BTreeMap<String, u32>>,
    stop: AtomicBool,
}

impl Load {
    fn acked(&self) -> usize {
        self.acks.lock().unwrap().len()
    }

    /// The first OK answer after `t` from a controller other than `not_by` (an ALREADY_EXISTS
    /// does not say who answered).
    fn first_ack_after(&self, t: Instant, not_by: &str) -> Option<Ack> {
        self.acks
            .lock()
            .unwrap()
            .iter()
            .filter(|a| {
                a.at > t
                    && a.how == CreateAck::Created
                    && a.by.as_deref().is_some_and(|by| by != not_by)
            })
            .min_by_key(|a| a.at)
            .cloned()
    }
}

/// Creates `load-{client}-{n}` topics one after the other, retrying each name until it is
/// acknowledged (or the load stops).
async fn load_client(client: u32, router: LeaderRouter, load: Arc<Load>) {
    let mut seq = 0u32;
    while !load.stop.load(Ordering::SeqCst) {
        seq += 1;
        let name = format!("load-{client}-{seq}");
        let (partitions, rf) = (1 + seq % 3, 1 + (seq + client) % 3);
        load.attempted.lock().unwrap().insert(name.clone());
        loop {
            match create_topic(&router, &name, partitions, rf).await {
                Ok(how) => {
                    load.acks.lock().unwrap().push(Ack {
                        name: name.clone(),
                        partitions,
                        rf,
                        at: Instant::now(),
                        by: router.cached_leader(),
                        how,
                    });
                    break;
                }
                Err(s)
                    if matches!(
                        s.code(),
                        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted
                    ) =>
                {
                    *load
                        .retries
                        .lock()
                        .unwrap()
                        .entry(format!("{:?}", s.code()))
                        .or_default() += 1;
                    if load.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    // Back off a little before the next attempt of the same name.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(s) => {
                    load.errors.lock().unwrap().push(format!(
                        "{name} ({partitions} partitions, RF {rf}): {:?}: {}",
                        s.code(),
                        s.message()
                    ));
                    break;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t12_leader_kills_under_create_load_lose_no_acknowledged_topic() {
    let _slot = cluster_slot().await;
    let mut cluster = ControllerCluster::start(3, ClusterOpts::default()).await;
    cluster.wait_for_leader(WAIT).await;
    let _brokers = start_brokers(&cluster, &[1, 2, 3], heartbeat_interval(&cluster)).await;

    let load = Arc::new(Load::default());
    let clients: Vec<_> = (0..4)
        .map(|c| tokio::spawn(load_client(c, cluster.router(), load.clone())))
        .collect();

    let wait_acks = |n: usize| {
        let load = load.clone();
        async move {
            wait_until(deadline(WAIT), || async {
                let have = load.acked();
                if have >= n {
                    Ok(())
                } else {
                    Err(format!("{have} acknowledged creates, want {n}"))
                }
            })
            .await
            .unwrap_or_else(|e| panic!("the load made no progress: {e}"))
        }
    };

    let mut gaps = Vec::new();
    for round in 1..=5 {
        wait_acks(load.acked() + 8).await;
        let leader = cluster.wait_for_leader(WAIT).await;
        let killed = cluster.addr(leader).to_string();
        let t0 = Instant::now();
        cluster.kill(leader);
        let next = wait_until(deadline(WAIT), || async {
            load.first_ack_after(t0, &killed)
                .ok_or("no write acknowledged since the kill")
        })
        .await
        .unwrap_or_else(|e| panic!("round {round}: no write after killing node {leader}: {e}"));
        let gap = next.at - t0;
        println!(
            "t12 round {round}: killed leader {leader}; next acknowledged write after {gap:?} \
             (by {:?})",
            next.by
        );
        gaps.push(gap);
        let new_leader = cluster.wait_for_leader(WAIT).await;
        assert_ne!(new_leader, leader);
        cluster.restart(leader).await;
    }
    wait_acks(load.acked() + 8).await;
    load.stop.store(true, Ordering::SeqCst);
    for c in clients {
        tokio::time::timeout(WAIT, c)
            .await
            .expect("a load client did not stop")
            .expect("a load client panicked");
    }

    let errors = load.errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "creates failed for good: {errors:#?}");
    let acks = load.acks.lock().unwrap().clone();
    let attempted = load.attempted.lock().unwrap().clone();

    cluster.wait_for_leader(WAIT).await;
    let converged = wait_converged(&cluster, &cluster.ids(), WAIT).await;
    for id in cluster.ids() {
        let topics = list_all_topics(&mut cluster.client(id), true)
            .await
            .unwrap_or_else(|e| panic!("ListTopics on node {id}: {e}"));
        assert_eq!(
            topics, converged.topics,
            "node {id}: ListTopics disagrees with GetMetadata"
        );
        let by_name: BTreeMap<&str, &TopicMetadata> =
            topics.iter().map(|t| (t.name.as_str(), t)).collect();
        for a in &acks {
            let t = by_name
                .get(a.name.as_str())
                .unwrap_or_else(|| panic!("node {id}: acknowledged topic {a:?} is missing"));
            assert_eq!(
                (t.partitions.len() as u32, t.replication_factor),
                (a.partitions, a.rf),
                "node {id}: topic {}",
                a.name
            );
            for p in &t.partitions {
                let distinct: BTreeSet<u64> = p.replicas.iter().copied().collect();
                assert!(
                    p.replicas.len() == a.rf as usize
                        && distinct.len() == p.replicas.len()
                        && p.replicas.first() == Some(&p.leader)
                        && p.isr == p.replicas,
                    "node {id}: topic {} has a bad assignment: {p:?}",
                    a.name
                );
            }
        }
        for name in by_name.keys() {
            assert!(
                attempted.contains(*name),
                "node {id}: topic {name} was never asked for"
            );
        }
    }
    let mean = gaps.iter().sum::<Duration>() / gaps.len() as u32;
    println!(
        "t12: {} acknowledged creates ({} as ALREADY_EXISTS on a retry), {} topics exist, \
         metadata version {}; retried attempts {:?}; failover gaps {gaps:?}, mean {mean:?}, max \
         {:?}",
        acks.len(),
        acks.iter()
            .filter(|a| a.how == CreateAck::AlreadyExisted)
            .count(),
        converged.topics.len(),
        converged.metadata_version,
        load.retries.lock().unwrap(),
        gaps.iter().max().unwrap()
    );
}

// ---------------------------------------------------------------------------------------------
// t13: catch-up by InstallSnapshot

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t13_a_node_compacted_past_catches_up_by_install_snapshot() {
    let _slot = cluster_slot().await;
    let opts = ClusterOpts {
        snapshot_every_entries: 20,
        ..ClusterOpts::default()
    };
    let mut cluster = ControllerCluster::start(3, opts).await;
    let leader = cluster.wait_for_leader(WAIT).await;
    let _brokers = start_brokers(&cluster, &[1, 2], heartbeat_interval(&cluster)).await;
    let lagging = *cluster.ids().iter().find(|&&id| id != leader).unwrap();
    let stopped_at = cluster.info(lagging).await.unwrap().applied_index;
    let status = cluster.stop(lagging).await;
    assert_eq!(
        status.code(),
        Some(0),
        "follower {lagging} stopped with {status}"
    );

    // 80 creates and 30 deletes from 4 writers: 110 changes.
    let router = cluster.router();
    let writers: Vec<_> = (0..4u32)
        .map(|w| {
            let router = router.clone();
            tokio::spawn(async move {
                for i in 0..20 {
                    let name = format!("snap-{w}-{i}");
                    create_topic(&router, &name, 1 + i % 2, 1 + (i + w) % 2)
                        .await
                        .unwrap_or_else(|e| panic!("create {name}: {e}"));
                }
                for i in 0..(if w < 2 { 8 } else { 7 }) {
                    let name = format!("snap-{w}-{i}");
                    let r = router
                        .call(|mut c| {
                            let name = name.clone();
                            async move { c.delete_topic(DeleteTopicRequest { name }).await }
                        })
                        .await;
                    match r {
                        Ok(_) => {}
                        // An attempt whose answer was lost deleted it.
                        Err(s) if s.code() == Code::NotFound => {}
                        Err(s) => panic!("delete {name}: {s}"),
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("a writer panicked");
    }
    let leader = cluster.wait_for_leader(WAIT).await;
    let target = cluster.info(leader).await.unwrap().commit_index;
    assert!(target >= stopped_at + 110, "{target} vs {stopped_at}");
    let snapshots = count_lines(cluster.log_path(leader), "snapshot taken, log compacted");
    assert!(
        snapshots >= 5,
        "the leader took {snapshots} snapshots over 110+ entries"
    );

    let t = Instant::now();
    cluster.restart(lagging).await;
    wait_applied(&cluster, lagging, target, WAIT).await;
    let caught_up = t.elapsed();
    let m = wait_converged(&cluster, &cluster.ids(), WAIT).await;
    let names: BTreeSet<&str> = m.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names.len(), 50, "{names:?}");
    assert!(names.contains("snap-0-19") && !names.contains("snap-0-0"));
    let log = latest_run(cluster.log_path(lagging));
    assert!(
        log.contains("installed snapshot"),
        "node {lagging} caught up without InstallSnapshot; its log:\n{log}"
    );
    println!(
        "t13: node {lagging} stopped at applied {stopped_at}, restarted, applied the leader's \
         commit {target} after {caught_up:?}; leader took {snapshots} snapshots"
    );
}

// ---------------------------------------------------------------------------------------------
// t14: all three killed and restarted

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t14_whole_cluster_kill_and_restart_keeps_the_state() {
    let _slot = cluster_slot().await;
    let mut cluster = ControllerCluster::start(3, ClusterOpts::default()).await;
    cluster.wait_for_leader(WAIT).await;
    let brokers = start_brokers(&cluster, &[1, 2, 3], heartbeat_interval(&cluster)).await;
    let router = cluster.router();
    for (name, p, rf) in [("t14-a", 3, 3), ("t14-b", 2, 2), ("t14-c", 1, 1)] {
        assert_eq!(
            create_topic(&router, name, p, rf).await.unwrap(),
            CreateAck::Created
        );
    }
    router
        .call(|mut c| async move {
            c.delete_topic(DeleteTopicRequest {
                name: "t14-c".into(),
            })
            .await
        })
        .await
        .unwrap();
    let before = leader_metadata(&router).await;
    assert_eq!(before.topics.len(), 2);
    let max_epoch = brokers.iter().map(|b| b.epoch()).max().unwrap();

    for id in cluster.ids() {
        cluster.kill(id);
    }
    for id in cluster.ids() {
        cluster.restart(id).await;
    }
    let leader = cluster.wait_for_leader(WAIT).await;
    let after = wait_converged(&cluster, &cluster.ids(), WAIT).await;
    assert!(
        after.metadata_version >= before.metadata_version,
        "version went back: {} -> {}",
        before.metadata_version,
        after.metadata_version
    );
    assert_eq!(
        after.topics, before.topics,
        "topics changed across the restart"
    );
    let identity = |m: &dmq_proto::v1::GetMetadataResponse| {
        m.brokers
            .iter()
            .map(|b| {
                (
                    b.broker_id,
                    b.broker_epoch,
                    b.host.clone(),
                    b.port,
                    b.rack.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(identity(&after), identity(&before), "brokers changed");
    wait_brokers_status(&router, &[1, 2, 3], BrokerStatus::Online, WAIT).await;

    // New writes work.
    assert_eq!(
        create_topic(&router, "t14-after", 3, 3).await.unwrap(),
        CreateAck::Created
    );
    let r = router
        .call(|mut c| async move { c.register_broker(register_request(4)).await })
        .await
        .unwrap();
    assert!(
        r.broker_epoch > max_epoch,
        "{} <= {max_epoch}",
        r.broker_epoch
    );
    let m = leader_metadata(&router).await;
    assert!(m.metadata_version > after.metadata_version);
    assert_eq!(m.topics.len(), 3);
    println!(
        "t14: version {} before, {} after the restart (leader {leader}), {} after new writes",
        before.metadata_version, after.metadata_version, m.metadata_version
    );
}

// ---------------------------------------------------------------------------------------------
// t15: broker liveness

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t15_broker_liveness_failover_grace_pushes_and_fencing() {
    let _slot = cluster_slot().await;
    let mut cluster = ControllerCluster::start(3, ClusterOpts::default()).await;
    let leader = cluster.wait_for_leader(WAIT).await;
    let (interval, session) = (heartbeat_interval(&cluster), session_timeout(&cluster));
    let brokers = start_brokers(&cluster, &[1, 2, 3], interval).await;
    let router = cluster.router();
    create_topic(&router, "t15", 6, 2).await.unwrap();
    let topic = describe_topic(&router, "t15").await;
    let victim = (1..=3u64)
        .find(|b| topic.partitions.iter().any(|p| p.leader == *b))
        .expect("some broker leads");
    let led: Vec<PartitionMetadata> = topic
        .partitions
        .iter()
        .filter(|p| p.leader == victim)
        .cloned()
        .collect();

    // Stops heartbeating -> OFFLINE after the session timeout; its partitions move.
    let paused = Instant::now();
    brokers[victim as usize - 1].pause_heartbeats();
    let d = wait_brokers_status(&router, &[victim], BrokerStatus::Offline, WAIT).await;
    let took = paused.elapsed();
    let st = broker_statuses(&d.brokers);
    for b in (1..=3).filter(|&b| b != victim) {
        assert_eq!(st[&b], BrokerStatus::Online, "broker {b}: {st:?}");
    }
    assert!(
        took + interval + Duration::from_millis(100) >= session,
        "broker {victim} went OFFLINE {took:?} after its heartbeats stopped, before the \
         {session:?} session timeout"
    );
    let topic = describe_topic(&router, "t15").await;
    for old in &led {
        let p = &topic.partitions[old.partition as usize];
        assert!(
            p.leader != victim && p.leader != 0 && old.isr.contains(&p.leader),
            "partition {}: leader {} not from the ISR {:?} without {victim}",
            p.partition,
            p.leader,
            old.isr
        );
        assert!(p.leader_epoch > old.leader_epoch, "{old:?} -> {p:?}");
        assert!(
            !p.isr.contains(&victim),
            "ISR kept the OFFLINE broker: {p:?}"
        );
    }
    assert!(topic.partitions.iter().all(|p| p.leader != victim));
    println!(
        "t15: broker {victim} OFFLINE {took:?} after its heartbeats stopped (session \
         {session:?}); {} partitions moved",
        led.len()
    );

    // Resumes -> ONLINE.
    brokers[victim as usize - 1].resume_heartbeats();
    wait_brokers_status(&router, &[1, 2, 3], BrokerStatus::Online, WAIT).await;
    brokers[victim as usize - 1]
        .wait_for_status(deadline(WAIT), BrokerStatus::Online)
        .await
        .expect("the resumed broker hears ONLINE");

    // A leader kill: no live broker goes OFFLINE; every broker hears of the new leader.
    let old_term = cluster.info(leader).await.unwrap().term;
    let fenced_marks: BTreeMap<u64, usize> = cluster
        .ids()
        .into_iter()
        .map(|id| (id, count_lines(cluster.log_path(id), "marking it OFFLINE")))
        .collect();
    let killed_at = Instant::now();
    cluster.kill(leader);
    let watcher = cluster
        .router()
        .with_timeouts(Duration::from_millis(500), Duration::from_secs(1));
    let mut polls = (0, 0);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while killed_at.elapsed() < 2 * session {
        tick.tick().await;
        polls.0 += 1;
        if let Ok(d) = describe_cluster(&watcher).await {
            polls.1 += 1;
            let st = broker_statuses(&d.brokers);
            assert!(
                st.values().all(|s| *s == BrokerStatus::Online),
                "a live broker went OFFLINE {:?} after the leader kill: {st:?}",
                killed_at.elapsed()
            );
        }
    }
    let new_leader = cluster.wait_for_leader(WAIT).await;
    let new_term = cluster.info(new_leader).await.unwrap().term;
    assert!(new_term > old_term);
    assert!(polls.1 > 0, "DescribeCluster never answered after the kill");
    for id in cluster.ids().into_iter().filter(|&id| id != leader) {
        assert_eq!(
            count_lines(cluster.log_path(id), "marking it OFFLINE"),
            fenced_marks[&id],
            "node {id} fenced a broker after the failover"
        );
    }
    let new_addr = cluster.addr(new_leader).to_string();
    for b in &brokers {
        let p = b
            .wait_for_push(deadline(WAIT), |p| p.term == new_term)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "broker {}: no CONTROLLER_CHANGED for term {new_term}: {e}",
                    b.id()
                )
            });
        assert_eq!(
            (p.leader_id, p.leader_address.as_str()),
            (new_leader, new_addr.as_str())
        );
    }
    println!(
        "t15: leader {leader} killed (term {old_term} -> {new_term}, new leader {new_leader}); \
         {} of {} DescribeCluster polls over {:?} answered, all brokers ONLINE",
        polls.1,
        polls.0,
        2 * session
    );

    // A stale epoch is fenced.
    let b = &brokers[0];
    let old_epoch = b.epoch();
    let r = b.register().await.unwrap();
    assert!(r.broker_epoch > old_epoch);
    let hb = b.heartbeat_with_epoch(old_epoch).await.unwrap();
    assert_eq!(hb.status(), BrokerStatus::Fenced, "{hb:?}");
    assert_eq!(b.heartbeat().await.unwrap().status(), BrokerStatus::Online);
}

// ---------------------------------------------------------------------------------------------
// t16: graceful shutdown hands leadership over

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t16_sigterm_on_the_leader_transfers_leadership() {
    let _slot = cluster_slot().await;
    // Elections take 1 to 2 s here, so a leader within 1 s can only come from a transfer.
    let opts = ClusterOpts {
        election_timeout_min_ticks: 20,
        election_timeout_max_ticks: 40,
        shutdown_transfer_timeout_ms: 2000,
        ..ClusterOpts::default()
    };
    let min_election =
        Duration::from_millis(opts.tick_ms * u64::from(opts.election_timeout_min_ticks));
    let transfer = Duration::from_millis(opts.shutdown_transfer_timeout_ms);
    let mut cluster = ControllerCluster::start(3, opts).await;
    let leader = cluster.wait_for_leader(WAIT).await;
    let old_term = cluster.info(leader).await.unwrap().term;

    // Watch the followers for a new leader, every few ms.
    let followers: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|&id| id != leader)
        .collect();
    let clients: Vec<_> = followers
        .iter()
        .map(|&id| (id, cluster.client(id)))
        .collect();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let watch = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        let until = deadline(WAIT);
        while Instant::now() < until {
            for (id, c) in &clients {
                let mut c = c.clone();
                let r = tokio::time::timeout(
                    Duration::from_millis(200),
                    c.get_controller_info(GetControllerInfoRequest {}),
                )
                .await;
                if let Ok(Ok(i)) = r {
                    let i = i.into_inner();
                    if i.role() == ControllerRole::Leader && i.term > old_term {
                        return Some((Instant::now(), *id, i.term));
                    }
                }
            }
            if let Some(tx) = ready.take() {
                let _ = tx.send(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    });
    ready_rx.await.expect("the watcher runs");

    let t0 = Instant::now();
    let status = cluster.stop(leader).await;
    let exited = t0.elapsed();
    let (seen, new_leader, new_term) = watch
        .await
        .unwrap()
        .expect("no follower became leader after SIGTERM");
    let gap = seen.saturating_duration_since(t0);
    println!(
        "t16: SIGTERM to leader {leader}: exited with {status} after {exited:?}; node \
         {new_leader} led term {new_term} {gap:?} after the signal (min election timeout \
         {min_election:?})"
    );
    assert_eq!(status.code(), Some(0), "leader exit status {status}");
    assert!(
        exited <= transfer + Duration::from_secs(3),
        "exit took {exited:?} (transfer timeout {transfer:?})"
    );
    assert!(
        gap < min_election,
        "no leader for {gap:?} after SIGTERM: no faster than an election ({min_election:?})"
    );
    assert_eq!(new_term, old_term + 1, "one election, by the transfer");
    assert!(
        latest_run(cluster.log_path(leader)).contains("handing leadership over before stopping"),
        "the old leader did not log a transfer"
    );
    assert_eq!(cluster.wait_for_leader(WAIT).await, new_leader);

    // It comes back as a follower of the new leader.
    cluster.restart(leader).await;
    assert_eq!(cluster.wait_for_leader(WAIT).await, new_leader);
}
