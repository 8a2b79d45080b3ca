//! The Parquet writer read back: schema, typed ids and carried columns, rows refused when a
//! value does not fit, row groups bounded in size.

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::value::RawValue;

use super::parquet_part::ParquetEncoder;
use super::*;

/// A finished row of piece 0 with raw JSON id and carried values.
pub(super) fn row(id: &str, carried: &[&str], values: Vec<f32>) -> FinishedRow {
    let raw = |t: &str| RawValue::from_string(t.to_string()).unwrap();
    FinishedRow {
        piece: 0,
        place: crate::worker::shard_input::Place {
            line: Some(1),
            offset: Some(0),
            piece_line: None,
        },
        id: raw(id),
        carried: carried.iter().map(|t| raw(t)).collect(),
        values,
        truncated: false,
    }
}

fn columns(id: ColumnType, carried: &[(&str, ColumnType)]) -> OutputColumns {
    OutputColumns {
        id,
        carried: carried.iter().map(|(n, t)| (n.to_string(), *t)).collect(),
    }
}

/// Encodes `rows` in chunks of `chunk`; the file's bytes and every refusal.
fn write(
    columns: OutputColumns,
    values: Values,
    rows: &[FinishedRow],
    chunk: usize,
) -> (Bytes, Vec<Option<String>>) {
    let mut encoder = ParquetEncoder::new(columns, values).unwrap();
    let (mut file, mut refused) = (Vec::new(), Vec::new());
    for rows in rows.chunks(chunk) {
        let (bytes, rejected) = encoder.encode(rows).unwrap();
        file.extend(bytes);
        refused.extend(rejected);
    }
    file.extend(encoder.finish().unwrap());
    (Bytes::from(file), refused)
}

fn read(file: Bytes) -> (Vec<RecordBatch>, usize) {
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let groups = builder.metadata().num_row_groups();
    let batches = builder.build().unwrap().map(Result::unwrap).collect();
    (batches, groups)
}

