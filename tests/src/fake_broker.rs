//! A fake broker for liveness tests: it serves BrokerService (recording every
//! CONTROLLER_CHANGED push), registers with the controller leader and heartbeats from a
//! background task that can be paused, resumed and stopped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dmq_proto::v1::broker_service_server::{BrokerService, BrokerServiceServer};
use dmq_proto::v1::{
    BrokerHeartbeatRequest, BrokerHeartbeatResponse, BrokerStatus, ControllerChangedRequest,
    ControllerChangedResponse, GetBrokerInfoRequest, GetBrokerInfoResponse, RegisterBrokerRequest,
    RegisterBrokerResponse, UnregisterBrokerRequest, UnregisterBrokerResponse,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::service::Routes;
use tonic::{Request, Response, Status};

use crate::grpc::ServerHandle;
use crate::router::LeaderRouter;
use crate::wait::{WaitTimeout, wait_until};

/// The result of one background heartbeat.
#[derive(Debug, Clone)]
pub struct HeartbeatOutcome {
    pub at: Instant,
    /// The epoch the heartbeat carried.
    pub epoch: u64,
    pub result: Result<BrokerHeartbeatResponse, Status>,
}

impl HeartbeatOutcome {
    /// The status the controller answered, if it answered.
    pub fn status(&self) -> Option<BrokerStatus> {
        self.result.as_ref().ok().map(|r| r.status())
    }
}

struct State {
    id: u64,
    epoch: AtomicU64,
    metadata_version: AtomicU64,
    pushes: watch::Sender<Vec<ControllerChangedRequest>>,
    last_heartbeat: watch::Sender<Option<HeartbeatOutcome>>,
    /// The controller leader as last pushed: (term, leader id, address).
    controller: Mutex<(u64, u64, String)>,
}

struct Svc(Arc<State>);

#[tonic::async_trait]
impl BrokerService for Svc {
    async fn controller_changed(
        &self,
        req: Request<ControllerChangedRequest>,
    ) -> Result<Response<ControllerChangedResponse>, Status> {
        let push = req.into_inner();
        let accepted = {
            let mut c = self.0.controller.lock().unwrap();
            let newer = push.term > c.0;
            if newer {
                *c = (push.term, push.leader_id, push.leader_address.clone());
            }
            newer
        };
        self.0.pushes.send_modify(|v| v.push(push));
        Ok(Response::new(ControllerChangedResponse { accepted }))
    }

    async fn get_broker_info(
        &self,
        _: Request<GetBrokerInfoRequest>,
    ) -> Result<Response<GetBrokerInfoResponse>, Status> {
        let s = &self.0;
        let status = s
            .last_heartbeat
            .borrow()
            .as_ref()
            .and_then(HeartbeatOutcome::status)
            .unwrap_or(BrokerStatus::Unspecified);
        let (term, leader_id, leader_address) = s.controller.lock().unwrap().clone();
        Ok(Response::new(GetBrokerInfoResponse {
            broker_id: s.id,
            broker_epoch: s.epoch.load(Ordering::SeqCst),
            status: status as i32,
            metadata_version: s.metadata_version.load(Ordering::SeqCst),
            controller_leader_id: leader_id,
            controller_leader_address: leader_address,
            controller_term: term,
            // No data plane: it holds no partition replicas.
            replicas: Vec::new(),
            version: "fake".to_string(),
        }))
    }

    // This fake models a broker's control plane only (registration, heartbeats, pushes).
    async fn produce(
        &self,
        _: Request<dmq_proto::v1::ProduceRequest>,
    ) -> Result<Response<dmq_proto::v1::ProduceResponse>, Status> {
        Err(Status::unimplemented("the fake broker has no data plane"))
    }

    async fn fetch(
        &self,
        _: Request<dmq_proto::v1::FetchRequest>,
    ) -> Result<Response<dmq_proto::v1::FetchResponse>, Status> {
        Err(Status::unimplemented("the fake broker has no data plane"))
    }

    async fn list_offsets(
        &self,
        _: Request<dmq_proto::v1::ListOffsetsRequest>,
    ) -> Result<Response<dmq_proto::v1::ListOffsetsResponse>, Status> {
        Err(Status::unimplemented("the fake broker has no data plane"))
    }

    type ConsumeStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<dmq_proto::v1::ConsumeResponse, Status>> + Send>,
    >;

    async fn consume(
        &self,
        _: Request<dmq_proto::v1::ConsumeRequest>,
    ) -> Result<Response<Self::ConsumeStream>, Status> {
        Err(Status::unimplemented("the fake broker has no data plane"))
    }

    async fn replica_fetch(
        &self,
        _: Request<dmq_proto::v1::ReplicaFetchRequest>,
    ) -> Result<Response<dmq_proto::v1::ReplicaFetchResponse>, Status> {
        Err(Status::unimplemented("the fake broker has no data plane"))
    }
}

struct HeartbeatTask {
    paused: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// A fake broker. Dropping it stops its heartbeats and its server.
pub struct FakeBroker {
    state: Arc<State>,
    router: LeaderRouter,
    server: ServerHandle,
    heartbeats: Option<HeartbeatTask>,
}

impl FakeBroker {
    /// Serves BrokerService on a free loopback port; `controllers` are the controllers' client
    /// addresses. Nothing is sent until [`register`](Self::register).
    pub async fn start<I, S>(id: u64, controllers: I) -> FakeBroker
    where
        I: IntoIterator<Item = S>,
        S: ToString,
    {
        let state = Arc::new(State {
            id,
            epoch: AtomicU64::new(0),
            metadata_version: AtomicU64::new(0),
            pushes: watch::channel(Vec::new()).0,
            last_heartbeat: watch::channel(None).0,
            controller: Mutex::new((0, 0, String::new())),
        });
        let server =
            ServerHandle::start(Routes::new(BrokerServiceServer::new(Svc(state.clone())))).await;
        FakeBroker {
            state,
            router: LeaderRouter::new(controllers),
            server,
            heartbeats: None,
        }
    }

    pub fn id(&self) -> u64 {
        self.state.id
    }

    /// Where its BrokerService listens (what it registers as host and port).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The epoch of the last successful registration (0 before).
    pub fn epoch(&self) -> u64 {
        self.state.epoch.load(Ordering::SeqCst)
    }

    /// The leader-following client it talks to the controllers with.
    pub fn router(&self) -> &LeaderRouter {
        &self.router
    }

    /// RegisterBroker with the leader (following redirects); keeps the new epoch.
    pub async fn register(&self) -> Result<RegisterBrokerResponse, Status> {
        let req = RegisterBrokerRequest {
            broker_id: self.id(),
            host: self.addr().ip().to_string(),
            port: u32::from(self.addr().port()),
            rack: String::new(),
            ..Default::default()
        };
        let r = self
            .router
            .call(|mut c| {
                let req = req.clone();
                async move { c.register_broker(req).await }
            })
            .await?;
        self.state.epoch.store(r.broker_epoch, Ordering::SeqCst);
        self.state
            .metadata_version
            .fetch_max(r.metadata_version, Ordering::SeqCst);
        Ok(r)
    }

    /// One heartbeat with the current epoch.
    pub async fn heartbeat(&self) -> Result<BrokerHeartbeatResponse, Status> {
        heartbeat(&self.state, &self.router, self.epoch()).await
    }

    /// One heartbeat with any epoch (e.g. a stale one).
    pub async fn heartbeat_with_epoch(
        &self,
        epoch: u64,
    ) -> Result<BrokerHeartbeatResponse, Status> {
        heartbeat(&self.state, &self.router, epoch).await
    }

    /// UnregisterBroker with the current epoch.
    pub async fn unregister(&self) -> Result<UnregisterBrokerResponse, Status> {
        let req = UnregisterBrokerRequest {
            broker_id: self.id(),
            broker_epoch: self.epoch(),
        };
        self.router
            .call(|mut c| async move { c.unregister_broker(req).await })
            .await
    }

    /// Heartbeats every `interval` from a background task (replacing a running one). Each
    /// outcome is published in [`last_heartbeat`](Self::last_heartbeat).
    pub fn start_heartbeats(&mut self, interval: Duration) {
        self.stop_heartbeats();
        let (paused, mut paused_rx) = watch::channel(false);
        let state = self.state.clone();
        // One attempt may not outlast the interval, so heartbeats never pile up.
        let router = self.router.with_timeouts(interval, interval);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if *paused_rx.borrow_and_update() {
                    if paused_rx.wait_for(|p| !p).await.is_err() {
                        return;
                    }
                    tick.reset_immediately();
                    continue;
                }
                let epoch = state.epoch.load(Ordering::SeqCst);
                let _ = heartbeat(&state, &router, epoch).await;
            }
        });
        self.heartbeats = Some(HeartbeatTask { paused, task });
    }

    /// Stops sending heartbeats (the broker looks dead to the controllers) until resumed.
    pub fn pause_heartbeats(&self) {
        if let Some(h) = &self.heartbeats {
            h.paused.send_replace(true);
        }
    }

    /// Sends a heartbeat at once and then every interval again.
    pub fn resume_heartbeats(&self) {
        if let Some(h) = &self.heartbeats {
            h.paused.send_replace(false);
        }
    }

    pub fn stop_heartbeats(&mut self) {
        if let Some(h) = self.heartbeats.take() {
            h.task.abort();
        }
    }

    /// The last heartbeat's outcome (background or not).
    pub fn last_heartbeat(&self) -> Option<HeartbeatOutcome> {
        self.state.last_heartbeat.borrow().clone()
    }

    /// Waits until a heartbeat sent after now answers `status`; returns that answer.
    pub async fn wait_for_status(
        &self,
        deadline: Instant,
        status: BrokerStatus,
    ) -> Result<BrokerHeartbeatResponse, WaitTimeout> {
        let since = Instant::now();
        wait_until(deadline, || async {
            match self.last_heartbeat() {
                Some(h) if h.at >= since => match h.result {
                    Ok(r) if r.status() == status => Ok(r),
                    Ok(r) => Err(format!("status {:?}", r.status())),
                    Err(e) => Err(format!("heartbeat failed: {e}")),
                },
                _ => Err("no heartbeat yet".to_string()),
            }
        })
        .await
    }

    /// Every CONTROLLER_CHANGED push received so far, in order.
    pub fn pushes(&self) -> Vec<ControllerChangedRequest> {
        self.state.pushes.borrow().clone()
    }

    /// Waits for a push that satisfies `pred` (already received ones count).
    pub async fn wait_for_push(
        &self,
        deadline: Instant,
        pred: impl Fn(&ControllerChangedRequest) -> bool,
    ) -> Result<ControllerChangedRequest, WaitTimeout> {
        let pred = &pred;
        wait_until(deadline, || async move {
            let pushes = self.pushes();
            pushes
                .iter()
                .find(|p| pred(p))
                .cloned()
                .ok_or_else(|| format!("pushes so far: {pushes:?}"))
        })
        .await
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.stop_heartbeats();
    }
}

