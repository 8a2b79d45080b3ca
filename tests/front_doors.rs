//! The AMQP front door and the job events, against the real RabbitMQ, Redis and S3:
//! submissions become one job per `message_id`, invalid ones are kept with their reason,
//! submitters get replies, event consumers see every job's events in order.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use common::amqp::{channel, drain, job_count, publish_submission, topology};
use common::{Cluster, wait_for};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use serde_json::Value;
use sluice::job::{JobEvent, SubmissionReply};
use sluice::state::StateStore;

/// Publishes one submission the way an upstream system does, and waits for the confirm.
async fn submit(
    channel: &Channel,
    cluster: &Cluster,
    body: &[u8],
    message_id: Option<&str>,
    reply_to: Option<&str>,
) {
    let mut properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into());
    if let Some(id) = message_id {
        properties = properties
            .with_message_id(id.into())
            .with_correlation_id(format!("corr-{id}").as_str().into());
    }
    if let Some(queue) = reply_to {
        properties = properties.with_reply_to(queue.into());
    }
    let returned = publish_submission(channel, cluster, body, properties).await;
    assert!(returned.is_none(), "the submission was not routed");
}

/// A server-named queue bound to the events exchange for every job event.
async fn subscribe_events(channel: &Channel, cluster: &Cluster) -> String {
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.name().as_str().into(),
            topology(cluster).events_exchange().as_str().into(),
            "job.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    queue.name().to_string()
}

