//! The S3 drop folder (`sluice ingest`): a file dropped under `<inbox><pipeline>/` becomes a
//! job from that pipeline's template; when the job ends the file moves to the archive (or
//! to the failed prefix with `<file>.error.json`), its results sit in the outbox.
//!
//! Exactly one job per (file, content): the idempotency key is the object's key and ETag,
//! so several replicas, restarts and rescans all name the same job, and a file uploaded
//! again with new content (a new ETag) is a new job. Inputs stay in the inbox while their
//! job runs; the job streams them, ingest never reads them.

mod template;

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use template::{DropError, FillError, Template, TemplateError, format_for};

use crate::job::{Allowance, JobStatus, LocationRefused};
use crate::metrics;
use crate::settings::IngestSettings;
use crate::state::{StateError, StateStore};
use crate::storage::{ObjectInfo, Storage, StorageError};
use crate::submit::{Origin, SubmitError, Submitter};
use crate::uri::S3Uri;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("setting {field}: {reason}")]
    Setting { field: &'static str, reason: String },
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("no pipelines configured: add ingest.pipelines (inbox sub-folder = job template)")]
    NoPipelines,
    #[error(
        "pipeline {pipeline:?}: {refused}; widen ingest.allow.{pipeline} or change the template or the ingest folders"
    )]
    Forbidden {
        pipeline: String,
        refused: LocationRefused,
    },
}

/// A scan that could not finish: retried at the next interval.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Unavailable(String),
}

/// What one scan did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanReport {
    pub submitted: usize,
    pub archived: usize,
    pub failed: usize,
    /// Files whose job is still running.
    pub waiting: usize,
    /// Files that hit an S3 error; tried again next scan.
    pub errors: usize,
}

pub struct DropFolder {
    settings: IngestSettings,
    inbox: S3Uri,
    outbox: S3Uri,
    archive: S3Uri,
    failed: S3Uri,
    pipelines: BTreeMap<String, Pipeline>,
    submitter: Submitter,
    state: StateStore,
    storage: Storage,
    /// Keys already warned about (outside any pipeline), so each is logged once.
    warned: Mutex<HashSet<String>>,
}

/// One inbox sub-folder: the job every file dropped there becomes, and where such jobs may
/// read and write.
struct Pipeline {
    template: Template,
    allowance: Allowance,
}

/// One file in the inbox.
struct DroppedFile {
    object: ObjectInfo,
    pipeline: String,
    /// Path below the pipeline folder.
    file: String,
    /// Short form of the ETag: names this content's outbox, archive and failed folders.
    version: String,
}

impl DroppedFile {
    fn idempotency_key(&self) -> String {
        format!(
            "ingest:{}/{}@{}",
            self.object.uri.bucket,
            self.object.uri.key,
            self.object.etag.trim_matches('"')
        )
    }
}

