//! Dataset formats: splitting a byte stream into records (JSONL lines, CSV records whose quoted
//! fields may span lines) with their offsets and line numbers, and reading a row's id and text.
//!
//! Lines end in LF, CRLF or a lone CR (as some spreadsheet programs save CSV); a UTF-8
//! byte-order mark at the start of an object is skipped. A record longer than the limit, or a
//! CSV quote that never closes, does not stop the read: it comes back as a [`Record`] with a
//! [`RecordFault`], so the caller reports that one row and goes on.

mod encoding;
mod header;
pub mod parquet;
mod reader;
mod rows;
#[cfg(test)]
mod tests;

pub use encoding::{check_utf8, foreign_encoding};
pub use header::{check_csv_header, parse_csv_header};
pub use reader::RecordReader;
pub use rows::{Row, RowFields, RowFormat, parse_record, parse_row, raw_string, raw_text};

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
