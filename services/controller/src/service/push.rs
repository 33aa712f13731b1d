//! CONTROLLER_CHANGED pushes: a newly elected leader tells every registered broker its term,
//! id and address (`BrokerService.ControllerChanged`), so brokers need not wait for a failed
//! heartbeat to find it. Best effort: one attempt per broker, concurrent (bounded), each bounded
//! in time; failures are logged, never retried (the broker's own discovery covers them).

use std::time::Duration;

use dmq_proto::v1::broker_service_client::BrokerServiceClient;
use dmq_proto::v1::{BrokerMetadata, ControllerChangedRequest};
use futures::StreamExt;
use tonic::transport::Endpoint;

/// One broker to push to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushTarget {
    pub broker_id: u64,
    /// `http://host:port` (IPv6 hosts in brackets).
    pub uri: String,
}

/// Every registered broker (ONLINE or not: an OFFLINE one may be alive behind a partition) with
/// its BrokerService URI, by broker id.
pub fn push_targets(brokers: &[BrokerMetadata]) -> Vec<PushTarget> {
    let mut targets: Vec<PushTarget> = brokers
        .iter()
        .filter(|b| !b.host.is_empty() && b.port != 0)
        .map(|b| {
            let host = if b.host.contains(':') && !b.host.starts_with('[') {
                format!("[{}]", b.host)
            } else {
                b.host.clone()
            };
            PushTarget {
                broker_id: b.broker_id,
                uri: format!("http://{host}:{}", b.port),
            }
        })
        .collect();
    targets.sort_by_key(|t| t.broker_id);
    targets
}

/// Bounds of one push round.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PushLimits {
    pub connect_timeout: Duration,
    pub call_timeout: Duration,
    pub concurrency: usize,
}

/// Pushes `change` to every target, at most `limits.concurrency` at once; returns how many
/// brokers answered (accepted or not).
pub(crate) async fn push_controller_changed(
    targets: Vec<PushTarget>,
    change: ControllerChangedRequest,
    limits: PushLimits,
) -> usize {
    let total = targets.len();
    let answered = futures::stream::iter(targets)
        .map(|target| {
            let change = change.clone();
            async move {
                let result = push_one(&target, change, limits).await;
                match &result {
                    Ok(accepted) => tracing::debug!(
                        broker_id = target.broker_id,
                        accepted,
                        "pushed CONTROLLER_CHANGED"
                    ),
                    Err(error) => tracing::warn!(
                        broker_id = target.broker_id,
                        uri = %target.uri,
                        %error,
                        "CONTROLLER_CHANGED push failed; the broker will find the leader by \
                         itself"
                    ),
                }
                result.is_ok()
            }
        })
        .buffer_unordered(limits.concurrency.max(1))
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    tracing::info!(
        term = change.term,
        answered,
        brokers = total,
        "CONTROLLER_CHANGED pushed"
    );
    answered
}

