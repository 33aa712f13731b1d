//! Issue 10, "acknowledged means kept": leadership moving at the wrong moment, reproduced
//! deterministically with the brokers' fault points (`crate::faults`). Each test names the
//! path it closes; each failed on the code before its fix (see the commit messages).

use std::time::Duration;

use dmq_proto::v1 as pb;
use tonic::Code;

use super::data_plane::{
    Cluster, fetch, produce, produce_eventually, produce_within, read_all, records, replica_state,
};
use super::eventually;
use crate::BrokerError;
use crate::errors::error_info;

const WAIT: Duration = Duration::from_secs(10);

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Parks broker `id`'s follower at its next fetch and waits until it is parked there (so it
/// has no fetch in flight that could still bring it records).
async fn park_fetcher(c: &Cluster, id: u64) {
    let faults = &c.nodes[id as usize - 1].faults;
    let seen = faults.hits("follower.before_fetch");
    faults.hold("follower.before_fetch");
    faults
        .wait_hits("follower.before_fetch", seen + 1, WAIT)
        .await;
}

/// Path 1: a waiter accepted a high watermark raised after leadership was lost. Leader 1
/// appends x0..x9 at 1..=10, its sync waits; leadership moves to 2 (epoch 1), which takes
/// y0..y19 at 1..=20; broker 1, now a follower, truncates to 1, copies the y's and raises the
/// partition's watermark to 21. The old waiter then saw "21 >= 11" and acknowledged offsets
/// that hold y's. Now the answer is LEADER_CHANGED_AFTER_APPEND (outcome unknown).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_never_acknowledges_with_the_next_leaders_watermark() {
    let c = Cluster::start(2, Duration::from_secs(30)).await;
    c.controller.model().ignore_leaving = true;
    c.controller.model().create_topic("w", &[&[1, 2]], 1);
    let (b1, b2) = (c.client(1), c.client(2));
    produce_eventually(&b1, "w", pb::Acks::All, &["a"]).await;
    // Broker 2 must not see the x's: park its fetcher first.
    park_fetcher(&c, 2).await;

    let f1 = &c.nodes[0].faults;
    let parked = f1.hits("produce.after_append") + 1;
    f1.hold("produce.after_append");
    let xs = values("x", 10);
    let waiter = tokio::spawn({
        let b1 = b1.clone();
        let xs = xs.clone();
        async move { produce(&b1, "w", pb::Acks::All, &refs(&xs)).await }
    });
    f1.wait_hits("produce.after_append", parked, WAIT).await;

    // Broker 2's fetcher stays parked until its role changes (it never fetches the x's).
    c.controller.model().move_leader("w", 0, 2);
    let ys = values("y", 20);
    let y = produce_eventually(&b2, "w", pb::Acks::Leader, &refs(&ys)).await;
    assert_eq!(
        y.base_offset, 1,
        "the new leader continues after the committed record"
    );
    eventually(
        "broker 1 follows, holds the y's and learns watermark 21",
        || async {
            let r = replica_state(&b1, "w").await;
            r.role() == pb::ReplicaRole::Follower
                && r.log_end_offset == 21
                && r.high_watermark == 21
        },
    )
    .await;

    f1.release("produce.after_append");
    let answer = waiter.await.unwrap();
    let status = answer.expect_err("records of a closed leadership must not be acknowledged");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        error_info(&status).unwrap().0,
        "LEADER_CHANGED_AFTER_APPEND",
        "{status:?}"
    );
    let hint = dmq_client::partition_leader_hint(&status).expect("it names the new leader");
    assert_eq!(hint.leader_id, 2);
    // What an acknowledgement would have claimed: offsets 1..=10 hold y's, not x's.
    let committed = read_all(&b2, "w").await;
    assert_eq!(&committed[1..11], &ys[..10]);
}

