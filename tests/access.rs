//! Access control on the HTTP API: requests without a token, with a wrong token, with a
//! token lacking the scope, and a job naming a bucket outside the token's allowance are each
//! refused with the right status and a message saying why; the right token works, through
//! the HTTP API and the CLI client; health, readiness and metrics stay open.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::Cluster;
use common::amqp::{channel, publish_submission};
use serde_json::Value;
use sluice::api::auth::{hash_token, new_token};
use sluice::cli::Client;
use sluice::job::JobStatus;
use sluice::settings::ApiToken;
use sluice::state::StateStore;

async fn call(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value, Option<String>) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        challenge,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_scopes_and_bucket_allowances_are_enforced() {
    let mut cluster = Cluster::new(64 * 1024).await;
    let (writer, reader, admin) = (new_token(), new_token(), new_token());
    let bucket = cluster.bucket.clone();
    cluster.settings.api.tokens = vec![
        ApiToken {
            name: "team-a".into(),
            sha256: hash_token(&writer),
            scopes: vec!["submit".into(), "read".into()],
            allow: vec![format!("s3://{bucket}/")],
        },
        ApiToken {
            name: "dashboard".into(),
            sha256: hash_token(&reader),
            scopes: vec!["read".into()],
            // Reads are bounded by the allowance too: it sees this bucket's jobs.
            allow: vec![format!("s3://{bucket}/")],
        },
    ];
    // A second token comes from a secret file, as a mounted Kubernetes secret would.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    std::fs::write(
        &file,
        format!(
            "[[tokens]]\nname = \"ops\"\nsha256 = \"{}\"\nscopes = [\"admin\"]\nallow = [\"*\"]\n",
            hash_token(&admin)
        ),
    )
    .unwrap();
    cluster.settings.api.tokens_file = file.display().to_string();
    cluster.start(true).await;
    let base = cluster.base_url();
    let jobs = format!("{base}/v1/jobs");
    let (body, _) = common::rotten_tomatoes_jsonl(Some(100));
    cluster.put("in.jsonl", body).await;
    let spec = cluster.spec("allowed", "in.jsonl", "jsonl", "out/");

    let (status, body, challenge) = call(reqwest::Method::POST, &jobs, None, Some(&spec)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(challenge.as_deref(), Some("Bearer"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing bearer token")
    );

    let (status, body, _) = call(reqwest::Method::GET, &jobs, Some("slc_not-a-token"), None).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown")
    );

    let (status, body, _) = call(reqwest::Method::POST, &jobs, Some(&reader), Some(&spec)).await;
    assert_eq!(status, 403, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("\"dashboard\"") && message.contains("`submit`"),
        "{message}"
    );

    let mut elsewhere = spec.clone();
    elsewhere["output"]["uri"] = "s3://someone-elses-bucket/out/".into();
    let (status, body, _) = call(
        reqwest::Method::POST,
        &jobs,
        Some(&writer),
        Some(&elsewhere),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["field"], "output.uri");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("s3://someone-elses-bucket/out/"),
        "{body}"
    );

    // The right token: submit, read; cancelling needs the scope it lacks.
    let (status, body, _) = call(reqwest::Method::POST, &jobs, Some(&writer), Some(&spec)).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let (status, _, _) = call(
        reqwest::Method::POST,
        &format!("{jobs}/{id}/cancel"),
        Some(&writer),
        None,
    )
    .await;
    assert_eq!(status, 403);
    let client = Client::new(&base).with_token(&reader);
    let mut job = client.job(&id).await.unwrap();
    for _ in 0..600 {
        if job.status.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        job = client.job(&id).await.unwrap();
    }
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    // The admin token from the file may do anything, anywhere.
    let admin_client = Client::new(&base).with_token(&admin);
    assert!(!admin_client.jobs(None, 10).await.unwrap().jobs.is_empty());
    assert!(Client::new(&base).jobs(None, 10).await.is_err());

    for open in ["/healthz", "/readyz", "/metrics"] {
        let (status, _, _) = call(reqwest::Method::GET, &format!("{base}{open}"), None, None).await;
        assert_eq!(status, 200, "{open}");
    }
    cluster.stop().await;
}

