//! The protobuf wire format at the field level: a message split into its fields, so that the
//! rewrite decodes only what it changes and copies every other field byte for byte (fields
//! sluice's ONNX messages do not declare survive untouched).

/// One field of a message: its number, and its bytes as they were (key included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    pub tag: u32,
    /// The whole field, key and value: write it back as it is.
    pub raw: &'a [u8],
    /// A length-delimited field's content (a nested message, bytes, a string).
    pub payload: Option<&'a [u8]>,
}

/// Splits `buf` into its fields in order; `Err` names the offset of the first malformed one.
pub fn fields(buf: &[u8]) -> Result<Vec<Field<'_>>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let start = at;
        let key = varint(buf, &mut at)?;
        let tag = (key >> 3) as u32;
        let payload = match key & 7 {
            0 => {
                varint(buf, &mut at)?;
                None
            }
            1 => {
                skip(buf, &mut at, 8)?;
                None
            }
            2 => {
                let len = varint(buf, &mut at)? as usize;
                let from = at;
                skip(buf, &mut at, len)?;
                Some(&buf[from..at])
            }
            5 => {
                skip(buf, &mut at, 4)?;
                None
            }
            other => return Err(format!("wire type {other} at byte {start}")),
        };
        if tag == 0 {
            return Err(format!("field number 0 at byte {start}"));
        }
        out.push(Field {
            tag,
            raw: &buf[start..at],
            payload,
        });
    }
    Ok(out)
}

/// Appends a length-delimited field `tag` holding `payload`.
pub fn put_bytes(out: &mut Vec<u8>, tag: u32, payload: &[u8]) {
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, out);
    prost::encoding::encode_varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

fn varint(buf: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf
            .get(*at)
            .ok_or_else(|| format!("truncated varint at byte {at}"))?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(format!("overlong varint before byte {at}"))
}

fn skip(buf: &[u8], at: &mut usize, len: usize) -> Result<(), String> {
    let end = at
        .checked_add(len)
        .filter(|&end| end <= buf.len())
        .ok_or_else(|| format!("field of {len} bytes at byte {at} runs past the end"))?;
    *at = end;
    Ok(())
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::train::onnx::{NodeProto, TensorProto};

    #[test]
    fn fields_rebuild_the_message_byte_for_byte() {
        let tensor = TensorProto::float("w", &[2, 2], &[1.0, -2.0, 3.5, 0.0]);
        let bytes = tensor.encode_to_vec();
        let split = fields(&bytes).unwrap();
        let rebuilt: Vec<u8> = split.iter().flat_map(|f| f.raw.to_vec()).collect();
        assert_eq!(rebuilt, bytes);
        let name = split.iter().find(|f| f.tag == 8).unwrap();
        assert_eq!(name.payload, Some(&b"w"[..]));
    }

    #[test]
    fn put_bytes_writes_a_nested_message_prost_reads() {
        let node = NodeProto {
            op_type: "MatMul".into(),
            ..Default::default()
        };
        let mut out = Vec::new();
        put_bytes(&mut out, 1, &node.encode_to_vec());
        let split = fields(&out).unwrap();
        assert_eq!(split.len(), 1);
        assert_eq!(NodeProto::decode(split[0].payload.unwrap()).unwrap(), node);
    }

    #[test]
    fn truncated_messages_are_refused_with_the_offset() {
        let bytes = TensorProto::float("w", &[1], &[1.0]).encode_to_vec();
        let err = fields(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(err.contains("runs past the end"), "{err}");
    }
}
