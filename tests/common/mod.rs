//! Shared harness for the integration tests: each test gets its own queue/key prefix and its
//! own bucket on the real services that `scripts/test.sh` starts, an in-process API, and
//! worker processes of the real binary when it needs them.
#![allow(dead_code)]

pub mod amqp;

pub mod broker_node;
pub mod prometheus_node;
pub mod redis_node;
pub mod state;
pub mod tls;

mod cluster;
mod data;
mod training;
mod upstream;

// `common::X` for everything, as before the split; each test binary uses only some of it.
#[allow(unused_imports)]
pub use {cluster::*, data::*, training::*, upstream::*};
