//! The command line against a running API: submit --wait, status, jobs, cancel, and a bad
//! spec file refused with the field named.

mod common;

use std::process::Output;

use common::Cluster;

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

#[tokio::test]
async fn submit_wait_status_jobs_and_cancel() {
    let mut cluster = Cluster::new(1 << 20).await;
    cluster.start(true).await;
    let rows: String = (0..40)
        .map(|i| {
            serde_json::json!({"id": format!("c{i}"), "text": format!("line {i}")}).to_string()
                + "\n"
        })
        .collect();
    cluster.put("in.jsonl", rows).await;
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("job.toml");
    std::fs::write(
        &spec_path,
        format!(
            r#"api_version = "sluice/v1"
kind = "inference"
name = "from-cli"
model = "{model}"
task = "embed"
[input]
uri = "{input}"
format = "jsonl"
id_field = "id"
[output]
uri = "{output}"
"#,
            model = cluster.model_uri,
            input = cluster.uri("in.jsonl"),
            output = cluster.uri("out/"),
        ),
    )
    .unwrap();
    let spec = spec_path.to_str().unwrap();

    let submitted = sluice(&cluster, &["submit", spec, "--wait"]).await;
    assert!(submitted.status.success(), "{}", text(&submitted.stderr));
    let stdout = text(&submitted.stdout);
    let id = stdout.lines().next().unwrap().trim().to_string();
    assert!(stdout.contains("succeeded"), "{stdout}");
    assert!(stdout.contains("40 of 40 rows done"), "{stdout}");
    assert!(stdout.contains(&cluster.uri("out/")), "{stdout}");

    let status = sluice(&cluster, &["status", &id, "--json"]).await;
    assert!(status.status.success());
    let view: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(view["status"], "succeeded");
    assert_eq!(view["progress"]["rows_done"], 40);

    let jobs = sluice(&cluster, &["jobs", "--status", "succeeded"]).await;
    assert!(text(&jobs.stdout).contains(&id), "{}", text(&jobs.stdout));

    let cancel = sluice(&cluster, &["cancel", &id]).await;
    assert!(!cancel.status.success());
    assert!(
        text(&cancel.stderr).contains("already succeeded"),
        "{}",
        text(&cancel.stderr)
    );

    std::fs::write(
        &spec_path,
        std::fs::read_to_string(&spec_path)
            .unwrap()
            .replace("format = \"jsonl\"", "format = \"xlsx\""),
    )
    .unwrap();
    let refused = sluice(&cluster, &["submit", spec]).await;
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("input.format"),
        "{}",
        text(&refused.stderr)
    );
    cluster.stop().await;
}

#[tokio::test]
async fn bench_prints_ratios_and_writes_its_json() {
    let assets = common::assets();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench.json");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["bench", "--engine-only", "--texts", "120", "--out"])
        .arg(&out)
        .arg("--model-dir")
        .arg(&assets.model_dir)
        .arg("--news-csv")
        .arg(&assets.news_csv)
        .arg("--python")
        .arg(&assets.reference_python)
        .env("SLUICE__ENGINE__ORT_DYLIB_PATH", &assets.ort_dylib)
        .output()
        .await
        .expect("run sluice bench");
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("× raw"),
        "{}",
        text(&output.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(report["texts"], 120);
    let figures = report["figures"].as_array().unwrap();
    let names: Vec<&str> = figures
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(figures.len(), 4, "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("Python")), "{names:?}");
    // The faster raw run is the baseline: exactly one raw figure has ratio 1 and none beats it.
    let raw: Vec<f64> = figures
        .iter()
        .filter(|f| f["name"].as_str().unwrap().starts_with("raw"))
        .map(|f| f["ratio_to_raw_ort"].as_f64().unwrap())
        .collect();
    assert_eq!(raw.len(), 2);
    assert!(raw.iter().any(|r| (r - 1.0).abs() < 1e-9) && raw.iter().all(|r| *r <= 1.0 + 1e-9));
    assert!(
        figures
            .iter()
            .all(|f| f["texts_per_second"].as_f64().unwrap() > 0.0)
    );
}
