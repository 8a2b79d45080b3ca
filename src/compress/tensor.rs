//! Initializers as the rewrite reads them: every field of ONNX's `TensorProto` (so a tensor
//! re-encoded loses nothing), float values from either storage field, and data kept in an
//! external file (`data_location = EXTERNAL`) brought inline.

use std::path::Path;

use super::CompressError;
use crate::train::onnx::StringStringEntryProto;

pub const FLOAT: i32 = 1;
pub const UINT8: i32 = 2;
pub const INT8: i32 = 3;
const EXTERNAL: i32 = 1;

/// ONNX `TensorProto`, all fields but `segment` (chunked tensors are refused).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Tensor {
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(bytes = "vec", optional, tag = "3")]
    pub segment: Option<Vec<u8>>,
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    #[prost(int32, repeated, tag = "5")]
    pub int32_data: Vec<i32>,
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub string_data: Vec<Vec<u8>>,
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    #[prost(string, tag = "8")]
    pub name: String,
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
    #[prost(double, repeated, tag = "10")]
    pub double_data: Vec<f64>,
    #[prost(uint64, repeated, tag = "11")]
    pub uint64_data: Vec<u64>,
    #[prost(string, tag = "12")]
    pub doc_string: String,
    #[prost(message, repeated, tag = "13")]
    pub external_data: Vec<StringStringEntryProto>,
    #[prost(int32, tag = "14")]
    pub data_location: i32,
    #[prost(message, repeated, tag = "16")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

impl Tensor {
    pub fn is_external(&self) -> bool {
        self.data_location == EXTERNAL
    }

    /// Reads external data (`location`, `offset`, `length` relative to `dir`) into
    /// `raw_data`, so the tensor no longer depends on a file beside the model.
    pub fn inline_external(&mut self, dir: &Path, what: &str) -> Result<(), CompressError> {
        let entry = |key: &str| {
            self.external_data
                .iter()
                .find(|e| e.key == key)
                .map(|e| e.value.clone())
        };
        let location = entry("location").unwrap_or_default();
        let fail = |problem: String| CompressError::ExternalData {
            what: what.to_string(),
            tensor: self.name.clone(),
            location: location.clone(),
            problem,
        };
        let relative = Path::new(&location);
        if location.is_empty() || relative.is_absolute() || location.contains("..") {
            return Err(fail("not a file name beside the model".into()));
        }
        let number = |key: &str| -> Result<Option<u64>, CompressError> {
            entry(key)
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|e| fail(format!("{key} {v:?}: {e}")))
                })
                .transpose()
        };
        let offset = number("offset")?.unwrap_or(0);
        let bytes = std::fs::read(dir.join(relative)).map_err(|e| fail(e.to_string()))?;
        let end = match number("length")? {
            Some(length) => offset.saturating_add(length),
            None => bytes.len() as u64,
        };
        if end > bytes.len() as u64 || offset > end {
            return Err(fail(format!(
                "bytes {offset}..{end} asked of a {}-byte file",
                bytes.len()
            )));
        }
        self.raw_data = bytes[offset as usize..end as usize].to_vec();
        self.external_data.clear();
        self.data_location = 0;
        Ok(())
    }

    /// The values of a float tensor (from `raw_data` or `float_data`); `None` for others.
    pub fn floats(&self) -> Option<Vec<f32>> {
        if self.data_type != FLOAT || self.is_external() {
            return None;
        }
        if self.raw_data.is_empty() {
            return Some(self.float_data.clone());
        }
        Some(
            self.raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        )
    }

    pub fn from_floats(name: &str, dims: &[i64], values: &[f32]) -> Self {
        Self {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: FLOAT,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        }
    }

    /// An int8 or uint8 tensor (`data_type` INT8 or UINT8) from its bytes.
    pub fn from_bytes(name: &str, data_type: i32, dims: &[i64], values: Vec<u8>) -> Self {
        Self {
            name: name.into(),
            dims: dims.to_vec(),
            data_type,
            raw_data: values,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn external_data_is_read_inline() {
        let dir = tempfile::tempdir().unwrap();
        let values = [1.5f32, -2.0, 4.0];
        let mut file = vec![0u8; 8];
        file.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        std::fs::write(dir.path().join("model.onnx_data"), &file).unwrap();
        let entry = |k: &str, v: &str| StringStringEntryProto {
            key: k.into(),
            value: v.into(),
        };
        let mut tensor = Tensor {
            name: "w".into(),
            dims: vec![3],
            data_type: FLOAT,
            data_location: EXTERNAL,
            external_data: vec![
                entry("location", "model.onnx_data"),
                entry("offset", "8"),
                entry("length", "12"),
            ],
            ..Default::default()
        };
        assert_eq!(tensor.floats(), None);
        tensor.inline_external(dir.path(), "model.onnx").unwrap();
        assert_eq!(tensor.floats().unwrap(), values);
        let back = Tensor::decode(tensor.encode_to_vec().as_slice()).unwrap();
        assert!(!back.is_external());
    }

    #[test]
    fn external_data_outside_the_folder_is_refused() {
        let mut tensor = Tensor {
            name: "w".into(),
            data_type: FLOAT,
            data_location: EXTERNAL,
            external_data: vec![StringStringEntryProto {
                key: "location".into(),
                value: "../secret".into(),
            }],
            ..Default::default()
        };
        let err = tensor
            .inline_external(Path::new("/tmp"), "model.onnx")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("../secret") && err.contains("initializer w"),
            "{err}"
        );
    }
}
