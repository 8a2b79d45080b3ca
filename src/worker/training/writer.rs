//! The training thread's S3 and Redis writes, done by an async task it asks and waits on.

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::super::TaskError;
use crate::job::TrainingProgress;
use crate::state::{Lease, StateStore, now_ms};
use crate::storage::Storage;
use crate::uri::S3Uri;

/// What the writer task needs to write for one job under one lease.
pub struct Target {
    pub storage: Storage,
    pub state: StateStore,
    pub job_id: String,
    pub lease: Lease,
    /// Folder of `step-<n>-<token>.safetensors` checkpoints.
    pub checkpoints: S3Uri,
    /// How many checkpoints to keep.
    pub keep: usize,
}

enum Request {
    /// Put the checkpoint, then point the job at it under the lease: true once committed,
    /// false when the lease was lost (the pointer was refused).
    Checkpoint {
        step: u64,
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<bool, TaskError>>,
    },
    /// Delete checkpoints older than the last `keep` up to step `current`.
    Prune {
        current: u64,
        reply: oneshot::Sender<Result<(), TaskError>>,
    },
    /// Reset the job's crash budget: the run has made progress.
    StartAfresh {
        reply: oneshot::Sender<Result<(), TaskError>>,
    },
    Progress {
        progress: Box<TrainingProgress>,
        reply: oneshot::Sender<Result<(), TaskError>>,
    },
}

/// The training thread's handle on the writer task. Every call blocks its thread until the
/// write is done, so checkpoints stay in order and each is durable before training goes on
/// (exact resume, lease fencing). Never call it from async code: it blocks.
pub struct Writer {
    requests: mpsc::Sender<Request>,
}

impl Writer {
    /// Starts the writer task; it ends, once every request is answered, when the `Writer`
    /// is dropped: await the handle to know the last write is done.
    pub fn spawn(target: Target) -> (Self, JoinHandle<()>) {
        // One request at a time: the thread waits for each reply anyway.
        let (requests, receiver) = mpsc::channel(1);
        let task = tokio::spawn(target.serve(receiver));
        (Writer { requests }, task)
    }

    pub fn checkpoint(&self, step: u64, bytes: Vec<u8>) -> Result<bool, TaskError> {
        self.ask(|reply| Request::Checkpoint { step, bytes, reply })
    }

    pub fn prune(&self, current: u64) -> Result<(), TaskError> {
        self.ask(|reply| Request::Prune { current, reply })
    }

    pub fn start_afresh(&self) -> Result<(), TaskError> {
        self.ask(|reply| Request::StartAfresh { reply })
    }

    pub fn progress(&self, progress: &TrainingProgress) -> Result<(), TaskError> {
        let progress = Box::new(progress.clone());
        self.ask(|reply| Request::Progress { progress, reply })
    }

    fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T, TaskError>>) -> Request,
    ) -> Result<T, TaskError> {
        let (reply, answer) = oneshot::channel();
        // Only a writer task that died (panicked) drops its end: retry the job elsewhere.
        let gone = || TaskError::Retryable("the checkpoint writer stopped; will retry".into());
        self.requests
            .blocking_send(request(reply))
            .map_err(|_| gone())?;
        answer.blocking_recv().map_err(|_| gone())?
    }
}

impl Target {
    /// Answers requests in the order they come until every `Writer` is gone.
    async fn serve(self, mut requests: mpsc::Receiver<Request>) {
        while let Some(request) = requests.recv().await {
            // A reply nobody waits for any more (the thread is gone) is dropped.
            match request {
                Request::Checkpoint { step, bytes, reply } => {
                    let _ = reply.send(self.checkpoint(step, bytes).await);
                }
                Request::Prune { current, reply } => {
                    let _ = reply.send(self.prune(current).await);
                }
                Request::StartAfresh { reply } => {
                    let reset = self.state.start_afresh(&self.job_id, "train").await;
                    let _ = reply.send(reset.map_err(TaskError::from));
                }
                Request::Progress { progress, reply } => {
                    let stored =
                        store_progress(self.state.clone(), self.job_id.clone(), &progress).await;
                    let _ = reply.send(stored.map_err(TaskError::from));
                }
            }
        }
    }

    async fn checkpoint(&self, step: u64, bytes: Vec<u8>) -> Result<bool, TaskError> {
        // The fencing token in the name: a stale owner never overwrites the object the
        // current owner's pointer names.
        let uri = self
            .checkpoints
            .join(&format!("step-{step:010}-{}.safetensors", self.lease.token));
        self.storage
            .put(&uri, bytes, "application/octet-stream")
            .await?;
        Ok(self
            .state
            .commit_checkpoint(&self.job_id, &self.lease, &uri.to_string())
            .await?)
    }

    /// Deletes the checkpoints up to step `current` but the last `keep`.
    async fn prune(&self, current: u64) -> Result<(), TaskError> {
        let mut steps: Vec<_> = self
            .storage
            .list(&self.checkpoints)
            .await?
            .into_iter()
            .filter_map(|o| {
                let name = o.uri.key.rsplit('/').next()?.to_string();
                let step: u64 = name
                    .strip_prefix("step-")?
                    .split(['-', '.'])
                    .next()?
                    .parse()
                    .ok()?;
                (step <= current).then_some((step, o.uri))
            })
            .collect();
        steps.sort_by_key(|(step, _)| *step);
        let old = steps.len().saturating_sub(self.keep);
        for (_, uri) in steps.into_iter().take(old) {
            self.storage.delete(&uri).await?;
        }
        Ok(())
    }
}

/// Stores a training job's progress (and its sign of life for the sweeper).
pub fn store_progress(
    state: StateStore,
    job_id: String,
    progress: &TrainingProgress,
) -> impl std::future::Future<Output = Result<(), crate::state::StateError>> + use<> {
    let json = serde_json::to_string(progress).expect("progress serialises");
    async move {
        state
            .set_fields(
                &job_id,
                &[("training", json), ("progress_ms", now_ms().to_string())],
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_writer_fails_the_run_for_a_retry_instead_of_hanging_it() {
        // No task behind the channel: as if the writer had panicked.
        let (requests, receiver) = mpsc::channel(1);
        drop(receiver);
        let writer = Writer { requests };
        let err = writer.checkpoint(7, vec![1, 2, 3]).unwrap_err();
        assert!(
            matches!(&err, TaskError::Retryable(m) if m.contains("checkpoint writer stopped")),
            "{err:?}"
        );
        // A request taken but never answered (the task died mid-write) fails the same way.
        let (requests, mut receiver) = mpsc::channel(1);
        let writer = Writer { requests };
        let dropper = std::thread::spawn(move || drop(receiver.blocking_recv()));
        let err = writer.start_afresh().unwrap_err();
        dropper.join().unwrap();
        assert!(matches!(err, TaskError::Retryable(_)), "{err:?}");
    }
}
