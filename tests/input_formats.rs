//! Input formats through whole jobs: gzip and zstd (by suffix, by magic bytes, in large
//! objects and small), TSV and other delimiters, folders holding junk, JSONL cut into byte
//! ranges without reading, and Parquet written by pyarrow. Each compares the rows to the
//! plain file's and checks the manifest's counts add up.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::Cluster;
use serde_json::{Value, json};
use sluice::job::JobStatus;

const LIMIT: Duration = Duration::from_secs(180);

fn gzip(data: &[u8]) -> Vec<u8> {
    encode(data, "gzip")
}

/// Compresses with the async encoders, on a small runtime of their own.
fn encode(data: &[u8], codec: &str) -> Vec<u8> {
    use async_compression::tokio::write::{GzipEncoder, ZstdEncoder};
    use tokio::io::AsyncWriteExt;
    let data = data.to_vec();
    let codec = codec.to_string();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async move {
                if codec == "gzip" {
                    let mut e = GzipEncoder::new(Vec::new());
                    e.write_all(&data).await.unwrap();
                    e.shutdown().await.unwrap();
                    e.into_inner()
                } else {
                    let mut e = ZstdEncoder::new(Vec::new());
                    e.write_all(&data).await.unwrap();
                    e.shutdown().await.unwrap();
                    e.into_inner()
                }
            })
    })
    .join()
    .unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    encode(data, "zstd")
}

struct Ran {
    status: JobStatus,
    error: Option<String>,
    manifest: Value,
    rows: Vec<Value>,
    errors: Vec<Value>,
    progress: sluice::api::Progress,
}

async fn run_spec(cluster: &Cluster, spec: Value, output: &str) -> Ran {
    let id = cluster.submit(&spec).await;
    let job = cluster.wait(&id, LIMIT).await;
    let manifest: Value = cluster
        .get_text(&format!("{output}_manifest.json"))
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or(Value::Null);
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    if !manifest.is_null() {
        check_invariant(&manifest);
        rows = cluster.output_rows(output).await;
        for part in manifest["error_parts"].as_array().unwrap() {
            let key = sluice::uri::S3Uri::parse(part.as_str().unwrap())
                .unwrap()
                .key;
            let text = cluster.get_text(&key).await.unwrap();
            errors.extend(
                text.lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap()),
            );
        }
    }
    Ran {
        status: job.status,
        error: job.error,
        manifest,
        rows,
        errors,
        progress: job.progress,
    }
}

async fn run(cluster: &Cluster, name: &str, key: &str, body: Vec<u8>, input: Value) -> Ran {
    cluster.put(key, body).await;
    let output = format!("out/{name}/");
    let mut spec = cluster.spec(name, key, "jsonl", &output);
    spec["max_error_rate"] = json!(1.0);
    if let (Value::Object(into), Value::Object(add)) = (&mut spec["input"], input) {
        into.extend(add);
    }
    run_spec(cluster, spec, &output).await
}

/// read = written + failed + skipped, per object and in total.
fn check_invariant(manifest: &Value) {
    let n = |v: &Value| v.as_u64().unwrap();
    let rows = &manifest["rows"];
    assert_eq!(
        n(&rows["total"]),
        n(&rows["succeeded"]) + n(&rows["failed"]) + n(&rows["skipped"]),
        "{manifest}"
    );
    for object in manifest["inputs"].as_array().expect("inputs listed") {
        assert_eq!(
            n(&object["read"]),
            n(&object["written"]) + n(&object["failed"]) + n(&object["skipped"]),
            "{object}"
        );
    }
}

