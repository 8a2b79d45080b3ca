//! The file formats a job reads and writes.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    Jsonl,
    Csv,
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
