//! The S3 drop folder against the real services: two `sluice ingest` replicas (one killed
//! and restarted mid-stream), fifty files dropped at once, exactly one job per
//! (file, content), outputs in the outbox, inputs archived or failed with their reason.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::{Cluster, wait_for};
use serde_json::Value;
use sluice::job::JobStatus;
use sluice::state::{JobRecord, StateStore};

struct DropFolder {
    env: Vec<(String, String)>,
    _template: tempfile::NamedTempFile,
}

/// Settings for `sluice ingest` on this cluster's bucket, with an `embed` pipeline whose
/// template uses the cluster's model.
fn drop_folder(cluster: &Cluster) -> DropFolder {
    let template = std::fs::read_to_string("jobs/pipelines/embed.toml")
        .unwrap()
        .replace("s3://sluice-models/all-minilm-l6-v2/", &cluster.model_uri);
    let file = tempfile::NamedTempFile::with_suffix(".toml").unwrap();
    std::fs::write(file.path(), template).unwrap();
    let folder = |name: &str| cluster.uri(&format!("{name}/"));
    let env = vec![
        ("SLUICE__INGEST__INBOX".into(), folder("inbox")),
        ("SLUICE__INGEST__OUTBOX".into(), folder("outbox")),
        ("SLUICE__INGEST__ARCHIVE".into(), folder("archive")),
        ("SLUICE__INGEST__FAILED".into(), folder("failed")),
        ("SLUICE__INGEST__POLL_INTERVAL_SECS".into(), "1".into()),
        (
            "SLUICE__INGEST__PIPELINES__EMBED".into(),
            file.path().display().to_string(),
        ),
    ];
    DropFolder {
        env,
        _template: file,
    }
}

fn spawn_ingest(cluster: &mut Cluster, folder: &DropFolder) -> usize {
    let env: Vec<(&str, &str)> = folder
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    cluster.spawn_role("ingest", &env)
}

async fn ingest_jobs(state: &StateStore) -> Vec<JobRecord> {
    state
        .list(None, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|job| job.source == "ingest")
        .collect()
}

/// `n` JSONL rows with ids `<tag>-<i>`.
fn jsonl(tag: &str, n: usize) -> (String, Vec<String>) {
    let ids: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
    let body = ids
        .iter()
        .map(|id| {
            format!(
                "{}\n",
                serde_json::json!({"id": id, "text": format!("review {id} was fine")})
            )
        })
        .collect();
    (body, ids)
}

fn csv(tag: &str, n: usize) -> (String, Vec<String>) {
    let ids: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
    let mut body = "id,text\n".to_string();
    for id in &ids {
        body.push_str(&format!("{id},\"a film, {id}, that works\"\n"));
    }
    (body, ids)
}

/// The job whose output folder is under `outbox/embed/<version>/<file>/`.
fn job_for<'a>(jobs: &'a [JobRecord], file: &str) -> Vec<&'a JobRecord> {
    jobs.iter()
        .filter(|job| job.spec.output.uri.ends_with(&format!("/{file}/")))
        .collect()
}

