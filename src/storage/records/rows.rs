//! Reading a row's id, text and label from one JSONL or CSV record, without parsing the
//! fields it does not need.

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::Record;

/// How to read id and text out of a record.
#[derive(Debug, Clone)]
pub enum RowFormat {
    Jsonl,
    /// CSV (or TSV, or another delimiter) with the object's header columns.
    Csv {
        header: Vec<String>,
        delimiter: u8,
    },
}

/// Which fields of a record a job reads.
#[derive(Debug, Clone, Copy)]
pub struct RowFields<'a> {
    pub text: &'a str,
    pub id: Option<&'a str>,
    /// `output.include_fields`: copied to the output row; each must be present.
    pub carried: &'a [String],
}

impl<'a> RowFields<'a> {
    pub fn new(text: &'a str, id: Option<&'a str>) -> Self {
        Self {
            text,
            id,
            carried: &[],
        }
    }
}

/// A row ready for the model.
#[derive(Debug, Clone)]
pub struct Row {
    /// The id exactly as written in the input, as JSON: a number keeps every digit and its
    /// spelling (`1e3`, `-0`, `12345678901234567890123`); a CSV id is a JSON string. `None`
    /// without an id field.
    pub id: Option<Box<RawValue>>,
    pub text: String,
    /// The values of `output.include_fields`, in that order, as JSON (a CSV cell is a JSON
    /// string; a JSONL value is kept exactly as written).
    pub carried: Vec<Box<RawValue>>,
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
    fields: &RowFields,
) -> Result<Row, String> {
    if let Some(fault) = &record.fault {
        return Err(fault.describe());
    }
    parse_row(format, &record.bytes, fields)
}

/// Extracts id and text from a record's bytes; the error says what is wrong with this row.
pub fn parse_row(format: &RowFormat, record: &[u8], fields: &RowFields) -> Result<Row, String> {
    let (text_field, id_field) = (fields.text, fields.id);
    match format {
        RowFormat::Jsonl => parse_json_row(record, fields),
        RowFormat::Csv { header, delimiter } => {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .delimiter(*delimiter)
                .flexible(true)
                .from_reader(record);
            let mut cells = csv::StringRecord::new();
            let read = reader
                .read_record(&mut cells)
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
            if cells.len() != header.len() {
                return Err(format!(
                    "has {} columns, the header has {}",
                    cells.len(),
                    header.len()
                ));
            }
            let column = |name: &str| {
                header
                    .iter()
                    .position(|h| h == name)
                    .map(|i| cells[i].to_string())
            };
            let text =
                column(text_field).ok_or_else(|| format!("column \"{text_field}\" missing"))?;
            let id = match id_field {
                None => None,
                Some(field) => Some(raw_string(
                    &column(field).ok_or_else(|| format!("column \"{field}\" missing"))?,
                )),
            };
            let carried = fields
                .carried
                .iter()
                .map(|name| {
                    column(name).map(|cell| raw_string(&cell)).ok_or_else(|| {
                        format!("column \"{name}\" missing (named in output.include_fields)")
                    })
                })
                .collect::<Result<_, _>>()?;
            Ok(Row { id, text, carried })
        }
    }
}

/// Reads only the two fields of a JSON object, keeping the id's raw text.
fn parse_json_row(record: &[u8], fields: &RowFields) -> Result<Row, String> {
    let (text_field, id_field) = (fields.text, fields.id);
    let first = record.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        // Say what it is, rather than serde's "invalid type".
        let value: serde_json::Value =
            serde_json::from_slice(record).map_err(|e| format!("not valid JSON: {e}"))?;
        return Err(format!("not a JSON object (it is {})", json_type(&value)));
    }
    let mut picked = Picked {
        carried: vec![None; fields.carried.len()],
        ..Default::default()
    };
    let seed = PickFields {
        text_field,
        id_field,
        carried: fields.carried,
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
    let carried = picked
        .carried
        .into_iter()
        .zip(fields.carried)
        .map(|(value, name)| {
            value
                .ok_or_else(|| format!("field \"{name}\" missing (named in output.include_fields)"))
        })
        .collect::<Result<_, _>>()?;
    Ok(Row { id, text, carried })
}

#[derive(Default)]
struct Picked {
    text: Option<String>,
    id: Option<Box<RawValue>>,
    carried: Vec<Option<Box<RawValue>>>,
    /// A reason better than serde's, set before failing.
    error: Option<String>,
}

struct PickFields<'a> {
    text_field: &'a str,
    id_field: Option<&'a str>,
    carried: &'a [String],
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
            let carried = self.carried.iter().position(|c| c == key.as_ref());
            if !is_text && !is_id && carried.is_none() {
                map.next_value::<de::IgnoredAny>()?;
                continue;
            }
            let raw: Box<RawValue> = map.next_value()?;
            if let Some(slot) = carried {
                if self.out.carried[slot].is_some() {
                    return Err(self.fail(format!(
                        "field \"{key}\" appears more than once in the object; which one is meant is ambiguous"
                    )));
                }
                self.out.carried[slot] = Some(raw.clone());
                if !is_text && !is_id {
                    continue;
                }
            }
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
