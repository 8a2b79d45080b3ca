//! Dataset formats: splitting a byte stream into records (JSONL lines, CSV records whose quoted
//! fields may span lines) with their offsets and line numbers, and reading a row's id and text.
//!
//! Lines end in LF, CRLF or a lone CR (as some spreadsheet programs save CSV); a UTF-8
//! byte-order mark at the start of an object is skipped. A record longer than the limit, or a
//! CSV quote that never closes, does not stop the read: it comes back as a [`Record`] with a
//! [`RecordFault`], so the caller reports that one row and goes on.

use std::collections::VecDeque;

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde_json::value::RawValue;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Default longest record (`planner.max_record_bytes`): a longer one is nearly always a stray
/// quote or a file without newlines; reading no further keeps a worker's memory bounded.
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// Default most lines one quoted CSV field may join (`input.max_record_lines`).
pub const MAX_RECORD_LINES: u64 = 100;

/// The UTF-8 byte-order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// How many bytes of a faulty record are kept, for the error report.
const EXCERPT_BYTES: usize = 200;

/// Why a record cannot become a row; the rest of the stream reads on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFault {
    /// Longer than the limit; `bytes` is its whole length (without the line ending). Only
    /// its first bytes are kept.
    Oversized { bytes: u64, limit: usize },
    /// A quoted CSV field opens on this line and is not closed within `lines` further lines
    /// (the end of the range, `max_record_lines`, or the byte limit). The record is this one
    /// line; the lines after it are read as records of their own.
    UnclosedQuote { lines: u64 },
}

impl RecordFault {
    pub fn describe(&self) -> String {
        match *self {
            RecordFault::Oversized { bytes, limit } => format!(
                "record of {bytes} bytes is longer than the {limit}-byte limit (planner.max_record_bytes)"
            ),
            RecordFault::UnclosedQuote { lines } => format!(
                "unclosed quote: a quoted field opens on this line and is not closed within the next {lines} line(s) (input.max_record_lines or the end of the input); the lines after it are read as rows of their own. Quote the field and double inner quotes (\"\")"
            ),
        }
    }
}

/// One record as found in the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Byte offset of the record's first byte, relative to the stream's origin.
    pub offset: u64,
    /// Byte offset just past the record (and its line ending).
    pub end: u64,
    /// 1-based line number of the record's first line.
    pub line: u64,
    /// Lines the record spans (more than one only for CSV quoted fields holding newlines).
    pub lines: u64,
    /// The record without its trailing line ending (only the first bytes of a faulty one).
    pub bytes: Vec<u8>,
    pub fault: Option<RecordFault>,
}

impl Record {
    pub fn is_blank(&self) -> bool {
        self.fault.is_none() && self.bytes.iter().all(u8::is_ascii_whitespace)
    }

    /// The start of the record as text, for error reports.
    pub fn excerpt(&self) -> String {
        String::from_utf8_lossy(&self.bytes[..self.bytes.len().min(EXCERPT_BYTES)]).into_owned()
    }
}

/// Limits that decide where records end; planner and shard must use the same ones, so they
/// travel with the shard task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLimits {
    pub max_record_bytes: usize,
    pub max_record_lines: u64,
}

impl Default for RecordLimits {
    fn default() -> Self {
        Self {
            max_record_bytes: MAX_RECORD_BYTES,
            max_record_lines: MAX_RECORD_LINES,
        }
    }
}

/// One physical line.
#[derive(Debug, Clone)]
struct Line {
    offset: u64,
    end: u64,
    line: u64,
    /// At most `max_record_bytes + 1` bytes of content, without the line ending.
    bytes: Vec<u8>,
    /// The content's whole length.
    len: u64,
    /// Ended by a line ending (not by the end of the stream).
    terminated: bool,
}

/// Where a CSV scan stands, following the csv crate's reading: a quote opens a quoted field
/// only at the start of a field, and `""` inside one is a literal quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuoteState {
    FieldStart,
    Unquoted,
    Quoted,
    /// Just saw a quote inside a quoted field: it closes it unless another quote follows.
    QuoteInQuoted,
}

