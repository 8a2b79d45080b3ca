//! `sluice bench`: what the row accounting costs, in µs per row and as a share of the job's own
//! µs per row measured in the same run.
//!
//! Both sides read the same JSONL bytes (the bench's news sentences, as the whole-job figure
//! uploads them) through the same 16 KiB async buffer, warm, alternating, several times; the
//! medians are compared. The baseline only splits lines and parses the fields a row needs
//! (`text`, and the `id` the output must repeat, kept raw). The accounted side is the code a
//! job runs: the planner's pass (record reader with offsets, line numbers, BOM/encoding and
//! size checks, UTF-8 check, per-object counts), the shard's pass (record reader, blank and
//! per-piece counts, row parsing, the id log), the shard's sorted ids file and the finisher's
//! duplicate-hash pass over it, and the reconciliation of the counts.

use std::time::Instant;

use anyhow::bail;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use crate::job::accounting::{PieceCounts, PlannedObject, reconcile};
use crate::storage::records::{
    RecordReader, RowFields, RowFormat, check_utf8, parse_record, raw_string,
};
use crate::worker::ids::IdLog;

/// The accounting goal of issue 20: at most this share of the job's time.
pub const GOAL_PERCENT: f64 = 2.0;

/// Timed repetitions of each side (after one warm-up of each); the median is kept.
const REPETITIONS: usize = 9;

/// Read buffer: about what an S3 body stream hands over at a time.
const BUFFER: usize = 16 * 1024;

