//! Showing jobs in a terminal: a progress bar while one runs, a summary, a table.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::{Client, ClientError};
use crate::api::JobView;
use crate::job::JobStatus;

/// Polls the job until it ends, with a progress bar (or a line every few seconds when
/// stderr is not a terminal).
pub async fn follow(client: &Client, id: &str) -> Result<JobView, ClientError> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40.cyan/blue} {pos}/{len} rows  {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let plain = bar.is_hidden();
    let mut last_line = std::time::Instant::now() - Duration::from_secs(60);
    loop {
        let job = client.job(id).await?;
        let p = &job.progress;
        bar.set_length(p.rows_total.max(1));
        bar.set_position(p.rows_done + p.rows_failed + p.rows_in_flight);
        let rate = job
            .timings
            .rows_per_second
            .map(|r| format!(" {r:.0} rows/s"))
            .unwrap_or_default();
        let message = format!(
            "{} shards {}/{} failed rows {}{rate}",
            job.status, p.shards_done, p.shards_total, p.rows_failed
        );
        bar.set_message(message.clone());
        if plain && last_line.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "job {id}: {message}, rows {}/{}",
                p.rows_done + p.rows_failed + p.rows_in_flight,
                p.rows_total
            );
            last_line = std::time::Instant::now();
        }
        if job.status.is_terminal() {
            bar.finish_and_clear();
            print_job(&job);
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub fn exit_code(job: &JobView) -> i32 {
    if job.status == JobStatus::Succeeded {
        0
    } else {
        1
    }
}

pub fn print_job(job: &JobView) {
    let p = &job.progress;
    println!("job       {} ({})", job.id, job.name);
    println!("status    {}", job.status);
    println!(
        "progress  {} of {} rows done, {} failed, {} in flight; shards {}/{}",
        p.rows_done, p.rows_total, p.rows_failed, p.rows_in_flight, p.shards_done, p.shards_total
    );
    if let Some(seconds) = job.timings.elapsed_seconds {
        let rate = job.timings.rows_per_second.unwrap_or(0.0);
        println!("time      {seconds:.1} s, {rate:.1} rows/s");
    }
    println!("output    {}", job.output_uri);
    if job.status == JobStatus::Succeeded || job.status == JobStatus::Failed {
        println!("manifest  {}", job.manifest_uri);
    }
    if let Some(error) = &job.error {
        println!("error     {error}");
    }
}

pub fn print_table(jobs: &[JobView]) {
    println!(
        "{:<36}  {:<10}  {:>7}  {:>15}  NAME",
        "ID", "STATUS", "DONE", "ROWS"
    );
    for job in jobs {
        let p = &job.progress;
        println!(
            "{:<36}  {:<10}  {:>6.1}%  {:>15}  {}",
            job.id,
            job.status.as_str(),
            p.fraction * 100.0,
            format!("{}/{}", p.rows_done, p.rows_total),
            job.name
        );
    }
}
