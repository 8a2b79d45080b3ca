//! Post-training compression of ONNX models: dynamic int8 quantization of MatMul/Gemm weights
//! as a rewrite of the model's protobuf (what `onnxruntime.quantization.quantize_dynamic` does).

pub mod error;
pub mod math;
pub mod quantize;
pub mod tensor;
pub mod wire;

pub use error::CompressError;
pub use quantize::{QuantizeOptions, QuantizeSummary, quantize_model};
