//! Unit tests of record splitting and row parsing: line endings, BOMs, encodings, quotes,
//! oversized records, exact ids, and a generated test of the accounting.

use super::*;
use serde_json::value::RawValue;

async fn records_with(data: &[u8], quote_aware: bool, limits: RecordLimits) -> Vec<Record> {
    let mut reader = RecordReader::new(data, quote_aware, 0, 1).with_limits(limits);
    let mut out = Vec::new();
    while let Some(record) = reader.next_record().await.unwrap() {
        out.push(record);
    }
    out
}

async fn records(data: &str, quote_aware: bool) -> Vec<Record> {
    records_with(data.as_bytes(), quote_aware, RecordLimits::default()).await
}

fn summary(recs: &[Record]) -> Vec<(u64, u64, u64, String)> {
    recs.iter()
        .map(|r| {
            (
                r.offset,
                r.end,
                r.line,
                String::from_utf8_lossy(&r.bytes).to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn lines_carry_offsets_and_line_numbers() {
    let recs = records("a\r\nbb\n\nccc", false).await;
    assert_eq!(
        summary(&recs),
        vec![
            (0, 3, 1, "a".to_string()),
            (3, 6, 2, "bb".to_string()),
            (6, 7, 3, "".to_string()),
            (7, 10, 4, "ccc".to_string()),
        ]
    );
    assert!(recs[2].is_blank());
}

#[tokio::test]
async fn cr_only_line_endings_split_like_lf() {
    // As some spreadsheet programs save CSV.
    let recs = records("id,text\r1,good\r2,bad\r", true).await;
    assert_eq!(
        summary(&recs),
        vec![
            (0, 8, 1, "id,text".to_string()),
            (8, 15, 2, "1,good".to_string()),
            (15, 21, 3, "2,bad".to_string()),
        ]
    );
    // Mixed endings, and CR CR is two lines (one blank).
    let recs = records("a\rb\r\nc\nd\r\re", false).await;
    let texts: Vec<_> = summary(&recs).into_iter().map(|s| (s.2, s.3)).collect();
    assert_eq!(
        texts,
        vec![
            (1, "a".into()),
            (2, "b".into()),
            (3, "c".into()),
            (4, "d".into()),
            (5, "".into()),
            (6, "e".into())
        ]
    );
}

#[tokio::test]
async fn a_crlf_split_across_buffers_is_one_line_ending() {
    // A reader that hands out one byte at a time puts the CR and LF in different buffers.
    let data = b"x\r\ny\r\n";
    let reader = tokio::io::BufReader::with_capacity(1, &data[..]);
    let mut records = RecordReader::new(reader, false, 0, 1);
    let mut lines = Vec::new();
    while let Some(r) = records.next_record().await.unwrap() {
        lines.push((r.line, r.offset, r.end, r.bytes));
    }
    assert_eq!(
        lines,
        vec![(1, 0, 3, b"x".to_vec()), (2, 3, 6, b"y".to_vec())]
    );
}

#[tokio::test]
async fn a_bom_is_skipped_at_the_origin_only() {
    let recs = records("\u{feff}{\"id\":1}\n{\"id\":2}\n", false).await;
    assert_eq!(recs[0].bytes, b"{\"id\":1}");
    assert_eq!(recs[0].offset, 3);
    assert_eq!(recs[0].line, 1);
    // A range that starts later does not look for one.
    let data = "ab\n\u{feff}c\n";
    let mut reader = RecordReader::new(&data.as_bytes()[3..], false, 3, 2);
    let r = reader.next_record().await.unwrap().unwrap();
    assert_eq!(r.bytes, "\u{feff}c".as_bytes());
}

#[tokio::test]
async fn utf16_utf32_and_binary_objects_are_refused_naming_the_encoding() {
    let utf16: Vec<u8> = "\u{feff}id,text\n1,a\n"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (utf16.clone(), "UTF-16LE"),
        (utf16[2..].to_vec(), "UTF-16LE (no byte-order mark"),
        (
            "id\n1\n"
                .encode_utf16()
                .flat_map(u16::to_be_bytes)
                .collect(),
            "UTF-16BE",
        ),
        (b"\xFF\xFE\x00\x00i\x00\x00\x00".to_vec(), "UTF-32LE"),
        (b"\x1F\x8B\x08\x00rest".to_vec(), "gzip"),
        (b"PAR1....".to_vec(), "Parquet"),
    ];
    for (data, expected) in cases {
        let mut reader = RecordReader::new(&data[..], false, 0, 1);
        let err = reader.next_record().await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains(expected), "{expected}: {err}");
    }
}

#[test]
fn invalid_utf8_names_the_offset_and_a_likely_encoding() {
    let record = Record {
        offset: 10,
        end: 20,
        line: 3,
        lines: 1,
        bytes: b"1,caf\xE9".to_vec(),
        fault: None,
    };
    let err = check_utf8(&record).unwrap_err();
    assert!(err.contains("0xE9 at offset 15"), "{err}");
    assert!(err.contains("Windows-1252"), "{err}");
}

#[tokio::test]
async fn quoted_newlines_stay_in_one_csv_record() {
    let recs = records("id,text\n1,\"two\nlines\"\n2,\"say \"\"hi\"\"\"\n", true).await;
    assert_eq!(recs.len(), 3);
    assert_eq!((recs[1].line, recs[1].lines), (2, 2));
    assert_eq!(recs[2].line, 4);
    let header = parse_csv_header(&recs[0].bytes, b',').unwrap();
    let format = RowFormat::Csv {
        header,
        delimiter: b',',
    };
    let row = parse_record(&format, &recs[1], &RowFields::new("text", Some("id"))).unwrap();
    assert_eq!(row.text, "two\nlines");
    let row = parse_record(&format, &recs[2], &RowFields::new("text", Some("id"))).unwrap();
    assert_eq!(row.text, "say \"hi\"");
}

#[tokio::test]
async fn a_quote_inside_an_unquoted_field_is_a_literal() {
    // The csv crate reads `5" screen` as text; the splitter must agree, or it would join
    // the rest of the file into one record.
    let recs = records("id,text\n1,5\" screen\n2,hello\n3,world\n", true).await;
    assert_eq!(recs.len(), 4);
    let format = RowFormat::Csv {
        header: parse_csv_header(&recs[0].bytes, b',').unwrap(),
        delimiter: b',',
    };
    let row = parse_record(&format, &recs[1], &RowFields::new("text", Some("id"))).unwrap();
    assert_eq!(row.text, "5\" screen");
}

#[tokio::test]
async fn an_unclosed_quote_fails_its_line_and_the_rest_read_on() {
    let data = "id,text\n1,\"never closed\n2,hello\n3,world\n";
    let recs = records(data, true).await;
    let lines: Vec<u64> = recs.iter().map(|r| r.line).collect();
    assert_eq!(lines, vec![1, 2, 3, 4]);
    assert_eq!(recs[1].fault, Some(RecordFault::UnclosedQuote { lines: 2 }));
    let format = RowFormat::Csv {
        header: parse_csv_header(&recs[0].bytes, b',').unwrap(),
        delimiter: b',',
    };
    let err = parse_record(&format, &recs[1], &RowFields::new("text", Some("id"))).unwrap_err();
    assert!(err.contains("unclosed quote"), "{err}");
    assert_eq!(
        parse_record(&format, &recs[2], &RowFields::new("text", Some("id")))
            .unwrap()
            .text,
        "hello"
    );
    // Records tile the stream: nothing between them is lost.
    for pair in recs.windows(2) {
        assert_eq!(pair[0].end, pair[1].offset);
    }
    assert_eq!(recs.last().unwrap().end, data.len() as u64);
}

#[tokio::test]
async fn a_quote_swallowing_too_many_lines_is_cut_at_the_limit() {
    // Two stray quotes 5 lines apart would make one valid-looking record of 5 rows.
    let data = "id,text\n1,\"a\n2,b\n3,c\n4,d\n5,e\"\n6,f\n";
    let limits = RecordLimits {
        max_record_lines: 3,
        ..Default::default()
    };
    let recs = records_with(data.as_bytes(), true, limits).await;
    assert_eq!(recs[1].fault, Some(RecordFault::UnclosedQuote { lines: 3 }));
    assert_eq!(recs.len(), 7, "{recs:?}");
    // With room for it, the same text is one record of five lines.
    let recs = records(data, true).await;
    assert_eq!((recs[1].line, recs[1].lines, recs.len()), (2, 5, 3));
}

#[tokio::test]
async fn an_oversized_record_is_one_faulty_record_not_an_error() {
    let limits = RecordLimits {
        max_record_bytes: 64,
        ..Default::default()
    };
    let long = "x".repeat(1000);
    let data = format!("{{\"text\":\"ok\"}}\n{{\"text\":\"{long}\"}}\n{{\"text\":\"after\"}}\n");
    let recs = records_with(data.as_bytes(), false, limits).await;
    assert_eq!(recs.len(), 3);
    assert_eq!(
        recs[1].fault,
        Some(RecordFault::Oversized {
            bytes: 1011,
            limit: 64
        })
    );
    assert!(recs[1].bytes.len() <= EXCERPT_BYTES);
    assert_eq!(recs[2].line, 3);
    let err = parse_record(&RowFormat::Jsonl, &recs[1], &RowFields::new("text", None)).unwrap_err();
    assert!(err.contains("1011 bytes"), "{err}");
    // A file with no newline at all is one oversized record, read in bounded memory.
    let recs = records_with(long.as_bytes(), false, limits).await;
    assert_eq!(recs.len(), 1);
    assert!(matches!(recs[0].fault, Some(RecordFault::Oversized { .. })));
}

#[test]
fn jsonl_ids_are_kept_exactly_as_written() {
    let cases = [
        (
            r#"{"id": 12345678901234567890123, "text": "a"}"#,
            "12345678901234567890123",
        ),
        (r#"{"id": 1e3, "text": "a"}"#, "1e3"),
        (r#"{"id": -0, "text": "a"}"#, "-0"),
        (r#"{"id": 0.10, "text": "a"}"#, "0.10"),
        (r#"{"id": "x\u00e9", "text": "a"}"#, r#""x\u00e9""#),
    ];
    for (record, expected) in cases {
        let row = parse_row(
            &RowFormat::Jsonl,
            record.as_bytes(),
            &RowFields::new("text", Some("id")),
        )
        .unwrap();
        assert_eq!(row.id.as_deref().map(RawValue::get), Some(expected));
    }
    let row = parse_row(
        &RowFormat::Jsonl,
        br#"{"id": "x\u00e9", "text": "a"}"#,
        &RowFields::new("text", Some("id")),
    )
    .unwrap();
    assert_eq!(row.id_text().as_deref(), Some("x\u{e9}"));
}

#[test]
fn jsonl_rows_and_their_errors() {
    let ok = parse_row(
        &RowFormat::Jsonl,
        br#"{"id": 7, "nested": {"text": 1}, "text": "hi"}"#,
        &RowFields::new("text", Some("id")),
    )
    .unwrap();
    assert_eq!(ok.text, "hi");
    let err = |record: &[u8], id: Option<&str>| {
        parse_row(&RowFormat::Jsonl, record, &RowFields::new("text", id)).unwrap_err()
    };
    assert!(err(br#"{"id": 7"#, Some("id")).starts_with("not valid JSON"));
    assert_eq!(err(br#"{"id": 7}"#, Some("id")), "field \"text\" missing");
    assert_eq!(
        err(br#"{"text": 3}"#, None),
        "field \"text\" is a number, expected a string"
    );
    assert_eq!(
        err(br#"{"text": "a", "id": null}"#, Some("id")),
        "field \"id\" is null, expected a string or number"
    );
    assert_eq!(err(br#"{"text": "a"}"#, Some("id")), "field \"id\" missing");
    assert!(err(br#"{"text": "a", "text": "b"}"#, None).contains("more than once"));
    assert_eq!(err(b"[1, 2]", None), "not a JSON object (it is an array)");
    assert!(err(br#"{"text": "a"} {"text": "b"}"#, None).starts_with("not valid JSON"));
    // Python's json.dumps writes NaN, which is not JSON.
    assert!(err(br#"{"text": "a", "score": NaN}"#, None).starts_with("not valid JSON"));
}

#[test]
fn csv_ids_are_strings_and_column_counts_are_checked() {
    let format = RowFormat::Csv {
        header: vec!["id".into(), "text".into()],
        delimiter: b',',
    };
    let row = parse_row(&format, b"007,a", &RowFields::new("text", Some("id"))).unwrap();
    assert_eq!(row.id.as_deref().map(RawValue::get), Some("\"007\""));
    let err = parse_row(&format, b"1,a,extra", &RowFields::new("text", Some("id"))).unwrap_err();
    assert!(err.contains("3 columns"), "{err}");
}

#[test]
fn csv_header_misses_name_the_header_and_the_nearest_column() {
    let header = |s: &str| parse_csv_header(s.as_bytes(), b',').unwrap();
    let check = |h: &str| check_csv_header(&header(h), &[("input.text_field", "text")]);
    assert!(check("id,text").is_ok());
    let err = check("id, text").unwrap_err();
    assert!(
        err.contains(r#"[ "id", " text"]"#.trim_start_matches(' ').trim())
            || err.contains(r#"" text""#),
        "{err}"
    );
    assert!(err.contains("differs only by spaces"), "{err}");
    assert!(
        check("ID,Text")
            .unwrap_err()
            .contains("differs only by case")
    );
    assert!(check("id;text").unwrap_err().contains("semicolons"));
    assert!(check("id\ttext").unwrap_err().contains("tabs"));
    assert!(
        check("id,txet")
            .unwrap_err()
            .contains("did you mean \"txet\"")
    );
    assert!(check("id,text,text").unwrap_err().contains("2 times"));
    let err = check("a,b").unwrap_err();
    assert!(
        err.contains("no column \"text\" (input.text_field)"),
        "{err}"
    );
}

mod generated {
    //! Random mutations of valid files: the records always tile the input (every byte is
    //! in exactly one record), line numbers only grow, and nothing panics.
    use super::*;
    use proptest::prelude::*;

    fn mutate(base: &[u8], edits: &[(usize, u8)]) -> Vec<u8> {
        let mut data = base.to_vec();
        for &(at, byte) in edits {
            if data.is_empty() {
                data.push(byte);
            } else {
                let at = at % (data.len() + 1);
                data.insert(at, byte);
            }
        }
        data
    }

    const BASE_CSV: &str =
        "id,text\r\n1,\"a, b\"\n2,\"multi\nline\"\r3,plain\n\n4,\"q \"\"x\"\"\"\n";
    const BASE_JSONL: &str = "\u{feff}{\"id\":1,\"text\":\"a\"}\n{\"id\":2,\"text\":\"b\\nc\"}\r\n\n{\"id\":3e2,\"text\":\"d\"}";

    fn check_tiling(data: &[u8], quote_aware: bool) -> Result<(), TestCaseError> {
        let limits = RecordLimits {
            max_record_bytes: 48,
            max_record_lines: 3,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let recs = runtime.block_on(records_with(data, quote_aware, limits));
        let origin = if data.starts_with(BOM) { 3 } else { 0 };
        let mut at = origin;
        let mut line = 0;
        for r in &recs {
            prop_assert_eq!(r.offset, at);
            prop_assert!(r.end > r.offset);
            prop_assert!(r.line > line);
            line = r.line;
            at = r.end;
            let format = RowFormat::Csv {
                header: vec!["id".into(), "text".into()],
                delimiter: b',',
            };
            let _ = parse_record(&format, r, &RowFields::new("text", Some("id")));
            let _ = parse_record(&RowFormat::Jsonl, r, &RowFields::new("text", Some("id")));
        }
        prop_assert_eq!(at, data.len() as u64);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn mutated_csv_is_read_whole(edits in prop::collection::vec((any::<usize>(), prop::sample::select(vec![b'"', b'\r', b'\n', b',', b'x', 0xE9u8])), 0..8)) {
            check_tiling(&mutate(BASE_CSV.as_bytes(), &edits), true)?;
        }

        #[test]
        fn mutated_jsonl_is_read_whole(edits in prop::collection::vec((any::<usize>(), prop::sample::select(vec![b'"', b'\r', b'\n', b'{', b'}', b'\\', 0xC3u8])), 0..8)) {
            check_tiling(&mutate(BASE_JSONL.as_bytes(), &edits), false)?;
        }
    }
}
