//! Finishing a job once its last shard is committed: `_manifest.json`, then `_SUCCESS`, then
//! the final status (or failure when too many rows were bad).

use serde::Serialize;

use super::ids::{self, Duplicates};
use super::{TaskError, WorkerContext};
use crate::job::accounting::{self, ObjectRows, PieceCounts};
use crate::job::{JobStatus, OnDuplicateId, TaskMessage};
use crate::metrics;
use crate::state::{ShardCommit, Transition, now_ms};

#[derive(Serialize)]
struct Manifest<'a> {
    job_id: &'a str,
    name: &'a str,
    task: crate::job::Task,
    model: ManifestModel<'a>,
    input: &'a str,
    output: String,
    parts: Vec<ManifestPart<'a>>,
    error_parts: Vec<&'a str>,
    rows: ManifestRows,
    /// Per input object: read = written + failed + skipped (absent for jobs planned by
    /// older versions).
    #[serde(skip_serializing_if = "Option::is_none")]
    inputs: Option<Vec<ObjectRows>>,
    duplicate_ids: Duplicates,
    timings: ManifestTimings,
}

#[derive(Serialize)]
struct ManifestModel<'a> {
    uri: &'a str,
    sha256: Option<&'a str>,
}

#[derive(Serialize)]
struct ManifestPart<'a> {
    shard: u32,
    uri: &'a str,
    rows: u64,
    failed_rows: u64,
    seconds: f64,
    worker: &'a str,
}

#[derive(Serialize)]
struct ManifestRows {
    /// Records read (blank lines included): succeeded + failed + skipped.
    total: u64,
    succeeded: u64,
    failed: u64,
    /// Blank lines.
    skipped: u64,
    /// Succeeded rows whose text was cut to the model's max length.
    truncated: u64,
    /// Every input held only a header or blank lines.
    empty_input: bool,
}

#[derive(Serialize)]
struct ManifestTimings {
    created_ms: u64,
    started_ms: Option<u64>,
    finished_ms: u64,
    /// From planning to finish.
    run_seconds: f64,
    rows_per_second: f64,
}

/// Finishes the job if every shard is committed and it is still running. Safe to call
/// more than once (from a redelivered shard): the status moves only once.
pub async fn finish_if_complete(ctx: &WorkerContext, job_id: &str) -> Result<(), TaskError> {
    let job = ctx.state.get(job_id).await?;
    if job.status != JobStatus::Running || job.shards_done < job.shards_total {
        return Ok(());
    }
    run(ctx, job_id).await
}

