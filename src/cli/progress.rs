//! Showing jobs in a terminal: a progress bar while one runs, a summary, a table.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::{Client, ClientError};
use crate::api::{JobList, JobView};
use crate::job::{JobStatus, TrainingProgress};

/// Polls the job until it ends, with a progress bar (or a line every few seconds when
/// stderr is not a terminal); the caller shows the final state.
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
    let mut training_style = false;
    loop {
        let job = client.job(id).await?;
        let p = &job.progress;
        let message = if let Some(t) = &job.training {
            if !training_style {
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} [{elapsed_precise}] {bar:40.cyan/blue} {pos}/{len} steps  {msg}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                training_style = true;
            }
            bar.set_length(t.total_steps.max(1));
            bar.set_position(t.step);
            training_line(&job.status.to_string(), t)
        } else {
            if p.rows_total_known {
                bar.set_length(p.rows_total.max(1));
                bar.set_position(p.rows_done + p.rows_failed + p.rows_in_flight);
            } else {
                // Planned without reading: the bar counts input bytes (per thousand).
                bar.set_length(1000);
                bar.set_position((p.fraction * 1000.0) as u64);
            }
            let rate = job
                .timings
                .rows_per_second
                .map(|r| format!(" {r:.0} rows/s"))
                .unwrap_or_default();
            let rows_so_far = if p.rows_total_known {
                String::new()
            } else {
                format!(" rows so far {}", p.rows_done + p.rows_failed)
            };
            format!(
                "{} shards {}/{}{rows_so_far} failed rows {}{rate}",
                job.status, p.shards_done, p.shards_total, p.rows_failed
            )
        };
        bar.set_message(message.clone());
        if plain && last_line.elapsed() >= Duration::from_secs(5) {
            match &job.training {
                Some(t) => eprintln!("job {id}: step {}/{} {message}", t.step, t.total_steps),
                None => eprintln!(
                    "job {id}: {message}, rows {}/{}",
                    p.rows_done + p.rows_failed + p.rows_in_flight,
                    p.rows_total
                ),
            }
            last_line = std::time::Instant::now();
        }
        if job.status.is_terminal() {
            bar.finish_and_clear();
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

/// `running epoch 3/10 loss 0.4213 lr 4.2e-4 eval acc 0.781 F1 0.774 ETA 1m 12s`
pub fn training_line(status: &str, t: &TrainingProgress) -> String {
    let mut line = format!("{status} epoch {}/{}", t.epoch, t.epochs);
    if let Some(loss) = t.loss {
        line.push_str(&format!(" loss {loss:.4}"));
    }
    if let Some(lr) = t.learning_rate {
        line.push_str(&format!(" lr {lr:.1e}"));
    }
    if let Some(eval) = &t.eval {
        line.push_str(&format!(
            " eval acc {:.3} F1 {:.3}",
            eval.accuracy, eval.macro_f1
        ));
    }
    if let Some(eta) = t.eta_seconds {
        let eta = eta.round() as u64;
        line.push_str(&format!(" ETA {}m {:02}s", eta / 60, eta % 60));
    }
    line
}

pub fn print_job(job: &JobView) {
    let p = &job.progress;
    println!("job       {} ({})", job.id, job.name);
    println!("status    {}", job.status);
    match &job.training {
        Some(t) => {
            println!(
                "training  step {}/{}, {} training rows, {} evaluation rows, checkpoint at step {}",
                t.step,
                t.total_steps,
                t.train_rows,
                t.eval_rows,
                t.checkpoint_step.map_or("-".into(), |s| s.to_string())
            );
            println!("          {}", training_line(job.status.as_str(), t));
        }
        None if p.rows_total_known => println!(
            "progress  {} of {} rows done, {} failed, {} in flight; shards {}/{}",
            p.rows_done,
            p.rows_total,
            p.rows_failed,
            p.rows_in_flight,
            p.shards_done,
            p.shards_total
        ),
        // Planned without reading the input: rows are counted as shards finish.
        None => println!(
            "progress  {} rows done so far, {} failed, {} in flight; {} of {} input bytes; shards {}/{}",
            p.rows_done,
            p.rows_failed,
            p.rows_in_flight,
            p.bytes_done,
            p.bytes_total,
            p.shards_done,
            p.shards_total
        ),
    }
    if let Some(seconds) = job.timings.elapsed_seconds {
        match job
            .timings
            .rows_per_second
            .filter(|_| job.training.is_none())
        {
            Some(rate) => println!("time      {seconds:.1} s, {rate:.1} rows/s"),
            None => println!("time      {seconds:.1} s"),
        }
    }
    println!("output    {}", job.output_uri);
    if job.status == JobStatus::Succeeded || job.status == JobStatus::Failed {
        println!("manifest  {}", job.manifest_uri);
    }
    if let Some(error) = &job.error {
        println!("error     {error}");
    }
}

/// The table, then one line per record that could not be read (on stderr, so scripts
/// reading the table see only jobs).
pub fn print_list(list: &JobList) {
    print_table(&list.jobs);
    for bad in &list.unreadable {
        eprintln!("unreadable job record {}: {}", bad.id, bad.reason);
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
            match &job.training {
                Some(t) => format!("{}/{} steps", t.step, t.total_steps),
                None if p.rows_total_known => format!("{}/{}", p.rows_done, p.rows_total),
                None => format!("{}/?", p.rows_done),
            },
            job.name
        );
    }
}
