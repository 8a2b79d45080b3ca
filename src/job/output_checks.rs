//! Checks of the `output` section that types alone cannot make: compression with Parquet,
//! and `include_fields` names that would collide in an output row.

use super::error::SpecError;
use super::format::OutputFormat;
use super::spec::JobSpec;

/// Keys every output row already has (embed: `id`, `embedding`; classify: `id`, `label`,
/// `probabilities`); a carried field of the same name would shadow one of them.
pub const RESERVED_COLUMNS: [&str; 4] = ["id", "embedding", "label", "probabilities"];

/// The output section's cross-field rules; the first problem found is reported.
pub(super) fn check_output(spec: &JobSpec) -> Result<(), SpecError> {
    let output = &spec.output;
    if spec.kind.writes_package() {
        let set = [
            ("output.format", output.format != OutputFormat::Jsonl),
            ("output.compression", output.compression.is_some()),
            ("output.include_fields", !output.include_fields.is_empty()),
        ];
        if let Some((field, _)) = set.iter().find(|(_, on)| *on) {
            return Err(SpecError::new(
                field,
                format!(
                    "only applies to kind = \"inference\" jobs (a {} job writes a model package)",
                    spec.kind.as_str()
                ),
            ));
        }
    }
    if output.format == OutputFormat::Parquet && output.compression.is_some() {
        return Err(SpecError::new(
            "output.compression",
            "does not apply to output.format = \"parquet\", which compresses its pages itself (zstd); remove `compression`, or use format = \"jsonl\"",
        ));
    }
    for (index, name) in output.include_fields.iter().enumerate() {
        let field = format!("output.include_fields[{index}]");
        if name.trim().is_empty() {
            return Err(SpecError::new(&field, "must not be empty"));
        }
        if RESERVED_COLUMNS.contains(&name.as_str()) {
            return Err(SpecError::new(
                &field,
                format!(
                    "`{name}` is a column sluice writes itself ({}); copy another field, or rename it in the input",
                    RESERVED_COLUMNS.join(", ")
                ),
            ));
        }
        if output.include_fields[..index].contains(name) {
            return Err(SpecError::new(
                &field,
                format!("`{name}` is listed twice; list each field once"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::job::SpecError;
    use crate::job::validate::parse_json_spec;

    fn spec(output: serde_json::Value) -> Result<crate::job::JobSpec, SpecError> {
        let mut value = serde_json::json!({
            "api_version": "sluice/v1",
            "kind": "inference",
            "name": "reviews",
            "model": "s3://models/minilm",
            "task": "embed",
            "input": {"uri": "s3://data/in.jsonl", "format": "jsonl", "id_field": "id"},
        });
        value["output"] = output;
        parse_json_spec(value.to_string().as_bytes())
    }

    #[test]
    fn formats_and_compression_parse() {
        use crate::job::{OutputCompression, OutputFormat};
        let parquet = spec(serde_json::json!({"uri": "s3://data/out/", "format": "parquet"}));
        assert_eq!(parquet.unwrap().output.format, OutputFormat::Parquet);
        let zstd = spec(serde_json::json!({"uri": "s3://data/out/", "compression": "zstd"}));
        assert_eq!(
            zstd.unwrap().output.compression,
            Some(OutputCompression::Zstd)
        );
    }

    #[test]
    fn compression_is_refused_with_parquet() {
        let err = spec(serde_json::json!({
            "uri": "s3://data/out/", "format": "parquet", "compression": "gzip"
        }))
        .unwrap_err();
        assert_eq!(err.field, "output.compression");
        assert!(err.message.contains("compresses its pages itself"), "{err}");
    }

    #[test]
    fn include_fields_must_not_collide_or_repeat() {
        let err = spec(serde_json::json!({
            "uri": "s3://data/out/", "include_fields": ["title", "embedding"]
        }))
        .unwrap_err();
        assert_eq!(err.field, "output.include_fields[1]");
        assert!(
            err.message
                .contains("`embedding` is a column sluice writes"),
            "{err}"
        );
        let err = spec(serde_json::json!({
            "uri": "s3://data/out/", "include_fields": ["title", "url", "title"]
        }))
        .unwrap_err();
        assert_eq!(err.field, "output.include_fields[2]");
        assert!(err.message.contains("listed twice"), "{err}");
        let ok = spec(serde_json::json!({
            "uri": "s3://data/out/", "include_fields": ["title", "text"]
        }));
        assert_eq!(ok.unwrap().output.include_fields, ["title", "text"]);
    }
}
