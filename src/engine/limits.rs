//! How many token positions a model has, read from its ONNX graph or its config.json, so a
//! package whose `max_length` the model cannot run is refused at push and at load; and which
//! external-data files the graph's weights live in.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek};
use std::path::Path;

/// The longest input a model takes, and where that was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionLimit {
    pub positions: usize,
    /// E.g. "initializer `embeddings.position_embeddings.weight` [512, 384] of model.onnx".
    pub source: String,
}

impl PositionLimit {
    /// The smaller of two limits (both bind).
    pub fn tighter(self, other: Option<PositionLimit>) -> PositionLimit {
        match other {
            Some(other) if other.positions < self.positions => other,
            _ => self,
        }
    }
}

/// `Err` names `max_length`, the limit and where it came from.
pub fn check_max_length(max_length: usize, limit: &PositionLimit) -> Result<(), String> {
    if max_length <= limit.positions {
        return Ok(());
    }
    Err(format!(
        "max_length = {max_length} is larger than the model's {} token positions ({}): \
         inputs that long cannot run; use max_length = {} or less",
        limit.positions, limit.source, limit.positions
    ))
}

/// The position limit a BERT-style graph carries: the first dimension of its
/// position-embedding table (also when int8-quantized, e.g. `…position_embeddings.weight_q`
/// or `…_quantized` beside its scales), else the length of a `position_ids` buffer. `None`
/// when the graph has neither (the model takes any length, or names them otherwise).
/// Reads only the tensors' headers: weights are skipped, not loaded.
pub fn position_limit_from_onnx(path: &Path) -> io::Result<Option<PositionLimit>> {
    let initializers = scan(path)?;
    let file_name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into(),
    );
    let shapes: Vec<(String, Vec<i64>)> =
        initializers.into_iter().map(|i| (i.name, i.dims)).collect();
    Ok(limit_of(&shapes, &file_name))
}

/// The files (paths relative to the model's folder, as the graph writes them) holding the
/// weights of initializers stored as ONNX external data (`model.onnx_data` for models over
/// 2 GB), each once, in first-use order. Empty for a self-contained model.
pub fn external_data_files(path: &Path) -> io::Result<Vec<String>> {
    let mut files: Vec<String> = Vec::new();
    for location in scan(path)?.into_iter().filter_map(|i| i.location) {
        if !files.contains(&location) {
            files.push(location);
        }
    }
    Ok(files)
}

fn scan(path: &Path) -> io::Result<Vec<Initializer>> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut scanner = Scanner {
        reader: BufReader::with_capacity(64 * 1024, file),
    };
    scanner.model(size)
}

/// What the scan keeps of one initializer.
struct Initializer {
    name: String,
    dims: Vec<i64>,
    /// `external_data` `location`, when the weights live in another file.
    location: Option<String>,
}

/// Picks the limit out of the initializers' names and shapes.
fn limit_of(initializers: &[(String, Vec<i64>)], file_name: &str) -> Option<PositionLimit> {
    let describe = |name: &str, dims: &[i64], positions: i64| PositionLimit {
        positions: positions as usize,
        source: format!("initializer `{name}` {dims:?} of {file_name}"),
    };
    let tightest =
        |candidates: Vec<PositionLimit>| candidates.into_iter().min_by_key(|limit| limit.positions);
    // Tables are [positions, hidden]; their scales [positions, 1]; scalars and per-column
    // vectors say nothing about positions.
    let tables = initializers
        .iter()
        .filter(|(name, dims)| {
            name.to_ascii_lowercase().contains("position_embedding") && dims.len() >= 2
        })
        .filter(|(_, dims)| dims[0] > 0)
        .map(|(name, dims)| describe(name, dims, dims[0]))
        .collect();
    tightest(tables).or_else(|| {
        let buffers = initializers
            .iter()
            .filter(|(name, dims)| name.ends_with("position_ids") && !dims.is_empty())
            .filter(|(_, dims)| dims[dims.len() - 1] > 0)
            .map(|(name, dims)| describe(name, dims, dims[dims.len() - 1]))
            .collect();
        tightest(buffers)
    })
}

