//! Checking a spec: parsing JSON or TOML within a size bound, then every field, so that
//! nothing invalid reaches a queue.

use super::error::SpecError;
use super::format::InputFormat;
use super::limits::{DEFAULT_MAX_SPEC_BYTES, check_bounds, check_spec_size};
use super::locations::lenient;
use super::spec::{API_VERSION, JobKind, JobSpec, Task};
use crate::uri::{S3Uri, abbreviated};

/// Parses a JSON spec and validates it, refusing one over `DEFAULT_MAX_SPEC_BYTES`.
pub fn parse_json_spec(body: &[u8]) -> Result<JobSpec, SpecError> {
    parse_json_spec_within(body, DEFAULT_MAX_SPEC_BYTES)
}

/// Parses a JSON spec (the HTTP body, an AMQP message) of at most `max_bytes` and
/// validates it.
pub fn parse_json_spec_within(body: &[u8], max_bytes: usize) -> Result<JobSpec, SpecError> {
    check_spec_size(body.len(), max_bytes, "api.max_body_bytes")?;
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let spec: JobSpec = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| SpecError::from_serde(e.path().to_string(), e.inner().to_string()))?;
    deserializer
        .end()
        .map_err(|e| SpecError::new("(document)", e.to_string()))?;
    spec.validate()?;
    Ok(spec)
}

/// Parses a TOML spec (a file in `jobs/`, a filled drop-folder template) and validates it.
pub fn parse_toml_spec(text: &str) -> Result<JobSpec, SpecError> {
    check_spec_size(
        text.len(),
        DEFAULT_MAX_SPEC_BYTES,
        "the largest spec sluice reads",
    )?;
    let deserializer = toml::Deserializer::parse(text)
        .map_err(|e| SpecError::new("(document)", abbreviated(&e.to_string(), 1000)))?;
    let spec: JobSpec = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let inner = e.inner().message().to_string();
        SpecError::from_serde(e.path().to_string(), inner)
    })?;
    spec.validate()?;
    Ok(spec)
}

impl JobSpec {
    /// Checks what types alone cannot; the first problem found is reported.
    pub fn validate(&self) -> Result<(), SpecError> {
        check_bounds(self)?;
        if self.api_version != API_VERSION {
            return Err(SpecError::new(
                "api_version",
                format!(
                    "`{}` is not supported (use `{API_VERSION}`)",
                    abbreviated(&self.api_version, 40)
                ),
            ));
        }
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 128
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_. ".contains(c));
        if !name_ok {
            return Err(SpecError::new(
                "name",
                "must be 1-128 characters of letters, digits, space, '-', '_' or '.'",
            ));
        }
        let places = self.locations()?;
        let (input, output) = (&places.input, &places.output);
        if input.key.is_empty() && !self.input.uri.ends_with('/') {
            // A whole bucket is allowed, but only when asked for explicitly.
            return Err(SpecError::new(
                "input.uri",
                "names a bucket, not an object: add a key, or end with '/' to read every object",
            ));
        }
        if input.as_prefix().contains(output) || output.contains(input) {
            return Err(SpecError::new(
                "output.uri",
                format!(
                    "`{}` overlaps the input `{}`: outputs would be read back as input",
                    self.output.uri, self.input.uri
                ),
            ));
        }
        if self.input.etag.is_some() && self.input.uri.ends_with('/') {
            return Err(SpecError::new(
                "input.etag",
                "pins one object's version; a folder input cannot have one",
            ));
        }
        if self.input.text_field.trim().is_empty() {
            return Err(SpecError::new("input.text_field", "must not be empty"));
        }
        if matches!(&self.input.id_field, Some(f) if f.trim().is_empty()) {
            return Err(SpecError::new(
                "input.id_field",
                "must not be empty (leave it out to use line numbers)",
            ));
        }
        self.validate_input_format()?;
        if self.compress.is_some() && self.kind != JobKind::Compress {
            return Err(SpecError::new(
                "compress",
                "only applies to kind = \"compress\" jobs",
            ));
        }
        match (self.kind, &self.training) {
            (JobKind::Compress, Some(_)) => {
                return Err(SpecError::new(
                    "training",
                    "only applies to kind = \"training\" jobs",
                ));
            }
            (JobKind::Compress, None) => self.validate_compress(output)?,
            (JobKind::Inference, Some(_)) => {
                return Err(SpecError::new(
                    "training",
                    "only applies to kind = \"training\" jobs",
                ));
            }
            (JobKind::Inference, None) if self.input.label_field.is_some() => {
                return Err(SpecError::new(
                    "input.label_field",
                    "only applies to kind = \"training\" jobs",
                ));
            }
            (JobKind::Training, None) => {
                return Err(SpecError::new(
                    "training",
                    "a training job needs a [training] section (at least `labels`)",
                ));
            }
            (JobKind::Training, Some(training)) => {
                if self.task != Task::Embed {
                    return Err(SpecError::new(
                        "task",
                        "does not apply to training jobs (they train a classifier on the encoder's embeddings)",
                    ));
                }
                if matches!(&self.input.label_field, Some(f) if f.trim().is_empty()) {
                    return Err(SpecError::new("input.label_field", "must not be empty"));
                }
                if self.label_field() == self.input.text_field {
                    return Err(SpecError::new(
                        "input.label_field",
                        format!(
                            "is the text field (`{}`) too: the label must be another field",
                            self.input.text_field
                        ),
                    ));
                }
                training.validate()?;
                if let Some(eval) = &places.eval
                    && (output.contains(eval) || eval.as_prefix().contains(output))
                {
                    return Err(SpecError::new(
                        "training.eval.uri",
                        format!("`{eval}` overlaps the output `{}`", self.output.uri),
                    ));
                }
            }
            (JobKind::Inference, None) => {}
        }
        super::output_checks::check_output(self)?;
        if self.priority > 9 {
            return Err(SpecError::new(
                "priority",
                format!("{} is out of range 0-9", self.priority),
            ));
        }
        if !(0.0..=1.0).contains(&self.max_error_rate) {
            return Err(SpecError::new(
                "max_error_rate",
                format!("{} is out of range 0-1", self.max_error_rate),
            ));
        }
        Ok(())
    }