impl QuoteState {
    fn scan(mut self, bytes: &[u8], delimiter: u8) -> Self {
        for &b in bytes {
            self = match (self, b) {
                (QuoteState::FieldStart, b'"') => QuoteState::Quoted,
                (QuoteState::FieldStart | QuoteState::Unquoted, d) if d == delimiter => {
                    QuoteState::FieldStart
                }
                (QuoteState::FieldStart | QuoteState::Unquoted, _) => QuoteState::Unquoted,
                (QuoteState::Quoted, b'"') => QuoteState::QuoteInQuoted,
                (QuoteState::Quoted, _) => QuoteState::Quoted,
                (QuoteState::QuoteInQuoted, b'"') => QuoteState::Quoted,
                (QuoteState::QuoteInQuoted, d) if d == delimiter => QuoteState::FieldStart,
                (QuoteState::QuoteInQuoted, _) => QuoteState::Unquoted,
            };
        }
        self
    }

    /// Whether a line ending here is inside the field (the record goes on).
    fn open(self) -> bool {
        self == QuoteState::Quoted
    }
}

/// Splits a stream into records. With `quote_aware` (CSV), a line ending inside a quoted field
/// does not end the record.
pub struct RecordReader<R> {
    reader: R,
    quote_aware: bool,
    limits: RecordLimits,
    offset: u64,
    line: u64,
    /// Lines read ahead while looking for a quote's end, to be read again.
    pushed_back: VecDeque<Line>,
    at_origin: bool,
}

impl<R: AsyncBufRead + Unpin> RecordReader<R> {
    /// `origin` is the stream's first byte offset in the object, `first_line` its line number.
    /// At origin 0 a byte-order mark is skipped, and a UTF-16 or UTF-32 stream is refused
    /// (`InvalidData`, naming the encoding).
    pub fn new(reader: R, quote_aware: bool, origin: u64, first_line: u64) -> Self {
        Self {
            reader,
            quote_aware,
            limits: RecordLimits::default(),
            offset: origin,
            line: first_line,
            pushed_back: VecDeque::new(),
            at_origin: origin == 0,
        }
    }

    pub fn with_limits(mut self, limits: RecordLimits) -> Self {
        self.limits = limits;
        self
    }

    pub async fn next_record(&mut self) -> std::io::Result<Option<Record>> {
        let Some(first) = self.next_line().await? else {
            return Ok(None);
        };
        if first.len > self.limits.max_record_bytes as u64 {
            let fault = RecordFault::Oversized {
                bytes: first.len,
                limit: self.limits.max_record_bytes,
            };
            return Ok(Some(single(first, Some(fault))));
        }
        if !self.quote_aware {
            return Ok(Some(single(first, None)));
        }
        let mut state = QuoteState::FieldStart.scan(&first.bytes, b',');
        if !state.open() {
            return Ok(Some(single(first, None)));
        }
        if !first.terminated {
            return Ok(Some(self.unclosed(vec![first])));
        }
        // Inside a quoted field: gather lines until it closes, within the limits.
        let mut lines = vec![first];
        let mut bytes = lines[0].len;
        loop {
            let next = self.next_line().await?;
            let within = next.as_ref().is_some_and(|l| {
                bytes + 1 + l.len <= self.limits.max_record_bytes as u64
                    && (lines.len() as u64) < self.limits.max_record_lines
            });
            let Some(next) = next else {
                return Ok(Some(self.unclosed(lines)));
            };
            if !within {
                lines.push(next);
                return Ok(Some(self.unclosed(lines)));
            }
            bytes += 1 + next.len;
            state = state.scan(&next.bytes, b',');
            let terminated = next.terminated;
            lines.push(next);
            if !state.open() || !terminated {
                if state.open() {
                    // The stream ended inside the quote.
                    return Ok(Some(self.unclosed(lines)));
                }
                return Ok(Some(joined(lines)));
            }
        }
    }

    /// The quote opened on the first line never closed: that line alone is the record, and
    /// the lines read after it go back to be read as records.
    fn unclosed(&mut self, mut lines: Vec<Line>) -> Record {
        let rest = lines.split_off(1);
        let first = lines.pop().expect("one line");
        let fault = RecordFault::UnclosedQuote {
            lines: rest.len() as u64,
        };
        for line in rest.into_iter().rev() {
            self.pushed_back.push_front(line);
        }
        single(first, Some(fault))
    }

