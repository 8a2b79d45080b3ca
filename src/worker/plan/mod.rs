//! Planning: list the job's input, cut it into shards (small objects grouped, large ones
//! split), record what is known of every object, and publish one task per shard.

mod columns;
mod pack;
mod parquet;
mod ranges;
mod scan;

use pack::Packer;

use super::{TaskError, WorkerContext, finish, inputs};
use crate::job::accounting::PlannedObject;
use crate::job::{
    InputFormat, InputPiece, JobSpec, JobStatus, OutputColumns, ShardTask, TaskMessage,
};
use crate::state::{JobRecord, Transition, now_ms};
use crate::storage::ObjectInfo;
use crate::storage::records::RecordLimits;

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
    let (shards, planned, columns) = cut_shards(ctx, spec, &objects, limits).await?;
    let rows_total: u64 = shards.iter().flatten().map(|p| p.rows).sum();
    let rows_known = planned.iter().all(|o| !o.rows_unknown);
    let input_bytes: u64 = planned.iter().map(|o| o.bytes).sum();
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
                columns: Some(columns.clone()),
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
                ("rows_known", u8::from(rows_known).to_string()),
                ("input_bytes", input_bytes.to_string()),
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
    if rows_known {
        tracing::info!(
            job_id,
            shards = tasks.len(),
            rows_total,
            input_bytes,
            "planned"
        );
    } else {
        tracing::info!(
            job_id,
            shards = tasks.len(),
            input_bytes,
            "planned without reading the input (rows are counted as shards finish)"
        );
    }
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

/// Cuts every object into pieces and groups them into shards of about `shard_bytes` each:
/// Parquet from its footer, JSONL with an id field by byte ranges (no reads), the rest by a
/// scan that counts every record. Returns the shards, what planning knows of each object,
/// and the output's column types.
async fn cut_shards(
    ctx: &WorkerContext,
    spec: &JobSpec,
    objects: &[ObjectInfo],
    limits: RecordLimits,
) -> Result<(Vec<Vec<InputPiece>>, Vec<PlannedObject>, OutputColumns), TaskError> {
    let mut packer = Packer::new(ctx.settings.planner.shard_bytes);
    let mut planned = Vec::with_capacity(objects.len());
    let format = spec.input.format;
    let mut columns: Option<OutputColumns> = None;
    for object in objects {
        let seen = match format {
            InputFormat::Parquet => {
                let (seen, file_columns) =
                    parquet::cut_file(ctx, spec, object, &mut packer).await?;
                match &columns {
                    None => columns = Some(file_columns),
                    Some(first) if *first != file_columns => {
                        return Err(TaskError::permanent(format!(
                            "input {}: its id or include_fields columns have other types ({}) than the first file's ({}); every file of a job must share them",
                            object.uri,
                            describe(&file_columns),
                            describe(first)
                        )));
                    }
                    Some(_) => {}
                }
                seen
            }
            InputFormat::Jsonl if spec.input.id_field.is_some() => {
                ranges::cut_object(ctx, object, &mut packer).await?
            }
            _ => scan::scan_object(ctx, spec, object, limits, &mut packer).await?,
        };
        planned.push(seen);
    }
    let columns = match columns {
        Some(columns) => columns,
        None => columns::text_columns(ctx, spec, objects).await?,
    };
    Ok((packer.finish(), planned, columns))
}

fn describe(columns: &OutputColumns) -> String {
    std::iter::once(format!("id {}", columns.id.as_str()))
        .chain(
            columns
                .carried
                .iter()
                .map(|(name, t)| format!("{name} {}", t.as_str())),
        )
        .collect::<Vec<_>>()
        .join(", ")
}
