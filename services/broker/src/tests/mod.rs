//! The broker against in-process fake controllers over real gRPC on loopback. Timings are
//! short (50 ms heartbeats); every wait polls with a deadline.

mod data_plane;
mod fake_controller;
mod handover;
mod mini_controller;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use dmq_proto::v1 as pb;
use dmq_proto::v1::broker_service_client::BrokerServiceClient;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use self::fake_controller::FakeController;
use crate::{BrokerConfig, BrokerError, serve};

const DEADLINE: Duration = Duration::from_secs(10);

/// Polls `check` every 10 ms until it holds; fails the test after [`DEADLINE`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let give_up = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < give_up, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct TestBroker {
    addr: SocketAddr,
    data_dir: std::path::PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), BrokerError>>,
    _dir: tempfile::TempDir,
}

impl TestBroker {
    async fn start(controllers: Vec<String>) -> TestBroker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("broker-1");
        let mut cfg = BrokerConfig::new(1, addr, addr.to_string(), controllers, &data_dir);
        cfg.rack = "rack-a".into();
        cfg.heartbeat_interval = Duration::from_millis(50);
        cfg.heartbeat_retry_interval = Duration::from_millis(20);
        cfg.rpc_timeout = Duration::from_secs(1);
        cfg.shutdown_timeout = Duration::from_secs(2);
        cfg.discovery.call_timeout = Duration::from_millis(500);
        cfg.discovery.backoff_initial = Duration::from_millis(20);
        cfg.discovery.backoff_max = Duration::from_millis(100);
        cfg.discovery.seed = Some(1);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(cfg, listener, async {
            let _ = stopped.await;
        }));
        TestBroker {
            addr,
            data_dir,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    async fn client(&self) -> BrokerServiceClient<tonic::transport::Channel> {
        BrokerServiceClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    async fn info(&self) -> pb::GetBrokerInfoResponse {
        self.client()
            .await
            .get_broker_info(pb::GetBrokerInfoRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    async fn health(&self, service: &str) -> ServingStatus {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(channel);
        let answer = client
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        ServingStatus::try_from(answer.status).unwrap()
    }

    async fn push(&self, term: u64, leader_id: u64, address: &str) -> Result<bool, tonic::Status> {
        self.client()
            .await
            .controller_changed(pb::ControllerChangedRequest {
                term,
                leader_id,
                leader_address: address.into(),
            })
            .await
            .map(|r| r.into_inner().accepted)
    }

    async fn registered(&self, epoch: u64) {
        let what = format!("registration with epoch {epoch}");
        eventually(&what, || async {
            let info = self.info().await;
            info.broker_epoch == epoch && info.status == pb::BrokerStatus::Online as i32
        })
        .await;
    }

    async fn stop(mut self) -> Result<(), BrokerError> {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("broker stopped in time")
            .unwrap()
    }
}

#[tokio::test]
async fn registers_heartbeats_and_reports_itself() {
    let controller = FakeController::start(3, 1, None).await;
    let broker = TestBroker::start(vec![controller.address()]).await;
    broker.registered(1).await;
    assert!(broker.data_dir.is_dir(), "data dir created");
    eventually("two heartbeats", || async {
        controller.script().heartbeats.len() >= 2
    })
    .await;
    {
        let s = controller.script();
        let registration = &s.registrations[0];
        assert_eq!(registration.broker_id, 1);
        assert_eq!(registration.host, "127.0.0.1");
        assert_eq!(registration.port, u32::from(broker.addr.port()));
        assert_eq!(registration.rack, "rack-a");
        assert!(
            s.heartbeats
                .iter()
                .all(|h| h.broker_id == 1 && h.broker_epoch == 1 && !h.leaving)
        );
    }
    let info = broker.info().await;
    assert_eq!(info.broker_id, 1);
    assert_eq!(info.controller_leader_id, 3);
    assert_eq!(info.controller_leader_address, controller.address());
    assert_eq!(info.controller_term, 1);
    assert_eq!(broker.health("").await, ServingStatus::Serving);
    assert_eq!(
        broker.health("dmq.v1.BrokerService").await,
        ServingStatus::Serving
    );
    broker.stop().await.unwrap();
}

#[tokio::test]
async fn health_is_not_serving_until_registered() {
    let controller = FakeController::start(1, 1, None).await;
    controller.script().unavailable = true;
    let broker = TestBroker::start(vec![controller.address()]).await;

    eventually("a few refused registrations", || async {
        controller.script().refused >= 3
    })
    .await;
    assert_eq!(broker.info().await.broker_epoch, 0);
    assert_eq!(broker.health("").await, ServingStatus::NotServing);
    assert_eq!(
        broker.health("dmq.v1.BrokerService").await,
        ServingStatus::NotServing
    );
    assert_eq!(
        broker.info().await.status,
        pb::BrokerStatus::Unspecified as i32
    );

    controller.script().unavailable = false;
    broker.registered(1).await;
    eventually("SERVING", || async {
        broker.health("").await == ServingStatus::Serving
    })
    .await;
    broker.stop().await.unwrap();
}

#[tokio::test]
async fn fenced_heartbeat_makes_the_broker_register_again() {
    let controller = FakeController::start(1, 1, None).await;
    let broker = TestBroker::start(vec![controller.address()]).await;
    broker.registered(1).await;

    controller.script().fence_next = true;
    broker.registered(2).await;
    let seen = controller.script().heartbeats.len();
    eventually("heartbeats with the new epoch", || async {
        let s = controller.script();
        s.heartbeats.len() > seen + 1 && s.heartbeats.last().unwrap().broker_epoch == 2
    })
    .await;
    assert_eq!(controller.script().registrations.len(), 2);
    broker.stop().await.unwrap();
}

fn metadata(version: u64, topics: &[&str]) -> pb::GetMetadataResponse {
    pb::GetMetadataResponse {
        metadata_version: version,
        topics: topics
            .iter()
            .map(|t| pb::TopicMetadata {
                name: t.to_string(),
                ..Default::default()
            })
            .collect(),
        brokers: vec![pb::BrokerMetadata {
            broker_id: 1,
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn newer_metadata_version_is_fetched_and_never_undone() {
    let controller = FakeController::start(1, 1, None).await;
    let broker = TestBroker::start(vec![controller.address()]).await;
    broker.registered(1).await;
    assert_eq!(broker.info().await.metadata_version, 0);
    assert!(controller.script().metadata_requests.is_empty());

    {
        let mut s = controller.script();
        s.metadata_version = 7;
        s.metadata = metadata(7, &["orders"]);
    }
    eventually("metadata version 7", || async {
        broker.info().await.metadata_version == 7
    })
    .await;
    eventually("heartbeats carrying version 7", || async {
        controller
            .script()
            .heartbeats
            .last()
            .unwrap()
            .metadata_version
            == 7
    })
    .await;
    assert!(
        controller
            .script()
            .metadata_requests
            .iter()
            .all(|r| !r.allow_stale),
        "metadata is read from the leader, linearizably"
    );

    // A lagging answer (older than held) is ignored, however often it comes.
    let asked = {
        let mut s = controller.script();
        s.metadata_version = 9;
        s.metadata = metadata(5, &[]);
        s.metadata_requests.len()
    };
    eventually("two more metadata pulls", || async {
        controller.script().metadata_requests.len() >= asked + 2
    })
    .await;
    assert_eq!(broker.info().await.metadata_version, 7);
    broker.stop().await.unwrap();
}

#[tokio::test]
async fn not_leader_answer_is_followed_to_the_hinted_leader() {
    let leader = FakeController::start(2, 3, None).await;
    let follower = FakeController::start(1, 3, None).await;
    {
        // A stale follower that still believes it leads, but refuses mutations.
        let mut s = follower.script();
        s.not_leader_hint = Some(leader.address());
    }
    let broker = TestBroker::start(vec![follower.address()]).await;
    broker.registered(1).await;

    assert_eq!(leader.script().registrations.len(), 1);
    let info = broker.info().await;
    assert_eq!(info.controller_leader_id, 2);
    assert_eq!(info.controller_leader_address, leader.address());
    broker.stop().await.unwrap();
}

#[tokio::test]
async fn controller_changed_push_is_taken_only_with_a_higher_term() {
    let old = FakeController::start(1, 4, None).await;
    let new = FakeController::start(2, 5, None).await;
    let broker = TestBroker::start(vec![old.address()]).await;
    broker.registered(1).await;
    // The new leader knows this broker's epoch (the controllers share it through Raft).
    new.script().epoch = 1;

    assert!(
        !broker.push(4, 2, &new.address()).await.unwrap(),
        "same term"
    );
    assert!(
        !broker.push(3, 2, &new.address()).await.unwrap(),
        "older term"
    );
    assert_eq!(broker.info().await.controller_leader_id, 1);
    let invalid = broker.push(0, 2, &new.address()).await.unwrap_err();
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);

    assert!(broker.push(5, 2, &new.address()).await.unwrap());
    let info = broker.info().await;
    assert_eq!(info.controller_leader_id, 2);
    assert_eq!(info.controller_term, 5);
    eventually("heartbeats at the new leader", || async {
        !new.script().heartbeats.is_empty()
    })
    .await;
    assert!(!broker.push(5, 1, &old.address()).await.unwrap(), "repeat");
    broker.stop().await.unwrap();
}

#[tokio::test]
async fn starts_before_any_controller_and_joins_when_one_comes_up() {
    // Reserve a port, then free it: nothing listens there yet.
    let reserved = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = reserved.local_addr().unwrap();
    drop(reserved);
    let broker = TestBroker::start(vec![address.to_string()]).await;
    eventually("a broker still looking", || async {
        broker.info().await.controller_leader_id == 0
    })
    .await;
    assert_eq!(broker.health("").await, ServingStatus::NotServing);

    let listener = TcpListener::bind(address).await.unwrap();
    let controller = FakeController::start(1, 1, Some(listener)).await;
    broker.registered(1).await;
    assert_eq!(controller.script().registrations.len(), 1);
    broker.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_says_goodbye_and_stops_serving() {
    let controller = FakeController::start(1, 1, None).await;
    let broker = TestBroker::start(vec![controller.address()]).await;
    broker.registered(1).await;
    let addr = broker.addr;

    broker.stop().await.unwrap();
    let last = controller.script().heartbeats.last().cloned().unwrap();
    assert!(
        last.leaving,
        "the last heartbeat says the broker is leaving"
    );
    assert_eq!(last.broker_epoch, 1);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn bad_config_is_refused_before_starting() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = BrokerConfig::new(
        1,
        listener.local_addr().unwrap(),
        "no-port",
        vec!["127.0.0.1:1".into()],
        "/tmp/unused",
    );
    let err = serve(cfg, listener, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::InvalidConfig(_)), "{err}");
}
