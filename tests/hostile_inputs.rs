//! Hostile inputs through whole jobs: line endings, BOMs and foreign encodings, CSV headers
//! that miss the text column, unclosed quotes, oversized records, exotic ids and duplicates,
//! header-only files and truncation. Each asserts the rows, ids, error lines and status, and
//! that the manifest's counts add up (read = written + failed + skipped per object).

mod common;

use std::time::Duration;

use common::Cluster;
use serde_json::{Value, json};
use sluice::job::JobStatus;

const LIMIT: Duration = Duration::from_secs(120);

struct Ran {
    status: JobStatus,
    error: Option<String>,
    manifest: Option<Value>,
    /// Output lines as written (raw text, so ids are checked exactly).
    lines: Vec<String>,
    /// Errors-part rows.
    errors: Vec<Value>,
    rows_truncated: u64,
}

async fn run(cluster: &Cluster, name: &str, body: &[u8], format: &str, tweak: Value) -> Ran {
    let input = format!("in/{name}.{format}");
    let output = format!("out/{name}/");
    cluster.put(&input, body.to_vec()).await;
    let mut spec = cluster.spec(name, &input, format, &output);
    spec["max_error_rate"] = json!(1.0);
    merge(&mut spec, tweak);
    let id = cluster.submit(&spec).await;
    let job = cluster.wait(&id, LIMIT).await;
    let manifest: Option<Value> = cluster
        .get_text(&format!("{output}_manifest.json"))
        .await
        .map(|t| serde_json::from_str(&t).unwrap());
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    for key in cluster.keys(&output).await {
        let text = cluster.get_text(&key).await.unwrap_or_default();
        if key.contains("/errors/") {
            errors.extend(
                text.lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap()),
            );
        } else if key.ends_with(".jsonl") {
            lines.extend(text.lines().map(str::to_string));
        }
    }
    if let Some(m) = &manifest {
        check_invariant(name, m);
    }
    Ran {
        status: job.status,
        error: job.error,
        manifest,
        lines,
        errors,
        rows_truncated: job.progress.rows_truncated,
    }
}

fn merge(spec: &mut Value, tweak: Value) {
    if let Value::Object(fields) = tweak {
        for (k, v) in fields {
            match (spec.get_mut(&k), v) {
                (Some(Value::Object(inner)), Value::Object(add)) => inner.extend(add),
                (_, v) => spec[&k] = v,
            }
        }
    }
}

/// read = written + failed + skipped, per object and in total.
fn check_invariant(name: &str, manifest: &Value) {
    let rows = &manifest["rows"];
    let n = |v: &Value| v.as_u64().unwrap();
    assert_eq!(
        n(&rows["total"]),
        n(&rows["succeeded"]) + n(&rows["failed"]) + n(&rows["skipped"]),
        "{name}: {manifest}"
    );
    for object in manifest["inputs"].as_array().expect("inputs listed") {
        assert_eq!(
            n(&object["read"]),
            n(&object["written"]) + n(&object["failed"]) + n(&object["skipped"]),
            "{name}: {object}"
        );
    }
}

