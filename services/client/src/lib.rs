//! The DistributedMQ Rust client.
//!
//! For now only [`discovery`]: finding the controller leader among the configured controllers,
//! keeping it cached, and the rules for forgetting it. Brokers use it today; the admin, producer
//! and consumer clients will reuse it.

pub mod discovery;
