//! sluice: bulk-inference jobs queued on RabbitMQ, run by workers on ONNX Runtime, with state
//! in Redis and data in S3. `app` wires the adapters; `cli` is the command line.

pub mod api;
pub mod app;
pub mod backoff;
pub mod broker;
pub mod cli;
pub mod compress;
pub mod engine;
pub mod events;
pub mod health;
pub mod ingest;
pub mod job;
pub mod metrics;
pub mod settings;
pub mod state;
pub mod storage;
pub mod submit;
pub mod telemetry;
pub mod train;
pub mod uri;
pub mod worker;
