//! Pipeline templates: a job spec in TOML without its input and output, completed for each
//! dropped file.

use std::path::Path;

use crate::job::{JobSpec, SpecError, parse_toml_spec};

/// A pipeline's job template, checked when `ingest` starts.
#[derive(Debug, Clone)]
pub struct Template {
    /// Where it was loaded from, for messages.
    pub path: String,
    table: toml::Table,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("pipeline template {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("pipeline template {path}: {source}")]
    Invalid {
        path: String,
        #[source]
        source: SpecError,
    },
}

/// A file the drop folder cannot turn into a job (it goes to the failed prefix).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct DropError(pub String);

impl Template {
    pub fn load(path: &Path) -> Result<Self, TemplateError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| TemplateError::Unreadable {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        Self::parse(&shown, &text)
    }

    pub fn parse(path: &str, text: &str) -> Result<Self, TemplateError> {
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| TemplateError::Unreadable {
                    path: path.to_string(),
                    reason: e.to_string(),
                })?;
        let template = Self {
            path: path.to_string(),
            table,
        };
        // A template that cannot make a valid spec is refused now, not at the first file.
        template
            .fill(
                "s3://template-check/inbox/x/file.csv",
                "\"0123\"",
                "file.csv",
                "s3://template-check/outbox/x/v/file.csv/",
            )
            .map_err(|e| match e {
                FillError::Spec(source) => TemplateError::Invalid {
                    path: path.to_string(),
                    source,
                },
                FillError::Drop(e) => TemplateError::Unreadable {
                    path: path.to_string(),
                    reason: e.0,
                },
            })?;
        Ok(template)
    }

    /// The job for one dropped file: the template with the file as input (format from its
    /// extension, else the template's), `output` as output folder, and the file in the name.
    pub fn fill(
        &self,
        input: &str,
        etag: &str,
        file_name: &str,
        output: &str,
    ) -> Result<JobSpec, FillError> {
        let mut table = self.table.clone();
        let format = format_for(file_name).or_else(|| {
            table
                .get("input")
                .and_then(|i| i.get("format"))
                .and_then(|f| f.as_str())
                .map(str::to_string)
        });
        let Some(format) = format else {
            return Err(FillError::Drop(DropError(format!(
                "unsupported file type `{file_name}`: name it .csv, .jsonl or .ndjson (or set input.format in the pipeline template)"
            ))));
        };
        let input_table = table
            .entry("input")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(input_table) = input_table.as_table_mut() else {
            return Err(FillError::Spec(SpecError {
                field: "input".into(),
                message: "must be a table".into(),
            }));
        };
        input_table.insert("uri".into(), input.into());
        if !etag.is_empty() {
            input_table.insert("etag".into(), etag.into());
        }
        input_table.insert("format".into(), format.into());
        let output_table = table
            .entry("output")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(output_table) = output_table.as_table_mut() else {
            return Err(FillError::Spec(SpecError {
                field: "output".into(),
                message: "must be a table".into(),
            }));
        };
        output_table.insert("uri".into(), output.into());
        let base = table
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or("drop")
            .to_string();
        table.insert("name".into(), job_name(&base, file_name).into());
        let text = toml::to_string(&table).expect("a TOML table serialises");
        parse_toml_spec(&text).map_err(FillError::Spec)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum FillError {
    /// The file itself cannot be a job (e.g. its type).
    Drop(DropError),
    /// The completed spec is invalid.
    Spec(SpecError),
}

impl std::fmt::Display for FillError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FillError::Drop(e) => e.fmt(f),
            FillError::Spec(e) => e.fmt(f),
        }
    }
}

/// The input format a file's extension names, if any.
pub fn format_for(file_name: &str) -> Option<String> {
    let lower = file_name.to_ascii_lowercase();
    let ext = lower.rsplit_once('.').map(|(_, ext)| ext)?;
    match ext {
        "csv" => Some("csv".into()),
        "jsonl" | "ndjson" => Some("jsonl".into()),
        _ => None,
    }
}

/// `<template name> <file>`, in the characters job names allow, at most 128 of them.
fn job_name(base: &str, file_name: &str) -> String {
    let raw = format!("{base} {file_name}");
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_. ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut name = cleaned.trim().to_string();
    while name.len() > 128 {
        name.pop();
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMBED: &str = r#"
api_version = "sluice/v1"
kind = "inference"
name = "drop-embed"
model = "s3://models/minilm/"
task = "embed"

[input]
text_field = "text"
"#;

    #[test]
    fn a_file_completes_the_template() {
        let template = Template::parse("embed.toml", EMBED).unwrap();
        let spec = template
            .fill(
                "s3://drops/inbox/embed/day 1/reviews.CSV",
                "\"abc\"",
                "day 1/reviews.CSV",
                "s3://drops/outbox/embed/v1/day 1/reviews.CSV/",
            )
            .unwrap();
        assert_eq!(spec.input.uri, "s3://drops/inbox/embed/day 1/reviews.CSV");
        assert_eq!(spec.input.format, crate::job::InputFormat::Csv);
        assert_eq!(spec.input.etag.as_deref(), Some("\"abc\""));
        assert_eq!(
            spec.output.uri,
            "s3://drops/outbox/embed/v1/day 1/reviews.CSV/"
        );
        assert_eq!(spec.name, "drop-embed day 1_reviews.CSV");
    }

    #[test]
    fn unknown_file_types_are_a_drop_error() {
        let template = Template::parse("embed.toml", EMBED).unwrap();
        let err = template
            .fill(
                "s3://drops/inbox/embed/notes.txt",
                "",
                "notes.txt",
                "s3://drops/o/",
            )
            .unwrap_err();
        assert!(
            matches!(&err, FillError::Drop(e) if e.0.contains("notes.txt")),
            "{err}"
        );
    }

    #[test]
    fn a_broken_template_is_refused_at_load() {
        let err =
            Template::parse("bad.toml", &EMBED.replace("embed\"\n", "embedd\"\n")).unwrap_err();
        assert!(err.to_string().contains("bad.toml"), "{err}");
        assert!(err.to_string().contains("task"), "{err}");
        let err = Template::parse("bad.toml", "not toml [").unwrap_err();
        assert!(err.to_string().contains("bad.toml"), "{err}");
    }

    #[test]
    fn the_pipeline_templates_in_jobs_load() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/pipelines");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            Template::load(&path).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
        assert!(seen > 0, "no templates in jobs/pipelines/");
    }

    #[test]
    fn long_names_are_cut_to_the_limit() {
        let name = job_name("drop", &"x".repeat(300));
        assert_eq!(name.len(), 128);
    }
}
