//! `sluice results` against a running API: a small embed job's parts downloaded through
//! the API equal the stored parts its manifest lists, a stray object in the output folder
//! stays behind, a second run skips what is there, a job that has not succeeded is refused
//! with what to do, and a failed job's parts come only with `--partial`. Also `jobs --json`
//! and `status --json` parsed, and `/openapi.json` served as committed.

mod common;

use std::path::Path;
use std::process::Output;

use common::Cluster;
use sluice::uri::S3Uri;

async fn sluice(cluster: &Cluster, args: &[&str]) -> Output {
    cluster
        .command()
        .args(args)
        .env("SLUICE__API__URL", cluster.base_url())
        .output()
        .await
        .expect("run sluice")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn spec(cluster: &Cluster, input: &str, output: &str, pool: &str) -> String {
    format!(
        r#"api_version = "sluice/v1"
kind = "inference"
name = "results-{pool}"
model = "{model}"
task = "embed"
pool = "{pool}"
[input]
uri = "{input}"
format = "jsonl"
id_field = "id"
[output]
uri = "{output}"
"#,
        model = cluster.model_uri,
        input = cluster.uri(input),
        output = cluster.uri(output),
    )
}

/// Files under `dir`, as paths relative to it, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap();
                found.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn results_downloads_the_manifest_parts_and_resumes() {
    // Small shards: the 60 rows (about 3.3 KB) become several parts.
    let mut cluster = Cluster::new(1024).await;
    cluster.start(true).await;
    let rows: String = (0..60)
        .map(|i| {
            serde_json::json!({"id": format!("r{i}"), "text": format!("result line number {i}")})
                .to_string()
                + "\n"
        })
        .collect();
    cluster.put("in.jsonl", rows).await;
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("job.toml");
    std::fs::write(&spec_path, spec(&cluster, "in.jsonl", "out/", "cpu")).unwrap();
    let submitted = sluice(&cluster, &["submit", spec_path.to_str().unwrap(), "--wait"]).await;
    assert!(submitted.status.success(), "{}", text(&submitted.stderr));
    let id = text(&submitted.stdout)
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_string();

    // Objects in the output folder that the manifest does not list.
    cluster
        .put("out/part-99999.jsonl", "{\"id\": \"stray\"}\n")
        .await;
    cluster.put("out/notes.txt", "not a part\n").await;

    let manifest: serde_json::Value =
        serde_json::from_str(&cluster.get_text("out/_manifest.json").await.unwrap()).unwrap();
    let listed: Vec<(String, String)> = manifest["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let key = S3Uri::parse(p["uri"].as_str().unwrap()).unwrap().key;
            (key.strip_prefix("out/").unwrap().to_string(), key)
        })
        .collect();
    assert!(listed.len() > 1, "expected several parts: {manifest}");

    let target = dir.path().join("results");
    let target_arg = target.to_str().unwrap();
    let first = sluice(&cluster, &["results", &id, "--out", target_arg]).await;
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert_eq!(text(&first.stdout).trim(), target_arg);
    let mut expected: Vec<String> = listed.iter().map(|(name, _)| name.clone()).collect();
    expected.push("_manifest.json".into());
    expected.sort();
    assert_eq!(
        files(&target),
        expected,
        "only the listed parts and the manifest"
    );
    for (name, key) in &listed {
        let stored = cluster.get_text(key).await.unwrap();
        let local = std::fs::read_to_string(target.join(name)).unwrap();
        assert_eq!(local, stored, "{name}");
    }
    let local_manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(target.join("_manifest.json")).unwrap()).unwrap();
    assert_eq!(local_manifest, manifest);
    let rows: usize = listed
        .iter()
        .map(|(name, _)| {
            std::fs::read_to_string(target.join(name))
                .unwrap()
                .lines()
                .count()
        })
        .sum();
    assert_eq!(rows, 60);
    assert!(
        text(&first.stderr).contains(&format!("{} parts downloaded", listed.len())),
        "{}",
        text(&first.stderr)
    );

    // A second run finds everything in place; a part cut short is fetched again.
    let again = sluice(&cluster, &["results", &id, "--out", target_arg]).await;
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stderr).contains(&format!(
            "0 parts downloaded (0 bytes), {} already there",
            listed.len()
        )),
        "{}",
        text(&again.stderr)
    );
    let (cut_name, cut_key) = &listed[0];
    let whole = cluster.get_text(cut_key).await.unwrap();
    std::fs::write(target.join(cut_name), &whole[..whole.len() / 2]).unwrap();
    let resumed = sluice(&cluster, &["results", &id, "--out", target_arg]).await;
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert!(
        text(&resumed.stderr).contains(&format!(
            "1 parts downloaded ({} bytes), {} already there",
            whole.len(),
            listed.len() - 1
        )),
        "{}",
        text(&resumed.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(target.join(cut_name)).unwrap(),
        whole
    );

    // Asking for Parquet of JSONL parts is refused before anything is written.
    let elsewhere = dir.path().join("parquet");
    let refused = sluice(
        &cluster,
        &[
            "results",
            &id,
            "--out",
            elsewhere.to_str().unwrap(),
            "--format",
            "parquet",
        ],
    )
    .await;
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("does not convert"),
        "{}",
        text(&refused.stderr)
    );
    assert!(!elsewhere.exists());

    // A part the manifest does not list is not served, whatever its name.
    let stray = cluster.client().part(&id, "part-99999.jsonl", false).await;
    match stray {
        Err(sluice::cli::ClientError::Api {
            status, message, ..
        }) => {
            assert_eq!(status, 404);
            assert!(message.contains("does not list"), "{message}");
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("the stray object was served"),
    }

    // A failed job (a row without text, no errors allowed): refused, then with --partial
    // its parts and, with --errors, its error part.
    cluster
        .put(
            "bad.jsonl",
            "{\"id\": \"ok\", \"text\": \"fine\"}\n{\"id\": \"bad\"}\n",
        )
        .await;
    let failing = spec(&cluster, "bad.jsonl", "failed/", "cpu")
        .replace("task = \"embed\"", "task = \"embed\"\nmax_error_rate = 0.0");
    std::fs::write(&spec_path, failing).unwrap();
    let submitted = sluice(&cluster, &["submit", spec_path.to_str().unwrap(), "--wait"]).await;
    assert_eq!(
        submitted.status.code(),
        Some(1),
        "{}",
        text(&submitted.stderr)
    );
    let failed_id = text(&submitted.stdout)
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_string();
    let failed_dir = dir.path().join("failed");
    let failed_arg = failed_dir.to_str().unwrap();
    let refused = sluice(&cluster, &["results", &failed_id, "--out", failed_arg]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("--partial"),
        "{}",
        text(&refused.stderr)
    );
    assert!(!failed_dir.exists());
    let partial = sluice(
        &cluster,
        &[
            "results",
            &failed_id,
            "--out",
            failed_arg,
            "--partial",
            "--errors",
        ],
    )
    .await;
    assert!(partial.status.success(), "{}", text(&partial.stderr));
    let got = files(&failed_dir);
    assert!(got.contains(&"_manifest.json".to_string()), "{got:?}");
    assert!(got.iter().any(|f| f.starts_with("errors/")), "{got:?}");
    let written: Vec<String> = got
        .iter()
        .filter(|f| f.starts_with("part-"))
        .flat_map(|f| {
            std::fs::read_to_string(failed_dir.join(f))
                .unwrap()
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(written.len(), 1, "{written:?}");
    assert!(written[0].contains("\"ok\""), "{written:?}");

    // --json: one document each, with the API's field names.
    let status = sluice(&cluster, &["status", &id, "--json"]).await;
    assert!(status.status.success(), "{}", text(&status.stderr));
    let view: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(view["id"], id.as_str());
    assert_eq!(view["status"], "succeeded");
    assert_eq!(view["progress"]["rows_done"], 60);
    assert_eq!(view["manifest_uri"], cluster.uri("out/_manifest.json"));
    let followed = sluice(&cluster, &["status", &id, "--follow", "--json"]).await;
    assert!(followed.status.success(), "{}", text(&followed.stderr));
    let view: serde_json::Value = serde_json::from_slice(&followed.stdout).unwrap();
    assert_eq!(view["status"], "succeeded");
    let jobs = sluice(&cluster, &["jobs", "--json", "--status", "succeeded"]).await;
    assert!(jobs.status.success(), "{}", text(&jobs.stderr));
    let list: serde_json::Value = serde_json::from_slice(&jobs.stdout).unwrap();
    let listed_jobs = list["jobs"].as_array().unwrap();
    assert_eq!(listed_jobs.len(), 1, "{list}");
    let failed = sluice(&cluster, &["jobs", "--json", "--status", "failed"]).await;
    let failed: serde_json::Value = serde_json::from_slice(&failed.stdout).unwrap();
    assert_eq!(failed["jobs"][0]["id"], failed_id.as_str());
    assert!(
        failed["jobs"][0]["error"]
            .as_str()
            .unwrap()
            .contains("max_error_rate")
    );
    assert_eq!(listed_jobs[0]["id"], id.as_str());
    assert_eq!(list["unreadable"], serde_json::json!([]));
    cluster.stop().await;
}

#[tokio::test]
async fn results_of_a_job_not_yet_succeeded_are_refused() {
    let mut cluster = Cluster::new(1 << 20).await;
    // No worker: the job stays queued.
    cluster.start(false).await;
    cluster
        .put("in.jsonl", "{\"id\": 1, \"text\": \"a\"}\n")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("job.toml");
    std::fs::write(&spec_path, spec(&cluster, "in.jsonl", "out/", "cpu")).unwrap();
    let submitted = sluice(&cluster, &["submit", spec_path.to_str().unwrap()]).await;
    assert!(submitted.status.success(), "{}", text(&submitted.stderr));
    let id = text(&submitted.stdout).trim().to_string();
    let target = dir.path().join("results");
    let refused = sluice(
        &cluster,
        &["results", &id, "--out", target.to_str().unwrap()],
    )
    .await;
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    let stderr = text(&refused.stderr);
    assert!(stderr.contains("is queued"), "{stderr}");
    assert!(stderr.contains("sluice status"), "{stderr}");
    assert!(!target.exists());

    let unknown = sluice(
        &cluster,
        &["results", "0190c1d2-0000-7000-8000-000000000000"],
    )
    .await;
    assert_eq!(unknown.status.code(), Some(1), "{}", text(&unknown.stderr));
    assert!(
        text(&unknown.stderr).contains("not found"),
        "{}",
        text(&unknown.stderr)
    );
    // The API serves the description that is committed.
    let served: serde_json::Value = reqwest::get(format!("{}/openapi.json", cluster.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(served, committed);
    cluster.stop().await;
}