/// Writes the manifest and marker and sets the final status.
pub async fn run(ctx: &WorkerContext, job_id: &str) -> Result<(), TaskError> {
    let job = ctx.state.get(job_id).await?;
    if job.status != JobStatus::Running {
        return Ok(());
    }
    let commits: Vec<ShardCommit> = ctx.state.committed_shards(job_id).await?;
    let succeeded: u64 = commits.iter().map(|c| c.rows).sum();
    let failed: u64 = commits.iter().map(|c| c.failed_rows).sum();
    let truncated: u64 = commits.iter().map(|c| c.truncated_rows).sum();
    // Every object's records must be accounted for before anything claims success.
    let inputs = match reconcile(ctx, job_id, &commits).await? {
        Ok(inputs) => inputs,
        Err(mismatch) => {
            return Err(TaskError::permanent(format!(
                "row accounting does not add up, so the job is failed rather than reported succeeded: {mismatch}"
            )));
        }
    };
    super::error_lines::fill(ctx, job_id, &commits).await?;
    let skipped: u64 = inputs.iter().flatten().map(|o| o.skipped).sum();
    let empty_input = inputs
        .as_ref()
        .is_some_and(|objects| objects.iter().all(|o| o.empty));
    let total = succeeded + failed + skipped;
    let duplicates = ids::find_duplicates(&ctx.storage, &commits).await?;
    let finished_ms = now_ms();
    let run_seconds = job
        .started_ms
        .map_or(0.0, |s| finished_ms.saturating_sub(s) as f64 / 1000.0);
    let output = job.spec.output_uri();
    let manifest = Manifest {
        job_id,
        name: &job.name,
        task: job.spec.task,
        model: ManifestModel {
            uri: &job.spec.model,
            sha256: job.model_sha256.as_deref(),
        },
        input: &job.spec.input.uri,
        output: output.to_string(),
        parts: commits
            .iter()
            .map(|c| ManifestPart {
                shard: c.shard,
                uri: &c.part,
                rows: c.rows,
                failed_rows: c.failed_rows,
                seconds: c.seconds,
                worker: &c.worker,
            })
            .collect(),
        error_parts: commits
            .iter()
            .filter_map(|c| c.errors_part.as_deref())
            .collect(),
        rows: ManifestRows {
            total,
            succeeded,
            failed,
            skipped,
            truncated,
            empty_input,
        },
        inputs,
        duplicate_ids: duplicates.clone(),
        timings: ManifestTimings {
            created_ms: job.created_ms,
            started_ms: job.started_ms,
            finished_ms,
            run_seconds,
            rows_per_second: if run_seconds > 0.0 {
                succeeded as f64 / run_seconds
            } else {
                0.0
            },
        },
    };
    let body = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    ctx.storage
        .put(&output.join("_manifest.json"), body, "application/json")
        .await?;
    let rows = succeeded + failed;
    let too_many_errors = rows > 0 && failed as f64 > job.spec.max_error_rate * rows as f64;
    let duplicates_refused =
        duplicates.ids > 0 && job.spec.output.on_duplicate_id == OnDuplicateId::Fail;
    let (status, mut fields) = if too_many_errors || duplicates_refused {
        let error = if too_many_errors {
            format!(
                "{failed} of {rows} rows failed ({:.2}%), above max_error_rate {}; the bad rows and why are in {}",
                100.0 * failed as f64 / rows as f64,
                job.spec.max_error_rate,
                output.join("errors/"),
            )
        } else {
            let named: Vec<&str> = duplicates.examples.iter().map(|d| d.id.get()).collect();
            format!(
                "{} ids occur more than once ({} repeated rows; first: {}) and output.on_duplicate_id = \"fail\"; the full list is in {}",
                duplicates.ids,
                duplicates.rows,
                named.join(", "),
                output.join("_manifest.json"),
            )
        };
        (
            JobStatus::Failed,
            vec![("finished_ms", finished_ms.to_string()), ("error", error)],
        )
    } else {
        ctx.storage
            .put(&output.join("_SUCCESS"), Vec::new(), "text/plain")
            .await?;
        (
            JobStatus::Succeeded,
            vec![("finished_ms", finished_ms.to_string())],
        )
    };
    if !job.rows_known {
        // Planned without reading: now every row has been counted.
        fields.push(("rows_total", rows.to_string()));
        fields.push(("rows_known", "1".to_string()));
    }
    let moved = ctx
        .state
        .transition(job_id, &[JobStatus::Running], status, &fields)
        .await?;
    match moved {
        Transition::Moved(_) => {
            if let Some(label) = status.final_label() {
                metrics::job_finished(job.spec.kind.into(), label, job.started_ms, finished_ms);
            }
            tracing::info!(job_id, %status, rows = succeeded, failed, run_seconds, "job finished");
        }
        // Cancelled at the last moment: the marker must not claim success.
        Transition::Refused(now)
            if status == JobStatus::Succeeded && now != JobStatus::Succeeded =>
        {
            ctx.storage.delete(&output.join("_SUCCESS")).await?;
        }
        Transition::Refused(_) => {}
    }
    Ok(())
}

/// Reconciles the committed shards' counts with the plan: `Ok(Err(..))` names the mismatch;
/// `Ok(Ok(None))` for a job planned by an older version, which kept no counts.
async fn reconcile(
    ctx: &WorkerContext,
    job_id: &str,
    commits: &[ShardCommit],
) -> Result<Result<Option<Vec<ObjectRows>>, String>, TaskError> {
    let Some(objects) = ctx.state.inputs(job_id).await? else {
        return Ok(Ok(None));
    };
    let mut planned = Vec::new();
    for (index, task) in ctx.state.plan(job_id).await? {
        let task: TaskMessage = serde_json::from_str(&task)
            .map_err(|e| TaskError::permanent(format!("stored plan of job {job_id}: {e}")))?;
        if let TaskMessage::Shard(shard) = task {
            let pieces = shard
                .pieces
                .into_iter()
                .map(|p| (p.uri, p.start, p.rows, p.blank))
                .collect();
            planned.push((index, pieces));
        }
    }
    let committed: Vec<(u32, Vec<PieceCounts>)> = commits
        .iter()
        .map(|c| (c.shard, c.pieces.clone()))
        .collect();
    Ok(accounting::reconcile(&objects, &planned, &committed).map(Some))
}
