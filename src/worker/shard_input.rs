//! Reading one piece of a shard: its records as rows (or row errors) and blank lines, for
//! every input layout — exact and split byte ranges, whole (possibly compressed) objects,
//! and row ranges of Parquet files.

use std::collections::VecDeque;

use futures::StreamExt;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use parquet::arrow::async_reader::{ParquetRecordBatchStream, ParquetRecordBatchStreamBuilder};

use super::{TaskError, WorkerContext};
use crate::job::{InputFormat, InputPiece, JobSpec, PieceLayout};
use crate::storage::decode::{ByteReader, decoded};
use crate::storage::parquet::{S3ParquetReader, StorageFailure};
use crate::storage::records::parquet::{ParquetColumns, batch_rows};
use crate::storage::records::{
    RecordLimits, RecordReader, Row, RowFields, RowFormat, parse_record,
};
use crate::uri::S3Uri;

/// Rows per Parquet record batch: about one engine chunk.
const PARQUET_BATCH_ROWS: usize = 1024;

/// Where a record sits in its object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Place {
    /// 1-based line (row, for Parquet); `None` in a split range past the object's start,
    /// where planning did not count the lines before it.
    pub line: Option<u64>,
    /// Byte offset of the record in the stored object; `None` in a compressed object or a
    /// Parquet file.
    pub offset: Option<u64>,
    /// Where `line` is unknown: the line within the piece (1 = its first whole line), from
    /// which the finisher works out the line once every piece has counted its lines.
    pub piece_line: Option<u64>,
}

/// One thing a piece holds.
pub(super) enum Item {
    Blank,
    Row(Place, Row),
    Failed {
        place: Place,
        reason: String,
        excerpt: String,
    },
}

/// Reads the records of one piece in order.
pub(super) enum PieceReader {
    Text(TextPiece),
    Parquet(ParquetPiece),
}

pub(super) struct TextPiece {
    uri: S3Uri,
    records: RecordReader<ByteReader>,
    format: RowFormat,
    /// Stop at the first record starting at or after (`Exact`) or after (`Split`) this byte.
    stop: Stop,
    lines_known: bool,
    offsets_known: bool,
    /// A split piece past the object's start skips its first (partial) line.
    skip_first: bool,
    /// A whole CSV/TSV object starts with its header (and any blank lines before it), which
    /// planning read and counted already.
    skip_header: bool,
}

#[derive(Debug, Clone, Copy)]
enum Stop {
    AtOrAfter(u64),
    After(u64),
    Never,
}

pub(super) struct ParquetPiece {
    uri: S3Uri,
    stream: ParquetRecordBatchStream<S3ParquetReader>,
    failure: StorageFailure,
    buffered: VecDeque<Result<Row, String>>,
    next_row: u64,
}

impl PieceReader {
    pub(super) async fn open(
        ctx: &WorkerContext,
        spec: &JobSpec,
        piece: &InputPiece,
        limits: RecordLimits,
        fields: &RowFields<'_>,
    ) -> Result<Self, TaskError> {
        let uri = S3Uri::parse(&piece.uri).map_err(TaskError::permanent)?;
        if piece.layout == PieceLayout::ParquetRows {
            return open_parquet(ctx, uri, piece, fields)
                .await
                .map(Self::Parquet);
        }
        let format = match (spec.input.format, &piece.header) {
            (InputFormat::Jsonl, _) => RowFormat::Jsonl,
            (InputFormat::Csv | InputFormat::Tsv, Some(header)) => RowFormat::Csv {
                header: header.clone(),
                delimiter: spec.input.delimiter_byte(),
            },
            (format, _) => {
                return Err(TaskError::permanent(format!(
                    "shard task for {uri} does not fit a {} input (layout {:?}, header {}); the plan is from another version: resubmit the job",
                    format.as_str(),
                    piece.layout,
                    piece.header.is_some()
                )));
            }
        };
        let etag = Some(piece.etag.as_str());
        let (reader, origin, first_line, stop, lines_known, offsets_known, skip_first) =
            match piece.layout {
                PieceLayout::Exact => {
                    let (raw, _) = ctx
                        .storage
                        .open_range(&uri, piece.start, piece.end, etag)
                        .await?;
                    let reader: ByteReader = Box::pin(raw);
                    (
                        reader,
                        piece.start,
                        piece.first_line,
                        Stop::AtOrAfter(piece.end),
                        true,
                        true,
                        false,
                    )
                }
                PieceLayout::Whole => {
                    let (raw, encoding) = ctx.storage.open_range(&uri, 0, 0, etag).await?;
                    let (reader, compression) = decoded(raw, encoding.as_deref())
                        .await
                        .map_err(|e| TaskError::reading(&uri, e))?;
                    (
                        reader,
                        0,
                        1,
                        Stop::Never,
                        true,
                        compression.is_none(),
                        false,
                    )
                }
                PieceLayout::Split => {
                    // Open-ended: the piece's last record may run past `end`.
                    let (raw, _) = ctx
                        .storage
                        .open_range(&uri, piece.start, u64::MAX, etag)
                        .await?;
                    let reader: ByteReader = Box::pin(raw);
                    let at_start = piece.start == 0;
                    (
                        reader,
                        piece.start,
                        1,
                        Stop::After(piece.end),
                        at_start,
                        true,
                        !at_start,
                    )
                }
                PieceLayout::ParquetRows => unreachable!("handled above"),
            };
        let records = RecordReader::new(reader, spec.input.format.has_header(), origin, first_line)
            .with_limits(limits)
            .with_delimiter(spec.input.delimiter_byte());
        Ok(Self::Text(TextPiece {
            uri,
            records,
            format,
            stop,
            lines_known,
            offsets_known,
            skip_first,
            skip_header: piece.layout == PieceLayout::Whole && spec.input.format.has_header(),
        }))
    }