    /// The model package's folder. Like the other accessors it never panics: see
    /// `locations::lenient`.
    fn validate_input_format(&self) -> Result<(), SpecError> {
        if let Some(d) = &self.input.delimiter {
            if self.input.format != InputFormat::Csv {
                return Err(SpecError::new(
                    "input.delimiter",
                    "only applies to format = \"csv\" (TSV is always tab-separated)",
                ));
            }
            let ok = d.len() == 1 && d.is_ascii() && !matches!(d.as_str(), "\"" | "\n" | "\r");
            if !ok {
                return Err(SpecError::new(
                    "input.delimiter",
                    format!(
                        "{d:?} is not a delimiter: use one ASCII character other than a quote or a line ending (\";\", \"|\", \"\\t\")"
                    ),
                ));
            }
        }
        if let Some(suffixes) = &self.input.suffix {
            if suffixes.as_slice().is_empty() || suffixes.as_slice().iter().any(|s| s.is_empty()) {
                return Err(SpecError::new(
                    "input.suffix",
                    "must name at least one non-empty suffix, such as \".jsonl\"",
                ));
            }
            if !self.input.uri.ends_with('/') {
                return Err(SpecError::new(
                    "input.suffix",
                    "only applies to a folder input (an input.uri ending in '/')",
                ));
            }
        }
        if self.kind == JobKind::Compress && self.input.delimiter.is_some() {
            return Err(SpecError::new(
                "input.delimiter",
                "compression jobs read comma-separated CSV or TSV; convert the sample or use format = \"tsv\"",
            ));
        }
        if self.kind == JobKind::Compress && self.input.format == InputFormat::Parquet {
            return Err(SpecError::new(
                "input.format",
                "compression jobs read their sample as JSONL, CSV or TSV; export it as JSONL",
            ));
        }
        if self.kind == JobKind::Training && self.input.delimiter.is_some() {
            return Err(SpecError::new(
                "input.delimiter",
                "training jobs read comma-separated CSV or TSV; convert the data or use format = \"tsv\"",
            ));
        }
        if self.kind == JobKind::Training && self.input.format == InputFormat::Parquet {
            return Err(SpecError::new(
                "input.format",
                "training jobs read JSONL, CSV or TSV (gzip or zstd compressed or not); Parquet training data is not supported yet: export it as JSONL",
            ));
        }
        Ok(())
    }