/// Path 3: a deposed leader answered a parked ReplicaFetch with data its follower role wrote.
/// Broker 2 holds x0..x9 (epoch 0, uncommitted) from leader 1; its next fetch is parked at
/// broker 1 right after the leadership check. Leadership moves to 3 (epoch 1), which never
/// had the x's and takes y's; broker 1 turns follower and copies them. The parked fetch then
/// read y's and answered them as epoch 0: broker 2 appended them after its x's, and its next
/// fetch from 3 (last epoch 1) saw no divergence: the x's stayed forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_replica_fetch_never_carries_what_the_next_role_wrote() {
    let c = Cluster::start(3, Duration::from_secs(30)).await;
    c.controller.model().ignore_leaving = true;
    c.controller.model().create_topic("d", &[&[1, 2, 3]], 1);
    let (b1, b2, b3) = (c.client(1), c.client(2), c.client(3));
    produce_eventually(&b1, "d", pb::Acks::All, &["a"]).await;
    park_fetcher(&c, 3).await;
    let xs = values("x", 10);
    produce(&b1, "d", pb::Acks::Leader, &refs(&xs))
        .await
        .unwrap();
    eventually("broker 2 holds the x's", || async {
        replica_state(&b2, "d").await.log_end_offset == 11
    })
    .await;

    let (f1, f2) = (&c.nodes[0].faults, &c.nodes[1].faults);
    let parked = f1.hits("replica_fetch.before_read") + 1;
    f1.hold("replica_fetch.before_read");
    f1.wait_hits("replica_fetch.before_read", parked, WAIT)
        .await;
    // Broker 2 must not learn the new epoch before its parked fetch is answered.
    f2.hold("manager.before_reconcile");
    c.controller.model().move_leader("d", 0, 3);
    let ys = values("y", 20);
    let y = produce_eventually(&b3, "d", pb::Acks::Leader, &refs(&ys)).await;
    assert_eq!(y.base_offset, 1);
    eventually("broker 1 follows 3 and holds the y's", || async {
        let r = replica_state(&b1, "d").await;
        r.role() == pb::ReplicaRole::Follower && r.log_end_offset == 21
    })
    .await;

    // Broker 2's follower starts its next round once the parked fetch is answered.
    let rounds = f2.hits("follower.before_fetch");
    f1.release("replica_fetch.before_read");
    f2.wait_hits("follower.before_fetch", rounds + 1, WAIT)
        .await;
    f2.release("manager.before_reconcile");
    // Broker 2 follows 3 now; every replica must end up with 3's log. Read it from 2 as leader.
    eventually("broker 2 caught up with broker 3", || async {
        let r = replica_state(&b2, "d").await;
        r.leader_id == 3 && r.log_end_offset == 21 && r.high_watermark == 21
    })
    .await;
    c.controller.model().move_leader("d", 0, 2);
    let mut expected = vec!["a".to_string()];
    expected.extend(ys);
    eventually("broker 2's log is the new leader's", || async {
        let read = read_all(&b2, "d").await;
        assert!(
            !read.iter().any(|v| v.starts_with('x')),
            "diverged: {read:?}"
        );
        read == expected
    })
    .await;
}

/// Path 2: an ISR expansion whose answer was lost was forgotten. The controllers committed
/// {1,2}, the leader dropped the pending change, stopped counting 2, and acknowledged records
/// 2 did not have while the controllers listed 2 in the ISR (and could elect it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expansion_with_a_lost_answer_keeps_the_joiner_counted() {
    let mut c = Cluster::start(2, Duration::from_millis(300)).await;
    c.controller.model().ignore_leaving = true;
    c.controller.model().create_topic("e", &[&[1, 2]], 1);
    let b1 = c.client(1);
    produce_eventually(&b1, "e", pb::Acks::All, &["a"]).await;
    c.node(2).stop().await;
    eventually("ISR [1]", || async {
        c.controller.model().partition("e", 0).isr == vec![1]
    })
    .await;

    // The leader must not learn the outcome from metadata either (the window this path is
    // about): its partition manager is held from now on.
    let f1 = c.nodes[0].faults.clone();
    f1.hold("manager.before_reconcile");
    c.controller.model().lose_alter_answers = true;
    c.node(2).restart().await;
    eventually("the controllers committed the expansion", || async {
        c.controller.model().partition("e", 0).isr == vec![1, 2]
    })
    .await;
    park_fetcher(&c, 2).await;

    let status = produce_within(&c.client(1), "e", pb::Acks::All, &["b"], 1000)
        .await
        .expect_err("broker 2 is in the ISR and does not have the record");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(error_info(&status).unwrap().0, "REPLICATION_TIMEOUT");

    c.controller.model().lose_alter_answers = false;
    f1.release("manager.before_reconcile");
    c.nodes[1].faults.release("follower.before_fetch");
    produce_eventually(&b1, "e", pb::Acks::All, &["c"]).await;
    assert_eq!(read_all(&b1, "e").await, ["a", "b", "c"]);
}

