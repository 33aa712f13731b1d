//! In-process fakes for the client's tests: a ControllerService and a BrokerService on
//! 127.0.0.1:0 whose answers the tests script, and helpers to wait with deadlines.

pub(crate) mod fake_broker;
pub(crate) mod fake_controller;

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

/// A listener on a fresh loopback port and its `host:port`.
pub(crate) async fn listen() -> (TcpIncoming, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    (
        TcpIncoming::from(listener).with_nodelay(Some(true)),
        address,
    )
}

/// Bounds a test step: panics with `what` if `future` takes longer than 10 s.
pub(crate) async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(10), future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// Polls `check` every few milliseconds until it holds; panics after 10 s.
pub(crate) async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    within(what, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
}

/// Admin options with short pauses, so retries take milliseconds.
pub(crate) fn fast_admin_options() -> crate::AdminOptions {
    crate::AdminOptions {
        discovery: crate::discovery::DiscoveryOptions {
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            seed: Some(1),
            ..crate::discovery::DiscoveryOptions::default()
        },
        request_timeout: Duration::from_secs(2),
        deadline: Duration::from_secs(5),
        retry: fast_retry(),
    }
}

/// Ten retries with pauses of 5 to 20 ms.
pub(crate) fn fast_retry() -> crate::RetryPolicy {
    crate::RetryPolicy {
        retries: 10,
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
    }
}
