//! Conversions between the pure core's messages and the `dmq.v1` Raft RPCs. The only place
//! that knows both shapes.

use dmq_proto::v1 as pb;
use dmq_raft::{ConflictHint, Entry, EntryKind, Message, MessageBody, NodeId};

/// Why a request from a peer cannot become a core message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    #[error("entry {index} has no entry type; the sender runs an incompatible version")]
    MissingEntryType { index: u64 },
    #[error("request addressed to node {to}, but this is node {me}: check --peers on the sender")]
    WrongNode { to: NodeId, me: NodeId },
    #[error("sender id is 0; node ids start at 1")]
    ZeroSender,
}

pub fn entry_to_pb(e: &Entry) -> pb::LogEntry {
    pb::LogEntry {
        index: e.index,
        term: e.term,
        r#type: match e.kind {
            EntryKind::Normal => pb::EntryType::Normal as i32,
            EntryKind::Noop => pb::EntryType::Noop as i32,
            EntryKind::Membership => pb::EntryType::Membership as i32,
        },
        data: e.data.clone(),
    }
}

pub fn entry_from_pb(e: pb::LogEntry) -> Result<Entry, ConvertError> {
    let kind = match pb::EntryType::try_from(e.r#type) {
        Ok(pb::EntryType::Normal) => EntryKind::Normal,
        Ok(pb::EntryType::Noop) => EntryKind::Noop,
        Ok(pb::EntryType::Membership) => EntryKind::Membership,
        _ => return Err(ConvertError::MissingEntryType { index: e.index }),
    };
    Ok(Entry {
        index: e.index,
        term: e.term,
        kind,
        data: e.data,
    })
}

pub(crate) fn check(from: NodeId, to: NodeId, me: NodeId) -> Result<(), ConvertError> {
    if from == 0 {
        return Err(ConvertError::ZeroSender);
    }
    if to != me {
        return Err(ConvertError::WrongNode { to, me });
    }
    Ok(())
}

pub fn vote_request_to_pb(m: &Message) -> Option<pb::RequestVoteRequest> {
    match m.body {
        MessageBody::RequestVote {
            pre_vote,
            last_log_index,
            last_log_term,
            leadership_transfer,
        } => Some(pb::RequestVoteRequest {
            term: m.term,
            candidate_id: m.from,
            last_log_index,
            last_log_term,
            pre_vote,
            leadership_transfer,
            to: m.to,
            // Set by the sender, which knows its cluster.
            cluster_id: String::new(),
        }),
        _ => None,
    }
}

pub fn vote_request_from_pb(
    r: pb::RequestVoteRequest,
    me: NodeId,
) -> Result<Message, ConvertError> {
    check(r.candidate_id, r.to, me)?;
    Ok(Message {
        from: r.candidate_id,
        to: r.to,
        term: r.term,
        body: MessageBody::RequestVote {
            pre_vote: r.pre_vote,
            last_log_index: r.last_log_index,
            last_log_term: r.last_log_term,
            leadership_transfer: r.leadership_transfer,
        },
    })
}

/// A response; `None` (encoded with `from = 0`) when the core chose not to answer.
pub fn vote_response_to_pb(m: Option<&Message>) -> pb::RequestVoteResponse {
    match m {
        Some(Message {
            from,
            term,
            body: MessageBody::RequestVoteResponse { pre_vote, granted },
            ..
        }) => pb::RequestVoteResponse {
            term: *term,
            from: *from,
            vote_granted: *granted,
            pre_vote: *pre_vote,
        },
        _ => pb::RequestVoteResponse::default(),
    }
}

pub fn vote_response_from_pb(r: pb::RequestVoteResponse, me: NodeId) -> Option<Message> {
    (r.from != 0).then_some(Message {
        from: r.from,
        to: me,
        term: r.term,
        body: MessageBody::RequestVoteResponse {
            pre_vote: r.pre_vote,
            granted: r.vote_granted,
        },
    })
}

pub fn append_request_to_pb(m: &Message) -> Option<pb::AppendEntriesRequest> {
    match &m.body {
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
            read_round,
        } => Some(pb::AppendEntriesRequest {
            term: m.term,
            leader_id: m.from,
            prev_log_index: *prev_log_index,
            prev_log_term: *prev_log_term,
            entries: entries.iter().map(entry_to_pb).collect(),
            leader_commit: *leader_commit,
            read_round: *read_round,
            to: m.to,
            cluster_id: String::new(),
        }),
        _ => None,
    }
}

pub fn append_request_from_pb(
    r: pb::AppendEntriesRequest,
    me: NodeId,
) -> Result<Message, ConvertError> {
    check(r.leader_id, r.to, me)?;
    let entries = r
        .entries
        .into_iter()
        .map(entry_from_pb)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Message {
        from: r.leader_id,
        to: r.to,
        term: r.term,
        body: MessageBody::AppendEntries {
            prev_log_index: r.prev_log_index,
            prev_log_term: r.prev_log_term,
            entries,
            leader_commit: r.leader_commit,
            read_round: r.read_round,
        },
    })
}