/// Path 10: replica progress was accepted from anyone naming a follower id. A fetch that names
/// broker 2 with another incarnation's epoch must not move the watermark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_progress_counts_only_from_the_listed_incarnation() {
    let c = Cluster::start(2, Duration::from_secs(30)).await;
    c.controller.model().create_topic("p", &[&[1, 2]], 1);
    let b1 = c.client(1);
    produce_eventually(&b1, "p", pb::Acks::All, &["a"]).await;
    park_fetcher(&c, 2).await;
    let waiter = tokio::spawn({
        let b1 = b1.clone();
        async move { produce_within(&b1, "p", pb::Acks::All, &["b"], 1500).await }
    });
    eventually("b appended on the leader", || async {
        replica_state(&b1, "p").await.log_end_offset == 2
    })
    .await;
    let (topic_id, epoch) = {
        let m = c.controller.model();
        (m.topics["p"].topic_id, m.brokers[&2].broker_epoch)
    };
    let forged = b1
        .clone()
        .replica_fetch(pb::ReplicaFetchRequest {
            topic: "p".into(),
            partition: 0,
            replica_id: 2,
            broker_epoch: epoch + 100,
            fetch_offset: 2,
            leader_epoch: 0,
            last_fetched_epoch: 0,
            max_bytes: 0,
            max_wait_ms: 0,
            topic_id,
        })
        .await
        .expect_err("an incarnation the metadata does not list is refused");
    assert_eq!(forged.code(), Code::FailedPrecondition, "{forged:?}");
    assert_eq!(error_info(&forged).unwrap().0, "STALE_BROKER_EPOCH");
    let status = waiter.await.unwrap().expect_err("broker 2 never fetched b");
    assert_eq!(error_info(&status).unwrap().0, "REPLICATION_TIMEOUT");
    c.nodes[1].faults.release("follower.before_fetch");
}

/// Path 7: a failed fsync left the broker leading partitions it could no longer write. Now it
/// gives up every leadership (leaving heartbeat) and stops with a storage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_makes_the_broker_give_up_its_leaderships() {
    let mut c = Cluster::start(2, Duration::from_secs(30)).await;
    c.controller.model().create_topic("s", &[&[1, 2]], 1);
    let b1 = c.client(1);
    produce_eventually(&b1, "s", pb::Acks::All, &["a"]).await;
    c.nodes[0].faults.fail("log.sync", true);
    let status = produce(&b1, "s", pb::Acks::All, &["b"])
        .await
        .expect_err("the sync failed");
    assert_eq!(
        error_info(&status).unwrap().0,
        "STORAGE_FAILED_AFTER_APPEND",
        "{status:?}"
    );
    let exit = c.node(1).exited().await;
    assert!(matches!(exit, Err(BrokerError::Storage(_))), "{exit:?}");
    let p = c.controller.model().partition("s", 0);
    assert_eq!(
        (p.leader, p.isr.clone()),
        (2, vec![2]),
        "leadership moved on"
    );
    produce_eventually(&c.client(2), "s", pb::Acks::All, &["c"]).await;
}

