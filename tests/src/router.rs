//! A ControllerService client that finds the leader: it follows the `x-controller-leader` hint
//! of a follower's FAILED_PRECONDITION (or UNAVAILABLE) answer, and moves on to the next known
//! controller when one is unreachable or has no leader, until an overall deadline.
//!
//! It retries on UNAVAILABLE, broken connections and timeouts, so a mutation may reach the log
//! twice (e.g. a CreateTopic that was committed but whose answer was lost comes back as
//! ALREADY_EXISTS).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dmq_proto::v1::controller_service_client::ControllerServiceClient;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// The metadata key a follower puts the leader's client address in.
pub const LEADER_HINT_KEY: &str = "x-controller-leader";

/// The leader address a follower named in `status`, if any.
pub fn leader_hint(status: &Status) -> Option<String> {
    let v = status
        .metadata()
        .get(LEADER_HINT_KEY)?
        .to_str()
        .ok()?
        .trim();
    (!v.is_empty()).then(|| v.to_string())
}

/// A lazily connected channel to `addr` (`host:port` or a URL).
pub fn channel(addr: &str, rpc_timeout: Duration) -> Channel {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Endpoint::from_shared(uri)
        .unwrap_or_else(|e| panic!("bad controller address {addr:?}: {e}"))
        .connect_timeout(Duration::from_millis(500))
        .timeout(rpc_timeout)
        .connect_lazy()
}

struct Shared {
    bootstrap: Vec<String>,
    leader: Mutex<Option<String>>,
    channels: Mutex<HashMap<String, Channel>>,
}

/// Cheap to clone; clones share the leader cache and the connections.
#[derive(Clone)]
pub struct LeaderRouter {
    shared: Arc<Shared>,
    rpc_timeout: Duration,
    op_timeout: Duration,
}

impl LeaderRouter {
    /// A router over these controller client addresses (`host:port`). Defaults: 2 s per
    /// attempt, 10 s per call.
    pub fn new<I, S>(controllers: I) -> LeaderRouter
    where
        I: IntoIterator<Item = S>,
        S: ToString,
    {
        let bootstrap: Vec<String> = controllers.into_iter().map(|a| a.to_string()).collect();
        assert!(!bootstrap.is_empty(), "a router needs at least one address");
        LeaderRouter {
            shared: Arc::new(Shared {
                bootstrap,
                leader: Mutex::new(None),
                channels: Mutex::new(HashMap::new()),
            }),
            rpc_timeout: Duration::from_secs(2),
            op_timeout: Duration::from_secs(10),
        }
    }

    /// The same router (sharing its cache) with other timeouts: `rpc` per attempt, `op` for a
    /// whole [`call`](Self::call).
    pub fn with_timeouts(&self, rpc: Duration, op: Duration) -> LeaderRouter {
        LeaderRouter {
            shared: self.shared.clone(),
            rpc_timeout: rpc,
            op_timeout: op,
        }
    }

    /// The address that last answered OK or was named as leader.
    pub fn cached_leader(&self) -> Option<String> {
        self.shared.leader.lock().unwrap().clone()
    }

    /// Forgets the cached leader.
    pub fn forget_leader(&self) {
        *self.shared.leader.lock().unwrap() = None;
    }

    /// A client for one address (its channel is shared and reconnects by itself).
    pub fn client(&self, addr: &str) -> ControllerServiceClient<Channel> {
        let ch = self
            .shared
            .channels
            .lock()
            .unwrap()
            .entry(addr.to_string())
            .or_insert_with(|| channel(addr, self.rpc_timeout))
            .clone();
        ControllerServiceClient::new(ch)
    }