/// `<version>` of a job's output folder `…/outbox/embed/<version>/<file>/`.
fn version_of(job: &JobRecord, file: &str) -> String {
    let uri = &job.spec.output.uri;
    let head = uri.strip_suffix(&format!("/{file}/")).unwrap();
    head.rsplit('/').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_turn_fifty_dropped_files_into_one_job_each() {
    let mut cluster = Cluster::new(64 * 1024).await;
    cluster.settings.worker.concurrency = 2;
    cluster.start(true).await;
    let folder = drop_folder(&cluster);
    let state = StateStore::connect(&cluster.settings.redis, &cluster.settings.prefix)
        .await
        .unwrap();

    // What gets dropped: 45 small files (a third CSV, some in a sub-folder), 2 large, one
    // malformed, one of an unsupported type; plus things that must be left alone.
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    let mut uploads = Vec::new();
    for i in 0..45 {
        let (name, (body, ids)) = if i % 3 == 0 {
            (
                format!("batch/small-{i}.csv"),
                csv(&format!("s{i}"), 5 + i % 7),
            )
        } else {
            (
                format!("small-{i}.jsonl"),
                jsonl(&format!("s{i}"), 5 + i % 7),
            )
        };
        expected.insert(name.clone(), ids);
        uploads.push((name, body));
    }
    for k in 0..2 {
        let (body, ids) = jsonl(&format!("large{k}"), 1500);
        let name = format!("large-{k}.jsonl");
        expected.insert(name.clone(), ids);
        uploads.push((name, body));
    }
    uploads.push((
        "broken.jsonl".into(),
        "this is not json\n{\"id\": 1\n".repeat(20),
    ));
    uploads.push(("notes.txt".into(), "just some notes\n".into()));
    cluster.put("inbox/embed/empty.jsonl", Vec::new()).await;
    cluster.put("inbox/embed/folder/", Vec::new()).await;
    cluster
        .put("inbox/unknown/stray.jsonl", jsonl("stray", 2).0)
        .await;

    let replicas = [
        spawn_ingest(&mut cluster, &folder),
        spawn_ingest(&mut cluster, &folder),
    ];
    let keys: Vec<String> = uploads
        .iter()
        .map(|(name, _)| format!("inbox/embed/{name}"))
        .collect();
    let puts = uploads
        .iter()
        .zip(&keys)
        .map(|((_, body), key)| cluster.put(key, body.clone()));
    futures::future::join_all(puts).await;

    // One replica dies mid-stream and comes back.
    wait_for("the first jobs", Duration::from_secs(60), async || {
        ingest_jobs(&state).await.len() >= 10
    })
    .await;
    cluster.kill_worker(replicas[0]).await;
    spawn_ingest(&mut cluster, &folder);

    // A file dropped, processed, then dropped again with new content is a second job.
    let (v1, v1_ids) = jsonl("re-v1", 3);
    cluster.put("inbox/embed/reupload.jsonl", v1).await;
    wait_for(
        "the first version archived",
        Duration::from_secs(240),
        async || cluster.keys("inbox/embed/reupload.jsonl").await.is_empty(),
    )
    .await;
    let (v2, v2_ids) = jsonl("re-v2", 4);
    cluster.put("inbox/embed/reupload.jsonl", v2.clone()).await;

    let leftovers: BTreeSet<String> = [
        "inbox/embed/empty.jsonl",
        "inbox/embed/folder/",
        "inbox/unknown/stray.jsonl",
    ]
    .map(String::from)
    .into();
    wait_for("the inbox to empty", Duration::from_secs(300), async || {
        cluster
            .keys("inbox/")
            .await
            .into_iter()
            .collect::<BTreeSet<_>>()
            == leftovers
    })
    .await;

    // The same content dropped again is the same job: archived again, no new job.
    let before = ingest_jobs(&state).await.len();
    cluster.put("inbox/embed/reupload.jsonl", v2).await;
    wait_for("the repeat archived", Duration::from_secs(60), async || {
        cluster.keys("inbox/embed/reupload.jsonl").await.is_empty()
    })
    .await;
    let jobs = ingest_jobs(&state).await;
    assert_eq!(jobs.len(), before);

    // Exactly one job per (file, content): 45 + 2 + broken + 2 versions of reupload.
    assert_eq!(
        jobs.len(),
        50,
        "{:#?}",
        jobs.iter().map(|j| &j.name).collect::<Vec<_>>()
    );
    let outputs: BTreeSet<&str> = jobs.iter().map(|j| j.spec.output.uri.as_str()).collect();
    assert_eq!(outputs.len(), 50);
    for (file, ids) in &expected {
        let found = job_for(&jobs, file);
        assert_eq!(found.len(), 1, "{file}");
        let job = found[0];
        assert_eq!(job.status, JobStatus::Succeeded, "{file}: {job:?}");
        let version = version_of(job, file);
        let output = format!("outbox/embed/{version}/{file}/");
        assert!(
            cluster
                .get_text(&format!("{output}_SUCCESS"))
                .await
                .is_some(),
            "{output}"
        );
        common::assert_exactly_once(&cluster.output_rows(&output).await, ids);
        assert!(
            cluster
                .get_text(&format!("archive/embed/{version}/{file}"))
                .await
                .is_some(),
            "{file} archived"
        );
    }
    let versions: Vec<&JobRecord> = job_for(&jobs, "reupload.jsonl");
    assert_eq!(versions.len(), 2);
    let mut rows_by_version = BTreeSet::new();
    for job in &versions {
        assert_eq!(job.status, JobStatus::Succeeded);
        let version = version_of(job, "reupload.jsonl");
        let rows = cluster
            .output_rows(&format!("outbox/embed/{version}/reupload.jsonl/"))
            .await;
        rows_by_version.insert(rows.len());
        let ids = if rows.len() == 3 { &v1_ids } else { &v2_ids };
        common::assert_exactly_once(&rows, ids);
        assert!(
            cluster
                .get_text(&format!("archive/embed/{version}/reupload.jsonl"))
                .await
                .is_some()
        );
    }
    assert_eq!(rows_by_version, [3, 4].into());

    // The malformed file's job failed; the file sits in the failed prefix with its reason.
    let broken = job_for(&jobs, "broken.jsonl");
    assert_eq!(broken.len(), 1);
    assert_eq!(broken[0].status, JobStatus::Failed);
    let version = version_of(broken[0], "broken.jsonl");
    let error: Value = serde_json::from_str(
        &cluster
            .get_text(&format!("failed/embed/{version}/broken.jsonl.error.json"))
            .await
            .expect("error file"),
    )
    .unwrap();
    assert_eq!(error["job_id"], broken[0].id.as_str());
    assert_eq!(error["status"], "failed");
    assert!(
        error["error"].as_str().unwrap().contains("rows failed"),
        "{error}"
    );
    assert!(
        cluster
            .get_text(&format!("failed/embed/{version}/broken.jsonl"))
            .await
            .is_some()
    );

    // The unsupported file never became a job, and says why.
    let failed = cluster.keys("failed/embed/").await;
    let notes_error = failed
        .iter()
        .find(|k| k.ends_with("/notes.txt.error.json"))
        .expect("notes.txt error file");
    let error: Value = serde_json::from_str(&cluster.get_text(notes_error).await.unwrap()).unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("unsupported file type"),
        "{error}"
    );
    assert!(failed.iter().any(|k| k.ends_with("/notes.txt")));
    cluster.stop().await;
}
