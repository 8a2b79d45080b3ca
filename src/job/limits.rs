//! Bounds on every job-spec field, checked before anything else looks at a spec.
//!
//! Every front door (HTTP, AMQP, drop folder, CLI) parses through `parse_*_spec`, so these
//! bounds hold for everything that reaches a handler, a Redis record or an S3 call: a
//! hostile spec is refused with the field, the limit and what to do, never carried further.

use super::error::SpecError;
use super::spec::JobSpec;
use super::training::HeadSpec;
use crate::uri::abbreviated;

/// Largest spec (JSON or TOML text) a door without its own setting accepts; HTTP and AMQP
/// use `api.max_body_bytes` (1 MiB by default, the same figure).
pub const DEFAULT_MAX_SPEC_BYTES: usize = 1024 * 1024;
/// `api_version` is one constant; anything longer than this is not worth echoing.
pub const MAX_API_VERSION_BYTES: usize = 32;
/// `name`: shown in listings.
pub const MAX_NAME_CHARS: usize = 128;
/// Any `s3://` location: "s3://" + a 63-character bucket + "/" + a 1,024-byte key.
pub const MAX_URI_BYTES: usize = 5 + 63 + 1 + crate::uri::MAX_KEY_BYTES;
/// `input.text_field`, `input.id_field`, `input.label_field`: a JSON field or CSV column.
pub const MAX_FIELD_NAME_BYTES: usize = 256;
/// `input.etag`: S3 ETags are a quoted MD5, with a part count for multipart uploads.
pub const MAX_ETAG_BYTES: usize = 128;
/// `training.labels`: classes of one head.
pub const MAX_LABELS: usize = 1000;
/// One label's text.
pub const MAX_LABEL_BYTES: usize = 200;
/// `training.head.hidden`: layers of an MLP head.
pub const MAX_HIDDEN_LAYERS: usize = 16;
/// `input.max_record_lines`.
pub const MAX_RECORD_LINES: u64 = 100_000;

/// Refuses a spec text over `max` bytes before parsing it; `setting` names where the limit
/// comes from.
pub fn check_spec_size(len: usize, max: usize, setting: &str) -> Result<(), SpecError> {
    if len > max {
        return Err(SpecError::new(
            "(document)",
            format!(
                "the spec is {len} bytes; the limit is {max} ({setting}): shorten it (long label lists or names are the usual cause)"
            ),
        ));
    }
    Ok(())
}

/// Checks the length of every string and list in `spec`; the first field over its bound
/// is reported. Run first in `JobSpec::validate`, so later checks and messages only ever
/// see bounded values.
pub fn check_bounds(spec: &JobSpec) -> Result<(), SpecError> {
    bytes("api_version", &spec.api_version, MAX_API_VERSION_BYTES)?;
    let chars = spec.name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(SpecError::new(
            "name",
            format!("is {chars} characters; the limit is {MAX_NAME_CHARS}: use a shorter name"),
        ));
    }
    uri("model", &spec.model)?;
    uri("input.uri", &spec.input.uri)?;
    uri("output.uri", &spec.output.uri)?;
    bytes(
        "input.text_field",
        &spec.input.text_field,
        MAX_FIELD_NAME_BYTES,
    )?;
    optional("input.id_field", &spec.input.id_field, MAX_FIELD_NAME_BYTES)?;
    optional(
        "input.label_field",
        &spec.input.label_field,
        MAX_FIELD_NAME_BYTES,
    )?;
    optional("input.etag", &spec.input.etag, MAX_ETAG_BYTES)?;
    if !(1..=MAX_RECORD_LINES).contains(&spec.input.max_record_lines) {
        return Err(SpecError::new(
            "input.max_record_lines",
            format!(
                "{} is out of range 1-{MAX_RECORD_LINES}",
                spec.input.max_record_lines
            ),
        ));
    }
    let Some(training) = &spec.training else {
        return Ok(());
    };
    if training.labels.len() > MAX_LABELS {
        return Err(SpecError::new(
            "training.labels",
            format!(
                "has {} classes; the limit is {MAX_LABELS}: train fewer classes (or group rare ones)",
                training.labels.len()
            ),
        ));
    }
    for (i, label) in training.labels.iter().enumerate() {
        if label.len() > MAX_LABEL_BYTES {
            return Err(SpecError::new(
                "training.labels",
                format!(
                    "label {i} (`{}`) is {} bytes; the limit is {MAX_LABEL_BYTES}: use a shorter class name",
                    abbreviated(label, 40),
                    label.len()
                ),
            ));
        }
    }
    if let HeadSpec::Mlp { hidden, .. } = &training.head
        && hidden.len() > MAX_HIDDEN_LAYERS
    {
        return Err(SpecError::new(
            "training.head.hidden",
            format!(
                "has {} layers; the limit is {MAX_HIDDEN_LAYERS}",
                hidden.len()
            ),
        ));
    }
    if let Some(graph) = &training.step_graph {
        uri("training.step_graph", graph)?;
    }
    if let Some(eval) = &training.eval.uri {
        uri("training.eval.uri", eval)?;
    }
    Ok(())
}