    async fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        if let Some(line) = self.pushed_back.pop_front() {
            return Ok(Some(line));
        }
        if std::mem::take(&mut self.at_origin) {
            self.skip_bom().await?;
        }
        let keep = self.limits.max_record_bytes + 1;
        let start = self.offset;
        let mut bytes = Vec::new();
        let mut len = 0u64;
        let mut size = 0u64;
        let mut terminated = false;
        loop {
            let buf = self.reader.fill_buf().await?;
            if buf.is_empty() {
                break;
            }
            let (content, used, ending) = match memchr::memchr2(b'\n', b'\r', buf) {
                Some(i) => (i, i + 1, Some(buf[i])),
                None => (buf.len(), buf.len(), None),
            };
            if bytes.len() < keep {
                let room = keep - bytes.len();
                bytes.extend_from_slice(&buf[..content.min(room)]);
            }
            len += content as u64;
            size += used as u64;
            self.reader.consume(used);
            if let Some(ending) = ending {
                if ending == b'\r' {
                    // CRLF is one line ending; a lone CR is one too.
                    let next = self.reader.fill_buf().await?;
                    if next.first() == Some(&b'\n') {
                        self.reader.consume(1);
                        size += 1;
                    }
                }
                terminated = true;
                break;
            }
        }
        if size == 0 {
            return Ok(None);
        }
        self.offset += size;
        let line = self.line;
        if terminated {
            self.line += 1;
        }
        Ok(Some(Line {
            offset: start,
            end: self.offset,
            line,
            bytes,
            len,
            terminated,
        }))
    }

    /// Skips a UTF-8 byte-order mark; refuses UTF-16 and UTF-32, which would otherwise read as
    /// rows of garbage.
    async fn skip_bom(&mut self) -> std::io::Result<()> {
        let head = self.reader.fill_buf().await?;
        if let Some(encoding) = foreign_encoding(head) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the object is {encoding}, not UTF-8; sluice reads UTF-8 text only: convert it (for example `iconv -f {} -t UTF-8`)",
                    encoding.split(' ').next().unwrap_or(encoding)
                ),
            ));
        }
        if head.starts_with(BOM) {
            self.reader.consume(BOM.len());
            self.offset += BOM.len() as u64;
        }
        Ok(())
    }
}

/// Names the encoding or container of an object's first bytes when it is not UTF-8 text:
/// byte-order marks of UTF-16/32, the NUL bytes of UTF-16 without one, and compressed or
/// binary files that are often dropped by mistake.
pub fn foreign_encoding(head: &[u8]) -> Option<&'static str> {
    let known: [(&[u8], &str); 9] = [
        (
            b"\x00\x00\xFE\xFF",
            "UTF-32BE (byte-order mark 00 00 FE FF)",
        ),
        (
            b"\xFF\xFE\x00\x00",
            "UTF-32LE (byte-order mark FF FE 00 00)",
        ),
        (b"\xFE\xFF", "UTF-16BE (byte-order mark FE FF)"),
        (b"\xFF\xFE", "UTF-16LE (byte-order mark FF FE)"),
        (b"\x1F\x8B", "gzip-compressed (magic bytes 1F 8B)"),
        (
            b"\x28\xB5\x2F\xFD",
            "zstd-compressed (magic bytes 28 B5 2F FD)",
        ),
        (b"PK\x03\x04", "a ZIP archive (or an .xlsx workbook)"),
        (b"PAR1", "a Parquet file"),
        (b"BZh", "bzip2-compressed (magic bytes BZh)"),
    ];
    if let Some((_, name)) = known.iter().find(|(magic, _)| head.starts_with(magic)) {
        return Some(name);
    }
    let sample = &head[..head.len().min(512)];
    let nul = |parity: usize| {
        sample
            .iter()
            .skip(parity)
            .step_by(2)
            .filter(|&&b| b == 0)
            .count()
    };
    let pairs = sample.len() / 2;
    if pairs >= 2 {
        if nul(1) * 4 >= pairs * 3 && nul(0) == 0 {
            return Some("UTF-16LE (no byte-order mark; every other byte is NUL)");
        }
        if nul(0) * 4 >= pairs * 3 && nul(1) == 0 {
            return Some("UTF-16BE (no byte-order mark; every other byte is NUL)");
        }
    }
    if sample.contains(&0) {
        return Some("binary (it holds NUL bytes)");
    }
    None
}

