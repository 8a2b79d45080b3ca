//! Job contracts shared by every role: the spec users submit, task messages, and the status
//! state machine. Pure types, no I/O.

pub mod accounting;
mod allowance;
mod columns;
mod compress;
mod error;
mod event;
mod format;
pub mod limits;
mod locations;
pub mod model_package;
mod output_checks;
mod reply_to;
pub mod schema;
mod spec;
mod status;
mod task;
mod tensor_spec;
mod train_progress;
mod training;
mod validate;

pub use allowance::{Allowance, LocationRefused};
pub use columns::{ColumnType, OutputColumns};
pub use compress::{CompressSpec, GateSpec};
pub use error::SpecError;
pub use event::{EventCounts, FINAL_EVENTS, JobEvent, SubmissionReply};
pub use format::{InputFormat, OutputCompression, OutputFormat};
pub use locations::Locations;
pub use model_package::{
    FileDigest, HEAD_FILE, IoNames, MANIFEST_FILE, MODEL_FILE, ModelManifest, ModelTask, Pooling,
    TOKENIZER_FILE, digest_file,
};
pub use output_checks::RESERVED_COLUMNS;
pub use reply_to::{ReplyPolicy, default_reply_queue_patterns, glob};
pub use spec::{
    API_VERSION, InputSpec, JobKind, JobSpec, OnDuplicateId, OutputSpec, Pool, Suffixes, Task,
};
pub use status::JobStatus;
pub use task::{InputPiece, PieceLayout, ShardTask, TaskMessage};
pub use tensor_spec::{InputFields, TensorSpec};
pub use train_progress::{ClassRows, EvalPoint, TrainingProgress};
pub use training::{
    ClassWeightRule, ClassWeights, DecaySpec, EarlyStopping, EvalMetric, EvalSpec, HeadSpec,
    OptimizerSpec, ScheduleSpec, Select, TrainingSpec, normalize_label, spelled,
};
pub use validate::{parse_json_spec, parse_json_spec_within, parse_toml_spec};

/// A job's id: a UUIDv7, so ids sort by creation time.
pub fn new_job_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// True for strings `new_job_id` could have produced; guards Redis keys built from user input.
pub fn is_valid_job_id(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok()
}