fn bytes(field: &str, value: &str, max: usize) -> Result<(), SpecError> {
    if value.len() > max {
        return Err(SpecError::new(
            field,
            format!(
                "is {} bytes (`{}`); the limit is {max} bytes: use a shorter value",
                value.len(),
                abbreviated(value, 60)
            ),
        ));
    }
    Ok(())
}

/// A location's text: cut off long before parsing, with S3's own limits in the message.
fn uri(field: &str, value: &str) -> Result<(), SpecError> {
    if value.len() > MAX_URI_BYTES {
        return Err(SpecError::new(
            field,
            format!(
                "is {} bytes (`{}`); S3 keys are at most {} bytes and bucket names 63 characters, so no s3:// URI is longer than {MAX_URI_BYTES}: use a shorter key",
                value.len(),
                abbreviated(value, 60),
                crate::uri::MAX_KEY_BYTES
            ),
        ));
    }
    Ok(())
}

fn optional(field: &str, value: &Option<String>, max: usize) -> Result<(), SpecError> {
    value.as_deref().map_or(Ok(()), |v| bytes(field, v, max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{parse_json_spec, parse_toml_spec};
    use serde_json::{Value, json};

    fn inference() -> Value {
        json!({
            "api_version": "sluice/v1",
            "kind": "inference",
            "name": "reviews",
            "model": "s3://models/minilm/",
            "input": {"uri": "s3://data/in.jsonl", "format": "jsonl", "id_field": "id"},
            "output": {"uri": "s3://data/out/"}
        })
    }

    fn training() -> Value {
        json!({
            "api_version": "sluice/v1",
            "kind": "training",
            "name": "sentiment",
            "model": "s3://models/minilm/",
            "input": {"uri": "s3://data/train.csv", "format": "csv", "label_field": "category"},
            "output": {"uri": "s3://models/sentiment/"},
            "training": {"labels": ["fresh", "rotten"], "head": {"type": "mlp", "hidden": [8]},
                         "eval": {"uri": "s3://data/eval.csv"}}
        })
    }

    fn check(value: &Value) -> Result<(), SpecError> {
        parse_json_spec(value.to_string().as_bytes()).map(|_| ())
    }

    /// `edit` sets a field to a value of `n` units; at the bound it parses, one over it is
    /// refused naming `field` and the limit.
    fn at_and_over(base: Value, field: &str, bound: usize, edit: impl Fn(&mut Value, usize)) {
        let mut at = base.clone();
        edit(&mut at, bound);
        check(&at).unwrap_or_else(|e| panic!("{field} at {bound}: {e}"));
        let mut over = base;
        edit(&mut over, bound + 1);
        let err = check(&over).unwrap_err();
        assert_eq!(err.field, field, "{err}");
        assert!(
            err.message.contains(&bound.to_string()) || field.ends_with("uri") || field == "model",
            "{err}"
        );
        assert!(
            err.to_string().len() < 600,
            "the error repeats the value: {err}"
        );
    }

    fn key_of(len: usize) -> String {
        "k".repeat(len)
    }

    #[test]
    fn uris_hold_keys_of_at_most_1024_bytes() {
        let max = crate::uri::MAX_KEY_BYTES;
        at_and_over(inference(), "model", max, |v, n| {
            v["model"] = format!("s3://models/{}", key_of(n)).into();
        });
        at_and_over(inference(), "input.uri", max, |v, n| {
            v["input"]["uri"] = format!("s3://inputs/{}", key_of(n)).into();
        });
        at_and_over(inference(), "output.uri", max, |v, n| {
            v["output"]["uri"] = format!("s3://outputs/{}", key_of(n)).into();
        });
        at_and_over(training(), "training.eval.uri", max, |v, n| {
            v["training"]["eval"]["uri"] = format!("s3://evals/{}", key_of(n)).into();
        });
        at_and_over(training(), "training.step_graph", max, |v, n| {
            v["training"]["step_graph"] = format!("s3://graphs/{}", key_of(n)).into();
        });
    }

    #[test]
    fn a_300_kb_model_key_is_refused_without_echoing_it() {
        let mut v = inference();
        v["model"] = format!("s3://models/{}", key_of(300_000)).into();
        let err = check(&v).unwrap_err();
        assert_eq!(err.field, "model");
        assert!(err.message.contains("300012 bytes"), "{err}");
        assert!(err.to_string().len() < 400, "{err}");
    }

    #[test]
    fn string_fields_are_bounded() {
        at_and_over(inference(), "name", MAX_NAME_CHARS, |v, n| {
            v["name"] = "n".repeat(n).into();
        });
        at_and_over(
            inference(),
            "input.text_field",
            MAX_FIELD_NAME_BYTES,
            |v, n| {
                v["input"]["text_field"] = "t".repeat(n).into();
            },
        );
        at_and_over(
            inference(),
            "input.id_field",
            MAX_FIELD_NAME_BYTES,
            |v, n| {
                v["input"]["id_field"] = "i".repeat(n).into();
            },
        );
        at_and_over(
            training(),
            "input.label_field",
            MAX_FIELD_NAME_BYTES,
            |v, n| {
                v["input"]["label_field"] = "l".repeat(n).into();
            },
        );
        at_and_over(inference(), "input.etag", MAX_ETAG_BYTES, |v, n| {
            v["input"]["etag"] = "e".repeat(n).into();
        });
        // Multi-byte field names count bytes.
        let mut v = inference();
        v["input"]["text_field"] = "é".repeat(MAX_FIELD_NAME_BYTES / 2 + 1).into();
        assert_eq!(check(&v).unwrap_err().field, "input.text_field");
        let mut v = inference();
        v["api_version"] = "v".repeat(MAX_API_VERSION_BYTES + 1).into();
        let err = check(&v).unwrap_err();
        assert_eq!(err.field, "api_version");
        assert!(err.message.contains("limit is 32"), "{err}");
    }

    #[test]
    fn lists_are_bounded() {
        at_and_over(training(), "training.labels", MAX_LABELS, |v, n| {
            v["training"]["labels"] = (0..n).map(|i| format!("class-{i}")).collect();
        });
        at_and_over(training(), "training.labels", MAX_LABEL_BYTES, |v, n| {
            v["training"]["labels"] = json!(["short", "x".repeat(n)]);
        });
        at_and_over(
            training(),
            "training.head.hidden",
            MAX_HIDDEN_LAYERS,
            |v, n| {
                v["training"]["head"]["hidden"] = vec![4; n].into();
            },
        );
    }

    #[test]
    fn max_record_lines_is_checked() {
        at_and_over(
            inference(),
            "input.max_record_lines",
            MAX_RECORD_LINES as usize,
            |v, n| v["input"]["max_record_lines"] = n.into(),
        );
        let mut v = inference();
        v["input"]["max_record_lines"] = 0.into();
        assert_eq!(check(&v).unwrap_err().field, "input.max_record_lines");
    }

    #[test]
    fn the_whole_spec_is_bounded_before_parsing() {
        let body = inference().to_string();
        let padded = format!("{body:<width$}", width = 2048);
        assert!(crate::job::parse_json_spec_within(padded.as_bytes(), 2048).is_ok());
        let err =
            crate::job::parse_json_spec_within(format!("{padded} ").as_bytes(), 2048).unwrap_err();
        assert_eq!(err.field, "(document)");
        assert!(
            err.message.contains("2049 bytes; the limit is 2048"),
            "{err}"
        );
        let toml = "x".repeat(DEFAULT_MAX_SPEC_BYTES + 1);
        let err = parse_toml_spec(&toml).unwrap_err();
        assert!(err.message.contains("the limit is 1048576"), "{err}");
    }
}