/// The limit a Hugging Face `config.json` states: `max_position_embeddings`, less the
/// positions RoBERTa-style models reserve before the first token (`pad_token_id + 1`).
/// `None` when the file is missing or does not say.
pub fn position_limit_from_config(path: &Path) -> Result<Option<PositionLimit>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let config: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let Some(positions) = config
        .get("max_position_embeddings")
        .and_then(|v| v.as_u64())
    else {
        return Ok(None);
    };
    let model_type = config.get("model_type").and_then(|v| v.as_str());
    let offset_positions = matches!(
        model_type,
        Some("roberta" | "xlm-roberta" | "camembert" | "mpnet" | "longformer")
    );
    let (positions, note) = if offset_positions {
        let pad = config
            .get("pad_token_id")
            .and_then(|v| v.as_u64())
            .unwrap_or(1);
        (
            positions.saturating_sub(pad + 1),
            format!(
                ", less {} positions a {} model reserves",
                pad + 1,
                model_type.unwrap_or_default()
            ),
        )
    } else {
        (positions, String::new())
    };
    Ok(Some(PositionLimit {
        positions: positions as usize,
        source: format!(
            "max_position_embeddings in {}{note}",
            path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into()
            )
        ),
    }))
}

/// A forward-only protobuf reader over the ONNX file: descends into the graph's
/// initializers and seeks past everything else (node lists, weight bytes).
struct Scanner<R> {
    reader: BufReader<R>,
}

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

/// `ModelProto.graph`, `GraphProto.initializer`, `TensorProto.dims` and `.name`.
const MODEL_GRAPH: u64 = 7;
const GRAPH_INITIALIZER: u64 = 5;
const TENSOR_DIMS: u64 = 1;
const TENSOR_NAME: u64 = 8;
/// `TensorProto.external_data`: `StringStringEntryProto { key = 1, value = 2 }`.
const TENSOR_EXTERNAL_DATA: u64 = 13;

fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("not an ONNX model: {what}"),
    )
}

impl<R: Read + Seek> Scanner<R> {
    fn byte(&mut self, left: &mut u64) -> io::Result<u8> {
        if *left == 0 {
            return Err(malformed("a field runs past its message"));
        }
        let mut one = [0u8; 1];
        self.reader.read_exact(&mut one)?;
        *left -= 1;
        Ok(one[0])
    }

