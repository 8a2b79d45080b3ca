//! What happens to a task once a run ends or is about to start: one pure decision shared
//! by plan, shard and training tasks, so the retry rules live in one place.

use super::TaskError;
use crate::state::Attempts;

/// How a run ended, as the disposition sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'a> {
    Done,
    /// Handed back cleanly (shutdown): not an attempt.
    HandedBack,
    /// The task raised an error (a caught panic included); `failed` counts it.
    Failed {
        reason: &'a str,
        retryable: bool,
        /// The task's failures so far, this one included.
        failed: u64,
    },
}

impl<'a> Outcome<'a> {
    /// The outcome of `result`, with `failed` the failure count once this run is counted.
    pub fn of(result: &'a Result<(), TaskError>, failed: u64) -> Self {
        match result {
            Ok(()) => Outcome::Done,
            Err(TaskError::Interrupted) => Outcome::HandedBack,
            Err(TaskError::Retryable(reason)) => Outcome::Failed {
                reason,
                retryable: true,
                failed,
            },
            Err(TaskError::Permanent(reason)) => Outcome::Failed {
                reason,
                retryable: false,
                failed,
            },
        }
    }
}

/// What to do with the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Finished: ack, nothing more.
    Ack,
    /// Back to the queue now, uncounted.
    HandBack,
    /// To retry level `level` (0-based), whose delay is `amqp.retry_delays_ms[level]`.
    RetryLater { level: usize },
    /// Fail the job with `reason` and dead-letter the task.
    GiveUp { reason: String },
}

/// The rules: an error the task raised is retried along the ladder (`retry_levels` steps)
/// when retryable, else — or once the ladder is spent — the job fails. Interruptions never
/// spend the ladder.
pub fn after_run(task: &str, outcome: Outcome<'_>, retry_levels: usize) -> Disposition {
    match outcome {
        Outcome::Done => Disposition::Ack,
        Outcome::HandedBack => Disposition::HandBack,
        Outcome::Failed {
            retryable: true,
            failed,
            ..
        } if failed >= 1 && failed <= retry_levels as u64 => Disposition::RetryLater {
            level: failed as usize - 1,
        },
        Outcome::Failed {
            reason,
            retryable: true,
            failed,
        } => Disposition::GiveUp {
            reason: format!(
                "{task} failed {failed} times, the last retry included; giving up: {}",
                final_words(reason)
            ),
        },
        Outcome::Failed {
            reason,
            retryable: false,
            ..
        } => Disposition::GiveUp {
            reason: reason.to_string(),
        },
    }
}

/// Before a run: a task whose earlier runs vanished more than `max_vanished` times (its
/// worker was killed, evicted or crashed each time) is given up, since it may be what
/// kills its workers; `None` lets it run.
pub fn before_run(task: &str, attempts: Attempts, max_vanished: u64) -> Option<String> {
    let vanished = attempts.vanished();
    (vanished > max_vanished).then(|| {
        format!(
            "{task} was started {} times and its worker vanished {vanished} times before it \
             ended (killed, evicted or crashed; amqp.max_deliveries = {max_vanished}); if no \
             worker was being stopped, this task may crash it: see the worker logs",
            attempts.started - 1
        )
    })
}

/// A retryable error's text without its promise of a retry, for a failure that is final.
fn final_words(reason: &str) -> &str {
    reason
        .trim_end()
        .trim_end_matches("; will retry")
        .trim_end_matches(", will retry")
        .trim_end_matches(" (will retry)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(reason: &str, retryable: bool, failed: u64) -> Outcome<'_> {
        Outcome::Failed {
            reason,
            retryable,
            failed,
        }
    }

    #[test]
    fn done_acks_and_a_hand_back_goes_back_uncounted() {
        assert_eq!(after_run("shard-1", Outcome::Done, 3), Disposition::Ack);
        assert_eq!(
            after_run("shard-1", Outcome::HandedBack, 3),
            Disposition::HandBack
        );
    }

    #[test]
    fn retryable_failures_climb_the_ladder_then_give_up_without_promising_a_retry() {
        for n in 1..=3 {
            assert_eq!(
                after_run("shard-1", failed("s3 down; will retry", true, n), 3),
                Disposition::RetryLater {
                    level: n as usize - 1
                }
            );
        }
        let Disposition::GiveUp { reason } = after_run(
            "shard-1",
            failed("s3://b/k: GetObject failed; will retry", true, 4),
            3,
        ) else {
            panic!("a fourth failure must give up");
        };
        assert_eq!(
            reason,
            "shard-1 failed 4 times, the last retry included; giving up: s3://b/k: GetObject failed"
        );
        assert!(!reason.contains("will retry"));
    }

    #[test]
    fn no_ladder_means_the_first_retryable_failure_is_final() {
        assert!(matches!(
            after_run("plan", failed("redis gone", true, 1), 0),
            Disposition::GiveUp { .. }
        ));
    }

    #[test]
    fn permanent_failures_give_up_at_once_with_their_own_reason() {
        assert_eq!(
            after_run("shard-2", failed("input s3://b/k line 3: bad", false, 1), 3),
            Disposition::GiveUp {
                reason: "input s3://b/k line 3: bad".into()
            }
        );
    }

    #[test]
    fn outcome_of_maps_every_task_error() {
        assert_eq!(Outcome::of(&Ok(()), 0), Outcome::Done);
        assert_eq!(
            Outcome::of(&Err(TaskError::Interrupted), 0),
            Outcome::HandedBack
        );
        let retry = Err(TaskError::Retryable("x".into()));
        assert_eq!(Outcome::of(&retry, 2), failed("x", true, 2));
        let perm = Err(TaskError::Permanent("y".into()));
        assert_eq!(Outcome::of(&perm, 1), failed("y", false, 1));
    }

    #[test]
    fn vanished_runs_are_bounded_separately_from_failures() {
        let fresh = Attempts {
            started: 1,
            failed: 0,
        };
        assert_eq!(before_run("shard-0", fresh, 30), None);
        // Many failures but no vanished run: the ladder, not this bound, decides.
        let failing = Attempts {
            started: 40,
            failed: 39,
        };
        assert_eq!(before_run("shard-0", failing, 30), None);
        let at_bound = Attempts {
            started: 31,
            failed: 0,
        };
        assert_eq!(before_run("shard-0", at_bound, 30), None);
        let over = Attempts {
            started: 33,
            failed: 1,
        };
        let reason = before_run("shard-0", over, 30).expect("31 vanished runs exceed 30");
        assert!(reason.contains("vanished 31 times"), "{reason}");
        assert!(reason.contains("amqp.max_deliveries"), "{reason}");
    }
}
