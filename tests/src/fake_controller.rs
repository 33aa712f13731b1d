//! A stand-in ControllerService for the harness's own tests: a "leader" that registers brokers
//! and answers heartbeats, or a "follower" that redirects every call to a leader address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use dmq_proto::v1::controller_service_server::{ControllerService, ControllerServiceServer};
use dmq_proto::v1::*;
use tonic::service::Routes;
use tonic::{Request, Response, Status};

use crate::grpc::ServerHandle;
use crate::router::LEADER_HINT_KEY;

enum Role {
    Leader { epochs: Mutex<HashMap<u64, u64>> },
    Follower { leader: String },
}

struct Svc {
    role: Role,
    calls: Arc<AtomicU32>,
}

pub struct FakeController {
    server: ServerHandle,
    calls: Arc<AtomicU32>,
}

impl FakeController {
    pub async fn start_leader() -> FakeController {
        Self::start(Role::Leader {
            epochs: Mutex::new(HashMap::new()),
        })
        .await
    }

    pub async fn start_follower(leader: &str) -> FakeController {
        Self::start(Role::Follower {
            leader: leader.to_string(),
        })
        .await
    }

    async fn start(role: Role) -> FakeController {
        let calls = Arc::new(AtomicU32::new(0));
        let svc = Svc {
            role,
            calls: calls.clone(),
        };
        let server = ServerHandle::start(Routes::new(ControllerServiceServer::new(svc))).await;
        FakeController { server, calls }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Svc {
    /// Counts the call; a follower answers with the redirect.
    fn enter(&self) -> Result<&Mutex<HashMap<u64, u64>>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match &self.role {
            Role::Leader { epochs } => Ok(epochs),
            Role::Follower { leader } => {
                let mut s =
                    Status::failed_precondition(format!("not the leader; the leader is {leader}"));
                s.metadata_mut()
                    .insert(LEADER_HINT_KEY, leader.parse().expect("ascii address"));
                Err(s)
            }
        }
    }
}

#[tonic::async_trait]
impl ControllerService for Svc {
    async fn register_broker(
        &self,
        req: Request<RegisterBrokerRequest>,
    ) -> Result<Response<RegisterBrokerResponse>, Status> {
        let epochs = self.enter()?;
        let mut epochs = epochs.lock().unwrap();
        let e = epochs.entry(req.get_ref().broker_id).or_insert(0);
        *e += 1;
        Ok(Response::new(RegisterBrokerResponse {
            broker_epoch: *e,
            metadata_version: 1,
            term: 1,
            ..Default::default()
        }))
    }

    async fn broker_heartbeat(
        &self,
        req: Request<BrokerHeartbeatRequest>,
    ) -> Result<Response<BrokerHeartbeatResponse>, Status> {
        let epochs = self.enter()?;
        let r = req.into_inner();
        let current = epochs.lock().unwrap().get(&r.broker_id).copied();
        let status = if current == Some(r.broker_epoch) {
            BrokerStatus::Online
        } else {
            BrokerStatus::Fenced
        };
        Ok(Response::new(BrokerHeartbeatResponse {
            status: status as i32,
            metadata_version: 1,
            term: 1,
            ..Default::default()
        }))
    }

    async fn get_controller_info(
        &self,
        _: Request<GetControllerInfoRequest>,
    ) -> Result<Response<GetControllerInfoResponse>, Status> {
        self.enter()?;
        Err(Status::unimplemented("get_controller_info"))
    }

    async fn unregister_broker(
        &self,
        _: Request<UnregisterBrokerRequest>,
    ) -> Result<Response<UnregisterBrokerResponse>, Status> {
        self.enter()?;
        Err(Status::unimplemented("unregister_broker"))
    }

    async fn create_topic(
        &self,
        _: Request<CreateTopicRequest>,
    ) -> Result<Response<CreateTopicResponse>, Status> {
        self.enter()?;
        Err(Status::unimplemented("create_topic"))
    }

    async fn delete_topic(
        &self,
        _: Request<DeleteTopicRequest>,
    ) -> Result<Response<DeleteTopicResponse>, Status> {
        self.enter()?;
        Err(Status::unimplemented("delete_topic"))
    }

    async fn list_topics(
        &self,
        _: Request<ListTopicsRequest>,
    ) -> Result<Response<ListTopicsResponse>, Status> {
        self.enter()?;
        Err(Status::unimplemented("list_topics"))
    }

    async fn describe_topic(
        &self,
        _: Request<DescribeTopicRequest>,
    ) -> Result<Response<DescribeTopicResponse>, Status> {
        self.enter()?;
        Err(Status::unimplemented("describe_topic"))
    }

    async fn alter_partition(
        &self,
        _: Request<AlterPartitionRequest>,
    ) -> Result<Response<AlterPartitionResponse>, Status> {
        self.enter()?;
        Err(Status::unimplemented("alter_partition"))
    }

    async fn describe_cluster(
        &self,
        _: Request<DescribeClusterRequest>,
    ) -> Result<Response<DescribeClusterResponse>, Status> {
        self.enter()?;
        Err(Status::unimplemented("describe_cluster"))
    }

    type GetSnapshotStream = std::pin::Pin<
        Box<
            dyn tonic::codegen::tokio_stream::Stream<
                    Item = Result<dmq_proto::v1::SnapshotChunk, Status>,
                > + Send,
        >,
    >;

    async fn get_snapshot(
        &self,
        _: Request<dmq_proto::v1::GetSnapshotRequest>,
    ) -> Result<Response<Self::GetSnapshotStream>, Status> {
        Err(Status::unimplemented("get_snapshot"))
    }

    async fn add_controller(
        &self,
        _: Request<dmq_proto::v1::AddControllerRequest>,
    ) -> Result<Response<dmq_proto::v1::AddControllerResponse>, Status> {
        Err(Status::unimplemented("add_controller"))
    }

    async fn remove_controller(
        &self,
        _: Request<dmq_proto::v1::RemoveControllerRequest>,
    ) -> Result<Response<dmq_proto::v1::RemoveControllerResponse>, Status> {
        Err(Status::unimplemented("remove_controller"))
    }

    async fn get_metadata(
        &self,
        _: Request<GetMetadataRequest>,
    ) -> Result<Response<GetMetadataResponse>, Status> {
        self.enter()?;
        Err(Status::unimplemented("get_metadata"))
    }

    type WatchMetadataStream = std::pin::Pin<
        Box<
            dyn futures::Stream<Item = Result<dmq_proto::v1::WatchMetadataResponse, Status>> + Send,
        >,
    >;

    async fn watch_metadata(
        &self,
        _: Request<dmq_proto::v1::WatchMetadataRequest>,
    ) -> Result<Response<Self::WatchMetadataStream>, Status> {
        Err(Status::unimplemented(
            "this fake controller has no WatchMetadata",
        ))
    }
}
