//! A bounded fuzz of both front doors (issue 13): generated specs (sizes, types, unicode,
//! nesting) with generated HTTP headers or AMQP properties. Each case's answer is predicted
//! from the spec rules, so the test asserts exact outcomes and job counts, no 5xx, no panic,
//! and no job from an invalid spec. Fixed seed and case counts keep it fast and repeatable.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::{Cluster, wait_for};
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};
use sluice::broker::Topology;
use sluice::job::{JobSpec, ReplyPolicy, default_reply_queue_patterns, parse_json_spec_within};
use sluice::state::StateStore;
use sluice::uri::S3Uri;

const HTTP_CASES: usize = 160;
const AMQP_CASES: usize = 120;
const MAX_BODY: usize = 256 * 1024;

fn runner() -> TestRunner {
    TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[13; 32]),
    )
}

fn sample<S: Strategy>(runner: &mut TestRunner, strategy: &S) -> S::Value {
    strategy.new_tree(runner).unwrap().current()
}

/// Strings of every kind a field may be fed: short, unicode, control characters, S3 URIs
/// good and bad, keys around S3's 1,024 bytes, and huge ones.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        "[a-z0-9 ._-]{0,24}",
        "\\PC{0,40}",
        "[\\x00-\\x1f\"\\\\]{1,10}",
        ("[a-z0-9.-]{1,70}", "\\PC{0,30}").prop_map(|(b, k)| format!("s3://{b}/{k}")),
        (1000usize..1100).prop_map(|n| format!("s3://some-bucket/{}", "k".repeat(n))),
        (1000usize..80_000).prop_map(|n| "x".repeat(n)),
        Just(String::new()),
    ]
    .boxed()
}

/// Any JSON, nested a few levels.
fn value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

const PATHS: &[&str] = &[
    "api_version",
    "kind",
    "name",
    "model",
    "task",
    "input",
    "input.uri",
    "input.format",
    "input.text_field",
    "input.id_field",
    "input.label_field",
    "input.etag",
    "input.max_record_lines",
    "output",
    "output.uri",
    "output.on_duplicate_id",
    "pool",
    "priority",
    "max_error_rate",
    "truncate",
    "training",
    "training.labels",
    "unknown_field",
];

