//! JSON Schemas of the contracts upstream systems code against, generated from the types
//! (committed under `docs/schema/`; a test fails when they drift).

use schemars::JsonSchema;

use super::{JobEvent, JobSpec, SubmissionReply};

/// Builds one schema document.
pub type SchemaFn = fn() -> serde_json::Value;

/// The documents with a published schema: name, generator, committed file.
pub const SCHEMAS: [(&str, SchemaFn, &str); 3] = [
    (
        "job-spec",
        schema::<JobSpec>,
        "docs/schema/job-spec.schema.json",
    ),
    (
        "job-event",
        schema::<JobEvent>,
        "docs/schema/job-event.schema.json",
    ),
    (
        "submission-reply",
        schema::<SubmissionReply>,
        "docs/schema/submission-reply.schema.json",
    ),
];

fn schema<T: JsonSchema>() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(T)).expect("a schema serialises")
}

/// The schema called `name` (see `SCHEMAS`), pretty-printed with a final newline.
pub fn render(name: &str) -> Option<String> {
    SCHEMAS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, make, _)| {
            let mut text = serde_json::to_string_pretty(&make()).expect("JSON serialises");
            text.push('\n');
            text
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_schemas_match_the_types() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for (name, _, path) in SCHEMAS {
            let committed = std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| {
                panic!("{path}: {e}; generate it with `sluice schema {name} > {path}`")
            });
            assert_eq!(
                committed,
                render(name).unwrap(),
                "{path} drifted from the types; regenerate it with `sluice schema {name} > {path}` and commit it"
            );
        }
    }

    #[test]
    fn the_spec_schema_knows_the_rules_serde_enforces() {
        let schema = render("job-spec").unwrap();
        let value: serde_json::Value = serde_json::from_str(&schema).unwrap();
        assert_eq!(value["additionalProperties"], false, "{schema}");
        let required: Vec<&str> = value["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for field in ["api_version", "kind", "name", "model", "input", "output"] {
            assert!(required.contains(&field), "{field} not required: {schema}");
        }
        assert!(!required.contains(&"priority"));
        assert!(!required.contains(&"task"));
        let training = &value["$defs"]["TrainingSpec"];
        assert_eq!(
            training["required"],
            serde_json::json!(["labels"]),
            "{schema}"
        );
        assert_eq!(training["additionalProperties"], false, "{schema}");
        assert_eq!(value["properties"]["priority"]["maximum"], 9, "{schema}");
    }
}
