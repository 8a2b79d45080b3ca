//! Finishing a job once its last shard is committed: `_manifest.json`, then `_SUCCESS`, then
//! the final status (or failure when too many rows were bad).

use serde::Serialize;

use super::{TaskError, WorkerContext};
use crate::job::JobStatus;
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
    total: u64,
    succeeded: u64,
    failed: u64,
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
    let total = succeeded + failed;
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
        },
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
    let too_many_errors = total > 0 && failed as f64 > job.spec.max_error_rate * total as f64;
    let (status, fields) = if too_many_errors {
        let error = format!(
            "{failed} of {total} rows failed ({:.2}%), above max_error_rate {}; the bad rows and why are in {}",
            100.0 * failed as f64 / total as f64,
            job.spec.max_error_rate,
            output.join("errors/"),
        );
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
    let moved = ctx
        .state
        .transition(job_id, &[JobStatus::Running], status, &fields)
        .await?;
    match moved {
        Transition::Moved(_) => {
            metrics::job_finished(
                job.spec.kind.as_str(),
                status.as_str(),
                job.started_ms,
                finished_ms,
            );
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
