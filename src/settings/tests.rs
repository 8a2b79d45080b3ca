//! Tests of the settings: defaults validate, layering, and each refusal names its field.

use super::*;

#[test]
fn a_ca_file_needs_a_tls_url_and_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("ca.pem");
    std::fs::write(
        &pem,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let mut settings = Settings::default();
    settings.redis.tls_ca_file = pem.display().to_string();
    let err = settings.validate().unwrap_err().to_string();
    assert!(
        err.contains("redis.tls_ca_file") && err.contains("rediss://"),
        "{err}"
    );
    settings.redis.url = "rediss://localhost:6380/".into();
    settings.validate().unwrap();

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "nothing here\n").unwrap();
    settings.amqp.url = "amqps://u:p@localhost:5671/%2f".into();
    settings.amqp.tls_ca_file = empty.display().to_string();
    let err = settings.validate().unwrap_err().to_string();
    assert!(
        err.contains("amqp.tls_ca_file") && err.contains("no PEM certificate"),
        "{err}"
    );
    settings.amqp.tls_ca_file = "/nonexistent/ca.pem".into();
    let err = settings.validate().unwrap_err().to_string();
    assert!(err.contains("cannot read /nonexistent/ca.pem"), "{err}");
}

#[test]
fn defaults_validate() {
    Settings::default().validate().unwrap();
}

#[test]
fn every_dependency_has_a_deadline_by_default_and_zero_is_refused() {
    let s = Settings::default();
    assert_eq!(
        (
            s.s3.connect_timeout_ms,
            s.s3.operation_attempt_timeout_ms,
            s.s3.operation_timeout_ms
        ),
        (5_000, 120_000, 300_000)
    );
    assert_eq!(
        (
            s.s3.max_attempts,
            s.s3.initial_backoff_ms,
            s.s3.max_backoff_ms
        ),
        (5, 200, 20_000)
    );
    assert_eq!(
        (s.redis.connection_timeout_ms, s.redis.response_timeout_ms),
        (5_000, 10_000)
    );
    assert_eq!(
        (s.amqp.operation_timeout_ms, s.amqp.topology_check_secs),
        (10_000, 15)
    );
    assert_eq!(s.metrics.probe_timeout_ms, 2_000);
    // An old config file without the new keys still loads, with these defaults.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(
        &path,
        "[s3]\nregion = \"eu-west-1\"\n[redis]\nurl = \"redis://r:6379/\"\n",
    )
    .unwrap();
    let loaded = Settings::load(Some(&path)).unwrap();
    assert_eq!(loaded.s3.read_timeout_ms, 60_000);
    assert_eq!(loaded.redis.response_timeout_ms, 10_000);
    let mut bad = Settings::default();
    bad.s3.operation_timeout_ms = 0;
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("s3.operation_timeout_ms"), "{err}");
    let mut bad = Settings::default();
    bad.s3.max_backoff_ms = 10;
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("s3.max_backoff_ms"), "{err}");
}

#[test]
fn allowances_name_known_pipelines_and_real_prefixes() {
    let mut settings = Settings::default();
    settings
        .ingest
        .allow
        .insert("embed".into(), vec!["s3://drop/".into()]);
    settings.validate().unwrap();
    settings
        .ingest
        .allow
        .insert("embedd".into(), vec!["s3://drop/".into()]);
    let err = settings.validate().unwrap_err().to_string();
    assert!(
        err.contains("ingest.allow") && err.contains("\"embedd\""),
        "{err}"
    );

    let mut settings = Settings::default();
    settings.api.amqp_allow = vec!["drop/".into()];
    let err = settings.validate().unwrap_err().to_string();
    assert!(err.contains("api.amqp_allow"), "{err}");
}

#[test]
fn file_then_env_override_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(
        &path,
        "prefix = \"from-file\"\n[planner]\nshard_bytes = 4096\n",
    )
    .unwrap();
    let settings = Settings::load(Some(&path)).unwrap();
    assert_eq!(settings.prefix, "from-file");
    assert_eq!(settings.planner.shard_bytes, 4096);
    assert_eq!(settings.amqp, AmqpSettings::default());
}

#[test]
fn bad_value_names_the_field() {
    let mut settings = Settings::default();
    settings.planner.shard_bytes = 1;
    let err = settings.validate().unwrap_err().to_string();
    assert!(err.contains("planner.shard_bytes"), "{err}");
}

#[test]
fn a_shard_lease_outlasts_two_heartbeats() {
    let mut settings = Settings::default();
    settings.worker.shard_lease_ttl_secs = 9;
    settings.worker.shard_heartbeat_secs = 5;
    let err = settings.validate().unwrap_err().to_string();
    assert!(err.contains("worker.shard_lease_ttl_secs"), "{err}");
    settings.worker.shard_lease_ttl_secs = 10;
    settings.validate().unwrap();
}
