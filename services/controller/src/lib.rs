//! The DistributedMQ metadata controller.