/// The measured cost; times in µs per row.
#[derive(Debug, Clone, Serialize)]
pub struct AccountingCost {
    pub rows: usize,
    pub bytes: usize,
    pub repetitions: usize,
    /// Split lines + parse text and raw id, planner pass included (split only).
    pub baseline_us_per_row: f64,
    /// The job's own reading: planner pass, shard pass, ids file, duplicate check, counts.
    pub accounted_us_per_row: f64,
    /// Of the accounted time: the planner's pass, the shard's pass, ids + duplicates.
    pub plan_us_per_row: f64,
    pub shard_us_per_row: f64,
    pub ids_us_per_row: f64,
    /// accounted − baseline.
    pub extra_us_per_row: f64,
    /// Each denominator: (figure's name, its µs per row, extra as % of it).
    pub shares: Vec<Share>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Share {
    pub against: String,
    pub job_us_per_row: f64,
    pub percent: f64,
}

/// Measures the accounting over `body` (JSONL rows with `id` and `text`) and relates it to
/// each `(name, seconds for all rows)` figure.
pub async fn measure(
    body: &[u8],
    rows: usize,
    figures: &[(String, f64)],
) -> anyhow::Result<AccountingCost> {
    // Warm-up: caches, allocator, and a check that both sides see every row.
    let base = baseline(body).await?;
    let (plan, shard, _) = accounted(body).await?;
    if base.rows != rows || plan.rows != rows || shard.rows != rows {
        bail!(
            "accounting bench: {rows} rows expected; baseline read {}, planner {}, shard {}",
            base.rows,
            plan.rows,
            shard.rows
        );
    }
    let mut base_times = Vec::with_capacity(REPETITIONS);
    let mut accounted_times = Vec::with_capacity(REPETITIONS);
    let (mut plan_times, mut shard_times, mut ids_times) = (Vec::new(), Vec::new(), Vec::new());
    // Alternating, so drift (a noisy neighbour, frequency changes) hits both sides alike.
    for _ in 0..REPETITIONS {
        base_times.push(baseline(body).await?.seconds);
        let (plan, shard, ids) = accounted(body).await?;
        accounted_times.push(plan.seconds + shard.seconds + ids);
        plan_times.push(plan.seconds);
        shard_times.push(shard.seconds);
        ids_times.push(ids);
    }
    let per_row = |times: &mut Vec<f64>| median(times) * 1e6 / rows as f64;
    let baseline_us = per_row(&mut base_times);
    let accounted_us = per_row(&mut accounted_times);
    let extra = accounted_us - baseline_us;
    Ok(AccountingCost {
        rows,
        bytes: body.len(),
        repetitions: REPETITIONS,
        baseline_us_per_row: baseline_us,
        accounted_us_per_row: accounted_us,
        plan_us_per_row: per_row(&mut plan_times),
        shard_us_per_row: per_row(&mut shard_times),
        ids_us_per_row: per_row(&mut ids_times),
        extra_us_per_row: extra,
        shares: figures
            .iter()
            .map(|(name, seconds)| {
                let job_us = seconds * 1e6 / rows as f64;
                Share {
                    against: name.clone(),
                    job_us_per_row: job_us,
                    percent: 100.0 * extra / job_us,
                }
            })
            .collect(),
    })
}

impl AccountingCost {
    pub fn print(&self) {
        println!(
            "\nrow accounting, {} rows ({} bytes), median of {}: baseline {:.3} µs/row, accounted {:.3} µs/row (planner {:.3}, shard {:.3}, ids + duplicates {:.3}); extra {:.3} µs/row",
            self.rows,
            self.bytes,
            self.repetitions,
            self.baseline_us_per_row,
            self.accounted_us_per_row,
            self.plan_us_per_row,
            self.shard_us_per_row,
            self.ids_us_per_row,
            self.extra_us_per_row,
        );
        for s in &self.shares {
            println!(
                "  {:>7.3}% of {} ({:.1} µs/row){}",
                s.percent,
                s.against,
                s.job_us_per_row,
                if s.percent <= GOAL_PERCENT {
                    format!(": within the {GOAL_PERCENT}% goal")
                } else {
                    format!(": OVER the {GOAL_PERCENT}% goal")
                }
            );
        }
    }
}

fn median(times: &mut [f64]) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn reader(body: &[u8]) -> BufReader<&[u8]> {
    BufReader::with_capacity(BUFFER, body)
}

struct Pass {
    rows: usize,
    seconds: f64,
}

/// Only what any reader must do: the planner splits lines; the shard splits lines and parses
/// text and raw id, keeping the rows as a chunk does.
async fn baseline(body: &[u8]) -> anyhow::Result<Pass> {
    #[derive(Deserialize)]
    struct Plain<'a> {
        text: String,
        #[serde(borrow)]
        id: &'a RawValue,
    }
    let started = Instant::now();
    let mut planned = 0usize;
    let mut input = reader(body);
    let mut line = Vec::new();
    while input.read_until(b'\n', &mut line).await? > 0 {
        planned += 1;
        line.clear();
    }
    let mut rows = 0usize;
    let mut chunk: Vec<(Box<RawValue>, String)> = Vec::new();
    let mut input = reader(body);
    while input.read_until(b'\n', &mut line).await? > 0 {
        let trimmed = line.strip_suffix(b"\n").unwrap_or(&line);
        if let Ok(row) = serde_json::from_slice::<Plain>(trimmed) {
            chunk.push((row.id.to_owned(), row.text));
            rows += 1;
        }
        if chunk.len() >= 1024 {
            chunk.clear();
        }
        line.clear();
    }
    std::hint::black_box((&chunk, planned));
    Ok(Pass {
        rows,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The job's own reading, as the planner, a shard and the finisher do it (one shard of one
/// piece); returns the planner's pass, the shard's pass and the ids seconds.
async fn accounted(body: &[u8]) -> anyhow::Result<(Pass, Pass, f64)> {
    let plan = plan_pass(reader(body)).await?;
    let started = Instant::now();
    let uri = "s3://bench/in.jsonl";
    let mut counts = PieceCounts {
        uri: uri.into(),
        ..Default::default()
    };
    let mut ids = IdLog::default();
    let mut records = RecordReader::new(reader(body), false, 0, 1);
    let mut chunk: Vec<(usize, u64, Box<RawValue>, String)> = Vec::new();
    let mut errors = 0usize;
    while let Some(record) = records.next_record().await? {
        if record.offset >= body.len() as u64 {
            break;
        }
        if record.is_blank() {
            counts.skipped += 1;
            continue;
        }
        counts.read += 1;
        match parse_record(
            &RowFormat::Jsonl,
            &record,
            &RowFields::new("text", Some("id")),
        ) {
            Ok(row) => {
                let id = match row.id {
                    Some(id) => {
                        ids.push(&id);
                        id
                    }
                    None => raw_string(&format!("{uri}:{}", record.line)),
                };
                chunk.push((0, record.line, id, row.text));
            }
            Err(_) => {
                counts.failed += 1;
                errors += 1;
            }
        }
        if chunk.len() >= 1024 {
            counts.written += chunk.len() as u64;
            chunk.clear();
        }
    }
    counts.written += chunk.len() as u64;
    std::hint::black_box((&chunk, errors));
    let shard = Pass {
        rows: counts.written as usize,
        seconds: started.elapsed().as_secs_f64(),
    };

    let started = Instant::now();
    let file = ids.into_sorted();
    let repeated = duplicate_hashes(&file)?;
    let object = PlannedObject {
        uri: uri.into(),
        records: plan.rows as u64,
        ..Default::default()
    };
    let planned = [(0u32, vec![(uri.to_string(), 0u64, plan.rows as u64, 0u64)])];
    reconcile(&[object], &planned, &[(0, vec![counts])])
        .map_err(|e| anyhow::anyhow!("accounting bench: {e}"))?;
    std::hint::black_box(repeated);
    Ok((plan, shard, started.elapsed().as_secs_f64()))
}

/// The planner's pass over an object: every record checked and counted.
async fn plan_pass(input: impl AsyncBufRead + Unpin) -> anyhow::Result<Pass> {
    let started = Instant::now();
    let mut seen = PlannedObject::default();
    let mut records = RecordReader::new(input, false, 0, 1);
    let mut end = 0u64;
    while let Some(record) = records.next_record().await? {
        check_utf8(&record).map_err(|e| anyhow::anyhow!("line {}: {e}", record.line))?;
        end = record.end;
        if record.is_blank() {
            seen.blank += 1;
        } else {
            seen.records += 1;
        }
        if record.lines > 1 {
            seen.multiline_records += 1;
            seen.joined_lines += record.lines;
        }
    }
    std::hint::black_box(end);
    Ok(Pass {
        rows: seen.records as usize,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The finisher's first duplicate pass over an ids file: hashes read, sorted, repeats found.
fn duplicate_hashes(file: &[u8]) -> anyhow::Result<usize> {
    let text = std::str::from_utf8(file)?;
    let mut hashes = Vec::new();
    for line in text.lines() {
        let Some((hash, _)) = line.split_once(' ') else {
            bail!("ids file: bad line {line:?}");
        };
        hashes.push(u64::from_str_radix(hash, 16)?);
    }
    hashes.sort_unstable();
    Ok(hashes.windows(2).filter(|w| w[0] == w[1]).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_sides_read_every_row_and_the_shares_use_each_figure() {
        let body: String = (0..3000)
            .map(|i| format!("{{\"id\": {i}, \"text\": \"sentence number {i} is here.\"}}\n"))
            .collect();
        let figures = [("engine".to_string(), 3.0), ("job".to_string(), 6.0)];
        let cost = measure(body.as_bytes(), 3000, &figures).await.unwrap();
        assert_eq!((cost.rows, cost.bytes), (3000, body.len()));
        assert!(cost.baseline_us_per_row > 0.0 && cost.accounted_us_per_row > 0.0);
        assert_eq!(cost.shares.len(), 2);
        // 3 s for 3000 rows is 1000 µs/row; 6 s, 2000 µs/row.
        assert!((cost.shares[0].job_us_per_row - 1000.0).abs() < 1e-6);
        assert!((cost.shares[1].job_us_per_row - 2000.0).abs() < 1e-6);
        let share = 100.0 * cost.extra_us_per_row / 1000.0;
        assert!((cost.shares[0].percent - share).abs() < 1e-9);
        assert!((cost.shares[1].percent - share / 2.0).abs() < 1e-9);
    }

    #[tokio::test]
    async fn a_row_count_mismatch_is_an_error_not_a_figure() {
        let body = b"{\"id\": 1, \"text\": \"a\"}\n{\"id\": 2, \"text\": \"b\"}\n";
        let err = measure(body, 3, &[]).await.unwrap_err().to_string();
        assert!(
            err.contains("3 rows expected") && err.contains("baseline read 2"),
            "{err}"
        );
    }

    #[test]
    fn repeated_hashes_are_counted() {
        let mut log = IdLog::default();
        for id in ["1", "2", "1", "\"x\""] {
            log.push(&RawValue::from_string(id.into()).unwrap());
        }
        assert_eq!(duplicate_hashes(&log.into_sorted()).unwrap(), 1);
    }
}
