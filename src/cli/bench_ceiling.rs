//! `sluice bench`'s pipeline ceiling: rows/s of whole jobs through an in-process worker whose
//! engine costs nothing (S3 read, parse, tokenize, batch, pool, serialize, S3 write, commit),
//! for JSONL and Parquet output, serial and overlapped, with each stage's share of the time.
//! It is the most a worker could feed a model: a GPU faster than this is starved.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::bench_job::{jsonl, run_job};
use super::model_push::{PushOptions, push};
use crate::app::Services;
use crate::engine::{Embedder, EngineError, InferenceBackend, TokenBatch, load_tokenizer};
use crate::job::{JobSpec, parse_json_spec};
use crate::metrics::{self, Stage};
use crate::settings::Settings;
use crate::state::now_ms;
use crate::submit::Submitter;
use crate::uri::S3Uri;
use crate::worker::{self, WorkerContext};

/// The stages timed, in pipeline order.
const STAGES: [Stage; 6] = [
    Stage::Read,
    Stage::Tokenize,
    Stage::Run,
    Stage::Pool,
    Stage::Write,
    Stage::Commit,
];

/// One ceiling job: its output format, pipeline, speed and where its time went.
#[derive(Debug, Clone, Serialize)]
pub struct CeilingFigure {
    /// `jsonl` or `parquet`.
    pub format: String,
    /// `serial` (worker.pipeline_depth 0) or `overlapped (depth N)`.
    pub pipeline: String,
    pub rows: usize,
    /// Submit to finish, planning and finishing included.
    pub seconds: f64,
    pub rows_per_second: f64,
    /// Against the serial pipeline's figure for the same format, same run.
    pub ratio_to_serial: f64,
    /// Each stage's summed time as % of `seconds` (overlapped stages may sum past 100).
    pub stage_percent: BTreeMap<String, f64>,
}

/// Hidden states at the cost of a copy: what a model infinitely fast would hand back.
/// Values vary (not all zero), so pooling and serializing cost what they do for real ones.
struct FreeModel {
    dimension: usize,
    pattern: Vec<f32>,
}

impl InferenceBackend for FreeModel {
    fn hidden_states(&mut self, batch: &TokenBatch) -> Result<Vec<f32>, EngineError> {
        let n = batch.rows * batch.seq * self.dimension;
        let mut state = self.pattern.len() as u32 + 1;
        while self.pattern.len() < n {
            // xorshift: cheap, deterministic, spread over [-1, 1).
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            self.pattern
                .push(state as f32 / u32::MAX as f32 * 2.0 - 1.0);
        }
        Ok(self.pattern[..n].to_vec())
    }
}

