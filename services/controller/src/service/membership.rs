//! AddController and RemoveController: the controller group's membership, one voter at a time
//! (Raft thesis §4.1), with a new controller first added as a learner that is promoted once
//! it has caught up (§4.2.1, rounds of catch-up).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dmq_proto::v1::{
    AddControllerRequest, AddControllerResponse, ControllerNode, ControllerRole,
    RemoveControllerRequest, RemoveControllerResponse,
};
use dmq_raft::{Membership, NodeId, Role};
use tokio::time::Instant;
use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

use super::consensus::Consensus;
use super::status::{ERROR_DOMAIN, node_error_status};
use crate::node::{NodeError, NodeStatus, PeerAddrs};

/// `ErrorInfo` reason of an AddController whose learner did not catch up in time: it was
/// added as a learner (that is applied) and not promoted. Call AddController again to retry
/// the promotion.
pub const REASON_LEARNER_NOT_CAUGHT_UP: &str = "LEARNER_NOT_CAUGHT_UP";
/// `ErrorInfo` reason of an AddController for a member whose addresses differ. Not applied.
pub const REASON_MEMBER_EXISTS: &str = "MEMBER_EXISTS";

const CATCH_UP_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);
const CATCH_UP_TIMEOUT_MAX: Duration = Duration::from_secs(3600);
/// A round of catch-up that ends within this long means the learner keeps up (the thesis
/// uses an election timeout); at most this many rounds.
const CATCH_UP_ROUND_OK: Duration = Duration::from_secs(1);
const CATCH_UP_ROUNDS_MAX: u32 = 20;

/// The members of `status.membership`, voters first, as DescribeCluster shows them.
pub(super) fn controller_nodes(
    status: &NodeStatus,
    peers: &BTreeMap<NodeId, PeerAddrs>,
) -> Vec<ControllerNode> {
    let leading = status.role == Role::Leader;
    status
        .membership
        .members()
        .map(|id| {
            let role = if id == status.id {
                super::controller::controller_role(status.role)
            } else if status.leader_id == Some(id) {
                ControllerRole::Leader
            } else if leading {
                ControllerRole::Follower
            } else {
                // Only the leader knows who follows it.
                ControllerRole::Unspecified
            };
            let match_index = match status.match_indexes.get(&id) {
                Some(&index) => index,
                None if id == status.id && leading => status.commit_index,
                None => 0,
            };
            let addrs = peers.get(&id);
            ControllerNode {
                node_id: id,
                address: addrs.map(|a| a.client.clone()).unwrap_or_default(),
                role: role as i32,
                match_index,
                learner: status.membership.is_learner(id),
                peer_address: addrs.map(|a| a.raft.clone()).unwrap_or_default(),
                lag: if leading {
                    status.commit_index.saturating_sub(match_index)
                } else {
                    0
                },
            }
        })
        .collect()
}

fn invalid(message: String) -> Status {
    Status::invalid_argument(message)
}

/// Bytes a `HOST:PORT` may have: a DNS name (253) and a port, with room to spare. Longer
/// ones are refused before they reach the member context (which holds at most 64 KiB).
const ADDRESS_BYTES_MAX: usize = 300;

/// A `HOST:PORT` a peer can dial: a name or address, and a port number.
fn check_addr(what: &str, addr: &str) -> Result<(), Status> {
    if addr.len() > ADDRESS_BYTES_MAX {
        return Err(invalid(format!(
            "{what} is {} bytes; a HOST:PORT has at most {ADDRESS_BYTES_MAX} (nothing was applied)",
            addr.len()
        )));
    }
    let port = addr
        .rsplit_once(':')
        .map(|(host, port)| (host, port.parse::<u16>()));
    match port {
        Some((host, Ok(p))) if !host.is_empty() && p != 0 => Ok(()),
        _ => Err(invalid(format!(
            "{what} \"{addr}\" is not HOST:PORT (e.g. 10.0.0.4:9094 or dmq-controller-3.dmq:9094)"
        ))),
    }
}

fn leader<N: Consensus>(node: &N) -> Result<NodeStatus, Status> {
    let status = node.status();
    if status.role == Role::Leader {
        Ok(status)
    } else {
        Err(node_error_status(&node.not_leader()))
    }
}

/// How long a change waits for the previous one (or the new leader's first commit) before it
/// is refused MEMBERSHIP_CHANGE_BUSY.
const BUSY_WAIT_MAX: Duration = Duration::from_secs(10);

/// Computes the next configuration from the one in effect with `change` (`None`: nothing to
/// do) and proposes it, as a compare-and-set on that configuration, then waits until it is
/// applied. While the previous change is uncommitted, the leader has not committed in its term
/// yet, or another change got in first, it waits for the status to move and starts over from
/// the new configuration, for at most [`BUSY_WAIT_MAX`]: the caller sees
/// MEMBERSHIP_CHANGE_BUSY only if that does not settle.
async fn propose<N: Consensus>(
    node: &N,
    change: impl Fn(&Membership) -> Option<Membership>,
) -> Result<(), Status> {
    let deadline = Instant::now() + BUSY_WAIT_MAX;
    let mut progress = node.watch_progress();
    loop {
        progress.borrow_and_update();
        let current = leader(node)?.membership;
        let Some(next) = change(&current) else {
            return Ok(());
        };
        match node
            .propose_membership(Arc::unwrap_or_clone(current), next)
            .await
        {
            Ok(_) => return Ok(()),
            Err(NodeError::MembershipChangeBusy(why)) => {
                match tokio::time::timeout_at(deadline, progress.changed()).await {
                    Ok(Ok(())) => continue,
                    _ => {
                        return Err(node_error_status(&NodeError::MembershipChangeBusy(why)));
                    }
                }
            }
            Err(e) => return Err(node_error_status(&e)),
        }
    }
}

