//! The job status state machine: `queued → planning → running → succeeded | failed | cancelled`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Planning,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    /// The metrics label of a terminal status; `None` for one that is not final.
    pub fn final_label(self) -> Option<crate::metrics::FinalStatus> {
        crate::metrics::FinalStatus::named(self.as_str())
    }

    pub const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Planning,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Planning => "planning",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    /// The states a job may move to `self` from. Failing and cancelling are allowed from
    /// any live state; the happy path only moves forward. (The same table is enforced
    /// atomically in Redis by the state store.)
    pub fn allowed_from(self) -> &'static [JobStatus] {
        use JobStatus::*;
        match self {
            Queued => &[],
            Planning => &[Queued],
            Running => &[Planning],
            Succeeded => &[Running],
            Failed | Cancelled => &[Queued, Planning, Running],
        }
    }

    pub fn can_move_to(self, to: JobStatus) -> bool {
        to.allowed_from().contains(&self)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::JobStatus::*;
    use super::*;

    #[test]
    fn happy_path_moves_forward_only() {
        assert!(Queued.can_move_to(Planning));
        assert!(Planning.can_move_to(Running));
        assert!(Running.can_move_to(Succeeded));
        assert!(!Running.can_move_to(Planning));
        assert!(!Queued.can_move_to(Succeeded));
    }

    #[test]
    fn terminal_states_are_final() {
        for from in [Succeeded, Failed, Cancelled] {
            for to in JobStatus::ALL {
                assert!(!from.can_move_to(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for status in JobStatus::ALL {
            assert_eq!(JobStatus::parse(status.as_str()), Some(status));
        }
    }
}
