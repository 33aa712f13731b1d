//! `dmq bench`: measured workloads, printed in the style of kafka-producer-perf-test (and as
//! JSON with `--json`). Each starts its own local cluster unless given `--bootstrap`.

pub mod data;
pub mod failover;
pub mod log_open;
pub mod meta;
pub mod new_topic;
pub mod stability;
pub mod stats;

use std::time::Duration;

use dmq_proto::v1::controller_service_client::ControllerServiceClient;
use dmq_proto::v1::{RegisterBrokerRequest, RegisterBrokerResponse};
use tonic::transport::Channel;

use crate::local_cluster::controller_info;

/// Writes that follow the controller leader: NOT_LEADER answers are redirected to the hint,
/// unreachable leaders are rediscovered by asking every controller.
#[derive(Clone)]
pub struct MetaWriter {
    controllers: Vec<String>,
    leader: Option<(String, ControllerServiceClient<Channel>)>,
}

impl MetaWriter {
    pub fn new(controllers: Vec<String>) -> MetaWriter {
        MetaWriter {
            controllers,
            leader: None,
        }
    }

    async fn connect(addr: &str) -> Option<ControllerServiceClient<Channel>> {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .ok()?
            .connect_timeout(Duration::from_millis(300))
            .tcp_nodelay(true);
        endpoint
            .connect()
            .await
            .ok()
            .map(ControllerServiceClient::new)
    }

    async fn discover(&mut self) -> Option<()> {
        for addr in self.controllers.clone() {
            if let Some(info) = controller_info(&addr).await
                && !info.leader_address.is_empty()
                && let Some(client) = Self::connect(&info.leader_address).await
            {
                self.leader = Some((info.leader_address, client));
                return Some(());
            }
        }
        None
    }

    /// One RegisterBroker with the given request, retried (bounded by `deadline`) across
    /// leader changes. Returns the answer and how many attempts failed first.
    pub async fn register(
        &mut self,
        req: RegisterBrokerRequest,
        deadline: tokio::time::Instant,
    ) -> Result<(RegisterBrokerResponse, u32), tonic::Status> {
        let mut failures = 0;
        loop {
            if self.leader.is_none() && self.discover().await.is_none() {
                if tokio::time::Instant::now() >= deadline {
                    return Err(tonic::Status::unavailable(
                        "no controller leader found before the deadline",
                    ));
                }
                failures += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let (_, client) = self.leader.as_mut().expect("discovered");
            let mut request = tonic::Request::new(req.clone());
            request.set_timeout(Duration::from_secs(2));
            match client.register_broker(request).await {
                Ok(r) => return Ok((r.into_inner(), failures)),
                Err(status) => {
                    failures += 1;
                    if tokio::time::Instant::now() >= deadline {
                        return Err(status);
                    }
                    let hint = status
                        .metadata()
                        .get("x-controller-leader")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    self.leader = None;
                    if let Some(addr) = hint
                        && let Some(client) = Self::connect(&addr).await
                    {
                        self.leader = Some((addr, client));
                    } else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }
    }
}

/// A RegisterBroker request of about `bytes` bytes for broker `id` (distinct keys).
pub fn register_request(id: u64, bytes: usize) -> RegisterBrokerRequest {
    RegisterBrokerRequest {
        broker_id: id,
        host: format!("bench-{id:016}.{}", "x".repeat(bytes.saturating_sub(48))),
        port: 9092,
        rack: "bench".into(),
        ..Default::default()
    }
}
