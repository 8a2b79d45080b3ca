//! Nothing can jam the front doors (issue 13): poison specs (S3 keys over S3's 1,024 bytes,
//! bad buckets, huge fields) are refused at validation while other submissions flow;
//! `reply_to` is answered only on submitters' queues; tokens read, list and cancel only the
//! jobs inside their allowance; every HTTP error answers the documented JSON shape.

mod common;

use std::time::Duration;

use common::amqp::{channel, drain, job_count, publish_submission, topology};
use common::{Cluster, wait_for};
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use serde_json::Value;
use sluice::api::auth::{hash_token, new_token};
use sluice::job::{JobEvent, Pool, SubmissionReply};
use sluice::settings::ApiToken;
use sluice::state::StateStore;

/// Publishes one submission as an upstream system does, and waits for the confirm.
async fn publish(
    channel: &Channel,
    cluster: &Cluster,
    body: &[u8],
    message_id: &str,
    reply_to: Option<&str>,
) {
    let mut properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(message_id.into())
        .with_correlation_id(format!("corr-{message_id}").as_str().into());
    if let Some(queue) = reply_to {
        properties = properties.with_reply_to(queue.into());
    }
    let _ = publish_submission(channel, cluster, body, properties).await;
}

fn header(properties: &BasicProperties, name: &str) -> String {
    match properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name))
    {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        other => panic!("header {name}: {other:?}"),
    }
}

async fn state(cluster: &Cluster) -> StateStore {
    StateStore::connect(&cluster.settings.redis, &cluster.settings.prefix)
        .await
        .unwrap()
}

async fn declare(channel: &Channel, name: &str) -> String {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .name()
        .to_string()
}

