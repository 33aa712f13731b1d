//! RaftService over tonic: the server side feeds peer requests to the Raft thread and answers
//! with the core's response once it is durable; the client side keeps one connection per peer.

pub mod convert;
pub(crate) mod peer;
pub mod server;
pub mod snapshot;

pub use server::RaftServer;
