//! `sluice bench`'s whole-job figures: the texts submitted as one job and run by worker
//! processes started for it, timed from submit to finish.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use super::model_push::{PushOptions, push};
use crate::app::Services;
use crate::job::{JobSpec, JobStatus, parse_json_spec};
use crate::settings::Settings;
use crate::state::now_ms;
use crate::submit::{Origin, Submitter};
use crate::uri::S3Uri;

/// Runs the texts as one job with `workers` worker processes (with `worker.pipeline_depth`
/// set when given); returns submit-to-finish seconds and the workers' highest peak RSS (MiB).
pub(super) async fn whole_job(
    settings: &Settings,
    model_dir: &std::path::Path,
    texts: &[String],
    workers: usize,
    pipeline_depth: Option<usize>,
) -> anyhow::Result<(f64, f64)> {
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let mut settings = settings.clone();
    settings.prefix = format!("bench-{tag}");
    let services = Services::connect(Arc::new(settings.clone())).await?;
    let bucket = format!("sluice-bench-{tag}");
    services.storage.create_bucket(&bucket).await?;
    let model = S3Uri::new(&bucket, "model/");
    push(
        &services.storage,
        model_dir,
        &model,
        &PushOptions {
            name: Some("bench".into()),
            max_length: Some(256),
            dimension: Some(384),
            precision: "int8".into(),
            engine: settings.engine.clone(),
            ..Default::default()
        },
    )
    .await?;
    let body = jsonl(texts.iter());
    services
        .storage
        .put(
            &S3Uri::new(&bucket, "in.jsonl"),
            body.into_bytes(),
            "application/x-ndjson",
        )
        .await?;
    let threads = (settings.engine.intra_op_threads / workers).max(1);
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for _ in 0..workers {
        children.push(
            tokio::process::Command::new(&exe)
                .arg("worker")
                .env("SLUICE__PREFIX", &settings.prefix)
                .env(
                    "SLUICE__ENGINE__ORT_DYLIB_PATH",
                    &settings.engine.ort_dylib_path,
                )
                .env("SLUICE__ENGINE__INTRA_OP_THREADS", threads.to_string())
                // A port each: on the default one the second worker would exit at start,
                // and the two-worker figure would time one worker.
                .env("SLUICE__METRICS__LISTEN", "127.0.0.1:0")
                // Enough shards for every worker to stay busy to the end.
                .env(
                    "SLUICE__PLANNER__SHARD_BYTES",
                    (texts.len() as u64 * 150 / (workers as u64 * 4))
                        .max(4096)
                        .to_string(),
                )
                .env(
                    "SLUICE__WORKER__PIPELINE_DEPTH",
                    pipeline_depth
                        .unwrap_or(settings.worker.pipeline_depth)
                        .to_string(),
                )
                .env("SLUICE_LOG", "warn")
                .kill_on_drop(true)
                .spawn()
                .context("starting a worker")?,
        );
    }
    let spec: JobSpec = parse_json_spec(
        serde_json::json!({
            "api_version": "sluice/v1", "kind": "inference", "name": "bench", "task": "embed",
            "model": model.to_string(),
            "input": {"uri": format!("s3://{bucket}/in.jsonl"), "format": "jsonl", "id_field": "id"},
            "output": {"uri": format!("s3://{bucket}/out-{workers}/")},
        })
        .to_string()
        .as_bytes(),
    )?;
    let submitter = Submitter::new(
        services.state.clone(),
        services.broker.clone(),
        services.storage.clone(),
    );
    // A small job first, so every worker has fetched, loaded and warmed the model: the
    // measured job is the steady state of a running fleet.
    let mut warm = spec.clone();
    warm.input.uri = format!("s3://{bucket}/warm.jsonl");
    warm.output.uri = format!("s3://{bucket}/warm-{workers}/");
    let warm_body = jsonl(texts.iter().take(64 * workers));
    services
        .storage
        .put(
            &S3Uri::new(&bucket, "warm.jsonl"),
            warm_body.into_bytes(),
            "application/x-ndjson",
        )
        .await?;
    run_job(&services, &submitter, &warm).await?;
    let started = now_ms();
    let job = run_job(&services, &submitter, &spec).await?;
    let seconds = (job.finished_ms.unwrap_or_else(now_ms) - started) as f64 / 1000.0;
    let mut peak_kib = 0u64;
    for child in &mut children {
        if let Some(pid) = child.id() {
            peak_kib = peak_kib.max(peak_rss_kib(pid).unwrap_or(0));
        }
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    let _ = services.broker.delete_topology().await;
    let _ = services.state.drop_bench_namespace().await;
    Ok((seconds, peak_kib as f64 / 1024.0))
}

/// Submits a job and waits for it to succeed.
pub(super) async fn run_job(
    services: &Services,
    submitter: &Submitter,
    spec: &JobSpec,
) -> anyhow::Result<crate::state::JobRecord> {
    let id = submitter.submit(spec, &Origin::new("bench")).await?.id;
    loop {
        let job = services.state.get(&id).await?;
        if job.status.is_terminal() {
            if job.status != JobStatus::Succeeded {
                bail!("bench job ended {}: {:?}", job.status, job.error);
            }
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Texts as JSONL rows `{"id": n, "text": …}`.
pub(super) fn jsonl<'a>(texts: impl Iterator<Item = &'a String>) -> String {
    texts
        .enumerate()
        .map(|(i, t)| serde_json::json!({"id": i, "text": t}).to_string() + "\n")
        .collect()
}

/// VmHWM (peak resident set) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