async fn heartbeat(
    state: &State,
    router: &LeaderRouter,
    epoch: u64,
) -> Result<BrokerHeartbeatResponse, Status> {
    let req = BrokerHeartbeatRequest {
        broker_id: state.id,
        broker_epoch: epoch,
        metadata_version: state.metadata_version.load(Ordering::SeqCst),
        leaving: false,
    };
    let result = router
        .call(|mut c| async move { c.broker_heartbeat(req).await })
        .await;
    if let Ok(r) = &result {
        state
            .metadata_version
            .fetch_max(r.metadata_version, Ordering::SeqCst);
    }
    state.last_heartbeat.send_replace(Some(HeartbeatOutcome {
        at: Instant::now(),
        epoch,
        result: result.clone(),
    }));
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_controller::FakeController;
    use crate::wait::deadline;
    use dmq_proto::v1::broker_service_client::BrokerServiceClient;

    #[tokio::test]
    async fn registers_heartbeats_pauses_and_resumes() {
        let leader = FakeController::start_leader().await;
        let follower = FakeController::start_follower(&leader.addr().to_string()).await;
        let mut b = FakeBroker::start(5, [follower.addr()]).await;
        assert_eq!(b.register().await.unwrap().broker_epoch, 1);
        assert_eq!(b.epoch(), 1);
        b.start_heartbeats(Duration::from_millis(20));
        b.wait_for_status(deadline(Duration::from_secs(5)), BrokerStatus::Online)
            .await
            .unwrap();

        b.pause_heartbeats();
        // Let an in-flight heartbeat land, then nothing more may come.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let calls = leader.calls();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(leader.calls(), calls, "paused heartbeats must not be sent");

        b.resume_heartbeats();
        wait_until(deadline(Duration::from_secs(5)), || async {
            (leader.calls() > calls + 2)
                .then_some(())
                .ok_or("no heartbeats")
        })
        .await
        .unwrap();

        // A re-registration bumps the epoch; the old one is then stale.
        assert_eq!(b.register().await.unwrap().broker_epoch, 2);
        let r = b.heartbeat_with_epoch(1).await.unwrap();
        assert_eq!(r.status(), BrokerStatus::Fenced);
        b.stop_heartbeats();
    }

    #[tokio::test]
    async fn records_controller_changed_pushes() {
        let b = FakeBroker::start(9, ["127.0.0.1:1"]).await;
        let mut c = BrokerServiceClient::connect(format!("http://{}", b.addr()))
            .await
            .unwrap();
        let push = |term| ControllerChangedRequest {
            term,
            leader_id: 2,
            leader_address: "127.0.0.1:9002".into(),
        };
        assert!(
            c.controller_changed(push(3))
                .await
                .unwrap()
                .into_inner()
                .accepted
        );
        assert!(
            !c.controller_changed(push(2))
                .await
                .unwrap()
                .into_inner()
                .accepted
        );
        let p = b
            .wait_for_push(deadline(Duration::from_secs(1)), |p| p.term == 3)
            .await
            .unwrap();
        assert_eq!(p.leader_id, 2);
        assert_eq!(b.pushes().len(), 2);
        let info = c
            .get_broker_info(GetBrokerInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (
                info.broker_id,
                info.controller_term,
                info.controller_leader_id
            ),
            (9, 3, 2)
        );
    }
}
