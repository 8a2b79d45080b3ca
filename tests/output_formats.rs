//! Output formats against the real services, read back by real clients: a Parquet embed job
//! read with pyarrow equals the same job's JSONL output (every id once, id type as planned,
//! embeddings within 1e-6); gzip and zstd JSONL parts, inflated by Python's gzip and
//! zstandard modules, equal the plain parts byte for byte; a classify job's Parquet part has
//! a label and a probabilities struct.

mod common;

use std::path::Path;
use std::time::Duration;

use common::Cluster;
use serde_json::Value;
use sluice::job::{ColumnType, JobStatus, TaskMessage};
use sluice::state::StateStore;
use sluice::train::package::{ClassifierPackage, write_classifier_package};
use sluice::train::{HeadLayout, build_inference_graph};
use sluice::uri::S3Uri;

/// Reads every format's parts and compares them; prints one JSON summary.
const READ_BACK: &str = r#"
import gzip, json, sys
import pyarrow as pa, pyarrow.parquet as pq, zstandard

plain, parquet, small, gz, zst, classified = (json.loads(a) for a in sys.argv[1:7])
rows = {}
for path in plain:
    for line in open(path, encoding="utf-8"):
        row = json.loads(line)
        rows[str(row["id"])] = row["embedding"]
table = pq.read_table(parquet)
ids = table.column("id").to_pylist()
keys = [str(i) for i in ids]
embeddings = table.column("embedding").to_pylist()
diff = max(
    (max(abs(a - b) for a, b in zip(e, rows[k])) for k, e in zip(keys, embeddings) if k in rows),
    default=float("inf"),
)
raw = lambda paths: [open(p, "rb").read() for p in paths]
labelled = pq.read_table(classified)
probabilities = labelled.column("probabilities").to_pylist()
labels = labelled.column("label").to_pylist()
print(json.dumps({
    "rows": table.num_rows,
    "distinct_ids": len(set(keys)),
    "ids_in_plain": sum(k in rows for k in keys),
    "plain_rows": len(rows),
    "id_type": str(table.schema.field("id").type),
    "embedding_type": str(table.schema.field("embedding").type),
    "max_diff": diff,
    "gzip_equal": [gzip.decompress(c) for c in raw(gz)] == raw(small),
    "zstd_equal": [zstandard.ZstdDecompressor().decompressobj().decompress(c) for c in raw(zst)] == raw(small),
    "classify_rows": labelled.num_rows,
    "classify_schema": {f.name: str(f.type) for f in labelled.schema},
    "labels_are_argmax": all(l == max(p, key=p.get) for l, p in zip(labels, probabilities)),
    "probability_sums": [min(sum(p.values()) for p in probabilities), max(sum(p.values()) for p in probabilities)],
}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_and_compressed_jsonl_read_back_by_real_clients() {
    let mut cluster = Cluster::new(48 * 1024).await;
    cluster.start(true).await;
    let reviews = common::rotten_tomatoes_reviews(Some(1500));
    // Integer ids, not in line order: the Parquet id column keeps them as numbers.
    let mut input = String::new();
    for (i, (text, _)) in reviews.iter().enumerate() {
        let id = 1_000_000_007 * (i as i64 % 7) + i as i64;
        input.push_str(&serde_json::json!({"id": id, "text": text}).to_string());
        input.push('\n');
    }
    cluster.put("in/reviews.jsonl", input.clone()).await;
    let small: String = input.lines().take(300).map(|l| format!("{l}\n")).collect();
    cluster.put("small/reviews.jsonl", small).await;

    let classifier = classifier_package(&cluster).await;
    let output = |format: &str, compression: Option<&str>| {
        let mut output = serde_json::json!({"uri": cluster.uri(&format!("out/{format}/"))});
        if format.starts_with("parquet") {
            output["format"] = "parquet".into();
        }
        if let Some(c) = compression {
            output["compression"] = c.into();
        }
        output
    };
    let mut jobs = Vec::new();
    // The compressed jobs read a small input, compared with its own plain job: equal bytes
    // need equal shards and chunks, and the model's time is the test's.
    for (name, compression, input) in [
        ("plain", None, "in/"),
        ("parquet", None, "in/"),
        ("plain-small", None, "small/"),
        ("gzip", Some("gzip"), "small/"),
        ("zstd", Some("zstd"), "small/"),
    ] {
        let mut spec = cluster.spec(name, &format!("{input}reviews.jsonl"), "jsonl", "unused/");
        spec["output"] = output(name, compression);
        jobs.push((name, cluster.submit(&spec).await));
    }
    let mut spec = cluster.spec("classify", "small/reviews.jsonl", "jsonl", "unused/");
    spec["output"] = output("parquet-classify", None);
    spec["model"] = classifier.into();
    spec["task"] = "classify".into();
    jobs.push(("parquet-classify", cluster.submit(&spec).await));

    let dir = tempfile::tempdir().unwrap();
    let mut parts = serde_json::Map::new();
    for (name, id) in &jobs {
        let job = cluster.wait(id, Duration::from_secs(300)).await;
        assert_eq!(job.status, JobStatus::Succeeded, "{name}: {job:?}");
        let local = download_parts(&cluster, name, dir.path()).await;
        parts.insert(name.to_string(), local.into());
    }
    let suffixes = [
        ("plain", ".jsonl", reviews.len()),
        ("parquet", ".parquet", reviews.len()),
        ("plain-small", ".jsonl", 300),
        ("gzip", ".jsonl.gz", 300),
        ("zstd", ".jsonl.zst", 300),
    ];
    for (name, suffix, rows) in suffixes {
        let listed = parts[name].as_array().unwrap();
        // The large input is cut into several shards, one part each.
        assert!(listed.len() >= rows / 500, "{name}: {listed:?}");
        for path in listed {
            assert!(path.as_str().unwrap().ends_with(suffix), "{path}");
        }
        assert!(
            cluster
                .get_text(&format!("out/{name}/_SUCCESS"))
                .await
                .is_some()
        );
        let sizes: u64 = listed
            .iter()
            .map(|p| std::fs::metadata(p.as_str().unwrap()).unwrap().len())
            .sum();
        eprintln!(
            "{name}: {sizes} bytes for {rows} rows of 384-d embeddings, {:.0} bytes per row",
            sizes as f64 / rows as f64
        );
    }

    let assets = common::assets();
    let args = [
        "plain",
        "parquet",
        "plain-small",
        "gzip",
        "zstd",
        "parquet-classify",
    ]
    .map(|name| parts[name].to_string());
    let out = std::process::Command::new(&assets.reference_python)
        .arg("-c")
        .arg(READ_BACK)
        .args(args)
        .output()
        .expect("run the reference python (scripts/assets.sh installs pyarrow and zstandard)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("read back: {summary}");
    for count in ["rows", "distinct_ids", "ids_in_plain", "plain_rows"] {
        assert_eq!(summary[count], 1500, "{count}: {summary}");
    }
    assert_eq!(
        summary["embedding_type"],
        "fixed_size_list<item: float not null>[384]"
    );
    assert!(summary["max_diff"].as_f64().unwrap() <= 1e-6, "{summary}");
    // Integer JSONL ids: planning types the id column from the first row.
    assert_eq!(
        planned_id_type(&cluster, &jobs[1].1).await,
        Some(ColumnType::Int64)
    );
    assert_eq!(summary["id_type"], "int64", "{summary}");
    assert_eq!(summary["gzip_equal"], true);
    assert_eq!(summary["zstd_equal"], true);
    assert_eq!(summary["classify_rows"], 300);
    assert_eq!(summary["classify_schema"]["label"], "string");
    assert_eq!(
        summary["classify_schema"]["probabilities"],
        "struct<neg: float not null, pos: float not null>"
    );
    assert_eq!(summary["labels_are_argmax"], true);
    for sum in summary["probability_sums"].as_array().unwrap() {
        assert!((sum.as_f64().unwrap() - 1.0).abs() < 1e-4, "{summary}");
    }
    cluster.stop().await;
}

/// A classifier package over the test's encoder with an untrained head: enough to check the
/// output's shape, with no training to wait for.
async fn classifier_package(cluster: &Cluster) -> String {
    let encoder = S3Uri::parse(&cluster.model_uri).unwrap();
    let (models, _) = cluster.encoder().await;
    let layout = HeadLayout {
        input_dim: 384,
        classes: 2,
        hidden: vec![],
        dropout: 0.0,
    };
    let target = S3Uri::parse(&cluster.uri("models/untrained/")).unwrap();
    write_classifier_package(
        &cluster.storage,
        &ClassifierPackage {
            name: "untrained",
            encoder: &encoder,
            encoder_manifest: &models.manifest(&encoder).await.unwrap(),
            head: prost::Message::encode_to_vec(&build_inference_graph(
                &layout,
                &layout.initial_parameters(7),
            )),
            labels: vec!["neg".into(), "pos".into()],
            report: serde_json::json!({}),
        },
        &target,
    )
    .await
    .unwrap();
    target.to_string()
}

/// Downloads the parts the job's manifest lists, in shard order, keeping their names.
async fn download_parts(cluster: &Cluster, name: &str, dir: &Path) -> Vec<String> {
    let manifest: Value = serde_json::from_str(
        &cluster
            .get_text(&format!("out/{name}/_manifest.json"))
            .await
            .expect("manifest"),
    )
    .unwrap();
    let mut listed: Vec<(u64, String)> = manifest["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["shard"].as_u64().unwrap(),
                p["uri"].as_str().unwrap().into(),
            )
        })
        .collect();
    listed.sort();
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    let mut paths = Vec::new();
    for (_, uri) in listed {
        let uri = S3Uri::parse(&uri).unwrap();
        let bytes = cluster.storage.get_bytes(&uri).await.unwrap();
        let path = folder.join(uri.key.rsplit('/').next().unwrap());
        std::fs::write(&path, bytes).unwrap();
        paths.push(path.to_string_lossy().into_owned());
    }
    paths
}

/// The id column type the planner fixed for the job's shards (all shards agree).
async fn planned_id_type(cluster: &Cluster, job_id: &str) -> Option<ColumnType> {
    let state = StateStore::connect(&cluster.settings.redis, &cluster.settings.prefix)
        .await
        .unwrap();
    let mut types = Vec::new();
    for (_, task) in state.plan(job_id).await.unwrap() {
        if let TaskMessage::Shard(shard) = serde_json::from_str(&task).unwrap() {
            types.push(shard.columns.map(|c| c.id));
        }
    }
    types.dedup();
    assert_eq!(types.len(), 1, "{types:?}");
    types[0]
}
