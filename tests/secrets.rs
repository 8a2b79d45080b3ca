//! Credentials stay secret: with a distinctive S3 secret key, a broker and a Redis of the
//! test's own with distinctive passwords in their URLs, and an API bearer token, an `api` and
//! a `worker` process run a job that succeeds and one that fails; neither their logs nor the
//! job records (as stored in Redis and as the API shows them) contain any of them.

mod common;

use std::time::Duration;

use common::Cluster;
use common::broker_node::BrokerNode;
use common::redis_node::RedisNode;
use sluice::job::JobStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_appear_in_no_log_and_no_job_record() {
    let mut cluster = Cluster::new(64 * 1024).await;
    let unique = |what: &str| format!("{what}-{}", uuid::Uuid::new_v4().simple());
    let secret = unique("s3-secret");
    let amqp_password = unique("amqp-password");
    let redis_password = unique("redis-password");
    let token = sluice::api::auth::new_token();
    let broker = BrokerNode::start(&format!(
        "default_user = sluice\ndefault_pass = {amqp_password}"
    ))
    .await;
    let redis_node = RedisNode::start(None, Some(&redis_password)).await;
    cluster.settings.amqp.url = format!(
        "amqp://sluice:{amqp_password}@127.0.0.1:{}/%2f",
        broker.port
    );
    cluster.settings.redis.url = redis_node.url.clone();
    let tokens = tempfile::NamedTempFile::with_suffix(".toml").unwrap();
    std::fs::write(
        tokens.path(),
        format!(
            "[[tokens]]\nname = \"ci\"\nsha256 = \"{}\"\nscopes = [\"admin\"]\nallow = [\"*\"]\n",
            sluice::api::auth::hash_token(&token)
        ),
    )
    .unwrap();
    let tokens_file = tokens.path().display().to_string();
    let port = common::free_port();
    let env = [
        ("SLUICE__S3__SECRET_ACCESS_KEY", secret.as_str()),
        ("SLUICE__API__TOKENS_FILE", tokens_file.as_str()),
        ("SLUICE__API__LISTEN", &format!("127.0.0.1:{port}")),
        ("SLUICE_LOG", "debug,lapin=info,aws=info,h2=info,hyper=info"),
    ];
    let api = cluster.spawn_role("api", &env);
    let worker = cluster.spawn_role("worker", &env);
    let (body, _) = common::rotten_tomatoes_jsonl(Some(200));
    cluster.put("in.jsonl", body).await;
    let base = format!("http://127.0.0.1:{port}");
    common::wait_for("the api process", Duration::from_secs(60), async || {
        reqwest::get(format!("{base}/readyz"))
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for (name, input) in [("ok", "in.jsonl"), ("missing", "nowhere.jsonl")] {
        let spec = cluster.spec(name, input, "jsonl", &format!("out-{name}/"));
        let created: serde_json::Value = client
            .post(format!("{base}/v1/jobs"))
            .bearer_auth(&token)
            .json(&spec)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(created["id"].as_str().unwrap().to_string());
    }
    let mut views = Vec::new();
    for id in &ids {
        let mut view = serde_json::Value::Null;
        common::wait_for("the job to end", Duration::from_secs(120), async || {
            view = client
                .get(format!("{base}/v1/jobs/{id}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            view["status"] != "queued"
                && view["status"] != "planning"
                && view["status"] != "running"
        })
        .await;
        views.push(view);
    }
    assert_eq!(views[0]["status"], JobStatus::Succeeded.as_str());
    assert_eq!(views[1]["status"], JobStatus::Failed.as_str());
    cluster.signal_worker(worker, "TERM");
    cluster.signal_worker(api, "TERM");
    cluster.wait_worker(worker).await;
    cluster.wait_worker(api).await;

    let mut places = Vec::new();
    for (index, role) in [(api, "api"), (worker, "worker")] {
        let log = cluster.role_log(role, index);
        let text = std::fs::read_to_string(&log).unwrap();
        // The log covers the work: it names the jobs.
        assert!(
            ids.iter().all(|id| text.contains(id.as_str())),
            "{} does not mention the jobs",
            log.display()
        );
        places.push((log.display().to_string(), text));
    }
    for view in &views {
        places.push(("job view".into(), view.to_string()));
    }
    let mut redis = redis::Client::open(cluster.settings.redis.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", cluster.settings.prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    for key in keys {
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .unwrap();
        places.push((
            format!("redis {key}"),
            String::from_utf8_lossy(&dump).into_owned(),
        ));
    }
    for (place, text) in &places {
        assert!(!text.contains(&secret), "the S3 secret is in {place}");
        assert!(
            !text.contains(&amqp_password),
            "the AMQP password is in {place}"
        );
        assert!(
            !text.contains(&redis_password),
            "the Redis password is in {place}"
        );
        assert!(!text.contains(&token), "the API token is in {place}");
    }
    eprintln!("searched {} places; no credential found", places.len());

    // The failure paths format URLs too: workers given a wrong password for the broker or
    // for Redis log their retries without it.
    let wrong_amqp = unique("wrong-amqp-password");
    let wrong_redis = unique("wrong-redis-password");
    let bad_broker = format!("amqp://sluice:{wrong_amqp}@127.0.0.1:{}/%2f", broker.port);
    let bad_redis = redis_node.url.replace(&redis_password, &wrong_redis);
    for (env, wrong, service) in [
        (
            ("SLUICE__AMQP__URL", bad_broker.as_str()),
            &wrong_amqp,
            "RabbitMQ",
        ),
        (
            ("SLUICE__REDIS__URL", bad_redis.as_str()),
            &wrong_redis,
            "Redis",
        ),
    ] {
        let index = cluster.spawn_role("worker", &[env]);
        let log = cluster.role_log("worker", index);
        common::wait_for("a retry logged", Duration::from_secs(30), async || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("not reachable yet"))
        })
        .await;
        cluster.kill_worker(index).await;
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            !text.contains(wrong.as_str()),
            "the wrong {service} password is in {}: {text}",
            log.display()
        );
        eprintln!(
            "{service} refused, logged without the password: {}",
            text.lines()
                .find(|l| l.contains("not reachable yet"))
                .unwrap()
        );
    }
    cluster.stop().await;
}
