//! Job gauges read from Redis by the API every few seconds: jobs by status, and the backlog
//! per pool (rows of running inference jobs not processed yet, jobs waiting or running) —
//! the signal an autoscaler scales workers on.

use std::collections::HashMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::job::{JobKind, JobStatus, Pool};
use crate::metrics;
use crate::state::{StateError, StateStore};

const EVERY: Duration = Duration::from_secs(5);

pub async fn run(state: StateStore, stop: CancellationToken) {
    loop {
        if let Err(e) = refresh(&state).await {
            tracing::warn!(error = %e, "could not refresh the job gauges");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

async fn refresh(state: &StateStore) -> Result<(), StateError> {
    let mut by_status: HashMap<JobStatus, i64> = HashMap::new();
    let mut rows: HashMap<Pool, i64> = HashMap::new();
    let mut jobs: HashMap<Pool, i64> = HashMap::new();
    for id in state.active_jobs().await? {
        let job = match state.get(&id).await {
            Ok(job) => job,
            Err(StateError::NotFound(_) | StateError::Corrupt { .. }) => continue,
            Err(e) => return Err(e),
        };
        if job.status.is_terminal() {
            continue;
        }
        *by_status.entry(job.status).or_default() += 1;
        *jobs.entry(job.spec.pool).or_default() += 1;
        if job.spec.kind == JobKind::Inference {
            let left = job
                .rows_total
                .saturating_sub(job.rows_done + job.rows_failed);
            *rows.entry(job.spec.pool).or_default() += left as i64;
        }
    }
    for status in [JobStatus::Queued, JobStatus::Planning, JobStatus::Running] {
        metrics::JOBS_ACTIVE
            .with_label_values(&[status.as_str()])
            .set(by_status.get(&status).copied().unwrap_or(0));
    }
    for pool in [Pool::Cpu, Pool::Gpu] {
        metrics::BACKLOG_ROWS
            .with_label_values(&[pool.as_str()])
            .set(rows.get(&pool).copied().unwrap_or(0));
        metrics::BACKLOG_JOBS
            .with_label_values(&[pool.as_str()])
            .set(jobs.get(&pool).copied().unwrap_or(0));
    }
    Ok(())
}
