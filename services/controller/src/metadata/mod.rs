//! The controllers' metadata state machine (DESIGN.md, "Metadata state machine").
//!
//! - [`MetadataStore`] (`store.rs`): the state in sled trees of the node's `Db`, applied entry by
//!   entry exactly once, snapshotted and restored whole.
//! - `apply.rs`: what each command does, deterministically; [`CommandReply`] for the proposer.
//! - `state.rs`: the state in memory and its invariants.
//! - [`validate`]: the checks a request passes before it is proposed.
//! - [`assign_replicas`] (`assign.rs`): the replica assignment of a new topic.
//! - [`MetadataError`] (`error.rs`): every refusal, with its gRPC code and a way out.
//! - `page.rs`: topic listing pages and their tokens.
//! - [`ChangeFeed`] (`feed.rs`): the latest changes as deltas, for WatchMetadata.

mod apply;
mod assign;
mod error;
pub mod features;
mod feed;
mod page;
mod state;
mod store;
pub mod validate;

#[cfg(test)]
mod testing;

pub use apply::CommandReply;
pub use assign::assign_replicas;
pub use error::MetadataError;
pub use feed::{ChangeFeed, Since};
pub use page::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, TopicPage};
pub use store::{ApplyOutcome, ApplyResult, MetadataStore, StoreError};
