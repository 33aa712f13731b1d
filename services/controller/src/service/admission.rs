//! [`Admission`]: a bound on the ControllerService requests one controller works on at once.
//!
//! A request beyond the bound is answered at once, before its body is decoded, with
//! RESOURCE_EXHAUSTED / `CONTROLLER_OVERLOADED` (nothing was applied; retry after the
//! `RetryInfo` delay). Shedding that early keeps a flood from queueing thousands of handlers
//! on the runtime, where they would cost CPU and time the node needs for its own work.
//! Broker heartbeats have their own pool, so a flood of admin or client requests cannot make
//! live brokers miss their session; `GetControllerInfo` (discovery, cheap) is never shed.
//!
//! # To ensure correctness
//! - A permit is held until the handler's response is produced (unary RPCs: the whole work);
//!   a dropped request (client gone) drops its future and so its permit.
//! - Shedding happens before the request reaches the handler, so it is always "not applied".

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Semaphore;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;
use tonic_types::{ErrorDetails, StatusExt};

use super::status::{ERROR_DOMAIN, REASON_CONTROLLER_OVERLOADED};

/// The path of the one RPC never shed.
const UNBOUNDED_PATH: &str = "/dmq.v1.ControllerService/GetControllerInfo";
/// The path of the RPC with its own pool.
const HEARTBEAT_PATH: &str = "/dmq.v1.ControllerService/BrokerHeartbeat";

/// How many requests one controller works on at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Broker heartbeats in progress at most.
    pub heartbeats: usize,
    /// Every other request (but GetControllerInfo) in progress at most.
    pub requests: usize,
}

impl Default for AdmissionLimits {
    /// 4096 heartbeats and 1024 other requests: far above what a cluster sends when healthy
    /// (64 writes in flight saturate the log), far below what makes a runtime thrash.
    fn default() -> AdmissionLimits {
        AdmissionLimits {
            heartbeats: 4096,
            requests: 1024,
        }
    }
}

/// Wraps a tonic service (the ControllerService server) with the bounds of
/// [`AdmissionLimits`].
#[derive(Clone)]
pub struct Admission<S> {
    inner: S,
    heartbeats: Arc<Semaphore>,
    requests: Arc<Semaphore>,
}

impl<S> Admission<S> {
    pub fn new(inner: S, limits: AdmissionLimits) -> Admission<S> {
        Admission {
            inner,
            heartbeats: Arc::new(Semaphore::new(limits.heartbeats)),
            requests: Arc::new(Semaphore::new(limits.requests)),
        }
    }
}

impl<S: NamedService> NamedService for Admission<S> {
    const NAME: &'static str = S::NAME;
}

/// The answer to a shed request.
fn overloaded(what: &str) -> tonic::Status {
    let mut details =
        ErrorDetails::with_error_info(REASON_CONTROLLER_OVERLOADED, ERROR_DOMAIN, HashMap::new());
    details.set_retry_info(Some(Duration::from_millis(100)));
    tonic::Status::with_error_details(
        tonic::Code::ResourceExhausted,
        format!(
            "controller overloaded: {what} in progress already; nothing was applied, retry with \
             backoff"
        ),
        details,
    )
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B> Service<http::Request<B>> for Admission<S>
where
    S: Service<http::Request<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: From<http::Response<tonic::body::Body>>,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = Infallible;
    type Future = BoxFuture<Result<S::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let pool = match path {
            UNBOUNDED_PATH => None,
            HEARTBEAT_PATH => Some((&self.heartbeats, "every broker heartbeat slot is")),
            _ => Some((&self.requests, "every request slot is")),
        };
        let permit = match pool {
            None => None,
            Some((pool, what)) => match pool.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    let response = overloaded(what).into_http::<tonic::body::Body>();
                    return Box::pin(async move { Ok(response.into()) });
                }
            },
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await;
            drop(permit);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service whose calls finish only when the test says so.
    #[derive(Clone)]
    struct Held(Arc<tokio::sync::Notify>);

    impl Service<http::Request<()>> for Held {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = BoxFuture<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            let release = self.0.clone();
            Box::pin(async move {
                release.notified().await;
                Ok(http::Response::new(tonic::body::Body::empty()))
            })
        }
    }

    fn request(rpc: &str) -> http::Request<()> {
        http::Request::builder()
            .uri(format!("http://c/dmq.v1.ControllerService/{rpc}"))
            .body(())
            .unwrap()
    }

    fn status_of(response: &http::Response<tonic::body::Body>) -> Option<tonic::Status> {
        tonic::Status::from_header_map(response.headers())
    }

    #[tokio::test]
    async fn beyond_the_bound_a_request_is_refused_at_once_as_not_applied() {
        let release = Arc::new(tokio::sync::Notify::new());
        let limits = AdmissionLimits {
            heartbeats: 1,
            requests: 1,
        };
        let mut svc = Admission::new(Held(release.clone()), limits);
        let first = tokio::spawn(svc.call(request("CreateTopic")));
        let shed = svc.call(request("DeleteTopic")).await.unwrap();
        let status = status_of(&shed).expect("a gRPC status");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "CONTROLLER_OVERLOADED");
        assert!(status.get_details_retry_info().is_some());
        assert!(status.message().contains("nothing was applied"));
        // Heartbeats have their own pool, and discovery is never shed.
        let heartbeat = tokio::spawn(svc.call(request("BrokerHeartbeat")));
        let info = tokio::spawn(svc.call(request("GetControllerInfo")));
        tokio::task::yield_now().await;
        let shed = svc.call(request("BrokerHeartbeat")).await.unwrap();
        assert_eq!(
            status_of(&shed).map(|s| s.code()),
            Some(tonic::Code::ResourceExhausted)
        );
        // Once the first request is done its slot is free again.
        release.notify_waiters();
        for done in [first, heartbeat, info] {
            let response = done.await.unwrap().unwrap();
            assert!(status_of(&response).is_none());
        }
        let again = tokio::spawn(svc.call(request("CreateTopic")));
        tokio::task::yield_now().await;
        release.notify_waiters();
        assert!(status_of(&again.await.unwrap().unwrap()).is_none());
    }
}
