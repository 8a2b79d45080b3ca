//! Planning by reading: CSV and TSV (a quoted field may span lines, so only a scan finds
//! where records end) and JSONL without an id field (rows are named by line number). Counts
//! every record and blank line and cuts the object at record boundaries.

use super::pack::Packer;
use crate::job::accounting::PlannedObject;
use crate::job::{InputPiece, JobSpec, PieceLayout};
use crate::storage::ObjectInfo;
use crate::storage::decode::decoded;
use crate::storage::records::{
    Record, RecordLimits, RecordReader, check_csv_header, check_utf8, parse_csv_header,
};
use crate::uri::S3Uri;
use crate::worker::{TaskError, WorkerContext};

/// Streams one object (decoding it when compressed): refuses it when it is not UTF-8 text or
/// its header lacks a column the spec names, counts records and blank lines, and adds its
/// pieces to the shards being filled.
pub(super) async fn scan_object(
    ctx: &WorkerContext,
    spec: &JobSpec,
    object: &ObjectInfo,
    limits: RecordLimits,
    packer: &mut Packer,
) -> Result<PlannedObject, TaskError> {
    let (raw, encoding) = ctx
        .storage
        .open_range(&object.uri, 0, 0, Some(&object.etag))
        .await?;
    let (reader, compression) = decoded(raw, encoding.as_deref())
        .await
        .map_err(|e| TaskError::reading(&object.uri, e))?;
    let header_format = spec.input.format.has_header();
    let delimiter = spec.input.delimiter_byte();
    let mut records = RecordReader::new(reader, header_format, 0, 1)
        .with_limits(limits)
        .with_delimiter(delimiter);
    let mut seen = PlannedObject {
        uri: object.uri.to_string(),
        etag: object.etag.clone(),
        bytes: object.size,
        ..Default::default()
    };
    let mut header: Option<Vec<String>> = None;
    let mut piece: Option<InputPiece> = None;
    let new_piece = |record: &Record, header: &Option<Vec<String>>| InputPiece {
        uri: object.uri.to_string(),
        start: record.offset,
        end: record.offset,
        first_line: record.line,
        rows: 0,
        blank: 0,
        etag: object.etag.clone(),
        header: header.clone(),
        layout: PieceLayout::Exact,
        counted: true,
    };
    while let Some(record) = records
        .next_record()
        .await
        .map_err(|e| TaskError::reading(&object.uri, e))?
    {
        check_utf8(&record).map_err(|e| {
            TaskError::permanent(format!("input {} line {}: {e}", object.uri, record.line))
        })?;
        if header_format && header.is_none() {
            if record.is_blank() {
                seen.blank += 1;
                continue;
            }
            header = Some(read_header(spec, &object.uri, &record, delimiter)?);
            seen.header = true;
            continue;
        }
        let open = piece.get_or_insert_with(|| new_piece(&record, &header));
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
        // A compressed object is one piece: its decoder must start at its first byte.
        if compression.is_none() && packer.fills(open.end - open.start) {
            let full = piece.take().expect("piece is open");
            let bytes = full.end - full.start;
            packer.add(full, bytes);
        }
    }
    if let Some(mut rest) = piece {
        let bytes = rest.end - rest.start;
        if let Some(c) = compression {
            // Offsets are in the decoded text; the shard reads the stored object whole.
            rest.layout = PieceLayout::Whole;
            rest.start = 0;
            rest.end = object.size;
            tracing::info!(uri = %object.uri, compression = c.as_str(), decoded_bytes = bytes,
                "compressed input: read as one piece (a compressed object cannot be split by byte range)");
        }
        packer.add(rest, bytes);
    }
    if seen.records == 0 {
        tracing::info!(uri = %object.uri, blank = seen.blank, header = seen.header,
            "input object holds no rows (only a header or blank lines): an empty input");
    }
    Ok(seen)
}

/// Reads a CSV/TSV header and checks it names every column the spec uses, before any work.
fn read_header(
    spec: &JobSpec,
    uri: &S3Uri,
    record: &Record,
    delimiter: u8,
) -> Result<Vec<String>, TaskError> {
    let at = |e: String| TaskError::permanent(format!("input {uri} line {}: {e}", record.line));
    if let Some(fault) = &record.fault {
        return Err(at(format!(
            "the header line cannot be read: {}",
            fault.describe()
        )));
    }
    let header = parse_csv_header(&record.bytes, delimiter).map_err(at)?;
    let mut wanted = vec![("input.text_field", spec.input.text_field.as_str())];
    if let Some(id) = &spec.input.id_field {
        wanted.push(("input.id_field", id));
    }
    if let Some(label) = &spec.input.label_field {
        wanted.push(("input.label_field", label));
    }
    for name in &spec.output.include_fields {
        wanted.push(("output.include_fields", name));
    }
    check_csv_header(&header, &wanted).map_err(at)?;
    Ok(header)
}