/// Upstream AMQP submissions and drop-folder pipelines carry their own allowances from the
/// settings: an AMQP spec naming another bucket is kept on the rejected queue as
/// `forbidden_location`, one inside is a job; `sluice ingest` refuses to start with a
/// pipeline whose template reaches outside its allowance, and works with one inside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_submissions_and_drop_folder_pipelines_keep_to_their_allowances() {
    let mut cluster = Cluster::new(64 * 1024).await;
    let bucket = cluster.bucket.clone();
    cluster.settings.api.amqp_allow = vec![format!("s3://{bucket}/")];
    cluster.start(true).await;
    cluster
        .put("in.jsonl", common::rotten_tomatoes_jsonl(Some(20)).0)
        .await;

    let inside = cluster.spec("amqp-inside", "in.jsonl", "jsonl", "amqp-out/");
    let mut outside = inside.clone();
    outside["name"] = "amqp-outside".into();
    outside["output"]["uri"] = "s3://someone-elses-bucket/out/".into();
    let (connection, channel) = channel(&cluster).await;
    for (spec, message_id) in [(&outside, "outside-1"), (&inside, "inside-1")] {
        let properties = lapin::BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(message_id.into());
        let _ =
            publish_submission(&channel, &cluster, spec.to_string().as_bytes(), properties).await;
    }

    let broker = cluster.broker().await;
    let rejected_queue = broker.topology().rejected_queue();
    common::wait_for(
        "the rejected submission",
        Duration::from_secs(30),
        async || broker.queue_depth(&rejected_queue).await.unwrap() >= 1,
    )
    .await;
    let state = StateStore::connect(&cluster.settings.redis, &cluster.settings.prefix)
        .await
        .unwrap();
    common::wait_for(
        "the accepted submission's job",
        Duration::from_secs(30),
        async || !state.list(None, 10).await.unwrap().is_empty(),
    )
    .await;
    let jobs = state.list(None, 10).await.unwrap();
    assert_eq!(jobs.len(), 1, "only the allowed spec became a job");
    assert_eq!(jobs[0].spec.name, "amqp-inside");
    assert_eq!(jobs[0].source, "amqp");

    let message = channel
        .basic_get(rejected_queue.as_str().into(), Default::default())
        .await
        .unwrap()
        .expect("the refused submission is kept");
    let headers = message.properties.headers().clone().unwrap();
    let text = |name: &str| match headers.inner().get(name) {
        Some(lapin::types::AMQPValue::LongString(s)) => s.to_string(),
        other => panic!("header {name}: {other:?}"),
    };
    assert_eq!(text("x-sluice-reason-class"), "forbidden_location");
    assert_eq!(
        text("x-sluice-reason"),
        format!(
            "AMQP submissions (api.amqp_allow) may not use s3://someone-elses-bucket/out/ (job spec field `output.uri`); it may use s3://{bucket}/"
        )
    );
    assert_eq!(
        message.data,
        outside.to_string().into_bytes(),
        "kept as sent"
    );

    // The drop folder: a pipeline whose template's model lies outside its allowance stops
    // `sluice ingest` at start, naming the pipeline, the field and the setting.
    let template = std::fs::read_to_string("jobs/pipelines/embed.toml")
        .unwrap()
        .replace("s3://sluice-models/all-minilm-l6-v2/", &cluster.model_uri);
    let dir = tempfile::tempdir().unwrap();
    let template_path = dir.path().join("embed.toml");
    std::fs::write(&template_path, template).unwrap();
    let ingest = &mut cluster.settings.ingest;
    ingest.inbox = format!("s3://{bucket}/inbox/");
    ingest.outbox = format!("s3://{bucket}/outbox/");
    ingest.archive = format!("s3://{bucket}/archive/");
    ingest.failed = format!("s3://{bucket}/failed/");
    ingest.poll_interval_secs = 1;
    ingest.pipelines = BTreeMap::from([("embed".into(), template_path)]);
    ingest.allow = BTreeMap::from([(
        "embed".into(),
        vec![
            format!("s3://{bucket}/inbox/"),
            format!("s3://{bucket}/outbox/"),
        ],
    )]);
    let refused = cluster.spawn_role("ingest", &[]);
    let exit = cluster.wait_worker(refused).await;
    assert!(!exit.success(), "ingest must not start: {exit:?}");
    let log = std::fs::read_to_string(cluster.role_log("ingest", refused)).unwrap();
    assert!(
        log.contains(&format!(
            "pipeline \"embed\": drop-folder pipeline \"embed\" (ingest.allow.embed) may not use {} (job spec field `model`)",
            cluster.model_uri
        )) && log.contains("widen ingest.allow.embed"),
        "{log}"
    );

    // The whole bucket allowed: a dropped file becomes a job and is archived.
    cluster.settings.ingest.allow =
        BTreeMap::from([("embed".into(), vec![format!("s3://{bucket}/")])]);
    cluster.spawn_role("ingest", &[]);
    cluster
        .put(
            "inbox/embed/reviews.jsonl",
            common::rotten_tomatoes_jsonl(Some(10)).0,
        )
        .await;
    common::wait_for(
        "the dropped file archived",
        Duration::from_secs(120),
        async || !cluster.keys("archive/embed/").await.is_empty(),
    )
    .await;
    let ingested: Vec<_> = state
        .list(None, 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|job| job.source == "ingest")
        .collect();
    assert_eq!(ingested.len(), 1);
    assert_eq!(ingested[0].status, JobStatus::Succeeded);
    connection.close(200, "done".into()).await.unwrap();
    cluster.stop().await;
}

/// `api.serve_metrics = false` takes health, readiness and metrics off the API's port (which
/// then only has the job routes) and serves them on `metrics.listen` instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_can_move_off_the_api_port() {
    let mut cluster = Cluster::new(64 * 1024).await;
    let port = common::free_port();
    cluster.settings.api.serve_metrics = false;
    cluster.settings.metrics.listen = format!("127.0.0.1:{port}");
    cluster.start(false).await;
    let api = cluster.base_url();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, _, _) = call(reqwest::Method::GET, &format!("{api}{path}"), None, None).await;
        assert_eq!(status, 404, "{path} is still on the API port");
        let (status, body, _) = call(
            reqwest::Method::GET,
            &format!("http://127.0.0.1:{port}{path}"),
            None,
            None,
        )
        .await;
        assert_eq!(status, 200, "{path} on the metrics port: {body}");
        if path == "/readyz" {
            // The API's own readiness, which asks the services, not a worker's.
            for service in ["broker", "redis", "s3"] {
                assert_eq!(body["checks"][service], "ok", "{body}");
            }
        }
        if path == "/metrics" {
            assert!(
                body.as_str()
                    .unwrap()
                    .contains("sluice_jobs_submitted_total"),
                "{body}"
            );
        }
    }
    let (status, _, _) = call(reqwest::Method::GET, &format!("{api}/v1/jobs"), None, None).await;
    assert_eq!(status, 200, "the job routes stay on the API port");
    cluster.stop().await;
}