    /// Runs `f` against the leader: `f` gets a client and makes one call (build the request
    /// inside, it may run several times). Follows leader hints; on UNAVAILABLE, DEADLINE_EXCEEDED,
    /// a broken connection (UNKNOWN, CANCELLED) or an attempt timeout it tries the next
    /// controller. Any other error is returned at once; past the call's deadline the last error
    /// is returned.
    pub async fn call<T, F, Fut>(&self, mut f: F) -> Result<T, Status>
    where
        F: FnMut(ControllerServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + self.op_timeout;
        let n = self.shared.bootstrap.len();
        let mut next = 0;
        let mut failures_since_pause = 0;
        let mut last: Option<Status> = None;
        loop {
            let now = Instant::now();
            if now >= deadline {
                let last = last.map(|s| format!("{}: {}", s.code(), s.message()));
                return Err(Status::deadline_exceeded(format!(
                    "no leader answered within {:?}; last error: {}",
                    self.op_timeout,
                    last.as_deref().unwrap_or("none")
                )));
            }
            let target = self.cached_leader().unwrap_or_else(|| {
                next += 1;
                self.shared.bootstrap[(next - 1) % n].clone()
            });
            let attempt = tokio::time::timeout_at(
                (now + self.rpc_timeout).min(deadline),
                f(self.client(&target)),
            )
            .await;
            let status = match attempt {
                Ok(Ok(resp)) => {
                    *self.shared.leader.lock().unwrap() = Some(target);
                    return Ok(resp.into_inner());
                }
                Ok(Err(status)) => status,
                Err(_) => Status::deadline_exceeded(format!("{target} did not answer in time")),
            };
            match (status.code(), leader_hint(&status)) {
                // A follower naming the leader: go there next.
                (Code::FailedPrecondition | Code::Unavailable, Some(h)) if h != target => {
                    *self.shared.leader.lock().unwrap() = Some(h)
                }
                // A precondition of the request itself, not a redirect.
                (Code::FailedPrecondition, None) => return Err(status),
                // Unreachable, no leader known, a stale hint, or the connection broke mid-call
                // (a killed controller: tonic reports UNKNOWN "transport error" or CANCELLED; no
                // controller answers those codes itself): ask the next controller.
                (
                    Code::FailedPrecondition
                    | Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::Unknown
                    | Code::Cancelled,
                    _,
                ) => self.forget_leader(),
                _ => return Err(status),
            }
            last = Some(status);
            failures_since_pause += 1;
            if failures_since_pause >= n {
                failures_since_pause = 0;
                tokio::time::sleep_until(
                    (Instant::now() + Duration::from_millis(50)).min(deadline),
                )
                .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_controller::FakeController;
    use dmq_proto::v1::{CreateTopicRequest, RegisterBrokerRequest};

    #[tokio::test]
    async fn follows_the_hint_and_caches_the_leader() {
        let leader = FakeController::start_leader().await;
        let follower = FakeController::start_follower(&leader.addr().to_string()).await;
        let router = LeaderRouter::new([follower.addr()]);
        let r = router
            .call(|mut c| async move {
                c.register_broker(RegisterBrokerRequest {
                    broker_id: 7,
                    ..Default::default()
                })
                .await
            })
            .await
            .unwrap();
        assert_eq!(r.broker_epoch, 1);
        assert_eq!(router.cached_leader(), Some(leader.addr().to_string()));
        assert_eq!(follower.calls(), 1);
        assert_eq!(leader.calls(), 1);
    }

    #[tokio::test]
    async fn skips_unreachable_controllers() {
        let leader = FakeController::start_leader().await;
        let dead = crate::ports::free_addr();
        let router = LeaderRouter::new([dead, leader.addr()]);
        let r = router
            .call(|mut c| async move {
                c.register_broker(RegisterBrokerRequest {
                    broker_id: 3,
                    ..Default::default()
                })
                .await
            })
            .await
            .unwrap();
        assert_eq!(r.broker_epoch, 1);
    }

    #[tokio::test]
    async fn returns_other_errors_and_gives_up_at_the_deadline() {
        let leader = FakeController::start_leader().await;
        let router = LeaderRouter::new([leader.addr()]);
        let e = router
            .call(|mut c| async move { c.create_topic(CreateTopicRequest::default()).await })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unimplemented);

        let router = LeaderRouter::new([crate::ports::free_addr()])
            .with_timeouts(Duration::from_millis(100), Duration::from_millis(300));
        let e = router
            .call(|mut c| async move { c.register_broker(RegisterBrokerRequest::default()).await })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    }
}
