//! Planning: list the job's input, cut it into line-aligned shards (small objects grouped),
//! record the counts, and publish one task per shard.

use super::{TaskError, WorkerContext, finish, inputs};
use crate::job::accounting::PlannedObject;
use crate::job::{InputFormat, InputPiece, JobSpec, JobStatus, ShardTask, TaskMessage};
use crate::state::{JobRecord, Transition, now_ms};
use crate::storage::ObjectInfo;
use crate::storage::records::{
    Record, RecordLimits, RecordReader, check_csv_header, check_utf8, parse_csv_header,
};
use crate::uri::S3Uri;

/// Plans an inference job (training jobs have their own planner, in `training::plan`).
pub async fn run(ctx: &WorkerContext, job: &JobRecord) -> Result<(), TaskError> {
    let job_id = job.id.as_str();
    match job.status {
        JobStatus::Queued | JobStatus::Planning => {
            if !inputs::enter_planning(ctx, job_id).await? {
                return Ok(());
            }
        }
        // A redelivered plan task whose shards may be partly published: publish the stored
        // plan again (duplicates are harmless), never a new cut of a possibly changed input.
        JobStatus::Running => {
            let stored = ctx.state.plan(job_id).await?;
            let tasks: Vec<String> = stored.into_iter().map(|(_, task)| task).collect();
            publish_shards(ctx, &job.spec, &tasks).await?;
            if tasks.is_empty() {
                finish::finish_if_complete(ctx, job_id).await?;
            }
            return Ok(());
        }
        _ => return Ok(()),
    }
    let spec = &job.spec;
    // The model is fixed for the whole job: every shard checks it runs this exact package.
    let manifest = ctx.models.manifest(&spec.model_uri()).await?;
    let model_sha256 = manifest.model_sha256().to_string();
    let package_key = manifest.cache_key();
    let objects = inputs::job_inputs(ctx, spec).await?;
    let limits = RecordLimits {
        max_record_bytes: ctx.settings.planner.max_record_bytes,
        max_record_lines: spec.input.max_record_lines,
    };
    let (shards, planned) = cut_shards(ctx, spec, &objects, limits).await?;
    let rows_total: u64 = shards.iter().flatten().map(|p| p.rows).sum();
    let tasks: Vec<String> = shards
        .into_iter()
        .enumerate()
        .map(|(index, pieces)| {
            serde_json::to_string(&TaskMessage::Shard(ShardTask {
                job_id: job_id.to_string(),
                shard: index as u32,
                pieces,
                max_record_bytes: limits.max_record_bytes,
                max_record_lines: limits.max_record_lines,
                columns: None,
            }))
            .expect("task serialises")
        })
        .collect();
    // Stored before the job runs, so whoever re-publishes later publishes these same shards,
    // and the finisher reconciles every object's rows against what planning counted.
    ctx.state.save_inputs(job_id, &planned).await?;
    ctx.state.save_plan(job_id, &tasks).await?;
    let moved = ctx
        .state
        .transition(
            job_id,
            &[JobStatus::Planning],
            JobStatus::Running,
            &[
                ("shards_total", tasks.len().to_string()),
                ("rows_total", rows_total.to_string()),
                ("started_ms", now_ms().to_string()),
                ("model_sha256", model_sha256),
                ("package_key", package_key),
            ],
        )
        .await?;
    if let Transition::Refused(status) = moved {
        tracing::info!(job_id, %status, "job left planning meanwhile (cancelled?); not publishing shards");
        return Ok(());
    }
    tracing::info!(job_id, shards = tasks.len(), rows_total, "planned");
    publish_shards(ctx, spec, &tasks).await?;
    if tasks.is_empty() {
        // Only headers and blank lines: the job is done as soon as it is planned.
        finish::run(ctx, job_id).await?;
    }
    Ok(())
}

/// Publishes shard tasks (as stored in the plan) to the job's pool.
pub async fn publish_shards(
    ctx: &WorkerContext,
    spec: &JobSpec,
    tasks: &[String],
) -> Result<(), TaskError> {
    for task in tasks {
        ctx.broker
            .publish_task(spec.pool, spec.priority, task.as_bytes())
            .await?;
    }
    Ok(())
}

