//! How compressing a model fails: a model the rewrite cannot read or handle.

#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    /// The bytes are not a valid ONNX protobuf.
    #[error("{what}: not a readable ONNX model ({problem}); check that the file is an ONNX model")]
    Malformed { what: String, problem: String },
    /// A tensor stored outside the model could not be read.
    #[error(
        "{what}: initializer {tensor} keeps its data in {location}, which could not be read ({problem}); keep the data file beside the model"
    )]
    ExternalData {
        what: String,
        tensor: String,
        location: String,
        problem: String,
    },
    /// The model is valid but the rewrite does not apply.
    #[error("{what}: {problem}")]
    Unsupported { what: String, problem: String },
}
