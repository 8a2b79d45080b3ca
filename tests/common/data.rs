//! Test data: the registry-package assets, data sets cut from them, the test's bucket, and
//! the exactly-once check on a job's output.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::Value;
use sluice::uri::S3Uri;

use super::Cluster;

/// Paths of the registry-package assets (`scripts/assets.sh` prints them; `scripts/test.sh`
/// exports them).
pub struct Assets {
    pub ort_dylib: String,
    pub model_dir: PathBuf,
    /// paraphrase-MiniLM-L3-v2, fp32.
    pub l3_dir: PathBuf,
    pub rotten_tomatoes_csv: PathBuf,
    pub news_csv: PathBuf,
    pub reference_python: String,
}

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the suite with scripts/test.sh, which fetches the model, data and runtime and exports it")
    })
}

pub fn assets() -> Assets {
    Assets {
        ort_dylib: required("SLUICE_TEST_ORT_DYLIB"),
        model_dir: required("SLUICE_TEST_MODEL_DIR").into(),
        l3_dir: required("SLUICE_TEST_L3_DIR").into(),
        rotten_tomatoes_csv: required("SLUICE_TEST_RT_CSV").into(),
        news_csv: required("SLUICE_TEST_NEWS_CSV").into(),
        reference_python: required("SLUICE_TEST_REF_PYTHON"),
    }
}

impl Cluster {
    pub fn uri(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    pub async fn put(&self, key: &str, body: impl Into<Vec<u8>>) {
        self.storage
            .put(
                &S3Uri::parse(&self.uri(key)).unwrap(),
                body.into(),
                "application/octet-stream",
            )
            .await
            .expect("upload test input");
    }

    pub async fn get_text(&self, key: &str) -> Option<String> {
        self.storage
            .get_bytes(&S3Uri::parse(&self.uri(key)).unwrap())
            .await
            .ok()
            .map(|b| String::from_utf8(b).expect("utf-8 output"))
    }

    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        self.storage
            .list(&S3Uri::parse(&self.uri(prefix)).unwrap())
            .await
            .expect("list")
            .into_iter()
            .map(|o| o.uri.key)
            .collect()
    }

    /// Every output row of a finished job, from the parts its manifest lists.
    pub async fn output_rows(&self, output_key: &str) -> Vec<Value> {
        let manifest: Value = serde_json::from_str(
            &self
                .get_text(&format!("{output_key}_manifest.json"))
                .await
                .expect("manifest"),
        )
        .unwrap();
        let mut rows = Vec::new();
        for part in manifest["parts"].as_array().unwrap() {
            let key = S3Uri::parse(part["uri"].as_str().unwrap()).unwrap().key;
            let text = self
                .get_text(&key)
                .await
                .expect("part listed in manifest exists");
            rows.extend(
                text.lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap()),
            );
        }
        rows
    }
}

/// The Rotten Tomatoes review snippets (plots dropped) as JSONL lines with ids `rt-00000`….
pub fn rotten_tomatoes_jsonl(limit: Option<usize>) -> (String, Vec<(String, String)>) {
    let mut reader =
        csv::Reader::from_path(assets().rotten_tomatoes_csv).expect("rotten tomatoes csv");
    let mut out = String::new();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.expect("csv record");
        if &record[0] == "plot" {
            continue;
        }
        let id = format!("rt-{:05}", rows.len());
        out.push_str(
            &serde_json::json!({"id": id, "text": &record[1], "label": &record[0]}).to_string(),
        );
        out.push('\n');
        rows.push((id, record[1].to_string()));
        if limit.is_some_and(|l| rows.len() >= l) {
            break;
        }
    }
    (out, rows)
}

/// Asserts every expected id appears exactly once and every embedding is a unit vector of
/// 384 numbers.
pub fn assert_exactly_once(rows: &[Value], expected_ids: &[String]) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for row in rows {
        *seen
            .entry(row["id"].as_str().expect("string id"))
            .or_default() += 1;
        let embedding = row["embedding"].as_array().expect("embedding array");
        assert_eq!(embedding.len(), 384);
        let norm: f64 = embedding
            .iter()
            .map(|v| v.as_f64().unwrap().powi(2))
            .sum::<f64>()
            .sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "norm {norm} for {}", row["id"]);
    }
    let duplicates: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "duplicated ids: {duplicates:?}");
    let missing: Vec<_> = expected_ids
        .iter()
        .filter(|id| !seen.contains_key(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} ids missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(rows.len(), expected_ids.len());
}

/// Rotten Tomatoes review snippets (plots dropped) as (text, label), in file order.
pub fn rotten_tomatoes_reviews(limit: Option<usize>) -> Vec<(String, String)> {
    let mut reader =
        csv::Reader::from_path(assets().rotten_tomatoes_csv).expect("rotten tomatoes csv");
    let mut reviews = Vec::new();
    for record in reader.records() {
        let record = record.expect("csv record");
        if &record[0] == "plot" {
            continue;
        }
        reviews.push((record[1].to_string(), record[0].to_string()));
        if limit.is_some_and(|l| reviews.len() >= l) {
            break;
        }
    }
    reviews
}

/// Reviews as CSV with columns `text,label`.
pub fn reviews_csv(reviews: &[(String, String)]) -> String {
    let mut body = "text,label\n".to_string();
    for (text, label) in reviews {
        body.push_str(&format!("\"{}\",{label}\n", text.replace('"', "\"\"")));
    }
    body
}