/// Streams every object once: refuses objects that are not UTF-8 text or whose CSV header
/// lacks a column the spec names, counts records and blank lines, and groups the records
/// into shards of about `shard_bytes` each.
async fn cut_shards(
    ctx: &WorkerContext,
    spec: &JobSpec,
    objects: &[ObjectInfo],
    limits: RecordLimits,
) -> Result<(Vec<Vec<InputPiece>>, Vec<PlannedObject>), TaskError> {
    let shard_bytes = ctx.settings.planner.shard_bytes;
    let mut shards: Vec<Vec<InputPiece>> = Vec::new();
    let mut current: Vec<InputPiece> = Vec::new();
    let mut current_bytes = 0u64;
    let mut planned = Vec::with_capacity(objects.len());
    let csv = spec.input.format == InputFormat::Csv;
    for object in objects {
        let reader = ctx
            .storage
            .read_range(&object.uri, 0, 0, Some(&object.etag))
            .await?;
        let mut records = RecordReader::new(reader, csv, 0, 1).with_limits(limits);
        let mut seen = PlannedObject {
            uri: object.uri.to_string(),
            etag: object.etag.clone(),
            bytes: object.size,
            ..Default::default()
        };
        let mut header: Option<Vec<String>> = None;
        let mut piece: Option<InputPiece> = None;
        while let Some(record) = records
            .next_record()
            .await
            .map_err(|e| TaskError::reading(&object.uri, e))?
        {
            check_utf8(&record).map_err(|e| {
                TaskError::permanent(format!("input {} line {}: {e}", object.uri, record.line))
            })?;
            if csv && header.is_none() {
                if record.is_blank() {
                    seen.blank += 1;
                    continue;
                }
                header = Some(read_header(spec, &object.uri, &record)?);
                seen.header = true;
                continue;
            }
            let open = piece.get_or_insert_with(|| InputPiece {
                uri: object.uri.to_string(),
                start: record.offset,
                end: record.offset,
                first_line: record.line,
                rows: 0,
                blank: 0,
                etag: object.etag.clone(),
                header: header.clone(),
            });
            open.end = record.end;
            if record.is_blank() {
                open.blank += 1;
                seen.blank += 1;
            } else {
                open.rows += 1;
                seen.records += 1;
            }
            if record.lines > 1 {
                seen.multiline_records += 1;
                seen.joined_lines += record.lines;
            }
            if current_bytes + (open.end - open.start) >= shard_bytes {
                current.push(piece.take().expect("piece is open"));
                shards.push(std::mem::take(&mut current));
                current_bytes = 0;
            }
        }
        if let Some(rest) = piece {
            current_bytes += rest.end - rest.start;
            current.push(rest);
            if current_bytes >= shard_bytes {
                shards.push(std::mem::take(&mut current));
                current_bytes = 0;
            }
        }
        if seen.records == 0 {
            tracing::info!(uri = %object.uri, blank = seen.blank, header = seen.header,
                "input object holds no rows (only a header or blank lines): an empty input");
        }
        planned.push(seen);
    }
    if !current.is_empty() {
        shards.push(current);
    }
    // A piece of blank lines only carries no work; planning counted its lines as skipped.
    for shard in &mut shards {
        shard.retain(|p| p.rows > 0);
    }
    shards.retain(|s| !s.is_empty());
    Ok((shards, planned))
}

/// Reads a CSV header and checks it names every column the spec uses, before any work.
fn read_header(spec: &JobSpec, uri: &S3Uri, record: &Record) -> Result<Vec<String>, TaskError> {
    let at = |e: String| TaskError::permanent(format!("input {uri} line {}: {e}", record.line));
    if let Some(fault) = &record.fault {
        return Err(at(format!(
            "the header line cannot be read: {}",
            fault.describe()
        )));
    }
    let header = parse_csv_header(&record.bytes).map_err(at)?;
    let mut wanted = vec![("input.text_field", spec.input.text_field.as_str())];
    if let Some(id) = &spec.input.id_field {
        wanted.push(("input.id_field", id));
    }
    if let Some(label) = &spec.input.label_field {
        wanted.push(("input.label_field", label));
    }
    check_csv_header(&header, &wanted).map_err(at)?;
    Ok(header)
}
