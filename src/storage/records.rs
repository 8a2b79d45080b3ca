//! Dataset formats: splitting a byte stream into records (JSONL lines, CSV records whose quoted
//! fields may span lines) with their offsets and line numbers, and reading a row's id and text.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// Longest record accepted. A longer one is nearly always a stray quote in a CSV file or a
/// file without newlines; refusing it keeps a worker's memory bounded.
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// One record as found in the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Byte offset of the record's first byte, relative to the stream's origin.
    pub offset: u64,
    /// Byte offset just past the record (and its line ending).
    pub end: u64,
    /// 1-based line number of the record's first line.
    pub line: u64,
    /// The record without its trailing line ending.
    pub bytes: Vec<u8>,
}

impl Record {
    pub fn is_blank(&self) -> bool {
        self.bytes.iter().all(u8::is_ascii_whitespace)
    }
}

/// Splits a stream into records. With `quote_aware` (CSV), a newline inside a double-quoted
/// field does not end the record.
pub struct RecordReader<R> {
    reader: R,
    quote_aware: bool,
    offset: u64,
    line: u64,
}

impl<R: AsyncBufRead + Unpin> RecordReader<R> {
    /// `origin` is the stream's first byte offset in the object, `first_line` its line number.
    pub fn new(reader: R, quote_aware: bool, origin: u64, first_line: u64) -> Self {
        Self {
            reader,
            quote_aware,
            offset: origin,
            line: first_line,
        }
    }

    pub async fn next_record(&mut self) -> std::io::Result<Option<Record>> {
        let mut bytes = Vec::new();
        let start = self.offset;
        let line = self.line;
        let mut quotes = 0usize;
        loop {
            let scanned_from = bytes.len();
            let room = (MAX_RECORD_BYTES + 1 - bytes.len()) as u64;
            let n = (&mut self.reader)
                .take(room)
                .read_until(b'\n', &mut bytes)
                .await?;
            if n == 0 {
                break;
            }
            if bytes.len() > MAX_RECORD_BYTES {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "the record starting at line {line} is longer than {} MiB{}",
                        MAX_RECORD_BYTES >> 20,
                        if self.quote_aware {
                            " (an unbalanced quote makes every following line part of it)"
                        } else {
                            " (is the file really one record per line?)"
                        }
                    ),
                ));
            }
            self.offset += n as u64;
            let ended_line = bytes.last() == Some(&b'\n');
            if ended_line {
                self.line += 1;
            }
            if self.quote_aware {
                quotes += bytes[scanned_from..].iter().filter(|&&b| b == b'"').count();
            }
            // An odd number of quotes so far means we are inside a quoted field.
            if !ended_line || quotes.is_multiple_of(2) {
                break;
            }
        }
        if bytes.is_empty() {
            return Ok(None);
        }
        let end = self.offset;
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        Ok(Some(Record {
            offset: start,
            end,
            line,
            bytes,
        }))
    }
}

/// How to read id and text out of a record.
#[derive(Debug, Clone)]
pub enum RowFormat {
    Jsonl,
    /// CSV with the object's header columns.
    Csv {
        header: Vec<String>,
    },
}

/// A row ready for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: serde_json::Value,
    pub text: String,
}

/// Extracts id and text from a record; the error says what is wrong with this row.
pub fn parse_row(
    format: &RowFormat,
    record: &[u8],
    text_field: &str,
    id_field: Option<&str>,
) -> Result<Row, String> {
    match format {
        RowFormat::Jsonl => {
            let value: serde_json::Value =
                serde_json::from_slice(record).map_err(|e| format!("not valid JSON: {e}"))?;
            let object = value
                .as_object()
                .ok_or_else(|| "not a JSON object".to_string())?;
            let text = match object.get(text_field) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(other) => {
                    return Err(format!(
                        "field \"{text_field}\" is {}, expected a string",
                        json_type(other)
                    ));
                }
                None => return Err(format!("field \"{text_field}\" missing")),
            };
            let id = match id_field {
                None => serde_json::Value::Null,
                Some(field) => match object.get(field) {
                    Some(v @ (serde_json::Value::String(_) | serde_json::Value::Number(_))) => {
                        v.clone()
                    }
                    Some(other) => {
                        return Err(format!(
                            "field \"{field}\" is {}, expected a string or number",
                            json_type(other)
                        ));
                    }
                    None => return Err(format!("field \"{field}\" missing")),
                },
            };
            Ok(Row { id, text })
        }
        RowFormat::Csv { header } => {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(record);
            let mut fields = csv::StringRecord::new();
            let read = reader
                .read_record(&mut fields)
                .map_err(|e| format!("not valid CSV: {e}"))?;
            if !read {
                return Err("empty record".into());
            }
            let mut rest = csv::StringRecord::new();
            if matches!(reader.read_record(&mut rest), Ok(true)) {
                // The record reader joined lines because of an odd number of quotes.
                let lines = record.iter().filter(|&&b| b == b'\n').count() + 1;
                return Err(format!(
                    "unbalanced quote: this record runs over {lines} lines, swallowing the rows after it; quote the field and double inner quotes (\"\")"
                ));
            }
            if fields.len() != header.len() {
                return Err(format!(
                    "has {} columns, the header has {}",
                    fields.len(),
                    header.len()
                ));
            }
            let column = |name: &str| {
                header
                    .iter()
                    .position(|h| h == name)
                    .map(|i| fields[i].to_string())
            };
            let text =
                column(text_field).ok_or_else(|| format!("column \"{text_field}\" missing"))?;
            let id = match id_field {
                None => serde_json::Value::Null,
                Some(field) => serde_json::Value::String(
                    column(field).ok_or_else(|| format!("column \"{field}\" missing"))?,
                ),
            };
            Ok(Row { id, text })
        }
    }
}

