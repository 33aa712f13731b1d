//! Controller membership changes as real processes, under a steady write load (issue 14):
//! grow 3 → 5 with `--join`, shrink 5 → 3 removing the leader first, and replace a node whose
//! disk was lost (remove it, start it empty with `--join`). Every acknowledged write must be
//! there afterwards; the longest pause in acknowledged writes around each change is printed
//! (`-- --nocapture`) and bounded loosely (the figures belong in the README, not here).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dmq_proto::v1::{DescribeClusterRequest, RegisterBrokerRequest, RemoveControllerRequest};
use dmq_tests::controller_ops::cluster_slot;
use dmq_tests::{ClusterOpts, ControllerCluster, LeaderRouter, deadline, wait_until};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Load {
    /// (broker id, epoch acknowledged, when).
    acks: Mutex<Vec<(u64, u64, Instant)>>,
    router: Mutex<Option<LeaderRouter>>,
    stop: AtomicBool,
}

impl Load {
    fn router(&self) -> LeaderRouter {
        self.router.lock().unwrap().clone().expect("a router")
    }

    fn acked(&self) -> usize {
        self.acks.lock().unwrap().len()
    }

    /// The longest time without an acknowledged write between `from` and `to`.
    fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        let mut times: Vec<Instant> = self
            .acks
            .lock()
            .unwrap()
            .iter()
            .map(|a| a.2)
            .filter(|&t| t >= from && t <= to)
            .collect();
        times.sort();
        let mut last = from;
        let mut gap = Duration::ZERO;
        for t in times.into_iter().chain([to]) {
            gap = gap.max(t - last);
            last = t;
        }
        gap
    }
}

/// RegisterBroker writes (brokers 101..=120 in turn), one after the other, each retried until
/// acknowledged; every acknowledgment is recorded with the epoch it gave.
async fn writer(load: Arc<Load>, first: u64) {
    let mut n = first;
    while !load.stop.load(Ordering::SeqCst) {
        n += 1;
        let broker_id = 101 + n % 20;
        let request = RegisterBrokerRequest {
            broker_id,
            host: "127.0.0.1".into(),
            port: 20_000 + broker_id as u32,
            ..Default::default()
        };
        loop {
            if load.stop.load(Ordering::SeqCst) {
                return;
            }
            let r = load
                .router()
                .call(|mut c| {
                    let request = request.clone();
                    async move { c.register_broker(request).await }
                })
                .await;
            match r {
                Ok(resp) => {
                    load.acks
                        .lock()
                        .unwrap()
                        .push((broker_id, resp.broker_epoch, Instant::now()));
                    break;
                }
                // Retried: every refusal here is "not applied" or "unknown", and registering
                // again is what a broker does.
                Err(_) => tokio::task::yield_now().await,
            }
        }
    }
}

async fn describe(load: &Load) -> dmq_proto::v1::DescribeClusterResponse {
    load.router()
        .call(|mut c| async move {
            c.describe_cluster(DescribeClusterRequest { allow_stale: false })
                .await
        })
        .await
        .expect("DescribeCluster through the leader")
}

/// Waits until the leader's configuration has exactly `voters` as voters and no learner.
async fn wait_voters(load: &Load, voters: &[u64]) -> dmq_proto::v1::DescribeClusterResponse {
    let want: Vec<u64> = voters.to_vec();
    let r = wait_until(deadline(WAIT), || {
        let want = want.clone();
        async move {
            let d = describe(load).await;
            let got: Vec<u64> = d
                .controllers
                .iter()
                .filter(|c| !c.learner)
                .map(|c| c.node_id)
                .collect();
            let learners = d.controllers.iter().filter(|c| c.learner).count();
            if got == want && learners == 0 {
                Ok(d)
            } else {
                Err(format!(
                    "voters {got:?}, {learners} learner(s); want {want:?}"
                ))
            }
        }
    })
    .await;
    r.unwrap_or_else(|e| panic!("{e}"))
}

