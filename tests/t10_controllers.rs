//! Controllers as real processes: election, agreement on the leader.

use std::time::Duration;

use dmq_proto::v1::{ControllerRole, GetControllerInfoRequest};
use dmq_tests::{ClusterOpts, ControllerCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_controllers_elect_one_leader() {
    let mut cluster = ControllerCluster::start(3, ClusterOpts::default()).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(15)).await;

    let info = cluster
        .leader_client()
        .await
        .get_controller_info(GetControllerInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, leader);
    assert_eq!(info.role(), ControllerRole::Leader);
    assert_eq!(info.address, cluster.addr(leader).to_string());
    for id in cluster.ids() {
        let i = cluster.info(id).await.unwrap();
        assert_eq!(i.leader_id, leader, "node {id}");
        assert_eq!(
            i.leader_address,
            cluster.addr(leader).to_string(),
            "node {id}"
        );
        assert_eq!(i.term, info.term, "node {id}");
    }
}