/// Runs `rows` rows (the texts, cycled) as jobs through in-process workers with a free
/// model: serial then overlapped, each with JSONL then Parquet output.
pub(super) async fn ceiling(
    settings: &Settings,
    model_dir: &Path,
    texts: &[String],
    rows: usize,
) -> anyhow::Result<Vec<CeilingFigure>> {
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let mut settings = settings.clone();
    settings.prefix = format!("bench-{tag}");
    let services = Services::connect(Arc::new(settings.clone())).await?;
    let bucket = format!("sluice-ceiling-{tag}");
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
    let cycled: Vec<String> = texts.iter().cycle().take(rows).cloned().collect();
    for (name, body) in [
        ("in.jsonl", jsonl(cycled.iter())),
        ("warm.jsonl", jsonl(cycled.iter().take(2048))),
    ] {
        services
            .storage
            .put(
                &S3Uri::new(&bucket, name),
                body.into_bytes(),
                "application/x-ndjson",
            )
            .await?;
    }
    let submitter = Submitter::new(
        services.state.clone(),
        services.broker.clone(),
        services.storage.clone(),
    );
    let mut figures = Vec::new();
    let overlapped = settings.worker.pipeline_depth.max(1);
    for depth in [0, overlapped] {
        let mut worker_settings = settings.clone();
        worker_settings.worker.pipeline_depth = depth;
        let ctx = Arc::new(WorkerContext::new(
            Arc::new(worker_settings),
            services.broker.clone(),
            services.state.clone(),
            services.storage.clone(),
        ));
        let manifest = ctx.models.manifest(&model).await?;
        let tokenizer = load_tokenizer(&model_dir.join("tokenizer.json"), manifest.max_length)?;
        let free = FreeModel {
            dimension: manifest.dimension,
            pattern: Vec::new(),
        };
        let embedder = Embedder::start(Box::new(free), tokenizer, &manifest, &settings.engine);
        ctx.models.preload(&model, embedder).await?;
        let shutdown = CancellationToken::new();
        let consumer = tokio::spawn(worker::run(ctx.clone(), shutdown.clone()));
        let pipeline = match depth {
            0 => "serial".to_string(),
            depth => format!("overlapped (depth {depth})"),
        };
        for format in ["jsonl", "parquet"] {
            let spec = |input: &str, output: String| -> anyhow::Result<JobSpec> {
                Ok(parse_json_spec(
                    serde_json::json!({
                        "api_version": "sluice/v1", "kind": "inference", "name": "ceiling",
                        "task": "embed", "model": model.to_string(),
                        "input": {"uri": format!("s3://{bucket}/{input}"), "format": "jsonl",
                                  "id_field": "id"},
                        "output": {"uri": output, "format": format},
                    })
                    .to_string()
                    .as_bytes(),
                )?)
            };
            let out = |what: &str| format!("s3://{bucket}/{what}-{format}-{depth}/");
            run_job(&services, &submitter, &spec("warm.jsonl", out("warm"))?).await?;
            let before = STAGES.map(stage_seconds);
            let started = now_ms();
            let job = run_job(&services, &submitter, &spec("in.jsonl", out("out"))?).await?;
            let seconds = (job.finished_ms.unwrap_or_else(now_ms) - started) as f64 / 1000.0;
            let stage_percent = STAGES
                .iter()
                .zip(before)
                .map(|(&stage, before)| {
                    let share = 100.0 * (stage_seconds(stage) - before) / seconds;
                    (stage.as_str().to_string(), share)
                })
                .collect();
            eprintln!("ceiling {format}, {pipeline}: {rows} rows in {seconds:.2} s");
            figures.push(CeilingFigure {
                format: format.into(),
                pipeline: pipeline.clone(),
                rows,
                seconds,
                rows_per_second: rows as f64 / seconds,
                ratio_to_serial: 1.0,
                stage_percent,
            });
        }
        shutdown.cancel();
        consumer.await.context("the in-process worker")?;
        ctx.models
            .shutdown(std::time::Duration::from_secs(10))
            .await;
    }
    for index in 0..figures.len() {
        let serial = figures
            .iter()
            .find(|f| f.format == figures[index].format && f.pipeline == "serial")
            .map_or(f64::NAN, |f| f.rows_per_second);
        figures[index].ratio_to_serial = figures[index].rows_per_second / serial;
    }
    let _ = services.broker.delete_topology().await;
    let _ = services.state.drop_bench_namespace().await;
    Ok(figures)
}

fn stage_seconds(stage: Stage) -> f64 {
    metrics::STAGE_SECONDS.with(stage).get_sample_sum()
}

/// Prints the ceiling figures as a table.
pub(super) fn print(figures: &[CeilingFigure]) {
    println!(
        "\npipeline ceiling (free model)            {:>9} {:>8}  stage time as % of the job's (read tokenize run pool write commit)",
        "rows/s", "× serial"
    );
    for f in figures {
        let shares: Vec<String> = STAGES
            .iter()
            .map(|s| format!("{:>5.1}", f.stage_percent.get(s.as_str()).unwrap_or(&0.0)))
            .collect();
        println!(
            "{:<40} {:>9.0} {:>8.2}  {}",
            format!("{}, {}", f.format, f.pipeline),
            f.rows_per_second,
            f.ratio_to_serial,
            shares.join(" ")
        );
    }
}
