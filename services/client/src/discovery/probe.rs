//! How one controller is asked who leads.

use std::future::Future;
use std::time::Duration;

use dmq_proto::v1 as pb;
use dmq_proto::v1::controller_service_client::ControllerServiceClient;
use tonic::{Request, Status};

use super::ChannelPool;

/// Asks the controller at `address` (`host:port`) for its `GetControllerInfo`.
///
/// The locator bounds every call by [`DiscoveryOptions::call_timeout`](super::DiscoveryOptions)
/// and drops calls it no longer needs, so an implementation may hang or be cancelled at any
/// await point. Tests implement it with in-process fakes.
pub trait ControllerProbe: Send + Sync + 'static {
    fn get_info(
        &self,
        address: &str,
    ) -> impl Future<Output = Result<pb::GetControllerInfoResponse, Status>> + Send;
}

/// The real probe: `ControllerService.GetControllerInfo` over a pooled channel, with the
/// deadline sent to the server (`grpc-timeout`) and enforced here as well.
#[derive(Clone, Debug)]
pub struct GrpcProbe {
    channels: ChannelPool,
    call_timeout: Duration,
}

impl GrpcProbe {
    /// A probe using `channels`, each call bounded by `call_timeout`.
    pub fn new(channels: ChannelPool, call_timeout: Duration) -> GrpcProbe {
        GrpcProbe {
            channels,
            call_timeout,
        }
    }

    /// The pool this probe connects through (share it to reuse the connection to the leader).
    pub fn channels(&self) -> &ChannelPool {
        &self.channels
    }
}

impl ControllerProbe for GrpcProbe {
    async fn get_info(&self, address: &str) -> Result<pb::GetControllerInfoResponse, Status> {
        let channel = self
            .channels
            .get(address)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut client = ControllerServiceClient::new(channel);
        let mut request = Request::new(pb::GetControllerInfoRequest {});
        request.set_timeout(self.call_timeout);
        match tokio::time::timeout(self.call_timeout, client.get_controller_info(request)).await {
            Ok(answer) => answer.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "GetControllerInfo on {address} took longer than {:?}",
                self.call_timeout
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{DiscoveryOptions, LeaderLocator};

    #[tokio::test]
    async fn grpc_probe_fails_within_its_deadline_when_nothing_listens() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = free.local_addr().unwrap().to_string();
        drop(free);
        let timeout = Duration::from_millis(500);
        let probe = GrpcProbe::new(ChannelPool::new(timeout), timeout);
        let start = std::time::Instant::now();
        assert!(probe.get_info(&address).await.is_err());
        assert!(start.elapsed() < timeout * 2);

        let locator = LeaderLocator::new(vec![address], DiscoveryOptions::default()).unwrap();
        assert_eq!(locator.cached(), None);
    }
}