/// See `AddControllerRequest` in `controller.proto`.
pub(super) async fn add_controller<N: Consensus>(
    node: &N,
    request: AddControllerRequest,
) -> Result<AddControllerResponse, Status> {
    let id = request.node_id;
    if id == 0 {
        return Err(invalid(
            "node_id must be at least 1 (0 means \"no node\")".into(),
        ));
    }
    check_addr("peer_address", &request.peer_address)?;
    check_addr("client_address", &request.client_address)?;
    let addrs = PeerAddrs {
        raft: request.peer_address.clone(),
        client: request.client_address.clone(),
    };
    let timeout = match request.catch_up_timeout_ms {
        0 => CATCH_UP_TIMEOUT_DEFAULT,
        ms => Duration::from_millis(ms).min(CATCH_UP_TIMEOUT_MAX),
    };
    let status = leader(node)?;
    let current = &status.membership;
    if current.contains(id) {
        let known = node.peers().get(&id).cloned();
        if known.as_ref().is_some_and(|k| *k != addrs) {
            let known = known.expect("checked");
            return Err(Status::with_error_details(
                tonic::Code::FailedPrecondition,
                format!(
                    "controller {id} is already a member at {} / {}; remove it first to change \
                     its addresses (nothing was applied)",
                    known.raft, known.client
                ),
                ErrorDetails::with_error_info(
                    REASON_MEMBER_EXISTS,
                    ERROR_DOMAIN,
                    std::collections::HashMap::<String, String>::new(),
                ),
            ));
        }
    }
    let context = addrs.to_context();
    tracing::info!(node = id, peer = %addrs.raft, "adding a controller (as a learner first)");
    propose(node, |m| {
        (!m.contains(id)).then(|| {
            let mut next = m.clone();
            next.learners.insert(id);
            next.context.insert(id, context.clone());
            next
        })
    })
    .await?;
    if !request.learner_only {
        promote(node, id, timeout)
            .await
            .map_err(|s| added_not_promoted(id, s))?;
    }
    let status = node.status();
    Ok(AddControllerResponse {
        controllers: controller_nodes(&status, &node.peers()),
    })
}

/// The second half of AddController: catch up, then promote.
async fn promote<N: Consensus>(node: &N, id: NodeId, timeout: Duration) -> Result<(), Status> {
    if leader(node)?.membership.is_learner(id) {
        catch_up(node, id, timeout).await?;
    }
    propose(node, |m| {
        m.is_learner(id).then(|| {
            tracing::info!(node = id, "the learner caught up: promoting it to voter");
            let mut next = m.clone();
            next.learners.remove(&id);
            next.voters.insert(id);
            next
        })
    })
    .await
}

/// A failure after the learner was added: the status keeps its code and reason (about the
/// promotion: a NOT_LEADER hint is still followed, and the request is safe to repeat), and
/// its message says the learner part is applied.
fn added_not_promoted(id: NodeId, s: Status) -> Status {
    let message = format!(
        "controller {id} was added as a learner (that part is applied) but not promoted: {}",
        s.message()
    );
    Status::with_details_and_metadata(
        s.code(),
        message,
        s.details().to_vec().into(),
        s.metadata().clone(),
    )
}

/// Rounds of catch-up (thesis §4.2.1): each round waits for the learner to reach the commit
/// index the round started at; one that ends within [`CATCH_UP_ROUND_OK`] means it keeps up.
async fn catch_up<N: Consensus>(node: &N, id: NodeId, timeout: Duration) -> Result<(), Status> {
    let deadline = Instant::now() + timeout;
    let mut progress = node.watch_progress();
    for _ in 0..CATCH_UP_ROUNDS_MAX {
        let target = leader(node)?.commit_index;
        let started = Instant::now();
        loop {
            let s = progress.borrow_and_update().clone();
            if s.role != Role::Leader {
                return Err(node_error_status(&node.not_leader()));
            }
            if s.match_indexes.get(&id).is_some_and(|&m| m >= target) {
                break;
            }
            match tokio::time::timeout_at(deadline, progress.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(node_error_status(&node.not_leader())),
                Err(_) => {
                    let s = node.status();
                    let matched = s.match_indexes.get(&id).copied().unwrap_or(0);
                    return Err(Status::with_error_details(
                        tonic::Code::FailedPrecondition,
                        format!(
                            "it did not catch up within {timeout:?} (it holds up to index \
                             {matched} of {}). Check that it runs and that the leader reaches \
                             its peer address, then call add-controller again to promote it",
                            s.commit_index
                        ),
                        ErrorDetails::with_error_info(
                            REASON_LEARNER_NOT_CAUGHT_UP,
                            ERROR_DOMAIN,
                            std::collections::HashMap::<String, String>::new(),
                        ),
                    ));
                }
            }
        }
        if started.elapsed() < CATCH_UP_ROUND_OK {
            return Ok(());
        }
    }
    Ok(())
}

/// See `RemoveControllerRequest` in `controller.proto`.
pub(super) async fn remove_controller<N: Consensus>(
    node: &N,
    request: RemoveControllerRequest,
) -> Result<RemoveControllerResponse, Status> {
    let id = request.node_id;
    if id == 0 {
        return Err(invalid(
            "node_id must be at least 1 (0 means \"no node\")".into(),
        ));
    }
    propose(node, |m| {
        m.contains(id).then(|| {
            tracing::info!(node = id, "removing a controller");
            let mut next = m.clone();
            next.voters.remove(&id);
            next.learners.remove(&id);
            next.context.remove(&id);
            next
        })
    })
    .await?;
    let status = node.status();
    Ok(RemoveControllerResponse {
        controllers: controller_nodes(&status, &node.peers()),
    })
}
