//! BrokerService: what controllers, operators, clients and peer brokers ask a broker.

use std::sync::Arc;

use dmq_proto::v1 as pb;
use dmq_proto::v1::broker_service_server::BrokerService;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::data_service::{ConsumeStream, DataService};
use crate::errors::DataError;
use crate::partitions::Role;
use crate::state::Broker;

/// The BrokerService handlers: the control calls here, the data plane in [`DataService`].
pub struct BrokerServiceImpl {
    broker: Arc<Broker>,
    data: DataService,
}

impl BrokerServiceImpl {
    pub(crate) fn new(broker: Arc<Broker>) -> BrokerServiceImpl {
        BrokerServiceImpl {
            data: DataService::new(broker.clone()),
            broker,
        }
    }

    /// Every partition replica held here, sorted by topic and partition.
    async fn replica_states(&self) -> Vec<pb::ReplicaState> {
        let me = self.broker.id();
        let mut states = Vec::new();
        for p in self.broker.data.all() {
            let offsets = p.log.offsets();
            let (role, leader_epoch, leader_id, isr) = match &*p.role.read().await {
                Role::Leader(l) => (pb::ReplicaRole::Leader, l.epoch, me, l.isr()),
                Role::Follower(f) => (pb::ReplicaRole::Follower, f.epoch, f.leader, Vec::new()),
                Role::Idle => (pb::ReplicaRole::Idle, 0, 0, Vec::new()),
            };
            states.push(pb::ReplicaState {
                topic: p.id.topic.clone(),
                partition: p.id.partition,
                role: role as i32,
                leader_epoch,
                leader_id,
                log_start_offset: offsets.log_start_offset,
                log_end_offset: offsets.log_end_offset,
                high_watermark: p.high_watermark(),
                isr,
            });
        }
        states.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        states
    }
}

#[tonic::async_trait]
impl BrokerService for BrokerServiceImpl {
    /// A newly elected controller leader announces itself. Taken only when its term is higher
    /// than any this broker knows; a taken push makes the broker heartbeat the new leader at
    /// once.
    async fn controller_changed(
        &self,
        request: Request<pb::ControllerChangedRequest>,
    ) -> Result<Response<pb::ControllerChangedResponse>, Status> {
        let push = request.into_inner();
        if push.term == 0 || push.leader_id == 0 || push.leader_address.trim().is_empty() {
            return Err(Status::invalid_argument(
                "a CONTROLLER_CHANGED push must carry the term, leader_id and leader_address",
            ));
        }
        let accepted = self.broker.locator.on_controller_changed(
            push.term,
            push.leader_id,
            push.leader_address,
        );
        if accepted {
            self.broker.wakeup.notify_one();
        }
        Ok(Response::new(pb::ControllerChangedResponse { accepted }))
    }

    async fn get_broker_info(
        &self,
        _request: Request<pb::GetBrokerInfoRequest>,
    ) -> Result<Response<pb::GetBrokerInfoResponse>, Status> {
        let session = self.broker.session();
        let leader = self.broker.locator.cached();
        let replicas = self.replica_states().await;
        Ok(Response::new(pb::GetBrokerInfoResponse {
            broker_id: self.broker.id(),
            broker_epoch: session.epoch,
            status: session.status as i32,
            metadata_version: self.broker.metadata.version(),
            controller_leader_id: leader.as_ref().map_or(0, |l| l.id),
            controller_leader_address: leader.as_ref().map_or(String::new(), |l| l.address.clone()),
            controller_term: self.broker.locator.term(),
            replicas,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }

    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let acks = match pb::Acks::try_from(request.acks) {
            Ok(pb::Acks::None) => "none",
            Ok(pb::Acks::Leader) => "leader",
            _ => "all",
        };
        let result = self.data.produce(request).await;
        crate::metrics::produce(acks, outcome(&result), started.elapsed());
        answer(result)
    }

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        let started = Instant::now();
        let result = self.data.fetch(request.into_inner()).await;
        crate::metrics::fetch("fetch", outcome(&result), started.elapsed());
        answer(result)
    }

    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        let started = Instant::now();
        let result = self.data.list_offsets(request.into_inner()).await;
        crate::metrics::fetch("list_offsets", outcome(&result), started.elapsed());
        answer(result)
    }

    type ConsumeStream = ConsumeStream;

    async fn consume(
        &self,
        request: Request<pb::ConsumeRequest>,
    ) -> Result<Response<Self::ConsumeStream>, Status> {
        let started = Instant::now();
        let result = self.data.consume(request.into_inner()).await;
        crate::metrics::fetch("consume", outcome(&result), started.elapsed());
        answer(result)
    }

    async fn replica_fetch(
        &self,
        request: Request<pb::ReplicaFetchRequest>,
    ) -> Result<Response<pb::ReplicaFetchResponse>, Status> {
        let started = Instant::now();
        let result = self.data.replica_fetch(request.into_inner()).await;
        crate::metrics::fetch("replica", outcome(&result), started.elapsed());
        answer(result)
    }
}

fn outcome<T>(result: &Result<T, DataError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => e.label(),
    }
}

fn answer<T>(result: Result<T, DataError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(Status::from)
}