/// Checks a record is UTF-8; the error names the first bad byte and guesses the encoding.
/// A faulty record's kept bytes may end inside a character, which is not an error.
pub fn check_utf8(record: &Record) -> Result<(), String> {
    match std::str::from_utf8(&record.bytes) {
        Ok(_) => Ok(()),
        Err(e) if e.error_len().is_none() && record.fault.is_some() => Ok(()),
        Err(e) => {
            let at = e.valid_up_to();
            let byte = record.bytes[at];
            let guess = if (0x80..=0xFF).contains(&byte) {
                "it looks like Latin-1 / Windows-1252"
            } else {
                "the encoding is unknown"
            };
            Err(format!(
                "not valid UTF-8 (byte 0x{byte:02X} at offset {} of the object); {guess}; sluice reads UTF-8 only: re-save the file as UTF-8 (for example `iconv -f WINDOWS-1252 -t UTF-8`)",
                record.offset + at as u64
            ))
        }
    }
}

fn single(line: Line, fault: Option<RecordFault>) -> Record {
    let mut bytes = line.bytes;
    if fault.is_some() {
        bytes.truncate(EXCERPT_BYTES);
    }
    Record {
        offset: line.offset,
        end: line.end,
        line: line.line,
        lines: 1,
        bytes,
        fault,
    }
}

/// One record from the lines of a quoted field; the line endings inside it are kept as LF.
fn joined(lines: Vec<Line>) -> Record {
    let first = &lines[0];
    let (offset, line) = (first.offset, first.line);
    let end = lines.last().expect("lines").end;
    let count = lines.len() as u64;
    let mut bytes = Vec::new();
    for (i, l) in lines.into_iter().enumerate() {
        if i > 0 {
            bytes.push(b'\n');
        }
        bytes.extend_from_slice(&l.bytes);
    }
    Record {
        offset,
        end,
        line,
        lines: count,
        bytes,
        fault: None,
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
#[derive(Debug, Clone)]
pub struct Row {
    /// The id exactly as written in the input, as JSON: a number keeps every digit and its
    /// spelling (`1e3`, `-0`, `12345678901234567890123`); a CSV id is a JSON string. `None`
    /// without an id field.
    pub id: Option<Box<RawValue>>,
    pub text: String,
}

impl Row {
    /// The id as text: a string's contents, a number's spelling (used for labels).
    pub fn id_text(&self) -> Option<String> {
        self.id.as_deref().map(raw_text)
    }
}

impl PartialEq for Row {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
            && self.id.as_deref().map(RawValue::get) == other.id.as_deref().map(RawValue::get)
    }
}

/// A JSON value's text: a string's contents, anything else as written.
pub fn raw_text(raw: &RawValue) -> String {
    serde_json::from_str::<String>(raw.get()).unwrap_or_else(|_| raw.get().to_string())
}

/// A JSON string holding `text`.
pub fn raw_string(text: &str) -> Box<RawValue> {
    RawValue::from_string(serde_json::to_string(text).expect("a string serialises"))
        .expect("a JSON string is valid JSON")
}

/// Reads a record into a row, or says what is wrong with it (its fault first).
pub fn parse_record(
    format: &RowFormat,
    record: &Record,
    text_field: &str,
    id_field: Option<&str>,
) -> Result<Row, String> {
    if let Some(fault) = &record.fault {
        return Err(fault.describe());
    }
    parse_row(format, &record.bytes, text_field, id_field)
}

/// Extracts id and text from a record's bytes; the error says what is wrong with this row.
pub fn parse_row(
    format: &RowFormat,
    record: &[u8],
    text_field: &str,
    id_field: Option<&str>,
) -> Result<Row, String> {
    match format {
        RowFormat::Jsonl => parse_json_row(record, text_field, id_field),
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
                None => None,
                Some(field) => Some(raw_string(
                    &column(field).ok_or_else(|| format!("column \"{field}\" missing"))?,
                )),
            };
            Ok(Row { id, text })
        }
    }
}

/// Reads only the two fields of a JSON object, keeping the id's raw text.
fn parse_json_row(record: &[u8], text_field: &str, id_field: Option<&str>) -> Result<Row, String> {
    let first = record.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        // Say what it is, rather than serde's "invalid type".
        let value: serde_json::Value =
            serde_json::from_slice(record).map_err(|e| format!("not valid JSON: {e}"))?;
        return Err(format!("not a JSON object (it is {})", json_type(&value)));
    }
    let mut picked = Picked::default();
    let seed = PickFields {
        text_field,
        id_field,
        out: &mut picked,
    };
    let mut de = serde_json::Deserializer::from_slice(record);
    seed.deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| match picked.error.take() {
            Some(reason) => reason,
            None => format!("not valid JSON: {e}"),
        })?;
    let text = picked
        .text
        .ok_or_else(|| format!("field \"{text_field}\" missing"))?;
    let id = match id_field {
        None => None,
        Some(field) => Some(
            picked
                .id
                .ok_or_else(|| format!("field \"{field}\" missing"))?,
        ),
    };
    Ok(Row { id, text })
}

