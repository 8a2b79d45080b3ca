//! Every Prometheus metric sluice exports, declared once, prefix `sluice_`, units in names.
//! Label values are enums (`labels`); `init` registers every metric and exports each known
//! series at 0.

#[macro_use]
mod declare;
mod dependencies;
mod family;
mod jobs;
pub mod labels;
mod training;
mod work;

use std::sync::LazyLock;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounterVec, Opts, Registry, TextEncoder,
};

pub use dependencies::*;
pub use family::{Counters, Family, Histograms};
pub use jobs::*;
pub use labels::{
    CacheResult, CheckpointOutcome, Dependency, Direction, Door, FailureKind, FinalStatus,
    IngestOutcome, JobKind, Label, LeaseEvent, ModelSource, RejectionClass, RowOutcome, S3Op,
    Source, Stage, SubmissionOutcome, TaskKind, TaskOutcome, TokenKind, Trigger,
};
pub use training::*;
pub use work::*;

pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

fn register<C: prometheus::core::Collector + Clone + 'static>(collector: C) -> C {
    REGISTRY
        .register(Box::new(collector.clone()))
        .expect("metric registered once");
    collector
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    register(GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    register(
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
            .expect("valid metric"),
    )
}

/// Registers every metric so `/metrics` lists them from the start, with every series whose
/// label values are known exported at 0 (a rate or an alert over an error that has not
/// happened yet reads 0 instead of "no data"; a histogram series born with its first
/// observation would hide that observation from `rate()`).
pub fn init() {
    jobs::init();
    work::init();
    training::init();
    dependencies::init();
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    init();
    let mut buffer = Vec::new();
    TextEncoder::new()
        .encode(&REGISTRY.gather(), &mut buffer)
        .expect("text encoding cannot fail");
    String::from_utf8(buffer).expect("prometheus text is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_renders_with_the_prefix() {
        ROWS.with(RowOutcome::Ok).inc();
        let text = render();
        assert!(text.contains("sluice_rows_total"), "{text}");
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            assert!(line.starts_with("sluice_"), "{line}");
        }
    }

    #[test]
    fn known_series_are_exported_at_zero_from_the_start() {
        let text = render();
        for series in [
            r#"sluice_tasks_total{kind="train",outcome="dead_lettered"}"#,
            r#"sluice_submissions_rejected_total{reason_class="panicked"}"#,
            r#"sluice_dependency_errors_total{dependency="redis",kind="timeout"}"#,
            r#"sluice_job_duration_seconds_count{kind="training",status="cancelled"}"#,
            r#"sluice_stage_seconds_count{stage="tokenize"}"#,
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
        // Metrics without labels are exported from the start too, one from each file.
        for name in [
            "sluice_ingest_scan_errors_total",
            "sluice_tasks_in_flight",
            "sluice_training_steps_total",
            "sluice_redis_ping_seconds_count",
        ] {
            assert!(text.contains(&format!("\n{name} ")), "{name} missing");
        }
    }
}