    pub(super) async fn next(&mut self, fields: &RowFields<'_>) -> Result<Option<Item>, TaskError> {
        match self {
            PieceReader::Text(text) => text.next(fields).await,
            PieceReader::Parquet(parquet) => parquet.next(fields).await,
        }
    }
}

impl TextPiece {
    async fn next(&mut self, fields: &RowFields<'_>) -> Result<Option<Item>, TaskError> {
        let uri = &self.uri;
        if std::mem::take(&mut self.skip_first) {
            // The line that holds byte `start` belongs to the piece before.
            self.records
                .next_record()
                .await
                .map_err(|e| TaskError::reading(uri, e))?;
        }
        let Some(mut record) = self
            .records
            .next_record()
            .await
            .map_err(|e| TaskError::reading(uri, e))?
        else {
            return Ok(None);
        };
        while self.skip_header {
            self.skip_header = record.is_blank();
            match self
                .records
                .next_record()
                .await
                .map_err(|e| TaskError::reading(uri, e))?
            {
                Some(next) => record = next,
                None => return Ok(None),
            }
        }
        let past = match self.stop {
            Stop::AtOrAfter(end) => record.offset >= end,
            Stop::After(end) => record.offset > end,
            Stop::Never => false,
        };
        if past {
            return Ok(None);
        }
        if record.is_blank() {
            return Ok(Some(Item::Blank));
        }
        let place = Place {
            line: self.lines_known.then_some(record.line),
            offset: self.offsets_known.then_some(record.offset),
            // The skipped partial line took number 1.
            piece_line: (!self.lines_known).then(|| record.line - 1),
        };
        Ok(Some(match parse_record(&self.format, &record, fields) {
            Ok(row) => Item::Row(place, row),
            Err(reason) => Item::Failed {
                place,
                reason,
                excerpt: record.excerpt(),
            },
        }))
    }
}

async fn open_parquet(
    ctx: &WorkerContext,
    uri: S3Uri,
    piece: &InputPiece,
    fields: &RowFields<'_>,
) -> Result<ParquetPiece, TaskError> {
    let reader = S3ParquetReader::new(
        ctx.storage.clone(),
        uri.clone(),
        // Footer reads need the size; the stored piece ends at a row, so ask the store.
        ctx.storage.head(&uri).await?.size,
        Some(piece.etag.clone()),
    );
    let failure = reader.failure();
    let fail = |e: parquet::errors::ParquetError, failure: &StorageFailure| match failure.take() {
        Some(storage) => TaskError::from(storage),
        None => TaskError::permanent(format!("input {uri}: not a readable Parquet file ({e})")),
    };
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| fail(e, &failure))?;
    let columns = ParquetColumns::resolve(builder.schema(), fields)
        .map_err(|e| TaskError::permanent(format!("input {uri}: {e}")))?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), columns.projection());
    // The row groups that overlap [start, end), and where the piece starts in the first.
    let mut groups = Vec::new();
    let mut base = None;
    let mut selected_rows = 0u64;
    let mut first = 0u64;
    for (index, group) in builder.metadata().row_groups().iter().enumerate() {
        let rows = group.num_rows().max(0) as u64;
        let (g_start, g_end) = (first, first + rows);
        first = g_end;
        if g_end <= piece.start || g_start >= piece.end {
            continue;
        }
        base.get_or_insert(g_start);
        groups.push(index);
        selected_rows += rows;
    }
    let base = base.unwrap_or(piece.start);
    let skip = (piece.start - base) as usize;
    let take = (piece.end - piece.start) as usize;
    let rest = (selected_rows as usize).saturating_sub(skip + take);
    let selection = RowSelection::from(vec![
        RowSelector::skip(skip),
        RowSelector::select(take),
        RowSelector::skip(rest),
    ]);
    let stream = builder
        .with_row_groups(groups)
        .with_projection(mask)
        .with_row_selection(selection)
        .with_batch_size(PARQUET_BATCH_ROWS)
        .build()
        .map_err(|e| fail(e, &failure))?;
    Ok(ParquetPiece {
        uri,
        stream,
        failure,
        buffered: VecDeque::new(),
        next_row: piece.start + 1,
    })
}

impl ParquetPiece {
    async fn next(&mut self, fields: &RowFields<'_>) -> Result<Option<Item>, TaskError> {
        while self.buffered.is_empty() {
            let Some(batch) = self.stream.next().await else {
                return Ok(None);
            };
            let batch = batch.map_err(|e| match self.failure.take() {
                Some(storage) => TaskError::from(storage),
                None => TaskError::permanent(format!(
                    "input {} near row {}: not a readable Parquet file ({e})",
                    self.uri, self.next_row
                )),
            })?;
            let rows = batch_rows(&batch, fields)
                .map_err(|e| TaskError::permanent(format!("input {}: {e}", self.uri)))?;
            self.buffered.extend(rows);
        }
        let place = Place {
            line: Some(self.next_row),
            offset: None,
            piece_line: None,
        };
        self.next_row += 1;
        Ok(Some(
            match self.buffered.pop_front().expect("a buffered row") {
                Ok(row) => Item::Row(place, row),
                Err(reason) => Item::Failed {
                    place,
                    reason,
                    excerpt: String::new(),
                },
            },
        ))
    }
}
