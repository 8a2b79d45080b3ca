//! A shard's three stages: read records into chunks of rows, send windows of chunks to the
//! engine, write the answered chunks; `shard_pipeline` runs them in turn or overlapped.

use std::time::Instant;

use serde_json::value::RawValue;

use super::TaskError;
use super::ids::IdLog;
use super::output::{FinishedRow, Writer, error_line};
use super::shard::{ShardRun, default_id, observe_stage};
use super::shard_input::{Item, PieceReader, Place};
use crate::engine::{EngineError, RowOutput, RowsReply};
use crate::job::JobStatus;
use crate::job::accounting::PieceCounts;
use crate::metrics::Stage;
use crate::storage::records::{RecordLimits, RowFields, raw_string};

/// A row waiting for the model, with where it came from.
pub(super) struct Pending {
    piece: usize,
    place: Place,
    id: Box<RawValue>,
    text: String,
    /// `output.include_fields` values, in that order.
    carried: Vec<Box<RawValue>>,
}

/// Up to `worker.chunk_rows` rows in read order: the unit the part is written in, so the
/// part's bytes do not depend on how the stages overlap.
pub(super) struct Chunk {
    rows: Vec<Pending>,
    /// Error lines of this chunk's records that could not be parsed, in read order; they go
    /// to the errors part before the chunk's model errors, as reading serially would.
    errors: Vec<Vec<u8>>,
    /// Non-blank records read into this chunk (rows and parse failures).
    records: u64,
}

impl Chunk {
    /// Rows for the model (parse failures not counted).
    pub(super) fn len(&self) -> usize {
        self.rows.len()
    }
}

/// Why a stage ended early.
pub(super) enum Halt {
    /// The job left `running` (cancelled, failed): nothing more is written.
    Stopped,
    Failed(TaskError),
}

impl<E: Into<TaskError>> From<E> for Halt {
    fn from(e: E) -> Self {
        Halt::Failed(e.into())
    }
}

/// The read stage: every piece of the task in order, as chunks. Keeps the read side of the
/// counts (records, blank lines, parse failures) and the id log.
pub(super) struct ShardReader<'r, 'a> {
    run: &'r ShardRun<'a>,
    fields: RowFields<'r>,
    limits: RecordLimits,
    chunk_rows: usize,
    /// The piece being read and its index; `None` before the first and after the last.
    piece: Option<(usize, PieceReader)>,
    next_piece: usize,
    pub(super) counts: Vec<PieceCounts>,
    pub(super) ids: IdLog,
}

impl<'r, 'a> ShardReader<'r, 'a> {
    pub(super) fn new(run: &'r ShardRun<'a>) -> Self {
        let spec = &run.job.spec;
        Self {
            run,
            fields: RowFields {
                text: &spec.input.text_field,
                id: spec.input.id_field.as_deref(),
                carried: &spec.output.include_fields,
            },
            limits: RecordLimits {
                max_record_bytes: run.task.max_record_bytes,
                max_record_lines: run.task.max_record_lines,
            },
            chunk_rows: run.ctx.settings.worker.chunk_rows.max(1),
            piece: None,
            next_piece: 0,
            counts: run
                .task
                .pieces
                .iter()
                .map(|p| PieceCounts {
                    uri: p.uri.clone(),
                    start: p.start,
                    ..Default::default()
                })
                .collect(),
            ids: IdLog::default(),
        }
    }

    /// The next chunk: `chunk_rows` rows, fewer at the end of the task; `None` once every
    /// piece is read. A chunk may hold parse failures only.
    pub(super) async fn next_chunk(&mut self) -> Result<Option<Chunk>, TaskError> {
        let started = Instant::now();
        let mut chunk = Chunk {
            rows: Vec::with_capacity(self.chunk_rows),
            errors: Vec::new(),
            records: 0,
        };
        let task = self.run.task;
        while chunk.rows.len() < self.chunk_rows {
            let (index, reader) = match &mut self.piece {
                Some((index, reader)) => (*index, reader),
                None if self.next_piece < task.pieces.len() => {
                    let piece = &task.pieces[self.next_piece];
                    let reader = PieceReader::open(
                        self.run.ctx,
                        &self.run.job.spec,
                        piece,
                        self.limits,
                        &self.fields,
                    )
                    .await?;
                    let (index, reader) = self.piece.insert((self.next_piece, reader));
                    self.next_piece += 1;
                    (*index, reader)
                }
                None => break,
            };
            let Some(item) = reader.next(&self.fields).await? else {
                self.piece = None;
                continue;
            };
            let piece = &task.pieces[index];
            let counts = &mut self.counts[index];
            let (place, row) = match item {
                Item::Blank => {
                    counts.skipped += 1;
                    continue;
                }
                Item::Failed {
                    place,
                    reason,
                    excerpt,
                } => {
                    counts.read += 1;
                    counts.failed += 1;
                    chunk.records += 1;
                    chunk
                        .errors
                        .push(error_line(&piece.uri, place, reason, excerpt));
                    continue;
                }
                Item::Row(place, row) => (place, row),
            };
            counts.read += 1;
            chunk.records += 1;
            let id = match row.id {
                Some(id) => {
                    self.ids.push(&id);
                    id
                }
                None => raw_string(&default_id(object_key(&piece.uri), place)),
            };
            chunk.rows.push(Pending {
                piece: index,
                place,
                id,
                text: row.text,
                carried: row.carried,
            });
        }
        observe_stage(Stage::Read, &mut { started });
        Ok((chunk.records > 0).then_some(chunk))
    }
}