/// Path 11: no broker-wide bound on the memory requests in flight hold. Now one acks=ALL
/// waiter holding most of the budget makes the next large request RESOURCE_EXHAUSTED /
/// BROKER_OVERLOADED (nothing appended), and it succeeds once the budget is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_memory_budget_are_refused_not_queued() {
    let c = Cluster::start_with(
        1,
        Duration::from_secs(30),
        Duration::from_millis(100),
        |cfg| {
            cfg.memory_budget_bytes = cfg.max_request_bytes + 64 * 1024;
        },
    )
    .await;
    c.controller.model().create_topic("m", &[&[1]], 1);
    let b1 = c.client(1);
    produce_eventually(&b1, "m", pb::Acks::All, &["a"]).await;
    let big: Vec<String> = (0..20).map(|i| format!("{i:0>10000}")).collect();
    let f1 = &c.nodes[0].faults;
    let parked = f1.hits("produce.after_append") + 1;
    f1.hold("produce.after_append");
    let first = tokio::spawn({
        let b1 = b1.clone();
        let big = big.clone();
        async move { produce(&b1, "m", pb::Acks::All, &refs(&big)).await }
    });
    f1.wait_hits("produce.after_append", parked, WAIT).await;
    let refused = tokio::time::timeout(WAIT, produce(&b1, "m", pb::Acks::All, &refs(&big)))
        .await
        .expect("refused at once, not queued behind the first")
        .expect_err("the budget is held by the first request");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(error_info(&refused).unwrap().0, "BROKER_OVERLOADED");
    assert!(matches!(
        dmq_client::ClientError::from_broker_status(refused, "b1", "m", 0, 0),
        dmq_client::ClientError::Overloaded { .. }
    ));
    // A fetch's answer needs budget too.
    let busy = fetch(&b1, "m", 0, 0)
        .await
        .expect_err("no budget for the answer");
    assert_eq!(busy.code(), Code::ResourceExhausted);
    f1.release("produce.after_append");
    first.await.unwrap().unwrap();
    produce(&b1, "m", pb::Acks::All, &refs(&big)).await.unwrap();
    assert_eq!(
        read_all(&b1, "m").await.len(),
        41,
        "the refused one appended nothing"
    );
}

/// Issue 12, "a deposed leader says so": a leader cut off from the controllers kept acting as
/// leader for as long as the cut lasted, so producers waited for their whole timeout. Now its
/// lease (the controllers' session timeout, counted from its last answered heartbeat) runs
/// out, it stops leading, and clients get an answer naming the likely next leader at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_controllers_stops_leading_when_its_lease_ends() {
    let c = Cluster::start(3, Duration::from_secs(30)).await;
    c.controller.model().session_timeout_ms = 600;
    c.controller.model().create_topic("z", &[&[1, 2, 3]], 2);
    let (b1, b2) = (c.client(1), c.client(2));
    produce_eventually(&b1, "z", pb::Acks::All, &["a"]).await;

    // The controllers lose broker 1 and move its leadership; broker 1 hears nothing of it,
    // while the other two follow the new leader.
    {
        let mut m = c.controller.model();
        m.cut_off.insert(1);
        m.fence(1);
    }
    let b3 = c.client(3);
    eventually("brokers 2 and 3 follow the new leadership", || async {
        replica_state(&b2, "z").await.role() == pb::ReplicaRole::Leader
            && replica_state(&b3, "z").await.leader_id == 2
    })
    .await;
    let waiting = b1
        .clone()
        .produce(pb::ProduceRequest {
            topic: "z".into(),
            partition: 0,
            acks: pb::Acks::All as i32,
            records: records(&["zombie"]),
            timeout_ms: 10_000,
        })
        .await
        .expect_err("the followers left; this leadership can commit nothing");
    assert_ne!(
        error_info(&waiting).unwrap().0,
        "REPLICATION_TIMEOUT",
        "answered when the lease ended, not after the client's timeout: {waiting:?}"
    );
    let refused = produce(&b1, "z", pb::Acks::All, &["later"])
        .await
        .expect_err("no longer leading");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let hint = dmq_client::partition_leader_hint(&refused).unwrap();
    assert_eq!(
        (hint.leader_id, hint.leader_epoch),
        (2, 1),
        "the next ISR member"
    );
    produce_eventually(&b2, "z", pb::Acks::All, &["b"]).await;

    // The cut heals: broker 1 follows the new leader.
    c.controller.model().cut_off.remove(&1);
    eventually("broker 1 follows broker 2", || async {
        let r = replica_state(&b1, "z").await;
        r.role() == pb::ReplicaRole::Follower && r.leader_id == 2
    })
    .await;
}