#[derive(Debug, Clone)]
enum Mutation {
    Set(&'static str, Value),
    Remove(&'static str),
}

fn mutations() -> BoxedStrategy<Vec<Mutation>> {
    let one = prop_oneof![
        4 => (prop::sample::select(PATHS), value()).prop_map(|(p, v)| Mutation::Set(p, v)),
        1 => prop::sample::select(PATHS).prop_map(Mutation::Remove),
    ];
    // A third of the cases unmutated, so that valid specs flow between the hostile ones.
    prop_oneof![
        1 => Just(Vec::new()),
        2 => prop::collection::vec(one, 1..4),
    ]
    .boxed()
}

fn apply(spec: &mut Value, mutation: &Mutation) {
    let (path, new) = match mutation {
        Mutation::Set(path, value) => (*path, Some(value.clone())),
        Mutation::Remove(path) => (*path, None),
    };
    let mut target = &mut *spec;
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().unwrap();
    for part in parts {
        if !target[part].is_object() {
            target[part] = json!({});
        }
        target = &mut target[part];
    }
    let object = target.as_object_mut().unwrap();
    match new {
        Some(value) => {
            object.insert(last.to_string(), value);
        }
        None => {
            object.remove(last);
        }
    }
}

/// What the service must answer for a spec body, by the rules (HTTP status; AMQP class).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    Accept,
    TooLarge,
    Invalid,
    UnknownModel,
    OutputInUse,
}

fn judge(body: &[u8], model: &S3Uri, claimed: &mut HashSet<String>) -> Verdict {
    if body.len() > MAX_BODY {
        return Verdict::TooLarge;
    }
    let spec: JobSpec = match parse_json_spec_within(body, MAX_BODY) {
        Ok(spec) => spec,
        Err(_) => return Verdict::Invalid,
    };
    if &spec.model_uri() != model {
        return Verdict::UnknownModel;
    }
    if !claimed.insert(spec.output_uri().to_string()) {
        return Verdict::OutputInUse;
    }
    Verdict::Accept
}

async fn jobs(cluster: &Cluster) -> Vec<sluice::state::JobRecord> {
    StateStore::connect(&cluster.settings.redis, &cluster.settings.prefix)
        .await
        .unwrap()
        .list(None, 5000)
        .await
        .unwrap()
}

/// Every created job's spec passes validation again: nothing invalid became a job.
fn assert_all_valid(jobs: &[sluice::state::JobRecord]) {
    for job in jobs {
        let text = serde_json::to_vec(&job.spec).unwrap();
        parse_json_spec_within(&text, MAX_BODY)
            .unwrap_or_else(|e| panic!("job {} holds an invalid spec: {e}", job.id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_http_requests_get_predicted_answers_and_exact_job_counts() {
    let mut cluster = Cluster::new(512 * 1024).await;
    cluster.settings.api.max_body_bytes = MAX_BODY;
    cluster.start(false).await;
    let base = cluster.base_url();
    let model = S3Uri::parse(&cluster.model_uri).unwrap().as_prefix();
    let mut runner = runner();
    let key_strategy = prop_oneof![
        2 => Just(None::<String>),
        2 => "[!-~]{1,40}".prop_map(Some),
        1 => "[a-z]{201,260}".prop_map(Some),
        1 => "[a-z]{1,5} [a-z]{1,5}".prop_map(Some),
    ];
    let content_type = prop::sample::select(vec![
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "",
    ]);
    let client = reqwest::Client::new();
    let mut claimed = HashSet::new();
    let mut created = 0;
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for i in 0..HTTP_CASES {
        let mut spec = cluster.spec(
            &format!("fuzz-{i}"),
            "in.jsonl",
            "jsonl",
            &format!("out/{i}/"),
        );
        for mutation in sample(&mut runner, &mutations()) {
            apply(&mut spec, &mutation);
        }
        let body = spec.to_string().into_bytes();
        // The key is unique per case, so each valid one makes its own job.
        let key = sample(&mut runner, &key_strategy).map(|k: String| {
            if k.len() <= 200 && !k.contains(' ') {
                format!("{i}-{k}")
            } else {
                k
            }
        });
        let key_ok = key
            .as_deref()
            .is_none_or(|k| k.len() <= 200 && k.chars().all(|c| c.is_ascii_graphic()));
        let expected = if body.len() > MAX_BODY {
            413
        } else if !key_ok {
            400
        } else {
            match judge(&body, &model, &mut claimed) {
                Verdict::Accept => 201,
                Verdict::OutputInUse => 409,
                Verdict::TooLarge => 413,
                Verdict::Invalid | Verdict::UnknownModel => 422,
            }
        };
        let mut request = client.post(format!("{base}/v1/jobs")).body(body);
        let ct = sample(&mut runner, &content_type);
        if !ct.is_empty() {
            request = request.header("content-type", ct);
        }
        if let Some(key) = &key {
            request = request.header("idempotency-key", key.as_str());
        }
        let response = request
            .send()
            .await
            .expect("an answer, not a closed connection");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let answer: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("case {i}: not JSON: {text}"));
        assert_eq!(
            status,
            expected,
            "case {i}: {}",
            sluice::uri::abbreviated(&text, 500)
        );
        if status == 201 {
            created += 1;
        } else {
            assert!(answer["error"]["code"].is_string(), "case {i}: {answer}");
        }
        *statuses.entry(status).or_default() += 1;
    }
    // Random reads, lists and cancels: never a 5xx, always JSON.
    let verbs = prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH"]);
    let path = prop_oneof![
        "\\PC{0,30}".prop_map(|s| format!("/v1/jobs/{}", urlencode(&s))),
        "[a-z0-9-]{0,40}".prop_map(|s| format!("/v1/jobs/{s}/cancel")),
        "[a-z=&0-9]{0,30}".prop_map(|q| format!("/v1/jobs?{q}")),
        "(status|limit)=[a-z0-9-]{0,25}".prop_map(|q| format!("/v1/jobs?{q}")),
        "[a-z/]{0,30}".prop_map(|s| format!("/{s}")),
    ];
    for i in 0..60 {
        let verb: &str = sample(&mut runner, &verbs);
        let path: String = sample(&mut runner, &path);
        let response = client
            .request(verb.parse().unwrap(), format!("{base}{path}"))
            .send()
            .await
            .expect("an answer");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert!(status < 500, "request {i} {verb} {path}: {status} {text}");
        let answer: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{verb} {path}: not JSON: {text}"));
        if status >= 400 {
            assert!(
                answer["error"]["code"].is_string(),
                "{verb} {path}: {answer}"
            );
        }
        *statuses.entry(status).or_default() += 1;
    }
    eprintln!("HTTP fuzz statuses: {statuses:?}");
    let jobs = jobs(&cluster).await;
    assert_eq!(jobs.len(), created, "one job per 201");
    assert!(
        created >= HTTP_CASES / 5,
        "too few valid cases to mean anything: {created}"
    );
    assert_all_valid(&jobs);
    assert_eq!(
        sluice::metrics::INTAKE_PANICS
            .with(sluice::metrics::Door::Http)
            .get(),
        0
    );
    cluster.stop().await;
}

fn urlencode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_amqp_submissions_end_as_jobs_or_rejections_exactly() {
    let mut cluster = Cluster::new(512 * 1024).await;
    cluster.settings.api.max_body_bytes = MAX_BODY;
    cluster.start(false).await;
    let prefix = cluster.settings.prefix.clone();
    let t = Topology::new(&prefix, &cluster.settings.amqp.retry_delays_ms);
    let policy = ReplyPolicy::new(&prefix, &default_reply_queue_patterns());
    let model = S3Uri::parse(&cluster.model_uri).unwrap().as_prefix();
    let connection =
        Connection::connect(&cluster.settings.amqp.url, ConnectionProperties::default())
            .await
            .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut runner = runner();
    let message_id = prop_oneof![
        8 => "[!-~]{1,30}".prop_map(Some),
        1 => Just(None::<String>),
        1 => "[a-z]{201,250}".prop_map(Some),
        1 => "\\PC{1,10} x".prop_map(Some),
    ];
    let reply_to = prop_oneof![
        6 => Just(None::<String>),
        1 => "[a-z0-9]{1,20}".prop_map(|s| Some(format!("reply.{s}"))),
        1 => "[a-z0-9.]{0,20}".prop_map(|s| Some(format!("PREFIX.{s}"))),
        1 => "\\PC{1,40}".prop_map(Some),
    ];
    let headers = prop::collection::btree_map(
        "[a-z-]{1,20}",
        prop_oneof!["\\PC{0,200}", (1000usize..3000).prop_map(|n| "h".repeat(n))],
        0..5,
    );
    let mut claimed = HashSet::new();
    let mut expected: BTreeMap<&'static str, usize> = BTreeMap::new();
    for i in 0..AMQP_CASES {
        let mut spec = cluster.spec(
            &format!("fuzz-{i}"),
            "in.jsonl",
            "jsonl",
            &format!("out/{i}/"),
        );
        for mutation in sample(&mut runner, &mutations()) {
            apply(&mut spec, &mutation);
        }
        // Now and then not a spec at all.
        let body = if i % 17 == 5 {
            format!("{{\"broken\": {i}").into_bytes()
        } else {
            spec.to_string().into_bytes()
        };
        let id: Option<String> = sample(&mut runner, &message_id)
            .map(|m: String| if m.len() <= 30 { format!("{i}-{m}") } else { m });
        let reply: Option<String> = sample(&mut runner, &reply_to)
            .map(|r: String| r.replacen("PREFIX", &prefix, 1).chars().take(60).collect());
        let id_ok = id
            .as_deref()
            .is_some_and(|m| m.len() <= 200 && m.chars().all(|c| c.is_ascii_graphic()));
        let class = if body.len() > MAX_BODY {
            "too_large"
        } else if !id_ok {
            "missing_message_id"
        } else if reply.as_deref().is_some_and(|r| policy.check(r).is_err()) {
            "forbidden_reply_to"
        } else if serde_json::from_slice::<Value>(&body).is_err() {
            "not_json"
        } else {
            match judge(&body, &model, &mut claimed) {
                Verdict::Accept => "accepted",
                Verdict::Invalid | Verdict::TooLarge => "invalid_spec",
                Verdict::UnknownModel => "unknown_model",
                Verdict::OutputInUse => "output_in_use",
            }
        };
        *expected.entry(class).or_default() += 1;
        let mut table = FieldTable::default();
        for (name, value) in sample(&mut runner, &headers) {
            table.insert(
                name.as_str().into(),
                AMQPValue::LongString(value.as_str().into()),
            );
        }
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(table)
            .with_content_type(sample(&mut runner, &"[a-z/+.-]{0,30}").as_str().into());
        if let Some(id) = &id {
            properties = properties.with_message_id(id.as_str().into());
        }
        if let Some(reply) = &reply {
            properties = properties.with_reply_to(reply.as_str().into());
        }
        let confirm = channel
            .basic_publish(
                t.submissions_exchange().as_str().into(),
                Topology::SUBMISSION_ROUTING_KEY.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack(), "case {i}");
    }
    let accepted = expected.get("accepted").copied().unwrap_or_default();
    let rejected = AMQP_CASES - accepted;
    assert!(
        accepted >= AMQP_CASES / 8,
        "too few valid cases: {expected:?}"
    );
    let broker = cluster.broker().await;
    wait_for(
        "every submission handled",
        Duration::from_secs(60),
        async || {
            broker.queue_depth(&t.submissions_queue()).await.unwrap() == 0
                && broker.queue_depth(&t.rejected_queue()).await.unwrap() as usize >= rejected
                && jobs(&cluster).await.len() >= accepted
        },
    )
    .await;
    let jobs = jobs(&cluster).await;
    assert_eq!(jobs.len(), accepted, "{expected:?}");
    assert_all_valid(&jobs);
    let mut seen: BTreeMap<&'static str, usize> = BTreeMap::new();
    if accepted > 0 {
        seen.insert("accepted", accepted);
    }
    while let Some(message) = channel
        .basic_get(
            t.rejected_queue().as_str().into(),
            BasicGetOptions::default(),
        )
        .await
        .unwrap()
    {
        message.ack(BasicAckOptions::default()).await.unwrap();
        let class = match message
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-sluice-reason-class"))
        {
            Some(AMQPValue::LongString(s)) => s.to_string(),
            other => panic!("no reason class: {other:?}"),
        };
        let known = expected
            .keys()
            .find(|k| **k == class)
            .copied()
            .unwrap_or_else(|| panic!("unexpected class {class}"));
        *seen.entry(known).or_default() += 1;
    }
    eprintln!("AMQP fuzz outcomes: {seen:?}");
    assert_eq!(seen, expected);
    assert_eq!(broker.queue_depth(&t.dead_queue()).await.unwrap(), 0);
    assert_eq!(
        sluice::metrics::INTAKE_PANICS
            .with(sluice::metrics::Door::Amqp)
            .get(),
        0
    );
    cluster.stop().await;
}
