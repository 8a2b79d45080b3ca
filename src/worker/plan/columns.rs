//! The output's column types for text inputs, fixed once per job: CSV and TSV cells are
//! strings; a JSONL job's types come from the first good row of its first object (a later
//! row whose value does not fit fails as a row error when the output is typed).

use crate::job::{ColumnType, InputFormat, JobSpec, OutputColumns};
use crate::storage::ObjectInfo;
use crate::storage::decode::decoded;
use crate::storage::records::{RecordReader, RowFields, RowFormat, parse_record};
use crate::worker::{TaskError, WorkerContext};

/// Records looked at for a good row before giving up (all typed as text then).
const SAMPLE_RECORDS: usize = 1000;

/// Bytes of each object read for the sample.
const SAMPLE_BYTES: u64 = 1024 * 1024;

pub(super) async fn text_columns(
    ctx: &WorkerContext,
    spec: &JobSpec,
    objects: &[ObjectInfo],
) -> Result<OutputColumns, TaskError> {
    let all_text = OutputColumns {
        id: ColumnType::Utf8,
        carried: spec
            .output
            .include_fields
            .iter()
            .map(|name| (name.clone(), ColumnType::Utf8))
            .collect(),
    };
    let wants_sample = spec.input.id_field.is_some() || !spec.output.include_fields.is_empty();
    if spec.input.format != InputFormat::Jsonl || !wants_sample {
        return Ok(all_text);
    }
    let fields = RowFields {
        text: &spec.input.text_field,
        id: spec.input.id_field.as_deref(),
        carried: &spec.output.include_fields,
    };
    for object in objects {
        // Only the object's first bytes: a server may read whatever range is asked for.
        let end = object.size.min(SAMPLE_BYTES);
        let (raw, encoding) = ctx
            .storage
            .open_range(&object.uri, 0, end, Some(&object.etag))
            .await?;
        let Ok((reader, _)) = decoded(raw, encoding.as_deref()).await else {
            continue;
        };
        let mut records = RecordReader::new(reader, false, 0, 1);
        let mut looked = 0;
        // A record cut by the sample's end (or a compressed stream cut short) ends the look.
        while let Ok(Some(record)) = records.next_record().await {
            if record.is_blank() {
                continue;
            }
            if let Ok(row) = parse_record(&RowFormat::Jsonl, &record, &fields) {
                return Ok(OutputColumns {
                    id: row.id.as_deref().map_or(ColumnType::Utf8, ColumnType::of),
                    carried: spec
                        .output
                        .include_fields
                        .iter()
                        .cloned()
                        .zip(row.carried.iter().map(|v| ColumnType::of(v)))
                        .collect(),
                });
            }
            looked += 1;
            if looked >= SAMPLE_RECORDS {
                break;
            }
        }
    }
    Ok(all_text)
}