/// Issue 12, "clean handover": a leader stopping gracefully takes no new appends, commits the
/// ones in flight, and only then tells the controllers it leaves. Before, the leaving heartbeat
/// moved the leadership at once and the writes in flight ended with an unknown outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopping_gracefully_answers_its_writes_in_flight_before_handing_over() {
    let mut c = Cluster::start(3, Duration::from_secs(30)).await;
    c.controller.model().create_topic("g", &[&[1, 2, 3]], 2);
    let b1 = c.client(1);
    produce_eventually(&b1, "g", pb::Acks::All, &["a"]).await;
    let f1 = c.nodes[0].faults.clone();
    let parked = f1.hits("produce.after_append") + 1;
    f1.hold("produce.after_append");
    let in_flight = tokio::spawn({
        let b1 = b1.clone();
        async move { produce(&b1, "g", pb::Acks::All, &["in-flight"]).await }
    });
    f1.wait_hits("produce.after_append", parked, WAIT).await;

    let addr = c.nodes[0].addr;
    let controller = c.controller.clone();
    let releaser = tokio::spawn(async move {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let health = tonic_health::pb::health_client::HealthClient::new(channel);
        eventually("broker 1 draining", || {
            let mut health = health.clone();
            async move {
                health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .is_ok_and(|r| r.into_inner().status != 1)
            }
        })
        .await;
        // New writes are refused (nothing appended), naming the next leader...
        let refused = produce(&b1, "g", pb::Acks::All, &["late"])
            .await
            .expect_err("draining: no new appends");
        let hint = dmq_client::partition_leader_hint(&refused).expect("a hint");
        assert_eq!((hint.leader_id, hint.leader_epoch), (2, 1), "{refused:?}");
        // ...while the leadership has not moved yet.
        assert_eq!(controller.model().partition("g", 0).leader, 1);
        f1.release("produce.after_append");
    });
    c.node(1).stop().await;
    releaser.await.unwrap();
    let answer = in_flight
        .await
        .unwrap()
        .expect("the write in flight is acknowledged");
    assert_eq!(answer.base_offset, 1);
    let p = c.controller.model().partition("g", 0);
    assert_eq!(
        (p.leader, p.leader_epoch),
        (2, 1),
        "handed over after the drain"
    );
    // The new leader's high watermark catches up once its followers fetched from it.
    let b2 = c.client(2);
    eventually("both records committed at the new leader", || async {
        read_all(&b2, "g").await == ["a", "in-flight"]
    })
    .await;
}

/// Path 12: a follower's first fetch reported a log end no sync had covered. Leader 1 appends
/// x0..x9 (acks=ALL) and its sync waits; broker 2 copies them (and syncs them). Leadership
/// moves to 2: broker 1, a follower now, fetched at once with `fetch_offset` 11, and leader 2
/// counted the x's as durable on broker 1, whose disk never had them (its syncs fail here, as
/// on a power cut): offsets committed with one durable copy. Now a follower makes its log
/// durable before its first fetch, and a broker whose sync fails stops instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_follower_reports_only_a_log_end_its_disk_holds() {
    let mut c = Cluster::start(2, Duration::from_secs(30)).await;
    c.controller.model().ignore_leaving = true;
    c.controller.model().create_topic("n", &[&[1, 2]], 1);
    let (b1, b2) = (c.client(1), c.client(2));
    produce_eventually(&b1, "n", pb::Acks::All, &["a"]).await;

    let f1 = c.nodes[0].faults.clone();
    let parked = f1.hits("produce.after_append") + 1;
    f1.hold("produce.after_append");
    let xs = values("x", 10);
    let waiter = tokio::spawn({
        let b1 = b1.clone();
        async move { produce(&b1, "n", pb::Acks::All, &refs(&xs)).await }
    });
    f1.wait_hits("produce.after_append", parked, WAIT).await;
    eventually("broker 2 holds the x's", || async {
        replica_state(&b2, "n").await.log_end_offset == 11
    })
    .await;

    // From now on broker 1's disk refuses to make anything durable.
    f1.fail("log.sync", true);
    c.controller.model().move_leader("n", 0, 2);
    let exit = c.node(1).exited().await;
    assert!(
        matches!(exit, Err(BrokerError::Storage(_))),
        "the follower's first sync failed, so the broker stops: {exit:?}"
    );
    assert_eq!(c.controller.model().partition("n", 0).isr, vec![1, 2]);
    let r = replica_state(&b2, "n").await;
    assert_eq!(
        (r.log_end_offset, r.high_watermark),
        (11, 1),
        "the x's are durable on broker 2 only: not committed while broker 1 is in the ISR"
    );
    f1.release("produce.after_append");
    let _ = waiter.await;
}