    fn varint(&mut self, left: &mut u64) -> io::Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte(left)?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed("a varint longer than 10 bytes"))
    }

    fn skip(&mut self, bytes: u64, left: &mut u64) -> io::Result<()> {
        if bytes > *left {
            return Err(malformed("a field runs past its message"));
        }
        let buffered = self.reader.buffer().len() as u64;
        if bytes <= buffered {
            self.reader.consume(bytes as usize);
        } else {
            self.reader.seek_relative(bytes as i64)?;
        }
        *left -= bytes;
        Ok(())
    }

    /// The next field's number, wire type and, for length-delimited ones, length.
    fn field(&mut self, left: &mut u64) -> io::Result<(u64, u64, u64)> {
        let key = self.varint(left)?;
        let (number, wire) = (key >> 3, key & 7);
        let len = if wire == LEN { self.varint(left)? } else { 0 };
        if len > *left {
            return Err(malformed("a field runs past its message"));
        }
        Ok((number, wire, len))
    }

    fn skip_value(&mut self, wire: u64, len: u64, left: &mut u64) -> io::Result<()> {
        match wire {
            VARINT => self.varint(left).map(drop),
            FIXED64 => self.skip(8, left),
            LEN => self.skip(len, left),
            FIXED32 => self.skip(4, left),
            _ => Err(malformed("an unsupported protobuf wire type")),
        }
    }

    /// Every initializer's name, dims and external-data location.
    fn model(&mut self, size: u64) -> io::Result<Vec<Initializer>> {
        let mut left = size;
        let mut initializers = Vec::new();
        while left > 0 {
            let (number, wire, len) = self.field(&mut left)?;
            if number == MODEL_GRAPH && wire == LEN {
                left -= len;
                self.graph(len, &mut initializers)?;
            } else {
                self.skip_value(wire, len, &mut left)?;
            }
        }
        Ok(initializers)
    }

    fn graph(&mut self, mut left: u64, out: &mut Vec<Initializer>) -> io::Result<()> {
        while left > 0 {
            let (number, wire, len) = self.field(&mut left)?;
            if number == GRAPH_INITIALIZER && wire == LEN {
                left -= len;
                out.push(self.tensor(len)?);
            } else {
                self.skip_value(wire, len, &mut left)?;
            }
        }
        Ok(())
    }

    fn string(&mut self, len: u64, left: &mut u64) -> io::Result<String> {
        let mut bytes = vec![0u8; len as usize];
        self.reader.read_exact(&mut bytes)?;
        *left -= len;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// One `external_data` entry: its key and value.
    fn entry(&mut self, mut left: u64) -> io::Result<(String, String)> {
        let (mut key, mut value) = (String::new(), String::new());
        while left > 0 {
            let (number, wire, len) = self.field(&mut left)?;
            match (number, wire) {
                (1, LEN) if len <= 64 * 1024 => key = self.string(len, &mut left)?,
                (2, LEN) if len <= 64 * 1024 => value = self.string(len, &mut left)?,
                _ => self.skip_value(wire, len, &mut left)?,
            }
        }
        Ok((key, value))
    }

    fn tensor(&mut self, mut left: u64) -> io::Result<Initializer> {
        let (mut name, mut dims, mut location) = (String::new(), Vec::new(), None);
        while left > 0 {
            let (number, wire, len) = self.field(&mut left)?;
            match (number, wire) {
                (TENSOR_DIMS, VARINT) => dims.push(self.varint(&mut left)? as i64),
                (TENSOR_DIMS, LEN) => {
                    // Packed: `len` bytes of varints.
                    let mut packed = len;
                    left -= len;
                    while packed > 0 {
                        dims.push(self.varint(&mut packed)? as i64);
                    }
                }
                (TENSOR_NAME, LEN) if len <= 64 * 1024 => name = self.string(len, &mut left)?,
                (TENSOR_EXTERNAL_DATA, LEN) => {
                    left -= len;
                    let (key, value) = self.entry(len)?;
                    if key == "location" {
                        location = Some(value);
                    }
                }
                _ => self.skip_value(wire, len, &mut left)?,
            }
        }
        Ok(Initializer {
            name,
            dims,
            location,
        })
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::train::onnx::{GraphProto, ModelProto, NodeProto, TensorProto, data_type};

    fn tensor(name: &str, dims: &[i64], bytes: usize) -> TensorProto {
        TensorProto {
            dims: dims.to_vec(),
            data_type: data_type::FLOAT,
            name: name.into(),
            raw_data: vec![7u8; bytes],
            ..Default::default()
        }
    }

    fn write_model(dir: &Path, initializers: Vec<TensorProto>) -> std::path::PathBuf {
        let model = ModelProto {
            ir_version: 8,
            producer_name: "test".into(),
            graph: Some(GraphProto {
                node: vec![NodeProto {
                    op_type: "Gather".into(),
                    input: vec!["embeddings.position_embeddings.weight".into()],
                    ..Default::default()
                }],
                name: "g".into(),
                initializer: initializers,
                ..Default::default()
            }),
            ..Default::default()
        };
        let path = dir.join("model.onnx");
        std::fs::write(&path, model.encode_to_vec()).unwrap();
        path
    }

    #[test]
    fn reads_the_position_table_of_plain_and_quantized_graphs() {
        let dir = tempfile::tempdir().unwrap();
        // Weights bigger than the read buffer are seeked over.
        let path = write_model(
            dir.path(),
            vec![
                tensor("embeddings.word_embeddings.weight", &[1000, 8], 200_000),
                tensor("embeddings.position_embeddings.weight", &[128, 8], 4096),
                tensor("embeddings.position_ids", &[1, 512], 0),
            ],
        );
        let limit = position_limit_from_onnx(&path).unwrap().unwrap();
        assert_eq!(limit.positions, 128);
        assert_eq!(
            limit.source,
            "initializer `embeddings.position_embeddings.weight` [128, 8] of model.onnx"
        );
        // int8 exports: the table, its per-row scale and a scalar zero point.
        let path = write_model(
            dir.path(),
            vec![
                tensor(
                    "inner.embeddings.position_embeddings.weight_q",
                    &[64, 8],
                    512,
                ),
                tensor(
                    "inner.embeddings.position_embeddings.weight_scale",
                    &[64, 1],
                    64,
                ),
                tensor("embeddings.position_embeddings.weight_zero_point", &[], 1),
            ],
        );
        assert_eq!(
            position_limit_from_onnx(&path).unwrap().unwrap().positions,
            64
        );
        // Only a position_ids buffer: its length.
        let path = write_model(dir.path(), vec![tensor("bert.position_ids", &[1, 300], 0)]);
        assert_eq!(
            position_limit_from_onnx(&path).unwrap().unwrap().positions,
            300
        );
        // Neither: no limit known.
        let path = write_model(dir.path(), vec![tensor("w", &[4, 4], 64)]);
        assert_eq!(position_limit_from_onnx(&path).unwrap(), None);
        // Not a protobuf at all.
        std::fs::write(&path, b"\xff\xff\xff").unwrap();
        assert!(position_limit_from_onnx(&path).is_err());
    }

    /// Just the fields the scan reads, external data included (absent from the training
    /// graphs' `TensorProto`).
    #[derive(Clone, PartialEq, prost::Message)]
    struct ExternalTensor {
        #[prost(int64, repeated, tag = "1")]
        dims: Vec<i64>,
        #[prost(string, tag = "8")]
        name: String,
        #[prost(message, repeated, tag = "13")]
        external_data: Vec<crate::train::onnx::StringStringEntryProto>,
        #[prost(int32, tag = "14")]
        data_location: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct ExternalGraph {
        #[prost(message, repeated, tag = "5")]
        initializer: Vec<ExternalTensor>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct ExternalModel {
        #[prost(message, optional, tag = "7")]
        graph: Option<ExternalGraph>,
    }

    #[test]
    fn lists_external_data_files_once() {
        use crate::train::onnx::StringStringEntryProto;
        let dir = tempfile::tempdir().unwrap();
        let tensor = |name: &str, file: Option<&str>| ExternalTensor {
            dims: vec![4, 4],
            name: name.into(),
            external_data: file
                .into_iter()
                .flat_map(|file| {
                    [("location", file), ("offset", "0")].map(|(key, value)| {
                        StringStringEntryProto {
                            key: key.into(),
                            value: value.into(),
                        }
                    })
                })
                .collect(),
            data_location: i32::from(file.is_some()),
        };
        let write = |initializer: Vec<ExternalTensor>| {
            let model = ExternalModel {
                graph: Some(ExternalGraph { initializer }),
            };
            let path = dir.path().join("model.onnx");
            std::fs::write(&path, model.encode_to_vec()).unwrap();
            path
        };
        let path = write(vec![
            tensor("a", Some("model.onnx_data")),
            tensor("b", None),
            tensor("c", Some("model.onnx_data")),
            tensor("d", Some("extra.bin")),
        ]);
        assert_eq!(
            external_data_files(&path).unwrap(),
            vec!["model.onnx_data".to_string(), "extra.bin".to_string()]
        );
        let path = write(vec![tensor("b", None)]);
        assert!(external_data_files(&path).unwrap().is_empty());
    }

    #[test]
    fn checks_max_length_against_the_limit() {
        let limit = PositionLimit {
            positions: 512,
            source: "initializer `p` [512, 384] of model.onnx".into(),
        };
        assert_eq!(check_max_length(512, &limit), Ok(()));
        let err = check_max_length(1024, &limit).unwrap_err();
        assert_eq!(
            err,
            "max_length = 1024 is larger than the model's 512 token positions \
             (initializer `p` [512, 384] of model.onnx): inputs that long cannot run; \
             use max_length = 512 or less"
        );
    }

    #[test]
    fn reads_config_json_and_the_positions_roberta_reserves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        assert_eq!(position_limit_from_config(&path), Ok(None));
        std::fs::write(
            &path,
            r#"{"model_type": "bert", "max_position_embeddings": 512}"#,
        )
        .unwrap();
        let limit = position_limit_from_config(&path).unwrap().unwrap();
        assert_eq!(limit.positions, 512);
        assert_eq!(limit.source, "max_position_embeddings in config.json");
        std::fs::write(
            &path,
            r#"{"model_type": "xlm-roberta", "max_position_embeddings": 514, "pad_token_id": 1}"#,
        )
        .unwrap();
        assert_eq!(
            position_limit_from_config(&path)
                .unwrap()
                .unwrap()
                .positions,
            512
        );
        std::fs::write(&path, "{").unwrap();
        assert!(
            position_limit_from_config(&path)
                .unwrap_err()
                .contains("config.json")
        );
    }

    /// The real packages of the test suite (when `scripts/test.sh` exports them): both
    /// MiniLM exports have 512 positions, the int8 one only as a quantized table.
    #[test]
    fn reads_the_real_models() {
        for var in ["SLUICE_TEST_MODEL_DIR", "SLUICE_TEST_L3_DIR"] {
            let Ok(dir) = std::env::var(var) else {
                continue;
            };
            let limit = position_limit_from_onnx(&Path::new(&dir).join("model.onnx"))
                .unwrap()
                .unwrap_or_else(|| panic!("{var}: no position limit found"));
            assert_eq!(limit.positions, 512, "{var}: {limit:?}");
            assert!(limit.source.contains("position_embeddings"), "{limit:?}");
        }
    }
}
