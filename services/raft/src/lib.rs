//! The pure Raft core of DistributedMQ's controllers.
//!
//! Ticks and messages go in ([`Raft::tick`], [`Raft::step`], [`Raft::propose`],
//! [`Raft::read_index`]); a [`Ready`] comes out with the hard state and entries to persist, the
//! messages to send once they are durable, the committed entries and snapshot to apply and the
//! confirmed reads. [`ReadyPlan`] says what of it may happen before the write and what must
//! wait for it, for the controllers and the simulator alike. The caller does the I/O and then
//! calls [`Raft::advance`]. Nothing here does
//! I/O, reads a clock or uses an unseeded RNG, so a run is a function of its inputs and seed.

pub mod config;
pub mod error;
mod log;
pub mod membership;
mod progress;
mod raft;
pub mod ready_plan;
pub mod sim;
pub mod storage;
pub mod types;

pub use config::{Config, ConfigError, PlantedBug};
pub use error::ProposeError;
pub use membership::{Membership, MembershipError};
pub use raft::{Raft, Ready};
pub use ready_plan::{Persist, ReadyPlan, Undurable};
pub use storage::{MemStorage, Storage};
pub use types::*;
