//! Access control on the HTTP API: requests without a token, with a wrong token, with a
//! token lacking the scope, and a job naming a bucket outside the token's allowance are each
//! refused with the right status and a message saying why; the right token works, through
//! the HTTP API and the CLI client; health, readiness and metrics stay open.

mod common;

use std::time::Duration;

use common::Cluster;
use serde_json::Value;
use sluice::api::auth::{hash_token, new_token};
use sluice::cli::Client;
use sluice::job::JobStatus;
use sluice::settings::ApiToken;

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
            allow: vec![],
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