/// The key of `s3://bucket/key` (the whole text for anything else).
fn object_key(uri: &str) -> &str {
    let key = uri.strip_prefix("s3://").and_then(|r| r.split_once('/'));
    key.map_or(uri, |(_, key)| key)
}

/// A window of chunks sent to the engine, and its answer to wait for (none when the
/// window holds no rows).
pub(super) struct InFlight {
    chunks: Vec<Chunk>,
    reply: Option<RowsReply>,
}

impl ShardRun<'_> {
    /// Sends a window of chunks to the engine (one request, so the engine orders all its
    /// rows by length). Cancellation and shutdown are checked first; within the window the
    /// engine stops before its next batch once `stop` is raised.
    pub(super) async fn send_window(
        &self,
        mut chunks: Vec<Chunk>,
        live_rows: &mut u64,
    ) -> Result<InFlight, Halt> {
        let (ctx, job, task) = (self.ctx, self.job, self.task);
        if self.shutdown.is_cancelled() {
            return Err(TaskError::Interrupted.into());
        }
        if ctx.state.status(&job.id).await? != JobStatus::Running {
            return Err(Halt::Stopped);
        }
        // Rows count as in flight from when they are read, not only once embedded: a shard
        // of one chunk would otherwise show none until its commit removes them again.
        *live_rows += chunks.iter().map(|c| c.records).sum::<u64>();
        ctx.state
            .set_live_rows(&job.id, task.shard, *live_rows)
            .await?;
        let texts: Vec<String> = chunks
            .iter_mut()
            .flat_map(|c| c.rows.iter_mut())
            .map(|p| std::mem::take(&mut p.text))
            .collect();
        if texts.is_empty() {
            return Ok(InFlight {
                chunks,
                reply: None,
            });
        }
        let reply = self
            .embedder
            .send_rows(texts, self.stop.clone(), job.spec.truncate)
            .await
            .map_err(|e| self.engine_halt(e))?;
        Ok(InFlight {
            chunks,
            reply: Some(reply),
        })
    }

    /// Waits for a window's answer; its chunks with one output per row, in order.
    pub(super) async fn answers(
        &self,
        window: InFlight,
    ) -> Result<Vec<(Chunk, Vec<RowOutput>)>, Halt> {
        let mut outputs = match window.reply {
            Some(reply) => reply.wait().await.map_err(|e| self.engine_halt(e))?,
            None => Vec::new(),
        }
        .into_iter();
        Ok(window
            .chunks
            .into_iter()
            .map(|chunk| {
                let answers = outputs.by_ref().take(chunk.rows.len()).collect();
                (chunk, answers)
            })
            .collect())
    }

    fn engine_halt(&self, e: EngineError) -> Halt {
        match e {
            EngineError::Cancelled if self.shutdown.is_cancelled() => {
                Halt::Failed(TaskError::Interrupted)
            }
            EngineError::Cancelled => Halt::Stopped,
            e @ EngineError::Model(_) => Halt::Failed(TaskError::permanent(format!(
                "model package {}: {e}",
                self.job.spec.model
            ))),
            e => Halt::Failed(e.into()),
        }
    }

    /// Appends one answered chunk to the part: its parse failures, then its rows (those the
    /// model could not answer to the errors part).
    pub(super) async fn write_chunk(
        &self,
        writer: &mut Writer,
        chunk: Chunk,
        outputs: Vec<RowOutput>,
    ) -> Result<(), TaskError> {
        let started = Instant::now();
        writer.errors.extend(chunk.errors);
        let mut answered = Vec::with_capacity(chunk.rows.len());
        for (row, output) in chunk.rows.into_iter().zip(outputs) {
            match output.result {
                Ok(values) => answered.push(FinishedRow {
                    piece: row.piece,
                    place: row.place,
                    id: row.id,
                    carried: row.carried,
                    values,
                    truncated: output.truncated,
                }),
                Err(reason) => {
                    writer.counts[row.piece].failed += 1;
                    let uri = &self.task.pieces[row.piece].uri;
                    writer.row_error(uri, row.place, reason, row.id.get().to_string());
                }
            }
        }
        writer.write_rows(answered).await?;
        observe_stage(Stage::Write, &mut { started });
        Ok(())
    }
}
