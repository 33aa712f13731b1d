//! [`ClusterId`]: the id of the cluster this node belongs to, as its Raft transport needs it
//! (every request carries it; a request from another cluster is refused).
//!
//! The id comes from the log (the first `SetFeatureLevelCommand`) or an installed snapshot. Two
//! views of it:
//! - **applied**: what the metadata state holds. A request from a cluster with another id is
//!   refused only against this one, so an id that a leader proposed but that lost its place in
//!   the log (a bootstrap cut short) never keeps a node from its real leader.
//! - **logged**: the id in a naming entry this node holds in its log, applied or not. Requests
//!   carry the applied id, else this one: a node restarted after a crash may not have applied
//!   the naming entry again yet (its commit index is a hint), but its peers must still see that
//!   the cluster is named, or a peer that lost its disk would take it for a brand-new cluster.
//!   A leader names the cluster only once every voter answered it, so no voter is empty then.
//!
//! Until both are empty the node takes requests from anyone: every node of a brand-new cluster
//! is in that state.

use std::sync::{Arc, Mutex};

/// See the module docs.
#[derive(Debug, Default)]
pub struct ClusterId(Mutex<Ids>);

#[derive(Debug, Default)]
struct Ids {
    applied: Arc<str>,
    logged: Arc<str>,
}

impl ClusterId {
    pub fn new(applied: &str) -> ClusterId {
        ClusterId(Mutex::new(Ids {
            applied: Arc::from(applied),
            logged: Arc::from(""),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ids> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The id as the metadata state holds it (empty before it applied the naming entry).
    pub fn applied(&self) -> Arc<str> {
        self.lock().applied.clone()
    }

    /// The id requests carry: the applied one, else one from the log.
    pub fn get(&self) -> Arc<str> {
        let ids = self.lock();
        if ids.applied.is_empty() {
            ids.logged.clone()
        } else {
            ids.applied.clone()
        }
    }

    pub(crate) fn set_applied(&self, id: &str) {
        let mut ids = self.lock();
        if &*ids.applied != id {
            ids.applied = Arc::from(id);
        }
    }

    pub(crate) fn set_logged(&self, id: &str) {
        let mut ids = self.lock();
        if &*ids.logged != id {
            ids.logged = Arc::from(id);
        }
    }
}

/// The cluster id a log entry's data names, if it is a `SetFeatureLevelCommand` with one. Cheap
/// for every other entry: it looks at the first byte (field 8, length-delimited) first.
pub(crate) fn named_in(data: &[u8]) -> Option<String> {
    use dmq_proto::v1::MetadataCommand;
    use dmq_proto::v1::metadata_command::Command;
    use prost::Message as _;
    const SET_FEATURE_LEVEL_TAG: u8 = (8 << 3) | 2;
    if data.first() != Some(&SET_FEATURE_LEVEL_TAG) {
        return None;
    }
    match MetadataCommand::decode(data).ok()?.command? {
        Command::SetFeatureLevel(c) if !c.cluster_id.is_empty() => Some(c.cluster_id),
        _ => None,
    }
}

/// Whether a request from a node of cluster `theirs` is for a node of cluster `ours`: yes unless
/// both are named and differ.
pub fn same_cluster(ours: &str, theirs: &str) -> bool {
    ours.is_empty() || theirs.is_empty() || ours == theirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_two_different_names_are_two_clusters() {
        assert!(same_cluster("", ""));
        assert!(same_cluster("a", ""));
        assert!(same_cluster("", "a"));
        assert!(same_cluster("a", "a"));
        assert!(!same_cluster("a", "b"));
        let id = ClusterId::default();
        assert_eq!(&*id.get(), "");
        id.set_logged("l");
        assert_eq!((&*id.get(), &*id.applied()), ("l", ""));
        id.set_applied("c");
        assert_eq!((&*id.get(), &*id.applied()), ("c", "c"));
    }

    #[test]
    fn finds_the_id_a_naming_entry_holds() {
        use dmq_proto::v1::metadata_command::Command;
        use dmq_proto::v1::{MetadataCommand, RegisterBrokerCommand, SetFeatureLevelCommand};
        use prost::Message as _;
        let naming = MetadataCommand {
            command: Some(Command::SetFeatureLevel(SetFeatureLevelCommand {
                feature_level: 1,
                cluster_id: "abc".into(),
            })),
        };
        assert_eq!(named_in(&naming.encode_to_vec()).as_deref(), Some("abc"));
        let raise = MetadataCommand {
            command: Some(Command::SetFeatureLevel(SetFeatureLevelCommand {
                feature_level: 2,
                cluster_id: String::new(),
            })),
        };
        assert_eq!(named_in(&raise.encode_to_vec()), None);
        let other = MetadataCommand {
            command: Some(Command::RegisterBroker(RegisterBrokerCommand::default())),
        };
        assert_eq!(named_in(&other.encode_to_vec()), None);
        assert_eq!(named_in(&[]), None);
    }
}