/// id (as JSON text) → embedding.
fn by_id(rows: &[Value]) -> HashMap<String, Vec<f64>> {
    let mut out = HashMap::new();
    for row in rows {
        let id = row["id"].to_string();
        let embedding = row["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!(out.insert(id.clone(), embedding).is_none(), "id {id} twice");
    }
    out
}

fn assert_same_rows(name: &str, got: &[Value], want: &HashMap<String, Vec<f64>>) {
    let got = by_id(got);
    assert_eq!(got.len(), want.len(), "{name}: row count");
    for (id, embedding) in want {
        let other = got
            .get(id)
            .unwrap_or_else(|| panic!("{name}: id {id} missing"));
        let diff = embedding
            .iter()
            .zip(other)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(diff < 1e-5, "{name}: id {id} differs by {diff}");
    }
}

fn reviews_jsonl(n: usize) -> (Vec<u8>, Vec<(String, String)>) {
    let (text, rows) = common::rotten_tomatoes_jsonl(Some(n));
    (text.into_bytes(), rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_inputs_give_the_rows_of_the_plain_file() {
    // Small shards, so a plain file is cut into several byte ranges.
    let mut cluster = Cluster::new(4096).await;
    cluster.start(true).await;
    let (plain, reviews) = reviews_jsonl(120);
    let base = run(
        &cluster,
        "plain",
        "in/plain.jsonl",
        plain.clone(),
        json!({}),
    )
    .await;
    assert_eq!(base.status, JobStatus::Succeeded, "{:?}", base.error);
    assert!(
        base.manifest["parts"].as_array().unwrap().len() > 3,
        "the plain file is split"
    );
    let want = by_id(&base.rows);
    assert_eq!(want.len(), reviews.len());

    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("gz-suffix", "in/data.jsonl.gz", gzip(&plain)),
        ("zst-suffix", "in/data.jsonl.zst", zstd(&plain)),
        // No suffix: the magic bytes tell (object larger than a shard: planning sniffs).
        ("gz-magic", "in/gz-no-suffix.jsonl", gzip(&plain)),
        ("zst-magic", "in/zst-no-suffix.jsonl", zstd(&plain)),
    ];
    for (name, key, body) in cases {
        let ran = run(&cluster, name, key, body, json!({})).await;
        assert_eq!(ran.status, JobStatus::Succeeded, "{name}: {:?}", ran.error);
        assert_eq!(
            ran.manifest["parts"].as_array().unwrap().len(),
            1,
            "{name}: a compressed object is one shard"
        );
        assert_same_rows(name, &ran.rows, &want);
    }

    // Without an id field, planning scans (rows are named by line) through the decoder.
    let ran = run(
        &cluster,
        "gz-scan",
        "in/scan.jsonl.gz",
        gzip(&plain),
        json!({"id_field": null}),
    )
    .await;
    assert_eq!(ran.status, JobStatus::Succeeded, "{:?}", ran.error);
    assert_eq!(ran.rows.len(), reviews.len());
    assert_eq!(ran.rows[0]["id"], "in/scan.jsonl.gz:1");
    assert_eq!(ran.manifest["rows"]["total"], reviews.len());

    // The new user's file: five rows in a .jsonl.gz are five rows, not one failure.
    let five: String = (0..5)
        .map(|i| format!("{{\"id\": {i}, \"text\": \"row {i}\"}}\n"))
        .collect();
    let ran = run(
        &cluster,
        "five",
        "in/five.jsonl.gz",
        gzip(five.as_bytes()),
        json!({}),
    )
    .await;
    assert_eq!(ran.status, JobStatus::Succeeded, "{:?}", ran.error);
    assert_eq!(ran.manifest["rows"]["succeeded"], 5);
    assert_eq!(ran.manifest["rows"]["failed"], 0);

    // CSV and TSV, compressed, with quoted fields holding delimiters and newlines.
    let mut csv = "id,text\n".to_string();
    let mut tsv = "id\ttext\n".to_string();
    for (id, text) in &reviews {
        csv.push_str(&format!("{id},\"{}\"\n", text.replace('"', "\"\"")));
        tsv.push_str(&format!("{id}\t\"{}\"\n", text.replace('"', "\"\"")));
    }
    for (name, key, body, format) in [
        ("csv-gz", "in/data.csv.gz", gzip(csv.as_bytes()), "csv"),
        ("tsv-zst", "in/data.tsv.zst", zstd(tsv.as_bytes()), "tsv"),
        ("tsv-plain", "in/data.tsv", tsv.clone().into_bytes(), "tsv"),
    ] {
        cluster.put(key, body).await;
        let output = format!("out/{name}/");
        let spec = cluster.spec(name, key, format, &output);
        let ran = run_spec(&cluster, spec, &output).await;
        assert_eq!(ran.status, JobStatus::Succeeded, "{name}: {:?}", ran.error);
        assert_same_rows(name, &ran.rows, &want);
    }

    // Another delimiter, and a quoted field holding it and a newline.
    let semi = "id;text\na;\"one; two\nthree\"\nb;plain\n";
    cluster.put("in/semi.csv", semi.as_bytes().to_vec()).await;
    let mut spec = cluster.spec("semi", "in/semi.csv", "csv", "out/semi/");
    spec["input"]["delimiter"] = json!(";");
    spec["output"]["include_fields"] = json!(["text"]);
    let ran = run_spec(&cluster, spec, "out/semi/").await;
    assert_eq!(ran.status, JobStatus::Succeeded, "{:?}", ran.error);
    let texts: HashMap<String, String> = ran
        .rows
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(texts["a"], "one; two\nthree");
    assert_eq!(texts["b"], "plain");

    // A carried field missing from a row fails that row, not silently null.
    let body = "{\"id\": 1, \"text\": \"a\", \"title\": \"t\"}\n{\"id\": 2, \"text\": \"b\"}\n";
    cluster
        .put("in/carry.jsonl", body.as_bytes().to_vec())
        .await;
    let mut spec = cluster.spec("carry", "in/carry.jsonl", "jsonl", "out/carry/");
    spec["output"]["include_fields"] = json!(["title"]);
    spec["max_error_rate"] = json!(1.0);
    let ran = run_spec(&cluster, spec, "out/carry/").await;
    assert_eq!(ran.status, JobStatus::Succeeded, "{:?}", ran.error);
    assert_eq!(ran.rows.len(), 1);
    assert_eq!(ran.rows[0]["title"], "t");
    assert_eq!(ran.errors.len(), 1);
    assert_eq!(ran.errors[0]["line"], 2);
    assert!(
        ran.errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("\"title\" missing"),
        "{}",
        ran.errors[0]
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_ranges_read_every_line_exactly_once() {
    let mut cluster = Cluster::new(256).await;
    cluster.start(true).await;
    // CRLF and LF endings, blank lines, lines longer than a shard, a bad line, a row
    // without its id, and no newline at the end.
    let mut body = String::new();
    let mut ids = Vec::new();
    for i in 0..60 {
        let ending = if i % 3 == 0 { "\r\n" } else { "\n" };
        let text = if i % 7 == 0 {
            "long ".repeat(120)
        } else {
            format!("row {i}")
        };
        body.push_str(&format!(
            "{{\"id\": \"r{i}\", \"text\": \"{text}\"}}{ending}"
        ));
        ids.push(format!("\"r{i}\""));
        if i % 10 == 5 {
            body.push_str("\r\n\n");
        }
    }
    let bad_offset = body.len();
    body.push_str("{not json\n");
    body.push_str("{\"text\": \"no id\"}\n");
    body.push_str("{\"id\": \"last\", \"text\": \"no newline\"}");
    ids.push("\"last\"".into());
    let ran = run(
        &cluster,
        "split",
        "in/split.jsonl",
        body.into_bytes(),
        json!({}),
    )
    .await;
    assert_eq!(ran.status, JobStatus::Succeeded, "{:?}", ran.error);
    assert!(
        ran.manifest["parts"].as_array().unwrap().len() > 10,
        "cut into many ranges: {}",
        ran.manifest["parts"]
    );
    let got: Vec<String> = ran.rows.iter().map(|r| r["id"].to_string()).collect();
    let mut sorted = got.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), got.len(), "no id twice");
    let mut want = ids.clone();
    want.sort();
    assert_eq!(sorted, want);
    let rows = &ran.manifest["rows"];
    assert_eq!(rows["failed"], 2);
    assert_eq!(rows["skipped"], 12, "two blank lines after every tenth row");
    assert_eq!(rows["total"], 61 + 2 + 12);
    let bad = ran
        .errors
        .iter()
        .find(|e| e["error"].as_str().unwrap().contains("not valid JSON"))
        .expect("the bad line is reported");
    assert_eq!(bad["offset"], bad_offset, "{bad}");
    // 60 rows and 12 blank lines before it; the finisher filled in the line.
    assert_eq!(bad["line"], 73, "{bad}");
    assert!(bad.get("piece_line").is_none(), "{bad}");
    let inputs = ran.manifest["inputs"].as_array().unwrap();
    assert_eq!(inputs[0]["read"], 61 + 2 + 12);
    // Known once the job is done, though planning never counted.
    assert!(ran.progress.rows_total_known);
    assert_eq!(ran.progress.rows_total, 61 + 2);
    assert_eq!(ran.progress.bytes_done, ran.progress.bytes_total);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_with_junk_reads_only_the_data() {
    let mut cluster = Cluster::new(1 << 20).await;
    cluster.start(true).await;
    let rows = |from: usize, n: usize| -> Vec<u8> {
        (from..from + n)
            .map(|i| format!("{{\"id\": {i}, \"text\": \"row {i}\"}}\n"))
            .collect::<String>()
            .into_bytes()
    };
    cluster.put("in/folder/part-0.jsonl", rows(0, 3)).await;
    cluster
        .put("in/folder/part-1.jsonl.gz", gzip(&rows(3, 2)))
        .await;
    cluster.put("in/folder/_SUCCESS", b"\n".to_vec()).await;
    cluster
        .put(
            "in/folder/.part-0.jsonl.crc",
            vec![0x63, 0x72, 0x63, 0x00, 0x01],
        )
        .await;
    cluster
        .put("in/folder/_manifest.json", b"{\"parts\": []}".to_vec())
        .await;
    cluster
        .put("in/folder/README.md", b"# about this data\n".to_vec())
        .await;

    let mut spec = cluster.spec("folder", "in/folder/", "jsonl", "out/folder/");
    spec["input"]["suffix"] = json!([".jsonl", ".jsonl.gz"]);
    let ran = run_spec(&cluster, spec, "out/folder/").await;
    assert_eq!(ran.status, JobStatus::Succeeded, "{:?}", ran.error);
    let mut got: Vec<i64> = ran.rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    got.sort();
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    assert_eq!(ran.manifest["inputs"].as_array().unwrap().len(), 2);

    // A suffix nothing matches says so, naming the suffix.
    let mut spec = cluster.spec("none", "in/folder/", "jsonl", "out/none/");
    spec["input"]["suffix"] = json!(".parquet");
    let ran = run_spec(&cluster, spec, "out/none/").await;
    assert_eq!(ran.status, JobStatus::Failed);
    let error = ran.error.unwrap();
    assert!(
        error.contains("none to read") && error.contains(".parquet"),
        "{error}"
    );
    cluster.stop().await;
}

/// Writes a Parquet file with pyarrow (a real producer) and returns its bytes.
fn pyarrow_file(script: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.parquet");
    let status = std::process::Command::new(common::assets().reference_python)
        .arg("-c")
        .arg(script)
        .arg(&path)
        .status()
        .expect("run the reference python");
    assert!(status.success(), "pyarrow script failed");
    std::fs::read(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_input_reads_row_groups_and_keeps_ids_exactly() {
    // 12,000 rows in row groups of 2,500 (one with a null text), cut into several shards.
    let mut cluster = Cluster::new(64 * 1024).await;
    cluster.start(true).await;
    let script = r#"
import sys, pyarrow as pa, pyarrow.parquet as pq
n = 12000
ids = [9007199254740993 + i for i in range(n)]
texts = [None if i == 4321 else f"review number {i % 500} about film {i % 37}" for i in range(n)]
table = pa.table({
    "doc_id": pa.array(ids, pa.int64()),
    "body": pa.array(texts, pa.large_string()),
    "score": pa.array([i / 4 for i in range(n)], pa.float64()),
})
pq.write_table(table, sys.argv[1], row_group_size=2500, compression="zstd")
"#;
    cluster.put("in/table.parquet", pyarrow_file(script)).await;
    let mut spec = cluster.spec("pq", "in/table.parquet", "parquet", "out/pq/");
    spec["input"]["text_field"] = json!("body");
    spec["input"]["id_field"] = json!("doc_id");
    spec["output"]["format"] = json!("parquet");
    spec["output"]["include_fields"] = json!(["score"]);
    spec["max_error_rate"] = json!(0.01);
    let id = cluster.submit(&spec).await;
    let job = cluster.wait(&id, LIMIT).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    let manifest: Value =
        serde_json::from_str(&cluster.get_text("out/pq/_manifest.json").await.unwrap()).unwrap();
    check_invariant(&manifest);
    assert!(manifest["parts"].as_array().unwrap().len() >= 5);
    assert_eq!(manifest["rows"]["succeeded"], 11999);
    assert_eq!(manifest["rows"]["failed"], 1);
    let errors_key = sluice::uri::S3Uri::parse(manifest["error_parts"][0].as_str().unwrap())
        .unwrap()
        .key;
    let error: Value =
        serde_json::from_str(cluster.get_text(&errors_key).await.unwrap().trim()).unwrap();
    assert_eq!(error["line"], 4322, "row numbers are 1-based: {error}");
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("\"body\" is null")
    );

    // The same texts as JSONL (ids above 2^53, where a float would round them).
    let base_id = 9007199254740993u64;
    let subset: String = (0..300)
        .map(|i| {
            json!({"id": base_id + i, "text": format!("review number {} about film {}", i % 500, i % 37)})
                .to_string()
                + "\n"
        })
        .collect();
    let base = run(
        &cluster,
        "pq-base",
        "in/pq-base.jsonl",
        subset.into_bytes(),
        json!({}),
    )
    .await;
    let want = by_id(&base.rows);

    // pyarrow reads the Parquet parts as a user would.
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for part in manifest["parts"].as_array().unwrap() {
        let uri = sluice::uri::S3Uri::parse(part["uri"].as_str().unwrap()).unwrap();
        let path = dir.path().join(uri.key.rsplit('/').next().unwrap());
        std::fs::write(&path, cluster.storage.get_bytes(&uri).await.unwrap()).unwrap();
        paths.push(path.to_string_lossy().into_owned());
    }
    let read_back = r#"
import json, sys, pyarrow as pa, pyarrow.parquet as pq
base, want = int(sys.argv[1]), set(json.loads(sys.argv[2]))
table = pa.concat_tables([pq.read_table(p) for p in sys.argv[3:]])
ids = table.column("id").to_pylist()
scores = table.column("score").to_pylist()
print(json.dumps({
    "rows": table.num_rows,
    "distinct": len(set(ids)),
    "min": min(ids), "max": max(ids),
    "schema": {f.name: str(f.type) for f in table.schema},
    "scores_match": all(s == (i - base) / 4 for i, s in zip(ids, scores)),
    "subset": {str(i): e for i, e in zip(ids, table.column("embedding").to_pylist()) if str(i) in want},
}))
"#;
    let out = std::process::Command::new(common::assets().reference_python)
        .arg("-c")
        .arg(read_back)
        .arg(base_id.to_string())
        .arg(serde_json::to_string(&want.keys().collect::<Vec<_>>()).unwrap())
        .args(&paths)
        .output()
        .expect("run the reference python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["rows"], 11999);
    assert_eq!(summary["distinct"], 11999);
    assert_eq!(summary["min"], base_id);
    assert_eq!(summary["max"], base_id + 11999);
    assert_eq!(summary["schema"]["id"], "int64", "{}", summary["schema"]);
    assert_eq!(summary["schema"]["score"], "double");
    assert_eq!(
        summary["schema"]["embedding"],
        "fixed_size_list<item: float not null>[384]"
    );
    assert_eq!(summary["scores_match"], true);
    let subset = summary["subset"].as_object().unwrap();
    assert_eq!(subset.len(), want.len());
    for (id, embedding) in &want {
        let other = subset[id].as_array().unwrap();
        let diff = embedding
            .iter()
            .zip(other)
            .map(|(a, b)| (a - b.as_f64().unwrap()).abs())
            .fold(0.0, f64::max);
        assert!(diff < 1e-5, "id {id} differs by {diff}");
    }

    // A column the spec names that the file lacks fails at planning, naming the columns.
    let mut spec = cluster.spec(
        "pq-missing",
        "in/table.parquet",
        "parquet",
        "out/pq-missing/",
    );
    spec["input"]["id_field"] = json!("doc_id");
    let ran = run_spec(&cluster, spec, "out/pq-missing/").await;
    assert_eq!(ran.status, JobStatus::Failed);
    let error = ran.error.unwrap();
    assert!(
        error.contains("no column \"text\"") && error.contains("[doc_id, body, score]"),
        "{error}"
    );
    cluster.stop().await;
}
