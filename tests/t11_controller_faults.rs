//! Controllers under faults, as real processes: storage failures that leave an outcome unknown,
//! client floods, slow disks, long pauses, repeated leader changes, wiped data dirs, big
//! snapshots, and backup and restore (issue 13).
//!
//! The fault points (a slow or failing disk, an older peer) are test-only: the controllers are
//! built with `dmq-controller/fault-injection` and read them from the file `DMQ_FAULT_FILE`
//! names, which [`ControllerCluster::set_faults`] writes while they run. Each test holds one of
//! the process's cluster slots; conditions are polled with deadlines, and measured figures are
//! printed (`-- --nocapture` shows them).

use std::time::Duration;

use dmq_proto::v1::RegisterBrokerRequest;
use dmq_tests::controller_ops::{cluster_slot, create_topic, start_brokers};
use dmq_tests::{ClusterOpts, ControllerCluster, deadline, wait_until};
use tonic::Code;
use tonic_types::StatusExt;

/// Deadline of any condition: generous, the machine is shared with builds.
const WAIT: Duration = Duration::from_secs(30);

fn heartbeat_interval(cluster: &ControllerCluster) -> Duration {
    Duration::from_millis(cluster.opts().broker_heartbeat_interval_ms)
}

fn register_request(broker_id: u64) -> RegisterBrokerRequest {
    RegisterBrokerRequest {
        broker_id,
        host: "127.0.0.1".into(),
        port: 19_000 + broker_id as u32,
        rack: String::new(),
    }
}

/// The `ErrorInfo` reason of `status`, or a panic naming it.
fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"))
}

// ---------------------------------------------------------------------------------------------
// Item 10: a storage failure leaves the outcome of a proposal unknown

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t11_10_a_failed_leader_write_answers_unavailable_outcome_unknown() {
    let _slot = cluster_slot().await;
    let mut cluster = ControllerCluster::start(3, ClusterOpts::default()).await;
    let leader = cluster.wait_for_leader(WAIT).await;
    let _brokers = start_brokers(&cluster, &[1], heartbeat_interval(&cluster)).await;
    create_topic(&cluster.router(), "before", 1, 1)
        .await
        .unwrap();

    // The leader's next Raft log write fails (EIO). Its appends for the entry may already have
    // left, so the change may still commit on the others: the answer must say so.
    cluster.set_faults(leader, "fail_writes=1");
    let err = cluster
        .client(leader)
        .register_broker(register_request(2))
        .await
        .expect_err("a write that failed on the leader's disk cannot succeed");
    assert_eq!(
        err.code(),
        Code::Unavailable,
        "a storage failure after proposing is not a definite failure: {err:?}"
    );
    assert_eq!(reason(&err), "OUTCOME_UNKNOWN", "{err:?}");
    assert!(
        err.message().contains("may or may not"),
        "the message should say the outcome is unknown: {:?}",
        err.message()
    );
    assert!(err.get_details_retry_info().is_some(), "{err:?}");

    // The failed node stops; the others carry on without it.
    wait_until(deadline(WAIT), || {
        let running = cluster.is_running(leader);
        async move {
            if running {
                Err("still running")
            } else {
                Ok(())
            }
        }
    })
    .await
    .expect("a controller whose disk failed stops");
    let next = cluster.wait_for_leader(WAIT).await;
    assert_ne!(next, leader);
    create_topic(&cluster.router(), "after", 1, 1)
        .await
        .unwrap();
}