async fn wait_more_acks(load: &Load, n: usize) {
    let target = load.acked() + n;
    wait_until(deadline(WAIT), || async {
        if load.acked() >= target {
            Ok(())
        } else {
            Err(format!(
                "{} acknowledged writes, want {target}",
                load.acked()
            ))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("the load made no progress: {e}"));
}

fn router_over(cluster: &ControllerCluster, ids: &[u64]) -> LeaderRouter {
    LeaderRouter::new(ids.iter().map(|&id| cluster.addr(id)))
        .with_timeouts(Duration::from_secs(2), Duration::from_secs(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t12_grow_shrink_and_replace_under_load_lose_no_acknowledged_write() {
    let _slot = cluster_slot().await;
    let mut cluster = ControllerCluster::start(3, ClusterOpts::default()).await;
    cluster.wait_for_leader(WAIT).await;
    let load = Arc::new(Load::default());
    *load.router.lock().unwrap() = Some(router_over(&cluster, &[1, 2, 3]));
    // The first leader records the bootstrap configuration with its addresses.
    wait_voters(&load, &[1, 2, 3]).await;
    let writers: Vec<_> = (0..2)
        .map(|w| tokio::spawn(writer(load.clone(), w * 1_000)))
        .collect();
    wait_more_acks(&load, 20).await;
    let mut figures: BTreeMap<&str, Duration> = BTreeMap::new();

    // Grow 3 -> 5: each joins as a learner and is promoted once caught up.
    let t0 = Instant::now();
    cluster.join(4).await;
    *load.router.lock().unwrap() = Some(router_over(&cluster, &[1, 2, 3, 4]));
    wait_voters(&load, &[1, 2, 3, 4]).await;
    cluster.join(5).await;
    *load.router.lock().unwrap() = Some(router_over(&cluster, &[1, 2, 3, 4, 5]));
    wait_voters(&load, &[1, 2, 3, 4, 5]).await;
    wait_more_acks(&load, 20).await;
    figures.insert("grow 3 -> 5", load.longest_gap(t0, Instant::now()));

    // Shrink 5 -> 3, the leader first: it hands leadership over once the change commits.
    let t0 = Instant::now();
    let leader = cluster.wait_for_leader(WAIT).await;
    let removed = load
        .router()
        .call(|mut c| async move {
            c.remove_controller(RemoveControllerRequest { node_id: leader })
                .await
        })
        .await
        .unwrap_or_else(|e| panic!("RemoveController({leader}): {e}"));
    assert!(
        removed.controllers.iter().all(|c| c.node_id != leader),
        "the answer still lists the removed leader"
    );
    let mut voters: Vec<u64> = (1..=5).filter(|&id| id != leader).collect();
    wait_voters(&load, &voters).await;
    wait_more_acks(&load, 10).await;
    figures.insert("remove the leader", load.longest_gap(t0, Instant::now()));
    cluster.stop(leader).await;
    let other = voters[0];
    let t0 = Instant::now();
    load.router()
        .call(|mut c| async move {
            c.remove_controller(RemoveControllerRequest { node_id: other })
                .await
        })
        .await
        .unwrap_or_else(|e| panic!("RemoveController({other}): {e}"));
    voters.retain(|&id| id != other);
    wait_voters(&load, &voters).await;
    wait_more_acks(&load, 10).await;
    figures.insert("remove a follower", load.longest_gap(t0, Instant::now()));
    cluster.stop(other).await;
    *load.router.lock().unwrap() = Some(router_over(&cluster, &voters));

    // Replace a lost disk: kill a follower, remove it, start it empty with --join.
    let leader = cluster.wait_for_leader(WAIT).await;
    let lost = *voters.iter().find(|&&id| id != leader).expect("a follower");
    let t0 = Instant::now();
    cluster.kill(lost);
    load.router()
        .call(|mut c| async move {
            c.remove_controller(RemoveControllerRequest { node_id: lost })
                .await
        })
        .await
        .unwrap_or_else(|e| panic!("RemoveController({lost}): {e}"));
    let rest: Vec<u64> = voters.iter().copied().filter(|&id| id != lost).collect();
    wait_voters(&load, &rest).await;
    cluster.join(lost).await;
    wait_voters(&load, &voters).await;
    wait_more_acks(&load, 10).await;
    figures.insert("replace a lost disk", load.longest_gap(t0, Instant::now()));

    // The baseline, in the same run: an unplanned failover (the leader killed, an election).
    let leader = cluster.wait_for_leader(WAIT).await;
    let t0 = Instant::now();
    cluster.kill(leader);
    wait_more_acks(&load, 10).await;
    let failover = load.longest_gap(t0, Instant::now());
    cluster.restart(leader).await;

    load.stop.store(true, Ordering::SeqCst);
    for w in writers {
        tokio::time::timeout(WAIT, w)
            .await
            .expect("a writer did not stop")
            .expect("a writer panicked");
    }
    println!("t12 baseline, the leader killed: longest pause in acknowledged writes {failover:?}");
    for (what, gap) in &figures {
        println!(
            "t12 {what}: longest pause in acknowledged writes {gap:?}, {:.2}x the killed-leader \
             failover's",
            gap.as_secs_f64() / failover.as_secs_f64().max(1e-6)
        );
        assert!(
            *gap < Duration::from_secs(15),
            "{what}: writes stopped for {gap:?}"
        );
    }

    // Every acknowledged registration is there, at its epoch or a later one, on the leader.
    let d = describe(&load).await;
    let epochs: BTreeMap<u64, u64> = d
        .brokers
        .iter()
        .map(|b| (b.broker_id, b.broker_epoch))
        .collect();
    let acks = load.acks.lock().unwrap().clone();
    assert!(acks.len() >= 70, "only {} writes acknowledged", acks.len());
    for (broker, epoch, _) in &acks {
        let now = epochs.get(broker).copied();
        assert!(
            now.is_some_and(|e| e >= *epoch),
            "broker {broker} acknowledged at epoch {epoch}, now {now:?}"
        );
    }
    // The replaced node holds the log again: it answers a linearizable read.
    let mut c = cluster.client(lost);
    let info = c
        .get_controller_info(dmq_proto::v1::GetControllerInfoRequest {})
        .await
        .expect("the replaced node answers")
        .into_inner();
    assert!(
        info.commit_index > 0,
        "the replaced node holds nothing: {info:?}"
    );
}

/// Refusals say what happened: a bad address is refused (nothing applied); a member's
/// addresses cannot be changed by adding it again (MEMBER_EXISTS, nothing applied); a learner
/// that never catches up is left a learner (LEARNER_NOT_CAUGHT_UP: the learner was added)
/// and does not count toward commits, so writes go on; removing it is idempotent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t12_membership_refusals_tell_what_was_applied() {
    use dmq_proto::v1::AddControllerRequest;
    use tonic::Code;
    use tonic_types::StatusExt;

    let _slot = cluster_slot().await;
    let mut cluster = ControllerCluster::start(3, ClusterOpts::default()).await;
    cluster.wait_for_leader(WAIT).await;
    let load = Load::default();
    *load.router.lock().unwrap() = Some(router_over(&cluster, &[1, 2, 3]));
    wait_voters(&load, &[1, 2, 3]).await;
    let add = |request: AddControllerRequest| {
        let router = load.router();
        async move {
            router
                .call(|mut c| {
                    let request = request.clone();
                    async move { c.add_controller(request).await }
                })
                .await
        }
    };
    let reason = |s: &tonic::Status| s.get_details_error_info().map(|i| i.reason);

    let bad = add(AddControllerRequest {
        node_id: 9,
        peer_address: "no-port".into(),
        client_address: "127.0.0.1:1".into(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    assert!(bad.message().contains("HOST:PORT"), "{}", bad.message());
    // An address too long for a member context is refused, not a panic on the leader.
    let huge = add(AddControllerRequest {
        node_id: 9,
        peer_address: format!("{}:1", "h".repeat(70_000)),
        client_address: "127.0.0.1:1".into(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(huge.code(), Code::InvalidArgument, "{huge:?}");

    let peer2 = cluster.peer_addr(2).to_string();
    let exists = add(AddControllerRequest {
        node_id: 2,
        peer_address: peer2.clone(),
        client_address: "127.0.0.1:1".into(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(exists.code(), Code::FailedPrecondition, "{exists:?}");
    assert_eq!(reason(&exists).as_deref(), Some("MEMBER_EXISTS"));
    // Adding a member again with its own addresses changes nothing and succeeds.
    let same = add(AddControllerRequest {
        node_id: 2,
        peer_address: peer2,
        client_address: cluster.addr(2).to_string(),
        ..Default::default()
    })
    .await
    .expect("adding a member again is idempotent");
    assert_eq!(same.controllers.len(), 3);

    // Nobody listens at node 9's addresses: it stays a learner.
    let ports = dmq_tests::ports::free_ports(2);
    let stuck = add(AddControllerRequest {
        node_id: 9,
        peer_address: format!("127.0.0.1:{}", ports[0]),
        client_address: format!("127.0.0.1:{}", ports[1]),
        catch_up_timeout_ms: 500,
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(stuck.code(), Code::FailedPrecondition, "{stuck:?}");
    assert_eq!(reason(&stuck).as_deref(), Some("LEARNER_NOT_CAUGHT_UP"));
    assert!(
        stuck
            .message()
            .contains("added as a learner (that part is applied)"),
        "{}",
        stuck.message()
    );
    let d = describe(&load).await;
    let nine = d
        .controllers
        .iter()
        .find(|c| c.node_id == 9)
        .expect("node 9 listed");
    assert!(nine.learner, "{nine:?}");
    // A learner that is down counts for nothing: writes still commit.
    let r = load
        .router()
        .call(|mut c| async move {
            c.register_broker(RegisterBrokerRequest {
                broker_id: 7,
                host: "127.0.0.1".into(),
                port: 20_007,
                ..Default::default()
            })
            .await
        })
        .await;
    assert!(r.is_ok(), "a write failed with a learner down: {r:?}");
    for _ in 0..2 {
        let after = load
            .router()
            .call(|mut c| async move {
                c.remove_controller(RemoveControllerRequest { node_id: 9 })
                    .await
            })
            .await
            .expect("RemoveController(9)");
        assert!(after.controllers.iter().all(|c| c.node_id != 9));
    }
    wait_voters(&load, &[1, 2, 3]).await;
}

/// A broker started with the three original controllers keeps its session after they are all
/// replaced (4 and 5 join, 1, 2 and 3 are removed and stopped), and heartbeat answers list
/// the members it should ask from then on (what its discovery learns: the locator's unit tests
/// show it asks them when its configured controllers are gone). The leader pushes also tell a
/// broker where a new leader is, so keeping the session alone does not prove the learning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t12_brokers_follow_the_controller_set_when_every_original_controller_is_gone() {
    use dmq_proto::v1::BrokerStatus;
    use dmq_tests::brokers::{BrokerOpts, BrokerProcs};

    let _slot = cluster_slot().await;
    let mut cluster = ControllerCluster::start(3, ClusterOpts::default()).await;
    cluster.wait_for_leader(WAIT).await;
    let brokers = BrokerProcs::start(1, cluster.addrs(), BrokerOpts::default()).await;
    let epoch = brokers.wait_online(1, 0, WAIT).await.broker_epoch;
    let load = Load::default();
    *load.router.lock().unwrap() = Some(router_over(&cluster, &[1, 2, 3]));
    wait_voters(&load, &[1, 2, 3]).await;
    cluster.join(4).await;
    cluster.join(5).await;
    *load.router.lock().unwrap() = Some(router_over(&cluster, &[1, 2, 3, 4, 5]));
    wait_voters(&load, &[1, 2, 3, 4, 5]).await;
    let mut voters = vec![1, 2, 3, 4, 5];
    for gone in [1, 2, 3] {
        load.router()
            .call(|mut c| async move {
                c.remove_controller(RemoveControllerRequest { node_id: gone })
                    .await
            })
            .await
            .unwrap_or_else(|e| panic!("RemoveController({gone}): {e}"));
        voters.retain(|&id| id != gone);
        wait_voters(&load, &voters).await;
        cluster.stop(gone).await;
    }
    *load.router.lock().unwrap() = Some(router_over(&cluster, &[4, 5]));
    // Three session timeouts with none of its configured controllers running.
    let session = Duration::from_millis(cluster.opts().broker_session_timeout_ms);
    let until = Instant::now() + 3 * session;
    while Instant::now() < until {
        let d = describe(&load).await;
        let b = d
            .brokers
            .iter()
            .find(|b| b.broker_id == 1)
            .expect("broker 1 registered");
        assert_eq!(
            (b.status(), b.broker_epoch),
            (BrokerStatus::Online, epoch),
            "broker 1 lost its session once its configured controllers were gone"
        );
        tokio::time::sleep(session / 4).await;
    }
    // What a heartbeat answer tells a broker: the members' client addresses, only theirs.
    let members = load
        .router()
        .call(|mut c| async move {
            c.broker_heartbeat(dmq_proto::v1::BrokerHeartbeatRequest {
                broker_id: 1,
                broker_epoch: epoch,
                metadata_version: 0,
                leaving: false,
            })
            .await
        })
        .await
        .expect("a heartbeat for broker 1")
        .controller_addresses;
    let mut want = vec![cluster.addr(4).to_string(), cluster.addr(5).to_string()];
    want.sort();
    let mut got = members.clone();
    got.sort();
    assert_eq!(got, want, "heartbeat answers list {members:?}");
}
