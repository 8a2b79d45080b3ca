//! Every S3 location a job spec names, parsed once into `S3Uri`s with the field each came
//! from: validation, allowances and the accessors all read them from here.

use super::error::SpecError;
use super::spec::JobSpec;
use crate::uri::S3Uri;

/// A spec's locations, parsed. The model and output are folders (`as_prefix`).
#[derive(Debug, Clone, PartialEq)]
pub struct Locations {
    pub model: S3Uri,
    pub input: S3Uri,
    pub output: S3Uri,
    pub eval: Option<S3Uri>,
    pub step_graph: Option<S3Uri>,
}

impl Locations {
    /// Each location with its spec field, model first; `model` and `output` as folders.
    pub fn named(&self) -> Vec<(&'static str, &S3Uri)> {
        let mut named = vec![
            ("model", &self.model),
            ("input.uri", &self.input),
            ("output.uri", &self.output),
        ];
        if let Some(eval) = &self.eval {
            named.push(("training.eval.uri", eval));
        }
        if let Some(graph) = &self.step_graph {
            named.push(("training.step_graph", graph));
        }
        named
    }
}

impl JobSpec {
    /// Parses every location, naming the field of the first that is not a valid `s3://`
    /// URI (S3's bucket rules, keys of at most 1,024 bytes).
    pub fn locations(&self) -> Result<Locations, SpecError> {
        let parse =
            |field: &str, text: &str| S3Uri::parse(text).map_err(|e| SpecError::new(field, e));
        let training = self.training.as_ref();
        Ok(Locations {
            model: parse("model", &self.model)?.as_prefix(),
            input: parse("input.uri", &self.input.uri)?,
            output: parse("output.uri", &self.output.uri)?.as_prefix(),
            eval: training
                .and_then(|t| t.eval.uri.as_deref())
                .map(|uri| parse("training.eval.uri", uri))
                .transpose()?,
            step_graph: training
                .and_then(|t| t.step_graph.as_deref())
                .map(|uri| parse("training.step_graph", uri))
                .transpose()?,
        })
    }
}

/// The accessors' reading of a location: a validated spec always parses; a record written
/// before a rule tightened is split as written rather than panicking the task that reads
/// it (S3 then answers for it, as a task error with the job).
pub(super) fn lenient(text: &str) -> S3Uri {
    S3Uri::parse(text).unwrap_or_else(|_| {
        let rest = text.strip_prefix("s3://").unwrap_or(text);
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        S3Uri::new(bucket, key)
    })
}

#[cfg(test)]
mod tests {
    use crate::job::parse_json_spec;

    #[test]
    fn locations_are_parsed_once_with_their_fields() {
        let spec = parse_json_spec(
            serde_json::json!({
                "api_version": "sluice/v1", "kind": "training", "name": "t",
                "model": "s3://models/enc",
                "input": {"uri": "s3://data/train.csv", "format": "csv"},
                "output": {"uri": "s3://models/head"},
                "training": {"labels": ["a", "b"], "eval": {"uri": "s3://data/eval.csv"},
                             "step_graph": "s3://graphs/step.onnx"}
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let places = spec.locations().unwrap();
        let named: Vec<String> = places
            .named()
            .iter()
            .map(|(field, uri)| format!("{field}={uri}"))
            .collect();
        assert_eq!(
            named,
            [
                "model=s3://models/enc/",
                "input.uri=s3://data/train.csv",
                "output.uri=s3://models/head/",
                "training.eval.uri=s3://data/eval.csv",
                "training.step_graph=s3://graphs/step.onnx"
            ]
        );
        assert_eq!(spec.model_uri(), places.model);
        assert_eq!(spec.output_uri(), places.output);
        assert_eq!(spec.input_uri(), places.input);
    }

    #[test]
    fn an_unparsable_record_is_read_without_panicking() {
        assert_eq!(super::lenient("s3://Bad_Bucket/k").key, "k");
        assert_eq!(super::lenient("nonsense").bucket, "nonsense");
    }
}