async fn exclusive_queue(channel: &Channel) -> String {
    channel
        .queue_declare(
            "".into(),
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

fn header(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// The job ids of plan task messages.
fn planned_job_ids(plans: &[lapin::message::BasicGetMessage]) -> HashSet<String> {
    plans
        .iter()
        .map(|m| {
            serde_json::from_slice::<Value>(&m.data).unwrap()["job_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// The invalid submissions of the thousand: five kinds, ten of each.
fn invalid_submissions(
    cluster: &Cluster,
    max_body: usize,
) -> Vec<(Vec<u8>, Option<String>, &'static str)> {
    let mut out = Vec::new();
    for i in 0..10 {
        out.push((
            format!("{{\"api_version\": \"sluice/v1\", oops {i}").into_bytes(),
            Some(format!("bad-json-{i}")),
            "not_json",
        ));
        let mut typo = cluster.spec(
            &format!("typo-{i}"),
            "in.jsonl",
            "jsonl",
            &format!("typo/{i}/"),
        );
        typo["priorty"] = 3.into();
        out.push((
            typo.to_string().into_bytes(),
            Some(format!("typo-{i}")),
            "invalid_spec",
        ));
        let mut model = cluster.spec(
            &format!("model-{i}"),
            "in.jsonl",
            "jsonl",
            &format!("model/{i}/"),
        );
        model["model"] = cluster.uri("models/no-such-model/").into();
        out.push((
            model.to_string().into_bytes(),
            Some(format!("model-{i}")),
            "unknown_model",
        ));
        let mut large = cluster.spec(
            &format!("large-{i}"),
            "in.jsonl",
            "jsonl",
            &format!("large/{i}/"),
        );
        large["name"] = "x".repeat(max_body).into();
        out.push((
            large.to_string().into_bytes(),
            Some(format!("large-{i}")),
            "too_large",
        ));
        let anonymous = cluster.spec(
            &format!("anon-{i}"),
            "in.jsonl",
            "jsonl",
            &format!("anon/{i}/"),
        );
        out.push((
            anonymous.to_string().into_bytes(),
            None,
            "missing_message_id",
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_submissions_make_exactly_one_job_per_message_id() {
    let mut cluster = Cluster::new(512 * 1024).await;
    cluster.settings.api.max_body_bytes = 16 * 1024;
    cluster.start(false).await;
    let (_connection, channel) = channel(&cluster).await;
    let events = subscribe_events(&channel, &cluster).await;
    let invalid = invalid_submissions(&cluster, cluster.settings.api.max_body_bytes);
    assert_eq!(invalid.len(), 50);

    // 900 distinct jobs, 50 of them sent twice, 50 invalid: interleaved.
    let valid: Vec<(Vec<u8>, String)> = (0..900)
        .map(|i| {
            let spec = cluster.spec(
                &format!("amqp-{i}"),
                "in.jsonl",
                "jsonl",
                &format!("out/{i}/"),
            );
            (spec.to_string().into_bytes(), format!("m-{i:04}"))
        })
        .collect();
    let mut sends: Vec<(Vec<u8>, Option<String>)> = Vec::new();
    let mut invalid_iter = invalid.iter();
    for (i, (body, id)) in valid.iter().enumerate() {
        sends.push((body.clone(), Some(id.clone())));
        if i % 18 == 17 {
            let (body, id, _) = invalid_iter.next().unwrap();
            sends.push((body.clone(), id.clone()));
        }
        if i % 18 == 9 && i / 18 < 50 {
            // A re-send of an earlier submission (same message_id and body).
            let (body, id) = &valid[i / 18 * 18];
            sends.push((body.clone(), Some(id.clone())));
        }
    }
    assert_eq!(sends.len(), 1000);
    let started = Instant::now();
    for (body, id) in &sends {
        submit(&channel, &cluster, body, id.as_deref(), None).await;
    }

    let state = StateStore::connect(&cluster.settings.redis, &cluster.settings.prefix)
        .await
        .unwrap();
    let broker = cluster.broker().await;
    let t = topology(&cluster);
    wait_for(
        "900 jobs and 50 rejections",
        Duration::from_secs(180),
        async || {
            broker.queue_depth(&t.submissions_queue()).await.unwrap() == 0
                && broker.queue_depth(&t.rejected_queue()).await.unwrap() >= 50
                && job_count(&state).await >= 900
        },
    )
    .await;
    eprintln!(
        "1,000 AMQP submissions published (one confirm each) and handled in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Nothing trickles in late.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(job_count(&state).await, 900);

    // Each valid message_id names its own job, and that job has its spec.
    let mut jobs = HashSet::new();
    for (i, (_, id)) in valid.iter().enumerate() {
        let job_id = state
            .job_for_idempotency_key(&format!("amqp:{id}"))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no job for {id}"));
        let job = state.get(&job_id).await.unwrap();
        assert_eq!(job.name, format!("amqp-{i}"));
        assert_eq!(job.source, "amqp");
        assert!(jobs.insert(job_id));
    }
    assert_eq!(jobs.len(), 900);

    // The rejected queue keeps each invalid submission, body intact, with its reason.
    let rejected = drain(&channel, &t.rejected_queue()).await;
    assert_eq!(rejected.len(), 50);
    let expected: HashMap<Vec<u8>, &str> =
        invalid.iter().map(|(b, _, c)| (b.clone(), *c)).collect();
    let mut classes: BTreeMap<String, usize> = BTreeMap::new();
    for message in &rejected {
        let class = header(&message.properties, "x-sluice-reason-class").expect("reason class");
        let reason = header(&message.properties, "x-sluice-reason").expect("reason");
        assert_eq!(
            expected.get(&message.data).copied(),
            Some(class.as_str()),
            "body kept as sent, with its class"
        );
        let names_problem = match class.as_str() {
            "not_json" => reason.contains("not JSON"),
            "invalid_spec" => reason.contains("priorty"),
            "unknown_model" => reason.contains("no-such-model"),
            "too_large" => reason.contains("api.max_body_bytes"),
            "missing_message_id" => reason.contains("message_id"),
            _ => false,
        };
        assert!(names_problem, "{class}: {reason}");
        *classes.entry(class).or_default() += 1;
    }
    assert_eq!(
        classes.values().copied().collect::<Vec<_>>(),
        vec![10; 5],
        "{classes:?}"
    );

    // One plan task per job, and one job.submitted event per job.
    let plans = drain(&channel, &t.task_queue(sluice::job::Pool::Cpu)).await;
    let planned = planned_job_ids(&plans);
    assert_eq!(planned, jobs);
    assert_eq!(plans.len(), 900);
    let mut submitted = HashSet::new();
    wait_for(
        "900 job.submitted events",
        Duration::from_secs(30),
        async || {
            for message in drain(&channel, &events).await {
                let event: JobEvent = serde_json::from_slice(&message.data).unwrap();
                assert_eq!(event.event, "job.submitted");
                assert_eq!(event.seq, 1);
                assert!(submitted.insert(event.job_id));
            }
            submitted.len() >= 900
        },
    )
    .await;
    assert_eq!(submitted, jobs);
    cluster.stop().await;
}

/// Collects events from `queue` until every job in `jobs` has had a final event, plus a
/// second to catch anything after it.
async fn collect_events(
    channel: &Channel,
    queue: &str,
    jobs: &HashSet<String>,
    limit: Duration,
) -> HashMap<String, Vec<JobEvent>> {
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "events-test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut by_job: HashMap<String, Vec<JobEvent>> = HashMap::new();
    let deadline = Instant::now() + limit;
    let mut settle_until: Option<Instant> = None;
    loop {
        let all_final = jobs.iter().all(|j| {
            by_job
                .get(j)
                .is_some_and(|e| e.iter().any(JobEvent::is_final))
        });
        if all_final && settle_until.is_none() {
            settle_until = Some(Instant::now() + Duration::from_secs(1));
        }
        let until = settle_until.unwrap_or(deadline);
        if Instant::now() >= until {
            assert!(all_final, "not every job ended in time: {by_job:#?}");
            return by_job;
        }
        match tokio::time::timeout(until - Instant::now(), consumer.next()).await {
            Ok(Some(Ok(delivery))) => {
                delivery.ack(BasicAckOptions::default()).await.unwrap();
                let event: JobEvent = serde_json::from_slice(&delivery.data).unwrap();
                assert_eq!(delivery.routing_key.as_str(), event.event);
                by_job.entry(event.job_id.clone()).or_default().push(event);
            }
            Ok(other) => panic!("event consumer ended: {other:?}"),
            Err(_) => {}
        }
    }
}

fn assert_in_order(job: &str, events: &[JobEvent], last: &str) {
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "{job}: {names:?}"
    );
    assert_eq!(names.first(), Some(&"job.submitted"), "{job}: {names:?}");
    assert_eq!(names.last(), Some(&last), "{job}: {names:?}");
    assert_eq!(
        events.iter().filter(|e| e.is_final()).count(),
        1,
        "{job}: {names:?}"
    );
    let rank = |name: &str| match name {
        "job.submitted" => 0,
        "job.started" => 1,
        "job.progress" => 2,
        _ => 3,
    };
    assert!(
        names.windows(2).all(|w| rank(w[0]) <= rank(w[1])),
        "{job}: states out of order: {names:?}"
    );
    for window in events.windows(2) {
        assert!(
            window[0].counts.rows_done <= window[1].counts.rows_done,
            "{job}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn submitters_get_replies_and_event_consumers_see_every_job_in_order() {
    let mut cluster = Cluster::new(4 * 1024).await;
    cluster.start(true).await;
    let (_connection, channel) = channel(&cluster).await;
    let events = subscribe_events(&channel, &cluster).await;
    let replies = exclusive_queue(&channel).await;

    let (small, _) = common::rotten_tomatoes_jsonl(Some(40));
    cluster.put("in/small.jsonl", small).await;
    let (large, _) = common::rotten_tomatoes_jsonl(Some(4000));
    cluster.put("in/large.jsonl", large).await;

    // A job that succeeds, submitted with the example publisher from the docs.
    let spec_file = tempfile::NamedTempFile::with_suffix(".json").unwrap();
    std::fs::write(
        spec_file.path(),
        cluster
            .spec("ok", "in/small.jsonl", "jsonl", "out/ok/")
            .to_string(),
    )
    .unwrap();
    let python = std::env::var("SLUICE_TEST_SERVICES_PYTHON")
        .expect("SLUICE_TEST_SERVICES_PYTHON: a python with pika (scripts/test.sh sets it)");
    let example = tokio::process::Command::new(python)
        .arg("docs/examples/publish_job.py")
        .arg(spec_file.path())
        .args(["--message-id", "ok-1", "--correlation-id", "corr-ok-1"])
        .args([
            "--url",
            &cluster.settings.amqp.url,
            "--prefix",
            &cluster.settings.prefix,
        ])
        .args(["--wait", "120"])
        .output();
    // One that fails (no such input) and one cancelled while it runs, with raw AMQP.
    let failing = cluster.spec("fails", "in/missing.jsonl", "jsonl", "out/fails/");
    submit(
        &channel,
        &cluster,
        failing.to_string().as_bytes(),
        Some("fails-1"),
        Some(&replies),
    )
    .await;
    let cancelled = cluster.spec("cancelled", "in/large.jsonl", "jsonl", "out/cancelled/");
    submit(
        &channel,
        &cluster,
        cancelled.to_string().as_bytes(),
        Some("cancel-1"),
        Some(&replies),
    )
    .await;

    let state = StateStore::connect(&cluster.settings.redis, &cluster.settings.prefix)
        .await
        .unwrap();
    let mut cancel_id = None;
    wait_for("the cancellable job", Duration::from_secs(30), async || {
        cancel_id = state
            .job_for_idempotency_key("amqp:cancel-1")
            .await
            .unwrap();
        cancel_id.is_some()
    })
    .await;
    let cancel_id = cancel_id.unwrap();
    cluster
        .wait_until(&cancel_id, Duration::from_secs(60), |job| {
            job.status == sluice::job::JobStatus::Running
        })
        .await;
    cluster.client().cancel(&cancel_id).await.unwrap();

    let example = example.await.expect("run the example publisher");
    let stdout = String::from_utf8_lossy(&example.stdout).to_string();
    assert!(
        example.status.success(),
        "example publisher: {stdout}\n{}",
        String::from_utf8_lossy(&example.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[1]["outcome"], "accepted", "{stdout}");
    assert_eq!(lines[1]["correlation_id"], "corr-ok-1", "{stdout}");
    assert_eq!(lines.last().unwrap()["outcome"], "finished", "{stdout}");
    assert_eq!(lines.last().unwrap()["status"], "succeeded", "{stdout}");
    assert_eq!(
        lines.last().unwrap()["event"]["counts"]["rows_done"],
        40,
        "{stdout}"
    );
    let ok_id = lines[1]["job_id"].as_str().unwrap().to_string();
    let fail_id = state
        .job_for_idempotency_key("amqp:fails-1")
        .await
        .unwrap()
        .unwrap();

    let jobs: HashSet<String> = [ok_id.clone(), fail_id.clone(), cancel_id.clone()].into();
    let by_job = collect_events(&channel, &events, &jobs, Duration::from_secs(120)).await;
    assert_in_order("ok", &by_job[&ok_id], "job.succeeded");
    assert_in_order("fails", &by_job[&fail_id], "job.failed");
    assert_in_order("cancelled", &by_job[&cancel_id], "job.cancelled");
    let ok_events: Vec<&str> = by_job[&ok_id].iter().map(|e| e.event.as_str()).collect();
    assert!(
        ok_events.contains(&"job.started") && ok_events.contains(&"job.progress"),
        "{ok_events:?}"
    );
    let done = by_job[&ok_id].last().unwrap();
    assert_eq!(done.counts.rows_done, 40);
    assert_eq!(done.source, "amqp");
    assert_eq!(done.correlation_id.as_deref(), Some("corr-ok-1"));
    assert_eq!(done.output, cluster.uri("out/ok/"));
    let failed = by_job[&fail_id].last().unwrap();
    assert!(
        failed
            .error
            .as_deref()
            .unwrap_or("")
            .contains("missing.jsonl"),
        "{failed:?}"
    );

    // The raw submitters got `accepted`, then the final status, correlated.
    let mut got: HashMap<String, Vec<SubmissionReply>> = HashMap::new();
    wait_for("replies", Duration::from_secs(30), async || {
        for message in drain(&channel, &replies).await {
            let correlation = message
                .properties
                .correlation_id()
                .as_ref()
                .unwrap()
                .to_string();
            got.entry(correlation)
                .or_default()
                .push(serde_json::from_slice(&message.data).unwrap());
        }
        got.values().map(Vec::len).sum::<usize>() >= 4
    })
    .await;
    let outcomes = |key: &str| -> Vec<(String, Option<String>)> {
        got[key]
            .iter()
            .map(|r| (r.outcome.clone(), r.status.clone()))
            .collect()
    };
    assert_eq!(
        outcomes("corr-fails-1"),
        vec![
            ("accepted".into(), None),
            ("finished".into(), Some("failed".into()))
        ]
    );
    assert_eq!(
        outcomes("corr-cancel-1"),
        vec![
            ("accepted".into(), None),
            ("finished".into(), Some("cancelled".into()))
        ]
    );
    assert_eq!(
        got["corr-fails-1"][0].job_id.as_deref(),
        Some(fail_id.as_str())
    );
    assert!(
        got["corr-fails-1"][1]
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("missing.jsonl")
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_api_mid_stream_loses_and_duplicates_nothing() {
    let mut cluster = Cluster::new(512 * 1024).await;
    // The topology exists before anything is published (the api process declares it too).
    let broker = cluster.broker().await;
    let (_connection, channel) = channel(&cluster).await;
    let api_env = [("SLUICE__API__LISTEN", "127.0.0.1:0")];
    let api = cluster.spawn_role("api", &api_env);

    let mut expected = Vec::new();
    for i in 0..400 {
        let spec = cluster.spec(&format!("k-{i}"), "in.jsonl", "jsonl", &format!("out/{i}/"));
        expected.push((spec.to_string().into_bytes(), format!("k-{i:04}")));
    }
    for (i, (body, id)) in expected.iter().enumerate() {
        submit(&channel, &cluster, body, Some(id), None).await;
        if i % 10 == 5 {
            submit(&channel, &cluster, body, Some(id), None).await;
        }
        if i % 40 == 7 {
            submit(
                &channel,
                &cluster,
                format!("not json {i}").as_bytes(),
                Some(&format!("junk-{i}")),
                None,
            )
            .await;
        }
    }
    let state = StateStore::connect(&cluster.settings.redis, &cluster.settings.prefix)
        .await
        .unwrap();
    wait_for("some jobs", Duration::from_secs(60), async || {
        job_count(&state).await >= 80
    })
    .await;
    cluster.kill_worker(api).await;
    let created_before_restart = job_count(&state).await;
    assert!(
        created_before_restart < 400,
        "the kill should land mid-stream"
    );
    cluster.spawn_role("api", &api_env);

    let t = topology(&cluster);
    wait_for(
        "every submission handled",
        Duration::from_secs(180),
        async || {
            broker.queue_depth(&t.submissions_queue()).await.unwrap() == 0
                && job_count(&state).await >= 400
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(job_count(&state).await, 400);
    let mut jobs = HashSet::new();
    for (_, id) in &expected {
        let job = state
            .job_for_idempotency_key(&format!("amqp:{id}"))
            .await
            .unwrap();
        assert!(jobs.insert(job.unwrap_or_else(|| panic!("{id} lost"))));
    }
    // Every job has a plan task queued (a redelivery re-queues one a crash may have lost).
    let plans = drain(&channel, &t.task_queue(sluice::job::Pool::Cpu)).await;
    let planned = planned_job_ids(&plans);
    assert_eq!(planned, jobs);
    // The ten junk messages are kept; a crash between keeping one and acking it may keep
    // it twice, never lose it.
    let rejected = drain(&channel, &t.rejected_queue()).await;
    let distinct: HashSet<Vec<u8>> = rejected.iter().map(|m| m.data.clone()).collect();
    assert_eq!(distinct.len(), 10);
    assert!(rejected.len() <= 10 + cluster.settings.api.submission_concurrency);
    eprintln!(
        "killed the api with {created_before_restart} of 400 jobs created; {} plan tasks, {} rejected copies",
        plans.len(),
        rejected.len()
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_could_not_be_queued_still_ends_with_one_final_event() {
    let mut cluster = Cluster::new(512 * 1024).await;
    cluster.start(false).await;
    let (_connection, channel) = channel(&cluster).await;
    let events = subscribe_events(&channel, &cluster).await;
    let state = StateStore::connect(&cluster.settings.redis, &cluster.settings.prefix)
        .await
        .unwrap();
    // What the submit path does when the plan task cannot be published after the job
    // record (and its job.submitted event) exist.
    let id = sluice::job::new_job_id();
    let spec = cluster.spec("unqueued", "in.jsonl", "jsonl", "out/");
    let output = cluster.uri("out/");
    state
        .create_job(sluice::state::NewJob {
            id: &id,
            kind: "inference",
            output: &output,
            name: "unqueued",
            spec_json: &spec.to_string(),
            pool: "cpu",
            source: "http",
            idempotency_key: Some("unqueued-1"),
            reply_to: None,
            correlation_id: None,
        })
        .await
        .unwrap();
    state
        .discard_job(&id, &output, Some("unqueued-1"), "not queued (broker down)")
        .await
        .unwrap();
    let by_job = collect_events(
        &channel,
        &events,
        &[id.clone()].into(),
        Duration::from_secs(30),
    )
    .await;
    assert_in_order("unqueued", &by_job[&id], "job.failed");
    assert_eq!(by_job[&id].len(), 2);
    assert_eq!(
        by_job[&id][1].error.as_deref(),
        Some("not queued (broker down)")
    );
    // Nothing is left: the key, the output claim and the record are free again.
    assert!(
        state
            .job_for_idempotency_key("unqueued-1")
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        state.get(&id).await,
        Err(sluice::state::StateError::NotFound(_))
    ));
    let (status, body) = cluster.post_spec(&spec, Some("unqueued-1")).await;
    assert_eq!(status, 201, "{body}");
    cluster.stop().await;
}
