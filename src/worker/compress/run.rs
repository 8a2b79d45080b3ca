//! Running a leased compression job: fetch the package, rewrite its graphs to int8, read the
//! sample, measure both models, and write the int8 package only if the gate holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::super::training::plan::{PINNED_INPUTS, unpin_inputs};
use super::super::{TaskError, WorkerContext, inputs};
use super::files::{self, Scratch};
use super::measure::{self, Measured};
use super::report;
use crate::compress::QuantizeOptions;
use crate::job::{JobStatus, ModelManifest, ModelTask};
use crate::metrics;
use crate::state::{JobRecord, Lease, Transition, now_ms};
use crate::train::features::read_labeled;

/// Job field holding the compression report (and, while running, the stage reached).
pub const REPORT_FIELD: &str = "compression";

/// How a compression run on this worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compressed {
    Succeeded,
    /// Stopped (cancelled, lease lost, shutdown) or the job left running meanwhile.
    Stopped,
}

/// Compresses the job's package; `stop` is raised on cancellation, lease loss or shutdown.
pub async fn execute(
    ctx: &WorkerContext,
    job: &JobRecord,
    lease: &Lease,
    stop: Arc<AtomicBool>,
) -> Result<Compressed, TaskError> {
    let began = Instant::now();
    let spec = &job.spec;
    let settings = spec.compress.clone().unwrap_or_default();
    let source_uri = spec.model_uri();
    let manifest = ctx.models.manifest(&source_uri).await?;
    if manifest.precision == "int8" {
        return Err(TaskError::permanent(format!(
            "model package {} is int8 already; compress its float package",
            spec.model
        )));
    }
    stage(ctx, &job.id, "fetching the package").await;
    let scratch = Scratch::new(&job.id)?;
    files::fetch(ctx, &source_uri, &manifest, &scratch.source()).await?;
    stage(ctx, &job.id, "quantizing").await;
    let (source_dir, int8_dir) = (scratch.source(), scratch.int8());
    let (int8_manifest, graphs) = {
        let (manifest, name) = (manifest.clone(), spec.name.clone());
        let options = QuantizeOptions {
            per_channel: settings.per_channel,
            after_gelu: settings.quantize_after_gelu,
        };
        let (from, to) = (source_dir.clone(), int8_dir.clone());
        tokio::task::spawn_blocking(move || files::quantize(&manifest, &name, &from, &to, options))
            .await
            .map_err(|e| TaskError::Retryable(format!("quantizing thread: {e}")))??
    };
    if stop.load(Ordering::Relaxed) {
        return Ok(Compressed::Stopped);
    }
    stage(ctx, &job.id, "reading the sample").await;
    let (texts, labels) = sample(ctx, job, &manifest, settings.sample_rows).await?;
    stage(ctx, &job.id, "measuring both models on the sample").await;
    let engine = &ctx.settings.engine;
    let source = measure::load(&source_dir, &manifest, engine).await?;
    let int8 = measure::load(&int8_dir, &int8_manifest, engine).await?;
    let measured: Measured = match measure::measure(
        source,
        int8,
        &texts,
        labels.as_deref(),
        settings.speed_rounds,
        stop.clone(),
    )
    .await
    {
        Err(_) if stop.load(Ordering::Relaxed) => return Ok(Compressed::Stopped),
        other => other?,
    };
    let verdict = report::verdict(&measured, &settings);
    let report = report::build(&report::Inputs {
        source_uri: &spec.model,
        target_uri: &spec.output.uri,
        source: &manifest,
        int8: &int8_manifest,
        spec: &settings,
        sample_rows: texts.len(),
        sample_uri: &spec.input.uri,
        graphs: &graphs,
        measured: &measured,
        verdict: &verdict,
        seconds: began.elapsed().as_secs_f64(),
    });
    let json = report.to_string();
    if let Err(failed) = verdict {
        // The figures stay on the job, so the failure can be read in full.
        ctx.state
            .set_fields(&job.id, &[(REPORT_FIELD, json)])
            .await?;
        return Err(TaskError::permanent(format!(
            "compression gate failed on {} sample rows: {}; the int8 package was not written (try compress.per_channel = true, or a gate the use can afford)",
            texts.len(),
            failed.join("; ")
        )));
    }
    // A stale owner must not write the package over the new owner's.
    if stop.load(Ordering::Relaxed)
        || !ctx
            .state
            .renew_job_lease(&job.id, lease, ctx.settings.training.lease_ttl_secs * 1000)
            .await?
    {
        return Ok(Compressed::Stopped);
    }
    files::upload(ctx, &int8_dir, &int8_manifest, &report, &spec.output_uri()).await?;
    complete(ctx, job, &int8_manifest, texts.len(), json).await
}

/// Shows the stage reached on the job (best effort: progress is never worth a failure).
async fn stage(ctx: &WorkerContext, job_id: &str, what: &str) {
    let json = serde_json::json!({ "stage": what }).to_string();
    if let Err(e) = ctx.state.set_fields(job_id, &[(REPORT_FIELD, json)]).await {
        tracing::warn!(job_id, error = %e, "could not record the compression stage");
    }
}

/// The sample's first `rows` texts, and their labels for a classifier package.
async fn sample(
    ctx: &WorkerContext,
    job: &JobRecord,
    manifest: &ModelManifest,
    rows: usize,
) -> Result<(Vec<String>, Option<Vec<String>>), TaskError> {
    let spec = &job.spec;
    let objects = match ctx.state.field(&job.id, PINNED_INPUTS).await? {
        Some(json) => unpin_inputs(&json)?,
        None => inputs::job_inputs(ctx, spec).await?,
    };
    let classify = manifest.task == ModelTask::Classify;
    // An embedding package needs texts only: the text field stands in for the label.
    let label_field = if classify {
        spec.label_field()
    } else {
        &spec.input.text_field
    };
    let mut read = read_labeled(
        &ctx.storage,
        &objects,
        spec.input.format,
        &spec.input.text_field,
        label_field,
    )
    .await
    .map_err(|e| match e {
        crate::train::features::FeatureError::Data(message) if classify => TaskError::Permanent(
            format!("{message} (a classifier package is gated on the sample's labels, read from input.label_field)"),
        ),
        other => other.into(),
    })?;
    read.texts.truncate(rows);
    read.labels.truncate(rows);
    Ok((read.texts, classify.then_some(read.labels)))
}

/// Marks the job succeeded with its report, unless it left running meanwhile.
async fn complete(
    ctx: &WorkerContext,
    job: &JobRecord,
    manifest: &ModelManifest,
    rows: usize,
    report: String,
) -> Result<Compressed, TaskError> {
    let moved = ctx
        .state
        .transition(
            &job.id,
            &[JobStatus::Running],
            JobStatus::Succeeded,
            &[
                ("finished_ms", now_ms().to_string()),
                (REPORT_FIELD, report),
                ("rows_done", rows.to_string()),
                ("package_sha256", manifest.model_sha256().to_string()),
            ],
        )
        .await?;
    match moved {
        Transition::Moved(_) => {
            metrics::job_finished(
                metrics::JobKind::Compress,
                metrics::FinalStatus::Succeeded,
                job.started_ms,
                now_ms(),
            );
            tracing::info!(job_id = %job.id, package = %job.spec.output_uri(), "compression job succeeded");
            Ok(Compressed::Succeeded)
        }
        Transition::Refused(status) => {
            tracing::info!(job_id = %job.id, %status, "compression finished but the job is {status}; leaving it");
            Ok(Compressed::Stopped)
        }
    }
}