    /// A compression job's own checks: its settings, a task it cannot take, and an output
    /// that would overwrite the source package.
    fn validate_compress(&self, output: &S3Uri) -> Result<(), SpecError> {
        if self.task != Task::Embed {
            return Err(SpecError::new(
                "task",
                "does not apply to compression jobs (the package's own task is kept)",
            ));
        }
        if matches!(&self.input.label_field, Some(f) if f.trim().is_empty()) {
            return Err(SpecError::new("input.label_field", "must not be empty"));
        }
        let model = self.model_uri();
        let output = output.as_prefix();
        if model.contains(&output) || output.contains(&model) {
            return Err(SpecError::new(
                "output.uri",
                format!(
                    "`{}` overlaps the source package `{}`: write the int8 package to a folder of its own",
                    self.output.uri, self.model
                ),
            ));
        }
        self.compress.clone().unwrap_or_default().validate()
    }

    pub fn model_uri(&self) -> S3Uri {
        lenient(&self.model).as_prefix()
    }

    pub fn input_uri(&self) -> S3Uri {
        lenient(&self.input.uri)
    }

    /// Training jobs: the field holding each row's label.
    pub fn label_field(&self) -> &str {
        self.input.label_field.as_deref().unwrap_or("label")
    }

    pub fn output_uri(&self) -> S3Uri {
        lenient(&self.output.uri).as_prefix()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Pool;

    fn valid_json() -> serde_json::Value {
        serde_json::json!({
            "api_version": "sluice/v1",
            "kind": "inference",
            "name": "reviews",
            "model": "s3://models/minilm",
            "task": "embed",
            "input": {"uri": "s3://data/in.jsonl", "format": "jsonl", "text_field": "text", "id_field": "id"},
            "output": {"uri": "s3://data/out/"}
        })
    }

    fn parse(value: serde_json::Value) -> Result<JobSpec, SpecError> {
        parse_json_spec(value.to_string().as_bytes())
    }

    #[test]
    fn valid_spec_gets_defaults() {
        let spec = parse(valid_json()).unwrap();
        assert_eq!(spec.pool, Pool::Cpu);
        assert_eq!(spec.priority, 5);
        assert_eq!(spec.output_uri().key, "out/");
    }

    #[test]
    fn unknown_field_is_named_with_its_path() {
        let mut v = valid_json();
        v["input"]["colour"] = "red".into();
        let err = parse(v).unwrap_err();
        assert_eq!(err.field, "input.colour");
        assert!(err.message.contains("unknown field"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let mut v = valid_json();
        v["priority"] = "high".into();
        assert_eq!(parse(v).unwrap_err().field, "priority");
    }

    #[test]
    fn missing_field_is_named() {
        let mut v = valid_json();
        v.as_object_mut().unwrap().remove("model");
        let err = parse(v).unwrap_err();
        assert_eq!(err.field, "model");
        assert!(err.message.contains("missing field"));
    }

    #[test]
    fn bad_enum_value_is_named() {
        let mut v = valid_json();
        v["input"]["format"] = "xml".into();
        assert_eq!(parse(v).unwrap_err().field, "input.format");
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let mut v = valid_json();
        v["max_error_rate"] = 1.5.into();
        assert_eq!(parse(v).unwrap_err().field, "max_error_rate");
        let mut v = valid_json();
        v["model"] = "http://x/y".into();
        assert_eq!(parse(v).unwrap_err().field, "model");
    }

    #[test]
    fn output_inside_input_is_refused() {
        let mut v = valid_json();
        v["input"]["uri"] = "s3://data/".into();
        assert_eq!(parse(v).unwrap_err().field, "output.uri");
    }

    #[test]
    fn only_single_objects_can_be_pinned_to_a_version() {
        let mut v = valid_json();
        v["input"]["etag"] = "\"abc\"".into();
        assert_eq!(
            parse(v.clone()).unwrap().input.etag.as_deref(),
            Some("\"abc\"")
        );
        v["input"]["uri"] = "s3://data/in/".into();
        assert_eq!(parse(v).unwrap_err().field, "input.etag");
    }

    #[test]
    fn toml_specs_in_jobs_folder_parse() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/jobs");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                parse_toml_spec(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen > 0, "no job specs in jobs/");
    }

    #[test]
    fn toml_unknown_field_is_named() {
        let text = r#"
api_version = "sluice/v1"
kind = "inference"
name = "x"
model = "s3://models/m"
task = "embed"
[input]
uri = "s3://data/in.csv"
format = "csv"
txt_field = "text"
[output]
uri = "s3://data/out/"
"#;
        let err = parse_toml_spec(text).unwrap_err();
        assert_eq!(err.field, "input.txt_field", "{err}");
    }
}
