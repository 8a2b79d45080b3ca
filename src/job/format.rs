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
    /// One JSON object per line: `{"id", <include_fields>…, "embedding"}` (or `"label"`,
    /// `"probabilities"` for classify jobs); optionally compressed (`output.compression`).
    #[default]
    Jsonl,
    /// One Parquet file per shard (zstd inside): `id`, the include_fields, then
    /// `embedding` as `fixed_size_list<float32>[dimension]` (or `label` and a
    /// `probabilities` struct of one float32 per class).
    Parquet,
}

/// How JSONL output parts are compressed (Parquet compresses its pages itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputCompression {
    /// `part-00003.jsonl.gz`, readable by any gzip tool.
    Gzip,
    /// `part-00003.jsonl.zst`: smaller and faster than gzip.
    Zstd,
}