fn ids(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let start = l.find("\"id\":").expect("id first") + 5;
            let end = l[start..].find(",\"").unwrap() + start;
            l[start..end].to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_files_lose_no_row_silently() {
    let mut cluster = Cluster::new(1024).await;
    cluster.settings.planner.max_record_bytes = 4096;
    cluster.start(true).await;

    // CR-only line endings, as some spreadsheet programs save CSV.
    let ran = run(
        &cluster,
        "cr-only",
        b"id,text\r1,good\r2,bad\r",
        "csv",
        json!({}),
    )
    .await;
    assert_eq!(ran.status, JobStatus::Succeeded, "{:?}", ran.error);
    let mut got = ids(&ran.lines);
    got.sort();
    assert_eq!(got, vec!["\"1\"", "\"2\""]);

    // Headers that miss the text column fail before any work, naming header and hint.
    for (name, header, hint) in [
        ("space", "id, text", "differs only by spaces"),
        ("case", "ID,Text", "differs only by case"),
        ("semicolon", "id;text", "semicolons"),
    ] {
        let body = format!("{header}\n1,a\n2,b\n");
        let ran = run(&cluster, name, body.as_bytes(), "csv", json!({})).await;
        assert_eq!(ran.status, JobStatus::Failed, "{name}");
        let error = ran.error.unwrap();
        assert!(
            error.contains("line 1") && error.contains(hint),
            "{name}: {error}"
        );
        assert!(ran.lines.is_empty() && ran.manifest.is_none(), "{name}");
    }

    // Ids come back exactly as written.
    let body = concat!(
        "{\"id\": 12345678901234567890123, \"text\": \"a\"}\n",
        "{\"id\": 12345678901234567890124, \"text\": \"b\"}\n",
        "{\"id\": 1e3, \"text\": \"c\"}\n",
        "{\"id\": -0, \"text\": \"d\"}\n",
    );
    let ran = run(&cluster, "ids", body.as_bytes(), "jsonl", json!({})).await;
    assert_eq!(ran.status, JobStatus::Succeeded, "{:?}", ran.error);
    let mut got = ids(&ran.lines);
    got.sort();
    assert_eq!(
        got,
        vec![
            "-0",
            "12345678901234567890123",
            "12345678901234567890124",
            "1e3"
        ]
    );
    assert_eq!(ran.manifest.unwrap()["duplicate_ids"]["ids"], 0);

    // Duplicate ids (a string however escaped) are reported, or fail the job when asked.
    let body = "{\"id\":\"a\",\"text\":\"x\"}\n{\"id\":\"b\",\"text\":\"y\"}\n{\"id\":\"\\u0061\",\"text\":\"z\"}\n{\"id\":1,\"text\":\"w\"}\n{\"id\":\"1\",\"text\":\"v\"}\n";
    let ran = run(&cluster, "dupes", body.as_bytes(), "jsonl", json!({})).await;
    assert_eq!(ran.status, JobStatus::Succeeded);
    let dupes = &ran.manifest.unwrap()["duplicate_ids"];
    assert_eq!(
        (dupes["ids"].as_u64(), dupes["rows"].as_u64()),
        (Some(1), Some(1)),
        "{dupes}"
    );
    assert_eq!(dupes["examples"][0]["count"], 2);
    let ran = run(
        &cluster,
        "dupes-fail",
        body.as_bytes(),
        "jsonl",
        json!({"output": {"on_duplicate_id": "fail"}}),
    )
    .await;
    assert_eq!(ran.status, JobStatus::Failed);
    assert!(ran.error.unwrap().contains("1 ids occur more than once"));

    // A UTF-8 BOM is skipped; its first row is a row like the others.
    let body =
        "\u{feff}{\"id\":1,\"text\":\"a\"}\n{\"id\":2,\"text\":\"b\"}\n{\"id\":3,\"text\":\"c\"}\n";
    let ran = run(&cluster, "bom", body.as_bytes(), "jsonl", json!({})).await;
    assert_eq!(ran.status, JobStatus::Succeeded);
    assert_eq!((ran.lines.len(), ran.errors.len()), (3, 0));

    // UTF-16 and Latin-1 are refused at planning, naming the object and the encoding.
    let utf16: Vec<u8> = "\u{feff}id,text\n1,a\n2,b\n3,c\n"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let ran = run(&cluster, "utf16", &utf16, "csv", json!({})).await;
    assert_eq!(ran.status, JobStatus::Failed);
    let error = ran.error.unwrap();
    assert!(
        error.contains("UTF-16LE") && error.contains("in/utf16.csv"),
        "{error}"
    );
    let ran = run(
        &cluster,
        "latin1",
        b"id,text\n1,caf\xE9\n",
        "csv",
        json!({}),
    )
    .await;
    assert_eq!(ran.status, JobStatus::Failed);
    let error = ran.error.unwrap();
    assert!(
        error.contains("line 2") && error.contains("Windows-1252"),
        "{error}"
    );

    // One oversized record is one row error with its line and size.
    let long = "x".repeat(10_000);
    let body = format!(
        "{{\"id\":1,\"text\":\"a\"}}\n{{\"id\":2,\"text\":\"b\"}}\n{{\"id\":3,\"text\":\"{long}\"}}\n{{\"id\":4,\"text\":\"d\"}}\n"
    );
    let ran = run(&cluster, "oversized", body.as_bytes(), "jsonl", json!({})).await;
    assert_eq!(ran.status, JobStatus::Succeeded);
    assert_eq!((ran.lines.len(), ran.errors.len()), (3, 1));
    assert_eq!(ran.errors[0]["line"], 3);
    assert!(
        ran.errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("10018 bytes")
    );

    // An unclosed quote fails its own line; the rows after it are read.
    let body = "id,text\n1,\"never closed\n2,b\n3,c\n";
    let ran = run(&cluster, "unclosed", body.as_bytes(), "csv", json!({})).await;
    assert_eq!(ran.status, JobStatus::Succeeded);
    let mut got = ids(&ran.lines);
    got.sort();
    assert_eq!(got, vec!["\"2\"", "\"3\""]);
    assert_eq!(ran.errors.len(), 1);
    assert_eq!(ran.errors[0]["line"], 2);
    assert!(
        ran.errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("unclosed quote")
    );

    // A header and blank lines only: an empty input, which succeeds and says so.
    let ran = run(&cluster, "empty", b"id,text\n\n\r\n", "csv", json!({})).await;
    assert_eq!(ran.status, JobStatus::Succeeded, "{:?}", ran.error);
    let manifest = ran.manifest.unwrap();
    assert_eq!(manifest["rows"]["empty_input"], true);
    assert_eq!(manifest["inputs"][0]["skipped"], 2);
    assert_eq!(manifest["rows"]["succeeded"], 0);

    // Many shards, blank lines and bad rows: the counts add up per object.
    let mut body = String::new();
    for i in 0..300 {
        match i % 25 {
            7 => body.push('\n'),
            13 => body.push_str("{\"id\": 0, \"text\": \n"),
            _ => body.push_str(&format!("{{\"id\":{i},\"text\":\"row {i}\"}}\r\n")),
        }
    }
    let ran = run(&cluster, "many", body.as_bytes(), "jsonl", json!({})).await;
    assert_eq!(ran.status, JobStatus::Succeeded);
    let manifest = ran.manifest.unwrap();
    assert!(
        manifest["parts"].as_array().unwrap().len() > 3,
        "{manifest}"
    );
    let object = &manifest["inputs"][0];
    assert_eq!(
        (
            &object["read"],
            &object["written"],
            &object["failed"],
            &object["skipped"]
        ),
        (&json!(300), &json!(276), &json!(12), &json!(12))
    );
    assert_eq!(ran.errors.len(), 12);

    // Truncation is counted; with truncate = false the long row fails instead.
    let long_text = "word ".repeat(400);
    let body = format!("{{\"id\":1,\"text\":\"short\"}}\n{{\"id\":2,\"text\":\"{long_text}\"}}\n");
    let ran = run(&cluster, "truncated", body.as_bytes(), "jsonl", json!({})).await;
    assert_eq!(ran.status, JobStatus::Succeeded);
    assert_eq!(ran.lines.len(), 2);
    assert_eq!(ran.rows_truncated, 1);
    assert_eq!(ran.manifest.unwrap()["rows"]["truncated"], 1);
    let ran = run(
        &cluster,
        "no-truncate",
        body.as_bytes(),
        "jsonl",
        json!({"truncate": false}),
    )
    .await;
    assert_eq!(ran.status, JobStatus::Succeeded);
    assert_eq!((ran.lines.len(), ran.errors.len()), (1, 1));
    assert_eq!(ran.errors[0]["line"], 2);
    assert!(
        ran.errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("tokens > max 256"),
        "{:?}",
        ran.errors
    );

    cluster.stop().await;
}
