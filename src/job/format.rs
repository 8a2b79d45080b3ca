//! The file formats a job reads and writes.

use serde::{Deserialize, Serialize};

/// An input's format. JSONL, CSV and TSV objects may be gzip or zstd compressed (found by
/// their magic bytes); Parquet compresses inside the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated (or `input.delimiter`), with a header line; quoted fields may hold
    /// delimiters and newlines (RFC 4180).
    Csv,
    /// Tab-separated, with a header line; quoted as CSV.
    Tsv,
    /// Apache Parquet; columns by name.
    Parquet,
}

impl InputFormat {
    /// Records are lines (JSONL) or CSV-style records found in a byte stream.
    pub fn is_text(self) -> bool {
        !matches!(self, InputFormat::Parquet)
    }

    /// A header line names the columns (CSV, TSV).
    pub fn has_header(self) -> bool {
        matches!(self, InputFormat::Csv | InputFormat::Tsv)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            InputFormat::Jsonl => "jsonl",
            InputFormat::Csv => "csv",
            InputFormat::Tsv => "tsv",
            InputFormat::Parquet => "parquet",
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    #[default]
    Jsonl,
}
