//! The metadata feature level (Kafka's `metadata.version`): which commands (and fields) the
//! controllers may write to the log, agreed through the log itself.
//!
//! A command or field that a release adds belongs to the next level. A leader proposes it only
//! once the agreed level (the last applied `SetFeatureLevelCommand`) has it, and raises the
//! level only to what every voter says it supports (`feature_level_max` in its append
//! answers). So in a rolling upgrade no old controller is ever handed a command it does not
//! know. Should one find such a command anyway (an entry it cannot decode, a command variant
//! it does not know, a level above its own), it stops loudly instead of applying it as empty
//! or rejected while the others apply it ([`check_known`]).
//!
//! Levels:
//! - 0: RegisterBroker, UnregisterBroker, FenceBroker, UnfenceBroker, CreateTopic, DeleteTopic,
//!   AlterPartition, as first released.
//! - 1: SetFeatureLevel and the cluster id.
//! - 2: ElectPreferredLeaders (automatic leader rebalance).

use dmq_proto::v1::MetadataCommand;
use dmq_proto::v1::metadata_command::Command;

/// The highest level this version supports (and proposes once every voter does).
pub const FEATURE_LEVEL_MAX: u32 = 2;

/// The agreed level a command needs before a leader may propose it.
pub fn required_level(command: &MetadataCommand) -> u32 {
    match &command.command {
        // It is what raises the level; the leader proposes it only for a level every voter
        // supports.
        Some(Command::SetFeatureLevel(_)) => 0,
        Some(Command::ElectPreferredLeaders(_)) => 2,
        _ => 0,
    }
}

/// Whether this version can apply `command` (decoded from the log entry at `index`); an
/// error says why not, for the message the node stops with.
pub fn check_known(index: u64, command: &MetadataCommand) -> Result<(), String> {
    match &command.command {
        None => Err(format!(
            "log entry {index} holds a metadata command this version does not know (it decodes \
             as empty: it was written by a newer controller)"
        )),
        Some(Command::SetFeatureLevel(c)) if c.feature_level > FEATURE_LEVEL_MAX => Err(format!(
            "log entry {index} raises the metadata feature level to {}, above the {} this \
             version supports",
            c.feature_level, FEATURE_LEVEL_MAX
        )),
        Some(_) => Ok(()),
    }
}

/// The highest level this node supports: [`FEATURE_LEVEL_MAX`], unless a test made it play an
/// older version (see `crate::faults`).
pub fn supported_max(faults: &crate::faults::Faults) -> u32 {
    faults
        .feature_level_max()
        .map_or(FEATURE_LEVEL_MAX, |l| l.min(FEATURE_LEVEL_MAX))
}

/// A new cluster id: 128 random bits, as 32 hex digits.
pub fn new_cluster_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmq_proto::v1::SetFeatureLevelCommand;

    #[test]
    fn unknown_commands_and_levels_above_ours_cannot_be_applied() {
        let empty = MetadataCommand { command: None };
        assert!(check_known(7, &empty).unwrap_err().contains("entry 7"));
        let level = |feature_level| MetadataCommand {
            command: Some(Command::SetFeatureLevel(SetFeatureLevelCommand {
                feature_level,
                cluster_id: String::new(),
            })),
        };
        assert_eq!(check_known(1, &level(FEATURE_LEVEL_MAX)), Ok(()));
        assert!(check_known(1, &level(FEATURE_LEVEL_MAX + 1)).is_err());
        let a = new_cluster_id();
        assert_eq!(a.len(), 32);
        assert_ne!(a, new_cluster_id());
    }
}
