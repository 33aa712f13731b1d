//! The broker's calls to the controller leader, each with a deadline.

use std::future::Future;
use std::time::Duration;

use dmq_client::discovery::ChannelPool;
use dmq_proto::v1 as pb;
use dmq_proto::v1::controller_service_client::ControllerServiceClient;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Largest `GetMetadata` answer accepted (the gRPC default of 4 MiB is too small for a big
/// cluster's metadata).
const METADATA_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Calls to a controller at a given address over pooled channels. Every call carries its
/// deadline to the server (`grpc-timeout`) and is cut off here at the same deadline, so a
/// hung controller costs at most `timeout` (connecting included).
///
/// The metadata stream has connections of its own ([`watch_metadata`](Self::watch_metadata)):
/// HTTP/2 flow control is per connection too, so a stream this broker reads slowly (a flood of
/// metadata changes) would otherwise hold back the answers to its heartbeats on the same
/// connection, and the controllers would fence a live broker.
#[derive(Clone, Debug)]
pub(crate) struct ControllerCalls {
    channels: ChannelPool,
    stream_channels: ChannelPool,
    timeout: Duration,
}

impl ControllerCalls {
    pub(crate) fn new(channels: ChannelPool, timeout: Duration) -> ControllerCalls {
        ControllerCalls {
            stream_channels: ChannelPool::new(channels.connect_timeout()),
            channels,
            timeout,
        }
    }

    pub(crate) async fn register(
        &self,
        address: &str,
        request: pb::RegisterBrokerRequest,
    ) -> Result<pb::RegisterBrokerResponse, Status> {
        self.call(address, "RegisterBroker", request, |mut c, r| async move {
            c.register_broker(r).await
        })
        .await
    }

    pub(crate) async fn heartbeat(
        &self,
        address: &str,
        request: pb::BrokerHeartbeatRequest,
    ) -> Result<pb::BrokerHeartbeatResponse, Status> {
        self.call(address, "BrokerHeartbeat", request, |mut c, r| async move {
            c.broker_heartbeat(r).await
        })
        .await
    }

    /// Asks the leader to change a partition's ISR (this broker must lead it).
    pub(crate) async fn alter_partition(
        &self,
        address: &str,
        request: pb::AlterPartitionRequest,
    ) -> Result<pb::AlterPartitionResponse, Status> {
        self.call(address, "AlterPartition", request, |mut c, r| async move {
            c.alter_partition(r).await
        })
        .await
    }

    /// Linearizable metadata from the leader (`allow_stale = false`).
    pub(crate) async fn get_metadata(
        &self,
        address: &str,
    ) -> Result<pb::GetMetadataResponse, Status> {
        let request = pb::GetMetadataRequest { allow_stale: false };
        self.call(address, "GetMetadata", request, |c, r| async move {
            c.max_decoding_message_size(METADATA_BYTES_MAX)
                .get_metadata(r)
                .await
        })
        .await
    }

    /// Opens the leader's metadata stream. Only opening is bounded by the call timeout; the
    /// stream then lasts until either side ends it.
    pub(crate) async fn watch_metadata(
        &self,
        address: &str,
        request: pb::WatchMetadataRequest,
    ) -> Result<tonic::Streaming<pb::WatchMetadataResponse>, Status> {
        let channel = self
            .stream_channels
            .get(address)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut client =
            ControllerServiceClient::new(channel).max_decoding_message_size(METADATA_BYTES_MAX);
        match tokio::time::timeout(self.timeout, client.watch_metadata(request)).await {
            Ok(answer) => answer.map(Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "WatchMetadata to {address} got no answer within {:?}",
                self.timeout
            ))),
        }
    }

    async fn call<Req, Resp, F, Fut>(
        &self,
        address: &str,
        what: &str,
        message: Req,
        send: F,
    ) -> Result<Resp, Status>
    where
        F: FnOnce(ControllerServiceClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let channel = self
            .channels
            .get(address)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        let client = ControllerServiceClient::new(channel);
        match tokio::time::timeout(self.timeout, send(client, request)).await {
            Ok(answer) => answer.map(Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "{what} to {address} got no answer within {:?}",
                self.timeout
            ))),
        }
    }
}
