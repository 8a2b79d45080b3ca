//! Splitting a byte stream into records: JSONL lines and CSV records whose quoted fields
//! may span lines, each with its offset and line numbers.

use std::collections::VecDeque;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use super::{BOM, EXCERPT_BYTES, Record, RecordFault, RecordLimits, foreign_encoding};

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
    /// The field delimiter a quote must follow to open a quoted field (`,` for CSV).
    delimiter: u8,
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
            delimiter: b',',
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

    /// The delimiter of a quote-aware (CSV, TSV) stream.
    pub fn with_delimiter(mut self, delimiter: u8) -> Self {
        self.delimiter = delimiter;
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
        let mut state = QuoteState::FieldStart.scan(&first.bytes, self.delimiter);
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
            state = state.scan(&next.bytes, self.delimiter);
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
