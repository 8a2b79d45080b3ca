//! Training on ONNX Runtime without a training build: each optimisation step is an ordinary
//! ONNX graph (built here for the requested head, or supplied by the user under the same
//! contract) that takes parameters and optimiser state in and gives the updated ones back.

pub mod builder;
pub mod checkpoint;
pub mod contract;
pub mod curves;
pub mod error;
pub mod eval;
pub mod features;
pub mod grad;
pub mod head;
pub mod onnx;
pub mod package;
pub mod reference;
pub mod runner;
pub mod split;
pub mod step;
pub mod trainer;

pub use error::TrainError;
pub use head::{HeadLayout, Tensor, Tensors};
pub use runner::{StepBatch, StepOutput, StepSession, TrainState};
pub use step::{AdamW, build_inference_graph, build_step_graph};