/// One bounded push: connect within `connect_timeout`, answer within `call_timeout`.
async fn push_one(
    target: &PushTarget,
    change: ControllerChangedRequest,
    limits: PushLimits,
) -> Result<bool, String> {
    let endpoint = Endpoint::from_shared(target.uri.clone())
        .map_err(|e| format!("bad broker address: {e}"))?
        .connect_timeout(limits.connect_timeout)
        .timeout(limits.call_timeout);
    let channel = tokio::time::timeout(limits.connect_timeout, endpoint.connect())
        .await
        .map_err(|_| format!("no connection within {:?}", limits.connect_timeout))?
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = BrokerServiceClient::new(channel);
    let response = tokio::time::timeout(limits.call_timeout, client.controller_changed(change))
        .await
        .map_err(|_| format!("no answer within {:?}", limits.call_timeout))?
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?;
    Ok(response.into_inner().accepted)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use dmq_proto::v1::broker_service_server::{BrokerService, BrokerServiceServer};
    use dmq_proto::v1::{ControllerChangedResponse, GetBrokerInfoRequest, GetBrokerInfoResponse};
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::{Request, Response, Status};

    use super::*;

    fn broker(id: u64, host: &str, port: u32) -> BrokerMetadata {
        BrokerMetadata {
            broker_id: id,
            host: host.into(),
            port,
            ..BrokerMetadata::default()
        }
    }

    #[test]
    fn every_registered_broker_is_a_target() {
        let brokers = [
            broker(3, "b3.dmq", 9092),
            broker(1, "127.0.0.1", 9001),
            broker(2, "::1", 9002),
            broker(4, "[::1]", 9004),
            broker(5, "", 9005),
        ];
        let targets = push_targets(&brokers);
        let uris: Vec<(u64, &str)> = targets
            .iter()
            .map(|t| (t.broker_id, t.uri.as_str()))
            .collect();
        assert_eq!(
            uris,
            vec![
                (1, "http://127.0.0.1:9001"),
                (2, "http://[::1]:9002"),
                (3, "http://b3.dmq:9092"),
                (4, "http://[::1]:9004"),
            ]
        );
        for t in &targets {
            Endpoint::from_shared(t.uri.clone()).unwrap();
        }
    }

    /// A BrokerService that records the pushes it gets.
    #[derive(Clone, Default)]
    pub(crate) struct RecordingBroker {
        pub pushes: Arc<Mutex<Vec<ControllerChangedRequest>>>,
    }

    #[tonic::async_trait]
    impl BrokerService for RecordingBroker {
        async fn controller_changed(
            &self,
            request: Request<ControllerChangedRequest>,
        ) -> Result<Response<ControllerChangedResponse>, Status> {
            self.pushes.lock().unwrap().push(request.into_inner());
            Ok(Response::new(ControllerChangedResponse { accepted: true }))
        }

        async fn get_broker_info(
            &self,
            _: Request<GetBrokerInfoRequest>,
        ) -> Result<Response<GetBrokerInfoResponse>, Status> {
            Err(Status::unimplemented("test broker"))
        }

        // This test broker only records pushes; it has no data plane.
        async fn produce(
            &self,
            _: Request<dmq_proto::v1::ProduceRequest>,
        ) -> Result<Response<dmq_proto::v1::ProduceResponse>, Status> {
            Err(Status::unimplemented("test broker"))
        }

        async fn fetch(
            &self,
            _: Request<dmq_proto::v1::FetchRequest>,
        ) -> Result<Response<dmq_proto::v1::FetchResponse>, Status> {
            Err(Status::unimplemented("test broker"))
        }

        async fn list_offsets(
            &self,
            _: Request<dmq_proto::v1::ListOffsetsRequest>,
        ) -> Result<Response<dmq_proto::v1::ListOffsetsResponse>, Status> {
            Err(Status::unimplemented("test broker"))
        }

        type ConsumeStream = std::pin::Pin<
            Box<dyn futures::Stream<Item = Result<dmq_proto::v1::ConsumeResponse, Status>> + Send>,
        >;

        async fn consume(
            &self,
            _: Request<dmq_proto::v1::ConsumeRequest>,
        ) -> Result<Response<Self::ConsumeStream>, Status> {
            Err(Status::unimplemented("test broker"))
        }

        async fn replica_fetch(
            &self,
            _: Request<dmq_proto::v1::ReplicaFetchRequest>,
        ) -> Result<Response<dmq_proto::v1::ReplicaFetchResponse>, Status> {
            Err(Status::unimplemented("test broker"))
        }
    }

    /// Serves `broker` on a free loopback port.
    pub(crate) async fn serve(broker: RecordingBroker) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(BrokerServiceServer::new(broker))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        addr
    }

    /// A loopback port nobody listens on.
    async fn dead_port() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn pushes_reach_live_brokers_and_dead_ones_cost_a_bounded_time() {
        let live = RecordingBroker::default();
        let addr = serve(live.clone()).await;
        let targets = vec![
            PushTarget {
                broker_id: 1,
                uri: format!("http://{addr}"),
            },
            PushTarget {
                broker_id: 2,
                uri: format!("http://127.0.0.1:{}", dead_port().await),
            },
            // Unroutable (TEST-NET-1): the connect timeout bounds it.
            PushTarget {
                broker_id: 3,
                uri: "http://192.0.2.1:9092".into(),
            },
        ];
        let change = ControllerChangedRequest {
            term: 7,
            leader_id: 2,
            leader_address: "127.0.0.1:9002".into(),
        };
        let limits = PushLimits {
            connect_timeout: Duration::from_millis(300),
            call_timeout: Duration::from_millis(300),
            concurrency: 2,
        };
        let started = std::time::Instant::now();
        let answered = push_controller_changed(targets, change.clone(), limits).await;
        assert_eq!(answered, 1);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(*live.pushes.lock().unwrap(), vec![change]);
    }
}