#[test]
fn embed_parts_have_typed_ids_carried_fields_and_a_fixed_size_embedding() {
    let cols = columns(
        ColumnType::Int64,
        &[("title", ColumnType::Utf8), ("meta", ColumnType::Json)],
    );
    let rows = [
        row("7", &[r#""a \"b\"""#, r#"{"k":1}"#], vec![0.5, -1.0, 2.0]),
        row("-8", &["null", "[1,2]"], vec![1.0, 2.0, 3.0]),
    ];
    let (file, refused) = write(cols, Values::Embedding { dimension: 3 }, &rows, 2);
    assert_eq!(refused, [None, None]);
    let (batches, _) = read(file);
    let batch = &batches[0];
    let schema = batch.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["id", "title", "meta", "embedding"]);
    assert_eq!(schema.field(0).data_type(), &DataType::Int64);
    assert!(!schema.field(0).is_nullable());
    assert_eq!(
        schema
            .field(2)
            .metadata()
            .get("ARROW:extension:name")
            .unwrap(),
        "arrow.json"
    );
    assert!(matches!(
        schema.field(3).data_type(),
        DataType::FixedSizeList(item, 3) if item.data_type() == &DataType::Float32
    ));
    let ids = batch.column(0).as_primitive::<Int64Type>();
    assert_eq!(ids.values(), &[7, -8]);
    let titles = batch.column(1).as_string::<i32>();
    assert_eq!(titles.value(0), "a \"b\"");
    assert!(titles.is_null(1));
    let meta = batch.column(2).as_string::<i32>();
    assert_eq!((meta.value(0), meta.value(1)), (r#"{"k":1}"#, "[1,2]"));
    let embeddings = batch.column(3).as_fixed_size_list();
    let second = embeddings.value(1);
    assert_eq!(
        second.as_primitive::<Float32Type>().values(),
        &[1.0, 2.0, 3.0]
    );
}

#[test]
fn values_that_do_not_fit_the_planned_types_refuse_only_their_row() {
    let cols = columns(ColumnType::Int64, &[("score", ColumnType::Float64)]);
    let rows = [
        row("1", &["0.5"], vec![1.0, 0.0]),
        row(r#""abc""#, &["0.5"], vec![1.0, 0.0]),
        row("1.5", &["0.5"], vec![1.0, 0.0]),
        row("4", &[r#""high""#], vec![1.0, 0.0]),
        row("5", &["2"], vec![1.0]),
        row("6", &["3"], vec![0.0, 1.0]),
    ];
    let (file, refused) = write(cols, Values::Embedding { dimension: 2 }, &rows, 10);
    let reasons: Vec<&str> = refused.iter().map(|r| r.as_deref().unwrap_or("")).collect();
    assert_eq!(reasons[0], "");
    assert!(reasons[1].contains(r#"id "abc""#) && reasons[1].contains("int64"));
    assert!(reasons[2].contains("id 1.5"));
    assert!(reasons[3].contains(r#"field "score" value "high""#) && reasons[3].contains("float64"));
    assert!(reasons[4].contains("returned 1 values") && reasons[4].contains("declares 2"));
    assert_eq!(reasons[5], "");
    let (batches, _) = read(file);
    let batch = &batches[0];
    assert_eq!(
        batch.column(0).as_primitive::<Int64Type>().values(),
        &[1, 6]
    );
    let scores = batch.column(1).as_primitive::<Float64Type>();
    assert_eq!(scores.values(), &[0.5, 3.0]);
}

#[test]
fn classify_parts_have_a_label_and_a_probabilities_struct() {
    let labels = vec!["fresh".to_string(), "rotten".to_string()];
    let rows = [
        row(r#""r1""#, &[], vec![0.9, 0.1]),
        row(r#""r2""#, &[], vec![0.2, 0.8]),
    ];
    let values = Values::Classes { labels };
    let (file, _) = write(columns(ColumnType::Utf8, &[]), values, &rows, 2);
    let (batches, _) = read(file);
    let batch = &batches[0];
    let labels = batch.column_by_name("label").unwrap().as_string::<i32>();
    assert_eq!((labels.value(0), labels.value(1)), ("fresh", "rotten"));
    let probabilities = batch.column_by_name("probabilities").unwrap().as_struct();
    let rotten = probabilities.column_by_name("rotten").unwrap();
    assert_eq!(rotten.as_primitive::<Float32Type>().values(), &[0.1, 0.8]);
}

#[test]
fn row_groups_close_by_size_so_a_shard_holds_about_one_in_memory() {
    let dimension = 384;
    let limit = 1 << 20;
    let rows: Vec<FinishedRow> = (0..3_000)
        .map(|i| {
            let values = (0..dimension)
                .map(|d| ((i * 31 + d) as f32).sin())
                .collect();
            row(&i.to_string(), &[], values)
        })
        .collect();
    let mut encoder = ParquetEncoder::with_row_groups(
        columns(ColumnType::Int64, &[]),
        Values::Embedding { dimension },
        limit,
    )
    .unwrap();
    let mut file = Vec::new();
    let mut largest_chunk = 0;
    for chunk in rows.chunks(100) {
        let (bytes, _) = encoder.encode(chunk).unwrap();
        largest_chunk = largest_chunk.max(bytes.len());
        file.extend(bytes);
    }
    file.extend(encoder.finish().unwrap());
    let (batches, groups) = read(Bytes::from(file));
    // 3,000 rows of 1.5 KB: at least 3 groups of at most 1 MiB, each handed on as it closes.
    assert!(groups >= 3, "{groups} row groups");
    assert!(largest_chunk <= limit + 200 * 1536, "{largest_chunk}");
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(total, rows.len());
}

#[test]
fn part_names_follow_format_and_compression() {
    let mut spec: JobSpec = serde_json::from_value(serde_json::json!({
        "api_version": "sluice/v1", "kind": "inference", "name": "n", "model": "s3://m/x",
        "task": "embed", "input": {"uri": "s3://d/in.jsonl", "format": "jsonl"},
        "output": {"uri": "s3://d/out/"}
    }))
    .unwrap();
    let out = spec.output_uri();
    assert_eq!(part_uri(&out, 3, &spec).key, "out/part-00003.jsonl");
    spec.output.compression = Some(OutputCompression::Gzip);
    assert_eq!(part_uri(&out, 3, &spec).key, "out/part-00003.jsonl.gz");
    spec.output.compression = Some(OutputCompression::Zstd);
    assert_eq!(part_uri(&out, 3, &spec).key, "out/part-00003.jsonl.zst");
    spec.output.compression = None;
    spec.output.format = OutputFormat::Parquet;
    assert_eq!(part_uri(&out, 3, &spec).key, "out/part-00003.parquet");
    // No id_field: line-number ids are strings whatever was planned.
    spec.output.include_fields = vec!["title".into()];
    let planned = columns(ColumnType::Int64, &[("title", ColumnType::Utf8)]);
    let resolved = output_columns(&spec, Some(&planned)).unwrap();
    assert_eq!(resolved.id, ColumnType::Utf8);
    assert_eq!(
        output_columns(&spec, None).unwrap().carried,
        [("title".to_string(), ColumnType::Json)]
    );
    let other = columns(ColumnType::Int64, &[("url", ColumnType::Utf8)]);
    assert!(output_columns(&spec, Some(&other)).is_err());
}
