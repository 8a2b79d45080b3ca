//! The job spec users submit (TOML for the CLI, JSON over HTTP), and its validation.

use serde::{Deserialize, Serialize};

use super::compress::CompressSpec;
use super::format::{InputFormat, OutputCompression, OutputFormat};
use super::training::TrainingSpec;

pub const API_VERSION: &str = "sluice/v1";

/// One job (bulk inference or training), as submitted. Unknown fields are refused so typos never pass
/// silently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "sluice job spec", extend("$id" = "https://sluice.dev/schema/job-spec.schema.json"))]
pub struct JobSpec {
    /// Must be `sluice/v1`.
    #[schemars(extend("const" = "sluice/v1"))]
    pub api_version: String,
    pub kind: JobKind,
    /// Human-readable name, shown in listings: 1-128 letters, digits, spaces, '-', '_', '.'.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9 ._-]+$"))]
    pub name: String,
    /// Model package: the S3 folder holding `sluice-model.toml`, `model.onnx`, `tokenizer.json`.
    /// For a training job, the frozen encoder the head is trained on.
    pub model: String,
    /// Inference only: what each row gets (`embed` by default).
    #[serde(default)]
    pub task: Task,
    /// Inference: the rows to run. Training: the labelled training data.
    pub input: InputSpec,
    /// Inference: the folder of output parts. Training: where the model package goes.
    pub output: OutputSpec,
    /// Required for `kind = "training"`, refused otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingSpec>,
    /// `kind = "compress"` only (optional there: every setting has a default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compress: Option<CompressSpec>,
    #[serde(default)]
    pub pool: Pool,
    /// 0 (lowest) to 9 (highest); higher-priority tasks are delivered first.
    #[serde(default = "default_priority")]
    #[schemars(range(min = 0, max = 9))]
    pub priority: u8,
    /// Fraction of rows (0 to 1) that may fail before the whole job fails.
    #[serde(default = "default_max_error_rate")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_error_rate: f64,
    /// Texts longer than the model's `max_length` are cut to it (and counted as
    /// `rows_truncated`); with `false` each such row fails instead ("N tokens > max M").
    #[serde(default = "default_truncate")]
    pub truncate: bool,
}

fn default_truncate() -> bool {
    true
}

fn default_priority() -> u8 {
    5
}

fn default_max_error_rate() -> f64 {
    0.01
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Bulk inference: every input row through the model, output parts in S3.
    Inference,
    /// Train a classifier head on a frozen encoder; the result is a model package.
    Training,
    /// Quantize a float model package to int8 and write it only if it keeps its quality on
    /// a sample of the input (`[compress]`); the result is a model package.
    Compress,
}

impl From<JobKind> for crate::metrics::JobKind {
    fn from(kind: JobKind) -> Self {
        match kind {
            JobKind::Inference => Self::Inference,
            JobKind::Training => Self::Training,
            JobKind::Compress => Self::Compress,
        }
    }
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Inference => "inference",
            JobKind::Training => "training",
            JobKind::Compress => "compress",
        }
    }

    /// Kinds whose result is a model package written by one leased task (training,
    /// compression), not output parts written by shards.
    pub fn writes_package(self) -> bool {
        !matches!(self, JobKind::Inference)
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Sentence embeddings: one vector per row.
    #[default]
    Embed,
    /// With a classifier package (written by a training job): the label and every class's
    /// probability per row.
    Classify,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    #[default]
    Cpu,
    Gpu,
}

impl Pool {
    pub fn as_str(self) -> &'static str {
        match self {
            Pool::Cpu => "cpu",
            Pool::Gpu => "gpu",
        }
    }
}

impl std::str::FromStr for Pool {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(Pool::Cpu),
            "gpu" => Ok(Pool::Gpu),
            other => Err(format!("unknown pool `{other}` (expected cpu or gpu)")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// One object (`s3://b/data.jsonl`) or a folder (`s3://b/data/`, every object under it).
    pub uri: String,
    pub format: InputFormat,
    /// Field (JSONL) or column (CSV) holding the text.
    #[serde(default = "default_text_field")]
    pub text_field: String,
    /// Field or column holding the row id; without one, rows are identified as
    /// `<object key>:<line>`.
    #[serde(default)]
    pub id_field: Option<String>,
    /// Training only: the field or column holding each row's label (`label` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_field: Option<String>,
    /// Only this version of a single-object input (its ETag): if the object has changed
    /// by the time the job is planned, the job fails instead of reading other content.
    /// The drop folder sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// CSV: most lines one record may span (a quoted field holding newlines). A quote that
    /// stays open longer is reported as an unclosed quote on the line it opened, and the
    /// lines after it are read as rows of their own.
    #[serde(default = "default_max_record_lines")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_record_lines: u64,
    /// CSV only: the field delimiter, one ASCII character (`;`, `|`, …); `,` by default.
    /// TSV is always tab-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1))]
    pub delimiter: Option<String>,
    /// A folder input reads only objects whose key ends with this suffix (or one of these),
    /// such as `.jsonl` or `.parquet`. Objects whose name starts with `_` or `.` (`_SUCCESS`,
    /// `.crc` files, `_manifest.json`) are never read, suffix or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<Suffixes>,
}

/// One suffix or a list of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Suffixes {
    One(String),
    Many(Vec<String>),
}

impl Suffixes {
    pub fn as_slice(&self) -> &[String] {
        match self {
            Suffixes::One(one) => std::slice::from_ref(one),
            Suffixes::Many(many) => many,
        }
    }
}

impl InputSpec {
    /// The field delimiter of a CSV or TSV input.
    pub fn delimiter_byte(&self) -> u8 {
        match (self.format, &self.delimiter) {
            (InputFormat::Tsv, _) => b'\t',
            (_, Some(d)) if d.len() == 1 => d.as_bytes()[0],
            _ => b',',
        }
    }

    /// Whether a folder input reads the object at `key`: not hidden by the `_`/`.` naming
    /// convention of Hadoop, Spark and sluice's own markers, and with a wanted suffix.
    pub fn reads_key(&self, key: &str) -> bool {
        let name = key.rsplit('/').next().unwrap_or(key);
        if name.starts_with('_') || name.starts_with('.') {
            return false;
        }
        self.suffix.as_ref().is_none_or(|s| {
            s.as_slice()
                .iter()
                .any(|suffix| key.ends_with(suffix.as_str()))
        })
    }
}

fn default_max_record_lines() -> u64 {
    crate::storage::records::MAX_RECORD_LINES
}

fn default_text_field() -> String {
    "text".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Folder the parts, `_manifest.json` and `_SUCCESS` are written under.
    pub uri: String,
    #[serde(default)]
    pub format: OutputFormat,
    /// Compresses JSONL parts as they stream out (`.jsonl.gz`, `.jsonl.zst`); refused with
    /// Parquet output, which compresses internally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<OutputCompression>,
    /// What a job does when two input rows carry the same id: `report` lists them in the
    /// manifest (count and the first few); `fail` also fails the job.
    #[serde(default)]
    pub on_duplicate_id: OnDuplicateId,
    /// Input fields (JSONL keys, CSV/TSV columns, Parquet columns) copied into every output
    /// row beside the id; a row lacking one of them fails with a row error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_fields: Vec<String>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum OnDuplicateId {
    #[default]
    Report,
    Fail,
}
