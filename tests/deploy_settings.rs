//! The settings files the images and manifests ship are read by sluice's own loader, with
//! its validation (unknown fields, CA files, allowances naming real pipelines, metrics on a
//! port when the API gives them up): what the offline validators check by name, checked here
//! by the code that will read them in a container.

use std::path::Path;

use sluice::settings::Settings;

fn load(path: &str) -> Settings {
    Settings::load(Some(Path::new(path)))
        .unwrap_or_else(|e| panic!("{path} does not load as sluice settings: {e}"))
}

#[test]
fn the_image_settings_listen_beyond_loopback_and_ship_the_pipeline() {
    let settings = load("docker/sluice.toml");
    assert_eq!(settings.api.listen, "0.0.0.0:8080");
    assert_eq!(settings.metrics.listen, "0.0.0.0:9464");
    assert!(
        settings.api.serve_metrics,
        "compose health checks ask the API's port"
    );
    assert_eq!(
        settings.ingest.pipelines["embed"],
        Path::new("/opt/sluice/jobs/pipelines/embed.toml")
    );
    // The image copies jobs/ to /opt/sluice/jobs/: the template it names is in the repo.
    assert!(Path::new("jobs/pipelines/embed.toml").is_file());
}

#[test]
fn the_kubernetes_settings_keep_ops_routes_off_the_job_port() {
    for path in [
        "deploy/k8s/base/sluice.toml",
        "deploy/k8s/overlays/dev/sluice.toml",
    ] {
        let settings = load(path);
        assert!(!settings.api.serve_metrics, "{path}");
        assert_eq!(settings.metrics.listen, "0.0.0.0:9464", "{path}");
        assert_eq!(settings.api.listen, "0.0.0.0:8080", "{path}");
        // Workers drain within this; the Deployments' grace periods are checked against it
        // by scripts/validate_deploy.sh.
        assert!(settings.worker.shutdown_grace_secs <= 30, "{path}");
        for pipeline in settings.ingest.allow.keys() {
            assert!(settings.ingest.pipelines.contains_key(pipeline), "{path}");
        }
    }
}
