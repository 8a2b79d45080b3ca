//! Task failures, split by what to do about them: retry later, or fail for good.

use crate::broker::BrokerError;
use crate::engine::EngineError;
use crate::state::StateError;
use crate::storage::StorageError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum TaskError {
    /// Worth another try after a back-off (network, a restarting service).
    #[error("{0}")]
    Retryable(String),
    /// Will fail the same way every time: the job fails and the task is dead-lettered.
    #[error("{0}")]
    Permanent(String),
    /// The worker is shutting down: the task goes back to its queue untouched.
    #[error("interrupted by shutdown")]
    Interrupted,
}

impl TaskError {
    pub fn permanent(message: impl Into<String>) -> Self {
        TaskError::Permanent(message.into())
    }

    /// A failure while streaming an input object: malformed data is permanent, anything
    /// else (a dropped connection) is worth a retry.
    pub fn reading(uri: &impl std::fmt::Display, err: std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::InvalidData {
            TaskError::Permanent(format!("input {uri}: {err}"))
        } else {
            TaskError::Retryable(format!("reading {uri}: {err}"))
        }
    }
}

macro_rules! classify_from {
    ($($source:ty),*) => {$(
        impl From<$source> for TaskError {
            fn from(err: $source) -> Self {
                if err.is_retryable() {
                    TaskError::Retryable(err.to_string())
                } else {
                    TaskError::Permanent(err.to_string())
                }
            }
        }
    )*};
}

classify_from!(StorageError, StateError, BrokerError, EngineError);