/// Parses a CSV header record into column names.
pub fn parse_csv_header(record: &[u8]) -> Result<Vec<String>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(record);
    let mut fields = csv::StringRecord::new();
    match reader.read_record(&mut fields) {
        Ok(true) => Ok(fields
            .iter()
            .map(|f| f.trim_start_matches('\u{feff}').to_string())
            .collect()),
        Ok(false) => Err("empty header".into()),
        Err(e) => Err(format!("header is not valid CSV: {e}")),
    }
}

fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn records(data: &str, quote_aware: bool) -> Vec<Record> {
        let mut reader = RecordReader::new(data.as_bytes(), quote_aware, 0, 1);
        let mut out = Vec::new();
        while let Some(record) = reader.next_record().await.unwrap() {
            out.push(record);
        }
        out
    }

    #[tokio::test]
    async fn lines_carry_offsets_and_line_numbers() {
        let recs = records("a\r\nbb\n\nccc", false).await;
        let summary: Vec<_> = recs
            .iter()
            .map(|r| {
                (
                    r.offset,
                    r.end,
                    r.line,
                    String::from_utf8_lossy(&r.bytes).to_string(),
                )
            })
            .collect();
        assert_eq!(
            summary,
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
    async fn quoted_newlines_stay_in_one_csv_record() {
        let recs = records("id,text\n1,\"two\nlines\"\n2,\"say \"\"hi\"\"\"\n", true).await;
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[1].line, 2);
        assert_eq!(recs[2].line, 4);
        let header = parse_csv_header(&recs[0].bytes).unwrap();
        let format = RowFormat::Csv { header };
        let row = parse_row(&format, &recs[1].bytes, "text", Some("id")).unwrap();
        assert_eq!(row.text, "two\nlines");
        let row = parse_row(&format, &recs[2].bytes, "text", Some("id")).unwrap();
        assert_eq!(row.text, "say \"hi\"");
    }

    #[test]
    fn jsonl_rows_and_their_errors() {
        let ok = parse_row(
            &RowFormat::Jsonl,
            br#"{"id": 7, "text": "hi"}"#,
            "text",
            Some("id"),
        )
        .unwrap();
        assert_eq!(ok.id, serde_json::json!(7));
        assert_eq!(ok.text, "hi");
        let err = parse_row(&RowFormat::Jsonl, br#"{"id": 7"#, "text", Some("id")).unwrap_err();
        assert!(err.starts_with("not valid JSON"), "{err}");
        let err = parse_row(&RowFormat::Jsonl, br#"{"id": 7}"#, "text", Some("id")).unwrap_err();
        assert_eq!(err, "field \"text\" missing");
        let err =
            parse_row(&RowFormat::Jsonl, br#"{"id": 7, "text": 3}"#, "text", None).unwrap_err();
        assert!(err.contains("expected a string"), "{err}");
    }

    #[tokio::test]
    async fn a_stray_csv_quote_is_reported_not_silently_swallowed() {
        let recs = records("id,text\n1,5\" screen\n2,hello\n3,world\n", true).await;
        // The stray quote joins the rest of the file into one record...
        assert_eq!(recs.len(), 2);
        let format = RowFormat::Csv {
            header: parse_csv_header(&recs[0].bytes).unwrap(),
        };
        // ...which is then reported, naming how many lines it swallowed.
        let err = parse_row(&format, &recs[1].bytes, "text", Some("id")).unwrap_err();
        assert!(
            err.contains("unbalanced quote") && err.contains("3 lines"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_endless_record_is_refused() {
        let data = "x".repeat(MAX_RECORD_BYTES + 10);
        let mut reader = RecordReader::new(data.as_bytes(), false, 0, 1);
        let err = reader.next_record().await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn csv_row_with_wrong_column_count_is_an_error() {
        let format = RowFormat::Csv {
            header: vec!["id".into(), "text".into()],
        };
        let err = parse_row(&format, b"1,a,extra", "text", Some("id")).unwrap_err();
        assert!(err.contains("3 columns"), "{err}");
    }
}
