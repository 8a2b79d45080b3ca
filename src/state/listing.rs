//! Job listings: newest first, optionally by status, paging through the jobs index; a record
//! that cannot be read is named instead of hiding the rest.

use redis::AsyncCommands;

use super::{JobRecord, StateError, StateStore};
use crate::job::JobStatus;

/// A page of jobs, and the records met on the way that could not be read.
#[derive(Debug, Default)]
pub struct JobListing {
    pub jobs: Vec<JobRecord>,
    pub unreadable: Vec<UnreadableJob>,
}

/// A job record that could not be read, and why.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct UnreadableJob {
    pub id: String,
    pub reason: String,
}

impl StateStore {
    /// Newest first, optionally only jobs in `status`; records that cannot be read are left
    /// out (see `list_checked`).
    pub async fn list(
        &self,
        status: Option<JobStatus>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StateError> {
        Ok(self.list_checked(status, limit).await?.jobs)
    }

    /// Newest first, optionally only jobs in `status`, up to `limit` jobs; a record that
    /// cannot be read does not stop the listing: it is named in `unreadable` (those met
    /// before the listing ended, at most `limit`), so one bad record never hides the rest.
    pub async fn list_checked(
        &self,
        status: Option<JobStatus>,
        limit: usize,
    ) -> Result<JobListing, StateError> {
        let mut conn = self.conn.clone();
        let mut out = JobListing::default();
        let page = 200isize;
        let mut start = 0isize;
        while out.jobs.len() < limit {
            let ids: Vec<String> = conn
                .zrevrange(self.keys.jobs(), start, start + page - 1)
                .await?;
            if ids.is_empty() {
                break;
            }
            start += page;
            for id in ids {
                match self.get(&id).await {
                    Ok(job) if status.is_none_or(|s| s == job.status) => out.jobs.push(job),
                    Ok(_) | Err(StateError::NotFound(_)) => {}
                    Err(StateError::Corrupt { id, reason }) => {
                        // Filtered by status: a record whose status reads and differs is
                        // not one the caller asked for.
                        let other = match (status, self.status(&id).await) {
                            (Some(wanted), Ok(found)) => found != wanted,
                            _ => false,
                        };
                        if !other && out.unreadable.len() < limit {
                            tracing::warn!(job_id = %id, %reason, "job record unreadable; left out of the listing");
                            out.unreadable.push(UnreadableJob { id, reason });
                        }
                    }
                    Err(e) => return Err(e),
                }
                if out.jobs.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::job::JobStatus;
    use crate::state::test_store::{TestStore, new_job, spec_json};

    #[tokio::test]
    async fn listings_are_newest_first_filtered_and_name_unreadable_records() {
        let state = TestStore::new().await;
        let spec = spec_json();
        for (id, output) in [
            ("old", "s3://b/1/"),
            ("mid", "s3://b/2/"),
            ("new", "s3://b/3/"),
        ] {
            state
                .create_job(new_job(id, output, &spec, None))
                .await
                .unwrap();
            // Distinct creation times: the index is ordered by them.
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
        state
            .move_to("mid", JobStatus::Planning, &[])
            .await
            .unwrap();
        let ids = |jobs: Vec<crate::state::JobRecord>| -> Vec<String> {
            jobs.into_iter().map(|j| j.id).collect()
        };
        assert_eq!(
            ids(state.list(None, 10).await.unwrap()),
            ["new", "mid", "old"]
        );
        assert_eq!(ids(state.list(None, 2).await.unwrap()), ["new", "mid"]);
        let queued = state.list(Some(JobStatus::Queued), 10).await.unwrap();
        assert_eq!(ids(queued), ["new", "old"]);

        state
            .set_fields("old", &[("spec", "{not json".into())])
            .await
            .unwrap();
        let listing = state.list_checked(None, 10).await.unwrap();
        assert_eq!(ids(listing.jobs), ["new", "mid"]);
        assert_eq!(listing.unreadable.len(), 1);
        assert_eq!(listing.unreadable[0].id, "old");
        assert!(
            listing.unreadable[0].reason.starts_with("spec:"),
            "{:?}",
            listing.unreadable
        );
        // Filtered by a status the bad record does not have, it is not the caller's concern.
        let planning = state
            .list_checked(Some(JobStatus::Planning), 10)
            .await
            .unwrap();
        assert_eq!(
            (ids(planning.jobs), planning.unreadable.len()),
            (vec!["mid".into()], 0)
        );
    }
}
