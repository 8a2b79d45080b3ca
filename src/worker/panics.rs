//! Panics inside a task run become the run's failure, so a bug never leaves a delivery
//! unanswered or a worker slot taken.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

use super::TaskError;
use crate::metrics::{self, TaskKind};

/// Runs `run`; a panic inside it is logged, counted in `sluice_task_panics_total{kind}` and
/// returned as a retryable failure naming the panic, which the retry ladder then bounds.
pub async fn guarded<T>(
    kind: TaskKind,
    run: impl Future<Output = Result<T, TaskError>>,
) -> Result<T, TaskError> {
    match AssertUnwindSafe(run).catch_unwind().await {
        Ok(result) => result,
        Err(payload) => {
            let message = panic_message(payload.as_ref());
            metrics::TASK_PANICS.with(kind).inc();
            let kind = kind.as_str();
            tracing::error!(kind, panic = %message, "task panicked; counting it as a failed run");
            Err(TaskError::Retryable(format!(
                "{kind} task panicked: {message} (a sluice bug: please report it with the worker log)"
            )))
        }
    }
}

/// The text a panic was raised with, when it carried one.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_a_retryable_failure_naming_it() {
        let before = metrics::TASK_PANICS.with(metrics::TaskKind::Plan).get();
        let result: Result<(), TaskError> = guarded(TaskKind::Plan, async {
            let key = String::from("k");
            panic!("uri too long: {key}");
        })
        .await;
        let Err(TaskError::Retryable(reason)) = result else {
            panic!("expected a retryable failure, got {result:?}");
        };
        assert!(
            reason.contains("plan task panicked: uri too long: k"),
            "{reason}"
        );
        assert_eq!(
            metrics::TASK_PANICS.with(metrics::TaskKind::Plan).get(),
            before + 1
        );
    }

    #[tokio::test]
    async fn results_pass_through_untouched() {
        assert_eq!(guarded(TaskKind::Shard, async { Ok(7) }).await.unwrap(), 7);
        let err = guarded::<()>(TaskKind::Shard, async {
            Err(TaskError::permanent("bad row"))
        })
        .await;
        assert!(matches!(err, Err(TaskError::Permanent(r)) if r == "bad row"));
    }
}