/// The poison of issue 13 (keys past the HTTP URI limit the AWS SDK panics on, and their
/// kin), each with the field its rejection must name.
fn poison(cluster: &Cluster) -> Vec<(Value, &'static str)> {
    let huge_key = "k".repeat(70 * 1024);
    let mut out = Vec::new();
    let spec = |i: usize| {
        cluster.spec(
            &format!("poison-{i}"),
            "in.jsonl",
            "jsonl",
            &format!("poison/{i}/"),
        )
    };
    let mut s = spec(0);
    s["model"] = format!("s3://{}/models/{huge_key}/", cluster.bucket).into();
    out.push((s, "model"));
    let mut s = spec(1);
    s["input"]["uri"] = cluster.uri(&huge_key).into();
    out.push((s, "input.uri"));
    let mut s = spec(2);
    s["output"]["uri"] = cluster.uri(&"o".repeat(300_000)).into();
    out.push((s, "output.uri"));
    let mut s = spec(3);
    s["input"]["uri"] = cluster.uri(&"k".repeat(1025)).into();
    out.push((s, "input.uri"));
    let mut s = spec(4);
    s["input"]["uri"] = format!("s3://{}/in.jsonl", "b".repeat(64)).into();
    out.push((s, "input.uri"));
    let mut s = spec(5);
    s["output"]["uri"] = "s3://xn--bucket/out/".into();
    out.push((s, "output.uri"));
    let mut s = spec(6);
    s["input"]["text_field"] = "t".repeat(100_000).into();
    out.push((s, "input.text_field"));
    let mut s = spec(7);
    s["name"] = "n".repeat(129).into();
    out.push((s, "name"));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_submissions_are_rejected_while_others_flow() {
    let mut cluster = Cluster::new(512 * 1024).await;
    cluster.start(false).await;
    let (_connection, channel) = channel(&cluster).await;
    let poison = poison(&cluster);
    // As many poison messages as the consumer holds at once (its prefetch): before the
    // fix they filled every slot for good.
    assert_eq!(poison.len(), cluster.settings.api.submission_concurrency);
    let mut expected_fields = std::collections::HashMap::new();
    for (i, (spec, field)) in poison.iter().enumerate() {
        publish(
            &channel,
            &cluster,
            spec.to_string().as_bytes(),
            &format!("poison-{i}"),
            None,
        )
        .await;
        expected_fields.insert(format!("poison-{i}"), *field);
        for j in 0..3 {
            let n = i * 3 + j;
            let spec = cluster.spec(
                &format!("ok-{n}"),
                "in.jsonl",
                "jsonl",
                &format!("out/{n}/"),
            );
            publish(
                &channel,
                &cluster,
                spec.to_string().as_bytes(),
                &format!("ok-{n}"),
                None,
            )
            .await;
        }
    }
    let state = state(&cluster).await;
    let broker = cluster.broker().await;
    let t = topology(&cluster);
    wait_for(
        "24 jobs and 8 rejections",
        Duration::from_secs(60),
        async || {
            broker.queue_depth(&t.submissions_queue()).await.unwrap() == 0
                && broker.queue_depth(&t.rejected_queue()).await.unwrap() >= 8
                && job_count(&state).await >= 24
        },
    )
    .await;
    assert_eq!(job_count(&state).await, 24);
    let rejected = drain(&channel, &t.rejected_queue()).await;
    assert_eq!(rejected.len(), 8);
    for message in &rejected {
        let id = message
            .properties
            .message_id()
            .as_ref()
            .unwrap()
            .to_string();
        let field = expected_fields.remove(&id).expect("a poison message, once");
        assert_eq!(
            header(&message.properties, "x-sluice-reason-class"),
            "invalid_spec"
        );
        let reason = header(&message.properties, "x-sluice-reason");
        assert!(
            reason.contains(&format!("field `{field}`")),
            "{id}: {reason}"
        );
        assert!(
            reason.len() < 1000,
            "the reason repeats the value: {} bytes",
            reason.len()
        );
    }
    assert!(expected_fields.is_empty(), "{expected_fields:?}");
    // One plan task per accepted job, nothing dead-lettered, no panic caught.
    assert_eq!(
        broker.queue_depth(&t.task_queue(Pool::Cpu)).await.unwrap(),
        24
    );
    assert_eq!(broker.queue_depth(&t.dead_queue()).await.unwrap(), 0);
    assert_eq!(
        sluice::metrics::INTAKE_PANICS
            .with(sluice::metrics::Door::Amqp)
            .get(),
        0
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_to_is_answered_only_on_submitters_queues() {
    let mut cluster = Cluster::new(512 * 1024).await;
    cluster.start(false).await;
    let (_connection, channel) = channel(&cluster).await;
    let t = topology(&cluster);
    let prefix = cluster.settings.prefix.clone();
    let named = declare(&channel, &format!("reply.{prefix}")).await;
    let server_named = declare(&channel, "").await;
    assert!(server_named.starts_with("amq.gen-"), "{server_named}");
    // The broker's direct reply-to: consumed (no-ack) on the publishing channel.
    let mut direct = channel
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "direct".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let refused = [
        t.task_queue(Pool::Cpu),
        t.dead_queue(),
        t.rejected_queue(),
        t.submissions_queue(),
        "other-deployment.inference.cpu".to_string(),
    ];
    for (i, queue) in refused.iter().enumerate() {
        let spec = cluster.spec(
            &format!("refused-{i}"),
            "in.jsonl",
            "jsonl",
            &format!("r/{i}/"),
        );
        publish(
            &channel,
            &cluster,
            spec.to_string().as_bytes(),
            &format!("refused-{i}"),
            Some(queue.as_str()),
        )
        .await;
    }
    for (i, queue) in [
        named.as_str(),
        server_named.as_str(),
        "amq.rabbitmq.reply-to",
    ]
    .into_iter()
    .enumerate()
    {
        let spec = cluster.spec(
            &format!("allowed-{i}"),
            "in.jsonl",
            "jsonl",
            &format!("a/{i}/"),
        );
        publish(
            &channel,
            &cluster,
            spec.to_string().as_bytes(),
            &format!("allowed-{i}"),
            Some(queue),
        )
        .await;
    }
    let state = state(&cluster).await;
    let broker = cluster.broker().await;
    wait_for(
        "3 jobs and 5 rejections",
        Duration::from_secs(30),
        async || {
            broker.queue_depth(&t.submissions_queue()).await.unwrap() == 0
                && broker.queue_depth(&t.rejected_queue()).await.unwrap() >= 5
                && job_count(&state).await >= 3
        },
    )
    .await;
    assert_eq!(job_count(&state).await, 3);
    let rejected = drain(&channel, &t.rejected_queue()).await;
    assert_eq!(rejected.len(), 5);
    for message in &rejected {
        assert_eq!(
            header(&message.properties, "x-sluice-reason-class"),
            "forbidden_reply_to"
        );
        let reason = header(&message.properties, "x-sluice-reason");
        let asked = message.properties.reply_to().as_ref().unwrap().to_string();
        assert!(reason.contains(&format!("reply_to `{asked}`")), "{reason}");
        if asked.starts_with(&prefix) {
            assert!(reason.contains("sluice's own queues"), "{reason}");
        } else {
            assert!(reason.contains("api.reply_queue_patterns"), "{reason}");
        }
    }
    // The allowed queues got their `accepted` reply; sluice's queues got nothing extra.
    for queue in [&named, &server_named] {
        let replies = drain(&channel, queue).await;
        assert_eq!(replies.len(), 1, "{queue}");
        let reply: SubmissionReply = serde_json::from_slice(&replies[0].data).unwrap();
        assert_eq!(reply.outcome, "accepted");
    }
    let via_direct = tokio::time::timeout(Duration::from_secs(10), direct.next())
        .await
        .expect("a direct reply")
        .unwrap()
        .unwrap();
    let reply: SubmissionReply = serde_json::from_slice(&via_direct.data).unwrap();
    assert_eq!(reply.outcome, "accepted");
    assert_eq!(
        broker.queue_depth(&t.task_queue(Pool::Cpu)).await.unwrap(),
        3
    );
    assert_eq!(broker.queue_depth(&t.dead_queue()).await.unwrap(), 0);

    // A job record written before the rule (reply_to: a task queue) gets no final reply
    // there; the same for a legitimate queue still works.
    let events = declare(&channel, "").await;
    channel
        .queue_bind(
            events.as_str().into(),
            t.events_exchange().as_str().into(),
            "job.cancelled".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let old = cluster.spec("old", "in.jsonl", "jsonl", "old/");
    let mut ids = Vec::new();
    for (n, reply_to) in [(0, t.task_queue(Pool::Cpu)), (1, named.clone())] {
        let id = sluice::job::new_job_id();
        let output = cluster.uri(&format!("old/{n}/"));
        let mut spec = old.clone();
        spec["output"]["uri"] = output.clone().into();
        state
            .create_job(sluice::state::NewJob {
                id: &id,
                kind: "inference",
                output: &output,
                name: "old",
                spec_json: &spec.to_string(),
                pool: "cpu",
                source: "amqp",
                idempotency_key: None,
                reply_to: Some(reply_to.as_str()),
                correlation_id: None,
            })
            .await
            .unwrap();
        cluster.client().cancel(&id).await.unwrap();
        ids.push(id);
    }
    let mut cancelled = Vec::new();
    wait_for(
        "two job.cancelled events",
        Duration::from_secs(30),
        async || {
            for message in drain(&channel, &events).await {
                let event: JobEvent = serde_json::from_slice(&message.data).unwrap();
                cancelled.push(event.job_id);
            }
            cancelled.len() >= 2
        },
    )
    .await;
    cancelled.sort();
    ids.sort();
    assert_eq!(cancelled, ids);
    // The relay replies right after publishing the event; give the allowed reply its turn.
    // (The queue is exclusive to this connection: drained here, not counted by `broker`.)
    let mut finals = Vec::new();
    wait_for("the final reply", Duration::from_secs(10), async || {
        finals.extend(drain(&channel, &named).await);
        !finals.is_empty()
    })
    .await;
    finals.extend(drain(&channel, &named).await);
    assert_eq!(finals.len(), 1);
    let reply: SubmissionReply = serde_json::from_slice(&finals[0].data).unwrap();
    assert_eq!(
        (reply.outcome.as_str(), reply.status.as_deref()),
        ("finished", Some("cancelled"))
    );
    // The task queue holds the three plan tasks and no reply.
    let tasks = drain(&channel, &t.task_queue(Pool::Cpu)).await;
    assert_eq!(tasks.len(), 3);
    for task in &tasks {
        let task: Value = serde_json::from_slice(&task.data).unwrap();
        assert_eq!(task["type"], "plan", "{task}");
    }
    cluster.stop().await;
}

/// Sends one request; the status and the JSON body (the test fails on a closed
/// connection or a body that is not JSON).
async fn call(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<String>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = request
        .send()
        .await
        .expect("an answer, not a closed connection");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, body)
}

fn assert_error(body: &Value, code: &str, needle: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_http_requests_get_json_errors_and_create_nothing() {
    let mut cluster = Cluster::new(512 * 1024).await;
    cluster.settings.api.max_body_bytes = 400 * 1024;
    cluster.start(false).await;
    let base = cluster.base_url();
    let jobs = format!("{base}/v1/jobs");
    use reqwest::Method;

    // The 300 KB model key that used to panic the handler.
    let mut spec = cluster.spec("big-key", "in.jsonl", "jsonl", "out/");
    spec["model"] = format!("s3://{}/{}", cluster.bucket, "m".repeat(300_000)).into();
    let (status, body) = call(Method::POST, &jobs, None, Some(spec.to_string())).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "model");
    assert_error(&body, "invalid_spec", "at most 1024 bytes");
    assert!(body.to_string().len() < 1000);

    // Over api.max_body_bytes: 413 in the JSON shape.
    let mut spec = cluster.spec("huge", "in.jsonl", "jsonl", "out/");
    spec["name"] = "x".repeat(500 * 1024).into();
    let (status, body) = call(Method::POST, &jobs, None, Some(spec.to_string())).await;
    assert_eq!(status, 413, "{body}");
    assert_error(&body, "too_large", "api.max_body_bytes");

    let (status, body) = call(Method::GET, &format!("{base}/v2/nothing"), None, None).await;
    assert_eq!(status, 404);
    assert_error(&body, "not_found", "GET /v2/nothing");
    let (status, body) = call(Method::DELETE, &jobs, None, None).await;
    assert_eq!(status, 405);
    assert_error(&body, "method_not_allowed", "DELETE");
    let (status, body) = call(Method::GET, &format!("{jobs}?limit=lots"), None, None).await;
    assert_eq!(status, 400);
    assert_error(&body, "bad_request", "limit");
    let (status, body) = call(Method::GET, &format!("{jobs}/not-a-job"), None, None).await;
    assert_eq!(status, 404);
    assert_error(&body, "not_found", "not-a-job");
    let (status, body) = call(Method::POST, &jobs, None, Some("[[[[[[".repeat(1000))).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_spec");
    let (status, body) = call(Method::POST, &jobs, None, Some("{\"a\":".repeat(10_000))).await;
    assert_eq!(status, 422, "{body}");

    // None of it made a job, and no handler panicked.
    assert_eq!(job_count(&state(&cluster).await).await, 0);
    assert_eq!(
        sluice::metrics::INTAKE_PANICS
            .with(sluice::metrics::Door::Http)
            .get(),
        0
    );
    // The server still answers.
    let id = cluster
        .submit(&cluster.spec("fine", "in.jsonl", "jsonl", "fine/"))
        .await;
    assert_eq!(cluster.client().job(&id).await.unwrap().name, "fine");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_read_list_and_cancel_only_jobs_inside_their_allowance() {
    let mut cluster = Cluster::new(512 * 1024).await;
    let bucket = cluster.bucket.clone();
    let (a, b, admin) = (new_token(), new_token(), new_token());
    let token = |name: &str, secret: &str, scopes: &[&str], allow: Vec<String>| ApiToken {
        name: name.into(),
        sha256: hash_token(secret),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        allow,
    };
    let team = |t: &str| {
        vec![
            format!("s3://{bucket}/models/"),
            format!("s3://{bucket}/{t}/"),
        ]
    };
    cluster.settings.api.tokens = vec![
        token("team-a", &a, &["submit", "read", "cancel"], team("a")),
        token("team-b", &b, &["submit", "read", "cancel"], team("b")),
        token("ops", &admin, &["admin"], vec![]),
    ];
    cluster.start(false).await;
    let base = cluster.base_url();
    let jobs = format!("{base}/v1/jobs");
    use reqwest::Method;
    let submit = async |secret: &str, t: &str, n: usize| {
        let spec = cluster.spec(
            &format!("{t}-{n}"),
            &format!("{t}/in.jsonl"),
            "jsonl",
            &format!("{t}/out/{n}/"),
        );
        let (status, body) = call(Method::POST, &jobs, Some(secret), Some(spec.to_string())).await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_string()
    };
    let a_jobs = [submit(&a, "a", 0).await, submit(&a, "a", 1).await];
    let b_job = submit(&b, "b", 0).await;

    // Another team's job is not there for this token: read and cancel answer 404, as for
    // an id that does not exist, and the job is untouched.
    for id in &a_jobs {
        let (status, body) = call(Method::GET, &format!("{jobs}/{id}"), Some(&b), None).await;
        assert_eq!(status, 404, "{body}");
        assert_error(&body, "not_found", id);
        let (status, body) =
            call(Method::POST, &format!("{jobs}/{id}/cancel"), Some(&b), None).await;
        assert_eq!(status, 404, "{body}");
        let (status, body) = call(Method::GET, &format!("{jobs}/{id}"), Some(&a), None).await;
        assert_eq!(status, 200);
        assert_eq!(body["status"], "queued");
    }
    // Listings hold only the token's own jobs; the admin sees all.
    let listed = async |secret: &str| {
        let (status, body) =
            call(Method::GET, &format!("{jobs}?limit=10"), Some(secret), None).await;
        assert_eq!(status, 200, "{body}");
        let mut ids: Vec<String> = body["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let mut want_a = a_jobs.to_vec();
    want_a.sort();
    assert_eq!(listed(&a).await, want_a);
    assert_eq!(listed(&b).await, vec![b_job.clone()]);
    let mut everything = [a_jobs.to_vec(), vec![b_job.clone()]].concat();
    everything.sort();
    assert_eq!(listed(&admin).await, everything);
    // The limit counts the token's own jobs.
    let (_, body) = call(Method::GET, &format!("{jobs}?limit=1"), Some(&a), None).await;
    assert_eq!(body["jobs"].as_array().unwrap().len(), 1);

    // Its own job, the token may cancel; the admin may cancel anyone's.
    let (status, body) = call(
        Method::POST,
        &format!("{jobs}/{}/cancel", a_jobs[0]),
        Some(&a),
        None,
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("cancelled")),
        "{body}"
    );
    let (status, body) = call(
        Method::POST,
        &format!("{jobs}/{b_job}/cancel"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("cancelled")),
        "{body}"
    );
    let (_, body) = call(
        Method::GET,
        &format!("{jobs}/{}", a_jobs[1]),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(body["status"], "queued");
    cluster.stop().await;
}
