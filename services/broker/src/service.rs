//! BrokerService: what controllers and operators ask a broker.

use std::sync::Arc;

use dmq_proto::v1 as pb;
use dmq_proto::v1::broker_service_server::BrokerService;
use tonic::{Request, Response, Status};

use crate::state::Broker;

/// The BrokerService handlers (produce and fetch come later).
pub struct BrokerServiceImpl {
    broker: Arc<Broker>,
}

impl BrokerServiceImpl {
    pub(crate) fn new(broker: Arc<Broker>) -> BrokerServiceImpl {
        BrokerServiceImpl { broker }
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
        Ok(Response::new(pb::GetBrokerInfoResponse {
            broker_id: self.broker.id(),
            broker_epoch: session.epoch,
            status: session.status as i32,
            metadata_version: self.broker.metadata.version(),
            controller_leader_id: leader.as_ref().map_or(0, |l| l.id),
            controller_leader_address: leader.as_ref().map_or(String::new(), |l| l.address.clone()),
            controller_term: self.broker.locator.term(),
        }))
    }
}
