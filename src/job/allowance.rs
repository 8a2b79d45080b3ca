//! Which S3 locations a submitter's jobs may use: every location a spec reads or writes must
//! lie under one of its allowed prefixes.

use super::JobSpec;
use crate::uri::S3Uri;

/// The locations one submitter (an API token, AMQP upstreams, a drop-folder pipeline) may
/// name in its jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct Allowance {
    /// Who holds it, as messages name it: `token "etl"`, `AMQP submissions (api.amqp_allow)`.
    pub holder: String,
    /// `None`: any location.
    prefixes: Option<Vec<S3Uri>>,
}

/// A job naming a location outside its submitter's allowance.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{holder} may not use {uri} (job spec field `{field}`); it may use {allowed}")]
pub struct LocationRefused {
    pub holder: String,
    pub field: String,
    pub uri: String,
    pub allowed: String,
}

impl Allowance {
    /// Any location.
    pub fn any(holder: impl Into<String>) -> Self {
        Self {
            holder: holder.into(),
            prefixes: None,
        }
    }

    /// From settings: S3 prefixes (`s3://bucket/` or `s3://bucket/prefix/`), or `*` for any.
    /// An empty list allows nothing (a token that only reads).
    pub fn parse(holder: impl Into<String>, entries: &[String]) -> Result<Self, String> {
        let holder = holder.into();
        if entries.iter().any(|e| e == "*") {
            return Ok(Self::any(holder));
        }
        let prefixes = entries
            .iter()
            .map(|e| {
                S3Uri::parse(e)
                    .map(|u| u.as_prefix())
                    .map_err(|reason| format!("allowed location {e:?}: {reason}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            holder,
            prefixes: Some(prefixes),
        })
    }

    pub fn is_any(&self) -> bool {
        self.prefixes.is_none()
    }

    /// Every location `spec` names (model, input, output, evaluation data, step graph) must
    /// lie under an allowed prefix.
    pub fn check(&self, spec: &JobSpec) -> Result<(), LocationRefused> {
        let Some(allowed) = &self.prefixes else {
            return Ok(());
        };
        // The model and output are checked as the folders the job will use.
        let places = match spec.locations() {
            Ok(places) => places,
            // Specs are validated before this; an unparsable one is simply not allowed.
            Err(e) => return Err(self.refused(&e.field, "an invalid location")),
        };
        for (field, parsed) in places.named() {
            // `.` and `..` segments are refused outright: S3 keys are literal, but a proxy
            // or gateway that normalises paths would let `prefix/../other/` escape.
            let inside = !parsed
                .key
                .split('/')
                .any(|segment| segment == "." || segment == "..")
                && allowed.iter().any(|prefix| prefix.contains(parsed));
            if !inside {
                let written = match field {
                    "model" => spec.model.as_str(),
                    "input.uri" => spec.input.uri.as_str(),
                    "output.uri" => spec.output.uri.as_str(),
                    _ => spec
                        .training
                        .as_ref()
                        .and_then(|t| match field {
                            "training.eval.uri" => t.eval.uri.as_deref(),
                            _ => t.step_graph.as_deref(),
                        })
                        .unwrap_or_default(),
                };
                return Err(self.refused(field, written));
            }
        }
        Ok(())
    }

    /// Whether a job of `spec` lies inside this allowance: the rule for which jobs a
    /// token may read, list and cancel (the jobs it could have submitted).
    pub fn covers(&self, spec: &JobSpec) -> bool {
        self.check(spec).is_ok()
    }

    fn refused(&self, field: &str, uri: &str) -> LocationRefused {
        LocationRefused {
            holder: self.holder.clone(),
            field: field.into(),
            uri: crate::uri::abbreviated(uri, 200),
            allowed: self.describe(),
        }
    }

    fn describe(&self) -> String {
        match &self.prefixes {
            None => "any location".into(),
            Some(p) if p.is_empty() => "no location".into(),
            Some(p) => p
                .iter()
                .map(|u| u.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::parse_json_spec;

    fn spec(training: bool) -> JobSpec {
        let mut body = serde_json::json!({
            "api_version": "sluice/v1",
            "kind": "inference",
            "name": "t",
            "model": "s3://models/minilm/",
            "input": {"uri": "s3://team-a/in/data.jsonl", "format": "jsonl"},
            "output": {"uri": "s3://team-a/out/"}
        });
        if training {
            body["kind"] = "training".into();
            body["training"] = serde_json::json!({
                "labels": ["a", "b"],
                "eval": {"uri": "s3://other/eval.jsonl", "format": "jsonl"}
            });
        }
        parse_json_spec(body.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn every_named_location_must_be_under_an_allowed_prefix() {
        let both = Allowance::parse(
            "token \"a\"",
            &["s3://models/".into(), "s3://team-a/".into()],
        )
        .unwrap();
        assert_eq!(both.check(&spec(false)), Ok(()));

        let refused = both.check(&spec(true)).unwrap_err();
        assert_eq!(refused.field, "training.eval.uri");
        assert_eq!(refused.uri, "s3://other/eval.jsonl");
        assert_eq!(
            refused.to_string(),
            "token \"a\" may not use s3://other/eval.jsonl (job spec field `training.eval.uri`); it may use s3://models/, s3://team-a/"
        );

        // A prefix is a folder: `s3://team-a/out` does not allow `s3://team-a/outside/`.
        let narrow =
            Allowance::parse("x", &["s3://models/".into(), "s3://team-a/in".into()]).unwrap();
        assert_eq!(narrow.check(&spec(false)).unwrap_err().field, "output.uri");
    }

    #[test]
    fn folders_are_checked_as_folders_and_dot_segments_refused() {
        let exact =
            Allowance::parse("x", &["s3://models/minilm/".into(), "s3://team-a/".into()]).unwrap();
        let mut folder_without_slash = spec(false);
        folder_without_slash.model = "s3://models/minilm".into();
        assert_eq!(exact.check(&folder_without_slash), Ok(()));

        let team =
            Allowance::parse("x", &["s3://models/".into(), "s3://team-a/out/".into()]).unwrap();
        let mut output = spec(false);
        output.input.uri = "s3://team-a/out/in.jsonl".into();
        output.output.uri = "s3://team-a/out".into();
        assert_eq!(team.check(&output), Ok(()));
        for sneaky in ["s3://team-a/out/../secret/", "s3://team-a/out/./x/"] {
            output.output.uri = sneaky.into();
            assert_eq!(
                team.check(&output).unwrap_err().field,
                "output.uri",
                "{sneaky}"
            );
        }
    }

    #[test]
    fn star_allows_anything_and_an_empty_list_nothing() {
        let any = Allowance::parse("x", &["s3://a/".into(), "*".into()]).unwrap();
        assert!(any.is_any());
        assert_eq!(any.check(&spec(true)), Ok(()));
        let none = Allowance::parse("x", &[]).unwrap();
        let refused = none.check(&spec(false)).unwrap_err();
        assert_eq!(refused.field, "model");
        assert!(refused.to_string().ends_with("it may use no location"));
    }

    #[test]
    fn a_bad_prefix_is_reported() {
        let err = Allowance::parse("x", &["team-a/".into()]).unwrap_err();
        assert!(err.contains("\"team-a/\""), "{err}");
    }
}