/// Path 13: an AlterPartition left in flight by a leadership whose lease ran out commits under
/// this broker's next leadership at the same leader epoch. Broker 1 leads with ISR {1,2}; 3
/// catches up and adding it is asked (the call held). Broker 1 is cut off from the
/// controllers, its lease ends and it stops leading; the cut heals and it leads again at the
/// same epoch, from metadata that still says {1,2}. The held call then commits {1,2,3}: its
/// answer went to the ended leadership, and the new one counted {1,2} and acknowledged
/// records 3 lacked while the controllers listed 3 in the ISR. Now the partition keeps the
/// change across leaderships: the new one counts 3 while the change is in flight, and its
/// answer comes to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isr_change_left_in_flight_by_an_ended_leadership_still_counts() {
    let mut c = Cluster::start(3, Duration::from_millis(300)).await;
    {
        let mut m = c.controller.model();
        m.ignore_leaving = true;
        m.session_timeout_ms = 600;
        m.create_topic("g", &[&[1, 2, 3]], 2);
    }
    let b1 = c.client(1);
    produce_eventually(&b1, "g", pb::Acks::All, &["a"]).await;
    c.node(3).stop().await;
    eventually("ISR [1, 2]", || async {
        c.controller.model().partition("g", 0).isr == vec![1, 2]
    })
    .await;

    let f1 = c.nodes[0].faults.clone();
    let asked = f1.hits("isr.before_alter") + 1;
    f1.hold("isr.before_alter");
    c.node(3).restart().await;
    f1.wait_hits("isr.before_alter", asked, WAIT).await;

    c.controller.model().cut_off.insert(1);
    eventually("broker 1's lease ran out: it stopped leading", || async {
        replica_state(&b1, "g").await.role() != pb::ReplicaRole::Leader
    })
    .await;
    c.controller.model().cut_off.remove(&1);
    eventually("broker 1 leads again at the same epoch", || async {
        let r = replica_state(&b1, "g").await;
        r.role() == pb::ReplicaRole::Leader && r.leader_epoch == 0
    })
    .await;
    assert_eq!(c.controller.model().partition("g", 0).isr, vec![1, 2]);

    // The new leadership must not learn the outcome from metadata (the window this path is
    // about); then the held call goes through and commits.
    f1.hold("manager.before_reconcile");
    f1.release("isr.before_alter");
    eventually("the controllers committed [1, 2, 3]", || async {
        c.controller.model().partition("g", 0).isr == vec![1, 2, 3]
    })
    .await;
    // Later ISR changes (shrinking 3 away once its fetcher is parked) wait here.
    f1.hold("isr.before_alter");
    park_fetcher(&c, 3).await;

    let status = produce_within(&c.client(1), "g", pb::Acks::All, &["x"], 1500)
        .await
        .expect_err("broker 3 is in the ISR and does not have the record");
    assert_eq!(
        error_info(&status).unwrap().0,
        "REPLICATION_TIMEOUT",
        "{status:?}"
    );

    f1.release("manager.before_reconcile");
    f1.release("isr.before_alter");
    c.nodes[2].faults.release("follower.before_fetch");
    produce_eventually(&b1, "g", pb::Acks::All, &["y"]).await;
    assert_eq!(read_all(&b1, "g").await, ["a", "x", "y"]);
}