#[derive(Default)]
struct Picked {
    text: Option<String>,
    id: Option<Box<RawValue>>,
    /// A reason better than serde's, set before failing.
    error: Option<String>,
}

struct PickFields<'a> {
    text_field: &'a str,
    id_field: Option<&'a str>,
    out: &'a mut Picked,
}

impl<'de> DeserializeSeed<'de> for PickFields<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PickFields<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let is_text = key == self.text_field;
            let is_id = self.id_field == Some(key.as_ref());
            if !is_text && !is_id {
                map.next_value::<de::IgnoredAny>()?;
                continue;
            }
            let raw: Box<RawValue> = map.next_value()?;
            let twice = (is_text && self.out.text.is_some()) || (is_id && self.out.id.is_some());
            if twice {
                return Err(self.fail(format!(
                    "field \"{key}\" appears more than once in the object; which one is meant is ambiguous"
                )));
            }
            if is_text {
                match serde_json::from_str::<String>(raw.get()) {
                    Ok(text) => self.out.text = Some(text),
                    Err(_) => {
                        return Err(self.fail(format!(
                            "field \"{key}\" is {}, expected a string",
                            raw_type(&raw)
                        )));
                    }
                }
            }
            if is_id {
                match raw.get().as_bytes().first() {
                    Some(b'"' | b'-' | b'0'..=b'9') => self.out.id = Some(raw),
                    _ => {
                        return Err(self.fail(format!(
                            "field \"{key}\" is {}, expected a string or number",
                            raw_type(&raw)
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

impl PickFields<'_> {
    fn fail<E: de::Error>(self, reason: String) -> E {
        let error = E::custom(&reason);
        self.out.error = Some(reason);
        error
    }
}

fn raw_type(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        _ => "a number",
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

/// Checks that a CSV header has each wanted column (`(spec field, column)` pairs) exactly
/// once; the error names the header found and the nearest column (case, spaces, another
/// delimiter, a typo).
pub fn check_csv_header(header: &[String], wanted: &[(&str, &str)]) -> Result<(), String> {
    for (field, column) in wanted {
        match header.iter().filter(|h| h == column).count() {
            1 => continue,
            0 => {}
            n => {
                return Err(format!(
                    "the CSV header names column \"{column}\" ({field}) {n} times; which one is meant is ambiguous: rename the others"
                ));
            }
        }
        let shown: Vec<String> = header.iter().map(|h| format!("{h:?}")).collect();
        let mut message = format!(
            "the CSV header has no column \"{column}\" ({field}); the header is [{}]",
            shown.join(", ")
        );
        if let Some(hint) = nearest_column(header, column) {
            message.push_str("; ");
            message.push_str(&hint);
        }
        return Err(message);
    }
    Ok(())
}

fn nearest_column(header: &[String], column: &str) -> Option<String> {
    if let Some(h) = header.iter().find(|h| h.trim() == column) {
        return Some(format!(
            "column {h:?} differs only by spaces: set {column:?} to {h:?} or remove the spaces from the header"
        ));
    }
    if let Some(h) = header
        .iter()
        .find(|h| h.trim().eq_ignore_ascii_case(column))
    {
        return Some(format!(
            "column {h:?} differs only by case: column names are case-sensitive, use {h:?}"
        ));
    }
    if header.len() == 1 {
        for (delimiter, name) in [(';', "semicolons"), ('\t', "tabs"), ('|', "pipes")] {
            if header[0].contains(delimiter) {
                return Some(format!(
                    "the header looks separated by {name}, not commas: sluice reads comma-separated CSV; re-export it with commas"
                ));
            }
        }
    }
    header
        .iter()
        .map(|h| {
            (
                strsim::levenshtein(&h.to_lowercase(), &column.to_lowercase()),
                h,
            )
        })
        .filter(|(distance, _)| *distance <= 2.max(column.len() / 3))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, h)| format!("did you mean {h:?}?"))
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
#[path = "records_tests.rs"]
mod tests;
