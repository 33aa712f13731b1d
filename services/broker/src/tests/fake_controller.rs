//! An in-process fake ControllerService on 127.0.0.1:0 whose answers the tests script.

use std::sync::{Arc, Mutex, MutexGuard};

use dmq_proto::v1 as pb;
use dmq_proto::v1::controller_service_server::{ControllerService, ControllerServiceServer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Server;
use tonic::{Code, Request, Response, Status};

/// What the fake answers and what it was asked.
#[derive(Debug, Default)]
pub struct Script {
    pub node_id: u64,
    pub address: String,
    pub term: u64,
    /// The leader GetControllerInfo names; `None`: itself.
    pub claims_leader: Option<(u64, String)>,
    /// Mutations answer FAILED_PRECONDITION NOT_LEADER with this hint.
    pub not_leader_hint: Option<String>,
    /// Mutations answer UNAVAILABLE.
    pub unavailable: bool,
    /// The next heartbeat is answered FENCED (and its epoch forgotten).
    pub fence_next: bool,
    /// The version heartbeats and registrations report.
    pub metadata_version: u64,
    /// What GetMetadata returns.
    pub metadata: pb::GetMetadataResponse,
    pub epoch: u64,
    /// Mutations refused (NOT_LEADER or UNAVAILABLE).
    pub refused: usize,
    pub registrations: Vec<pb::RegisterBrokerRequest>,
    pub heartbeats: Vec<pb::BrokerHeartbeatRequest>,
    pub metadata_requests: Vec<pb::GetMetadataRequest>,
}

#[derive(Clone, Default)]
pub struct FakeController {
    script: Arc<Mutex<Script>>,
}

impl FakeController {
    /// Serves a fake controller `node_id` in `term` on `listener` (or a fresh 127.0.0.1:0).
    pub async fn start(node_id: u64, term: u64, listener: Option<TcpListener>) -> FakeController {
        let listener = match listener {
            Some(l) => l,
            None => TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let fake = FakeController::default();
        {
            let mut s = fake.script();
            s.node_id = node_id;
            s.term = term;
            s.address = listener.local_addr().unwrap().to_string();
        }
        let service = ControllerServiceServer::new(fake.clone());
        tokio::spawn(
            Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        fake
    }

    pub fn script(&self) -> MutexGuard<'_, Script> {
        self.script.lock().unwrap()
    }

    pub fn address(&self) -> String {
        self.script().address.clone()
    }

    fn refuse_mutation(&self) -> Result<(), Status> {
        let mut s = self.script();
        if s.not_leader_hint.is_some() || s.unavailable {
            s.refused += 1;
        }
        if let Some(hint) = &s.not_leader_hint {
            let mut metadata = MetadataMap::new();
            metadata.insert(
                "x-controller-leader",
                MetadataValue::try_from(hint.as_str()).unwrap(),
            );
            return Err(Status::with_metadata(
                Code::FailedPrecondition,
                "not the leader",
                metadata,
            ));
        }
        if s.unavailable {
            return Err(Status::unavailable("no leader"));
        }
        Ok(())
    }
}

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl ControllerService for FakeController {
    async fn get_controller_info(
        &self,
        _: Request<pb::GetControllerInfoRequest>,
    ) -> Answer<pb::GetControllerInfoResponse> {
        let s = self.script();
        let (leader_id, leader_address) = s
            .claims_leader
            .clone()
            .unwrap_or((s.node_id, s.address.clone()));
        Ok(Response::new(pb::GetControllerInfoResponse {
            node_id: s.node_id,
            term: s.term,
            leader_id,
            leader_address,
            address: s.address.clone(),
            ..Default::default()
        }))
    }

    async fn register_broker(
        &self,
        request: Request<pb::RegisterBrokerRequest>,
    ) -> Answer<pb::RegisterBrokerResponse> {
        self.refuse_mutation()?;
        let mut s = self.script();
        s.registrations.push(request.into_inner());
        s.epoch += 1;
        Ok(Response::new(pb::RegisterBrokerResponse {
            broker_epoch: s.epoch,
            metadata_version: s.metadata_version,
            term: s.term,
            ..Default::default()
        }))
    }

    async fn broker_heartbeat(
        &self,
        request: Request<pb::BrokerHeartbeatRequest>,
    ) -> Answer<pb::BrokerHeartbeatResponse> {
        self.refuse_mutation()?;
        let mut s = self.script();
        let request = request.into_inner();
        let fenced = std::mem::take(&mut s.fence_next) || request.broker_epoch != s.epoch;
        s.heartbeats.push(request);
        let status = if fenced {
            pb::BrokerStatus::Fenced
        } else {
            pb::BrokerStatus::Online
        };
        Ok(Response::new(pb::BrokerHeartbeatResponse {
            status: status as i32,
            metadata_version: s.metadata_version,
            term: s.term,
            ..Default::default()
        }))
    }

    type GetSnapshotStream = std::pin::Pin<
        Box<
            dyn tonic::codegen::tokio_stream::Stream<Item = Result<pb::SnapshotChunk, Status>>
                + Send,
        >,
    >;

    async fn get_snapshot(
        &self,
        _: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<Self::GetSnapshotStream>, Status> {
        Err(Status::unimplemented("get_snapshot"))
    }

    async fn get_metadata(
        &self,
        request: Request<pb::GetMetadataRequest>,
    ) -> Answer<pb::GetMetadataResponse> {
        self.refuse_mutation()?;
        let mut s = self.script();
        s.metadata_requests.push(request.into_inner());
        Ok(Response::new(s.metadata.clone()))
    }

    async fn unregister_broker(
        &self,
        _: Request<pb::UnregisterBrokerRequest>,
    ) -> Answer<pb::UnregisterBrokerResponse> {
        Err(Status::unimplemented("fake"))
    }

    async fn create_topic(
        &self,
        _: Request<pb::CreateTopicRequest>,
    ) -> Answer<pb::CreateTopicResponse> {
        Err(Status::unimplemented("fake"))
    }

    async fn delete_topic(
        &self,
        _: Request<pb::DeleteTopicRequest>,
    ) -> Answer<pb::DeleteTopicResponse> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_topics(
        &self,
        _: Request<pb::ListTopicsRequest>,
    ) -> Answer<pb::ListTopicsResponse> {
        Err(Status::unimplemented("fake"))
    }

    async fn describe_topic(
        &self,
        _: Request<pb::DescribeTopicRequest>,
    ) -> Answer<pb::DescribeTopicResponse> {
        Err(Status::unimplemented("fake"))
    }

    async fn alter_partition(
        &self,
        _: Request<pb::AlterPartitionRequest>,
    ) -> Answer<pb::AlterPartitionResponse> {
        Err(Status::unimplemented("fake"))
    }

    async fn add_controller(
        &self,
        _: Request<pb::AddControllerRequest>,
    ) -> Result<Response<pb::AddControllerResponse>, Status> {
        Err(Status::unimplemented("add_controller"))
    }

    async fn remove_controller(
        &self,
        _: Request<pb::RemoveControllerRequest>,
    ) -> Result<Response<pb::RemoveControllerResponse>, Status> {
        Err(Status::unimplemented("remove_controller"))
    }

    async fn describe_cluster(
        &self,
        _: Request<pb::DescribeClusterRequest>,
    ) -> Answer<pb::DescribeClusterResponse> {
        Err(Status::unimplemented("fake"))
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