impl DropFolder {
    /// Loads and checks every pipeline template; a bad one stops `ingest` from starting.
    pub fn new(
        settings: IngestSettings,
        submitter: Submitter,
        state: StateStore,
        storage: Storage,
    ) -> Result<Self, IngestError> {
        let folder = |field: &'static str, text: &str| {
            S3Uri::parse(text)
                .map(|uri| uri.as_prefix())
                .map_err(|reason| IngestError::Setting { field, reason })
        };
        if settings.pipelines.is_empty() {
            return Err(IngestError::NoPipelines);
        }
        let inbox = folder("ingest.inbox", &settings.inbox)?;
        let outbox = folder("ingest.outbox", &settings.outbox)?;
        let mut pipelines = BTreeMap::new();
        for (name, path) in &settings.pipelines {
            let template = Template::load(path)?;
            let holder = format!("drop-folder pipeline {name:?} (ingest.allow.{name})");
            let allowance = match settings.allow.get(name) {
                Some(allow) => {
                    Allowance::parse(holder, allow).map_err(|reason| IngestError::Setting {
                        field: "ingest.allow",
                        reason,
                    })?
                }
                None => {
                    tracing::info!(
                        pipeline = %name,
                        "jobs of this pipeline may use any S3 location (no ingest.allow.{name})"
                    );
                    Allowance::any(holder)
                }
            };
            // Every file of this pipeline will name the template's model, a file in the
            // inbox and a folder in the outbox: refuse now what every file would be refused.
            let example = template
                .fill(
                    &inbox.join(&format!("{name}/example.jsonl")).to_string(),
                    "",
                    "example.jsonl",
                    &outbox.join(&format!("{name}/v/example.jsonl/")).to_string(),
                )
                .map_err(|e| IngestError::Setting {
                    field: "ingest.pipelines",
                    reason: format!("pipeline {name:?}: {e}"),
                })?;
            allowance
                .check(&example)
                .map_err(|refused| IngestError::Forbidden {
                    pipeline: name.clone(),
                    refused,
                })?;
            pipelines.insert(
                name.clone(),
                Pipeline {
                    template,
                    allowance,
                },
            );
        }
        Ok(Self {
            inbox,
            outbox,
            archive: folder("ingest.archive", &settings.archive)?,
            failed: folder("ingest.failed", &settings.failed)?,
            settings,
            pipelines,
            submitter,
            state,
            storage,
            warned: Mutex::new(HashSet::new()),
        })
    }

    /// Scans every poll interval until `shutdown`; a scan in progress finishes first.
    pub async fn run(self, shutdown: CancellationToken) {
        let interval = Duration::from_secs(self.settings.poll_interval_secs);
        tracing::info!(
            inbox = %self.inbox,
            pipelines = ?self.pipelines.keys().collect::<Vec<_>>(),
            ?interval,
            "watching the drop folder"
        );
        // The same failure every interval (a missing bucket) is logged once, not forever.
        let mut last_error = None;
        while !shutdown.is_cancelled() {
            match self.scan().await {
                Ok(report) => {
                    if last_error.take().is_some() {
                        tracing::info!("drop folder scans work again");
                    }
                    if report != ScanReport::default() {
                        tracing::info!(?report, "drop folder scanned");
                    }
                }
                Err(e) => {
                    metrics::INGEST_SCAN_ERRORS.inc();
                    let text = e.to_string();
                    if last_error.as_ref() != Some(&text) {
                        tracing::warn!(error = %text, "drop folder scan failed; retrying every interval");
                    }
                    last_error = Some(text);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// One pass over the inbox: submits new files (at most `max_new_files_per_scan`), and
    /// moves the files whose job ended.
    pub async fn scan(&self) -> Result<ScanReport, ScanError> {
        let mut report = ScanReport::default();
        let mut new_files = 0;
        for object in self.storage.list(&self.inbox).await? {
            let Some(drop) = self.route(object) else {
                continue;
            };
            let key = drop.idempotency_key();
            let handled = match self.state.job_for_idempotency_key(&key).await? {
                Some(job_id) => self.settle(&drop, &job_id, &mut report).await,
                None if new_files < self.settings.max_new_files_per_scan => {
                    new_files += 1;
                    self.submit(&drop, &key, &mut report).await
                }
                None => Ok(()),
            };
            match handled {
                Ok(()) => {}
                // Redis or the API's dependencies are down: the rest of the scan would fail
                // the same way.
                Err(e @ (ScanError::State(_) | ScanError::Unavailable(_))) => return Err(e),
                // One file's trouble (a copy S3 refuses, a transient error) must not hold
                // up the files after it.
                Err(ScanError::Storage(e)) => {
                    metrics::INGEST_SCAN_ERRORS.inc();
                    report.errors += 1;
                    tracing::warn!(file = %drop.object.uri, error = %e, "could not handle a dropped file; retrying next scan");
                }
            }
        }
        Ok(report)
    }

    /// Which pipeline a listed object belongs to; `None` for folder markers, empty
    /// objects and files outside every pipeline folder (warned about once).
    fn route(&self, object: ObjectInfo) -> Option<DroppedFile> {
        let relative = object.uri.key.strip_prefix(&self.inbox.key)?;
        if relative.ends_with('/') || object.size == 0 {
            return None;
        }
        let (pipeline, file) = relative.split_once('/').unwrap_or(("", relative));
        if file.is_empty() || !self.pipelines.contains_key(pipeline) {
            let mut warned = self.warned.lock().expect("warned set poisoned");
            if warned.insert(object.uri.key.clone()) {
                tracing::warn!(
                    file = %object.uri,
                    pipelines = ?self.pipelines.keys().collect::<Vec<_>>(),
                    "file is not in a pipeline folder of the inbox; left where it is"
                );
            }
            return None;
        }
        let version = version_of(&object.etag);
        Some(DroppedFile {
            pipeline: pipeline.to_string(),
            file: file.to_string(),
            version,
            object,
        })
    }

    fn place(&self, root: &S3Uri, drop: &DroppedFile) -> S3Uri {
        root.join(&format!("{}/{}/{}", drop.pipeline, drop.version, drop.file))
    }

    async fn submit(
        &self,
        drop: &DroppedFile,
        key: &str,
        report: &mut ScanReport,
    ) -> Result<(), ScanError> {
        let pipeline = &self.pipelines[&drop.pipeline];
        let output = self.place(&self.outbox, drop).as_prefix();
        let spec = match pipeline.template.fill(
            &drop.object.uri.to_string(),
            &drop.object.etag,
            &drop.file,
            &output.to_string(),
        ) {
            Ok(spec) => spec,
            Err(e) => {
                let error = serde_json::json!({ "error": e.to_string() });
                return self.move_to_failed(drop, error, report).await;
            }
        };
        match self
            .submitter
            .submit(
                &spec,
                &Origin {
                    idempotency_key: Some(key),
                    allowance: Some(&pipeline.allowance),
                    ..Origin::new("ingest")
                },
            )
            .await
        {
            Ok(submitted) => {
                if submitted.created {
                    report.submitted += 1;
                    metrics::INGEST_FILES
                        .with(metrics::IngestOutcome::Submitted)
                        .inc();
                    tracing::info!(job_id = %submitted.id, file = %drop.object.uri, output = %output, "dropped file submitted");
                } else {
                    report.waiting += 1;
                }
                Ok(())
            }
            Err(SubmitError::Invalid(e)) => {
                let error = serde_json::json!({ "error": e.to_string(), "field": e.field });
                self.move_to_failed(drop, error, report).await
            }
            Err(SubmitError::Forbidden(refused)) => {
                let error =
                    serde_json::json!({ "error": refused.to_string(), "field": refused.field });
                self.move_to_failed(drop, error, report).await
            }
            Err(SubmitError::OutputInUse(reason)) => {
                // Another version's job cannot hold this version's folder; if it does,
                // wait for it rather than fail the file.
                tracing::warn!(file = %drop.object.uri, %reason, "output folder busy; retrying next scan");
                report.waiting += 1;
                Ok(())
            }
            Err(SubmitError::Unavailable(reason)) => Err(ScanError::Unavailable(reason)),
        }
    }

    /// A file with a job: moved once the job has ended.
    async fn settle(
        &self,
        drop: &DroppedFile,
        job_id: &str,
        report: &mut ScanReport,
    ) -> Result<(), ScanError> {
        let job = match self.state.get(job_id).await {
            Ok(job) => job,
            // The job was discarded (it could not be queued) together with its key: the
            // next scan submits the file again.
            Err(StateError::NotFound(_)) => {
                report.waiting += 1;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        match job.status {
            JobStatus::Succeeded => {
                let to = self.place(&self.archive, drop);
                self.move_object(drop, &to).await?;
                report.archived += 1;
                metrics::INGEST_FILES
                    .with(metrics::IngestOutcome::Archived)
                    .inc();
                tracing::info!(%job_id, file = %drop.object.uri, archive = %to, "dropped file done; archived");
                Ok(())
            }
            JobStatus::Failed | JobStatus::Cancelled => {
                let error = serde_json::json!({
                    "error": job.error.clone().unwrap_or_else(|| format!("job {}", job.status)),
                    "job_id": job_id,
                    "status": job.status,
                    "output": job.spec.output.uri,
                    "rows_done": job.rows_done,
                    "rows_failed": job.rows_failed,
                });
                self.move_to_failed(drop, error, report).await
            }
            _ => {
                report.waiting += 1;
                Ok(())
            }
        }
    }

    /// Writes `<failed>/…/<file>.error.json` (what went wrong, which file), then moves the
    /// file beside it.
    async fn move_to_failed(
        &self,
        drop: &DroppedFile,
        mut error: serde_json::Value,
        report: &mut ScanReport,
    ) -> Result<(), ScanError> {
        let to = self.place(&self.failed, drop);
        error["file"] = drop.object.uri.to_string().into();
        error["etag"] = drop.object.etag.clone().into();
        error["pipeline"] = drop.pipeline.clone().into();
        error["failed_at_ms"] = crate::state::now_ms().into();
        let body = serde_json::to_vec_pretty(&error).expect("JSON serialises");
        let error_uri = S3Uri::new(&to.bucket, format!("{}.error.json", to.key));
        self.storage
            .put(&error_uri, body, "application/json")
            .await?;
        self.move_object(drop, &to).await?;
        report.failed += 1;
        metrics::INGEST_FILES
            .with(metrics::IngestOutcome::Failed)
            .inc();
        tracing::warn!(file = %drop.object.uri, moved_to = %to, reason = %error["error"], "dropped file failed");
        Ok(())
    }

    /// Copy, then delete: both only while the inbox object is still this version, so a file
    /// re-uploaded meanwhile stays in the inbox as the new drop it is.
    async fn move_object(&self, drop: &DroppedFile, to: &S3Uri) -> Result<(), StorageError> {
        let etag = drop.object.etag.as_str();
        match self.storage.copy(&drop.object.uri, to, Some(etag)).await {
            Ok(()) => {}
            Err(StorageError::Changed { .. } | StorageError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
        match self.storage.delete_if_match(&drop.object.uri, etag).await {
            Ok(()) | Err(StorageError::Changed { .. } | StorageError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The first 16 hex digits of an ETag (quotes and the multipart `-N` suffix dropped).
fn version_of(etag: &str) -> String {
    let digits: String = etag
        .trim_matches('"')
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(16)
        .collect();
    if digits.is_empty() {
        "unversioned".to_string()
    } else {
        digits.to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::version_of;

    #[test]
    fn versions_come_from_the_etag() {
        assert_eq!(
            version_of("\"9B2CF535F27731C974343645A3985328\""),
            "9b2cf535f27731c9"
        );
        assert_eq!(version_of("\"d41d8cd9-3\""), "d41d8cd93");
        assert_eq!(version_of(""), "unversioned");
    }
}