pub fn append_response_to_pb(m: Option<&Message>) -> pb::AppendEntriesResponse {
    match m {
        Some(Message {
            from,
            term,
            body:
                MessageBody::AppendEntriesResponse {
                    success,
                    match_index,
                    rejected_index,
                    conflict,
                    read_round,
                    catching_up,
                },
            ..
        }) => pb::AppendEntriesResponse {
            term: *term,
            from: *from,
            success: *success,
            match_index: *match_index,
            conflict_term: conflict.map_or(0, |c| c.term),
            // first_index is at least 1 whenever there is a hint, so 0 encodes "no hint".
            conflict_index: conflict.map_or(0, |c| c.first_index),
            read_round: *read_round,
            rejected_index: *rejected_index,
            liveness_only: false,
            // Set by the server, which knows what this node supports.
            feature_level_max: 0,
            catching_up: *catching_up,
        },
        _ => pb::AppendEntriesResponse::default(),
    }
}

pub fn append_response_from_pb(r: pb::AppendEntriesResponse, me: NodeId) -> Option<Message> {
    (r.from != 0).then(|| Message {
        from: r.from,
        to: me,
        term: r.term,
        body: MessageBody::AppendEntriesResponse {
            success: r.success,
            match_index: r.match_index,
            rejected_index: r.rejected_index,
            conflict: (r.conflict_index != 0).then_some(ConflictHint {
                term: r.conflict_term,
                first_index: r.conflict_index,
            }),
            read_round: r.read_round,
            catching_up: r.catching_up,
        },
    })
}

pub fn snapshot_response_to_pb(m: Option<&Message>) -> pb::InstallSnapshotResponse {
    match m {
        Some(Message {
            from,
            term,
            body:
                MessageBody::InstallSnapshotResponse {
                    match_index,
                    catching_up,
                },
            ..
        }) => pb::InstallSnapshotResponse {
            term: *term,
            from: *from,
            match_index: *match_index,
            catching_up: *catching_up,
        },
        _ => pb::InstallSnapshotResponse::default(),
    }
}

pub fn snapshot_response_from_pb(r: pb::InstallSnapshotResponse, me: NodeId) -> Option<Message> {
    (r.from != 0).then_some(Message {
        from: r.from,
        to: me,
        term: r.term,
        body: MessageBody::InstallSnapshotResponse {
            match_index: r.match_index,
            catching_up: r.catching_up,
        },
    })
}

pub fn timeout_now_to_pb(m: &Message) -> Option<pb::TimeoutNowRequest> {
    matches!(m.body, MessageBody::TimeoutNow).then(|| pb::TimeoutNowRequest {
        term: m.term,
        leader_id: m.from,
        to: m.to,
        cluster_id: String::new(),
    })
}

pub fn timeout_now_from_pb(r: pb::TimeoutNowRequest, me: NodeId) -> Result<Message, ConvertError> {
    check(r.leader_id, r.to, me)?;
    Ok(Message {
        from: r.leader_id,
        to: r.to,
        term: r.term,
        body: MessageBody::TimeoutNow,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip_append(m: Message) {
        let pb = append_request_to_pb(&m).unwrap();
        assert_eq!(append_request_from_pb(pb, m.to).unwrap(), m);
    }

    #[test]
    fn append_and_responses_roundtrip() {
        roundtrip_append(Message {
            from: 1,
            to: 2,
            term: 3,
            body: MessageBody::AppendEntries {
                prev_log_index: 4,
                prev_log_term: 2,
                entries: vec![
                    Entry {
                        index: 5,
                        term: 3,
                        kind: EntryKind::Noop,
                        data: vec![],
                    },
                    Entry {
                        index: 6,
                        term: 3,
                        kind: EntryKind::Normal,
                        data: vec![1, 2],
                    },
                ],
                leader_commit: 4,
                read_round: 9,
            },
        });
        for conflict in [
            None,
            Some(ConflictHint {
                term: 0,
                first_index: 7,
            }),
            Some(ConflictHint {
                term: 2,
                first_index: 3,
            }),
        ] {
            let m = Message {
                from: 2,
                to: 1,
                term: 3,
                body: MessageBody::AppendEntriesResponse {
                    success: conflict.is_none(),
                    match_index: 6,
                    rejected_index: 4,
                    conflict,
                    read_round: 9,
                    catching_up: conflict.is_some(),
                },
            };
            assert_eq!(
                append_response_from_pb(append_response_to_pb(Some(&m)), 1),
                Some(m)
            );
        }
        assert_eq!(
            append_response_from_pb(append_response_to_pb(None), 1),
            None
        );
    }

    #[test]
    fn wrong_recipient_is_refused_with_advice() {
        let r = pb::TimeoutNowRequest {
            term: 1,
            leader_id: 1,
            to: 3,
            cluster_id: String::new(),
        };
        let err = timeout_now_from_pb(r, 2).unwrap_err();
        assert!(err.to_string().contains("check --peers"));
    }
}
