//! Every Redis key name the state store uses, in one place, all under the store's prefix.
//!
//! Kept together so two concerns can never pick the same name by accident, and so the whole
//! layout can be read (and tested) at a glance. Per-job keys hang off `<prefix>:job:<id>`.

/// Builds the key names of one prefix (namespace).
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    // --- jobs ---

    /// The job's record (hash: spec, status, counters, timings, error).
    pub(super) fn job(&self, id: &str) -> String {
        format!("{}{id}", self.job_prefix())
    }
    /// What `job(id)` puts before the id: the create script looks other jobs up by it.
    pub(super) fn job_prefix(&self) -> String {
        format!("{}:job:", self.prefix)
    }
    /// Index of every job (sorted set, scored by creation time).
    pub(super) fn jobs(&self) -> String {
        format!("{}:jobs", self.prefix)
    }
    /// Ids of jobs that have not ended (set).
    pub(super) fn active(&self) -> String {
        format!("{}:active", self.prefix)
    }
    /// Which job, not yet ended, writes to an output folder.
    pub(super) fn output_claim(&self, output: &str) -> String {
        format!("{}:output:{output}", self.prefix)
    }
    /// The job's shard tasks (hash: index → task JSON).
    pub(super) fn plan(&self, id: &str) -> String {
        format!("{}:plan", self.job(id))
    }
    /// What planning found in each input object (JSON).
    pub(super) fn inputs(&self, id: &str) -> String {
        format!("{}:inputs", self.job(id))
    }

    // --- shards ---

    /// Committed shards (hash: shard → commit JSON).
    pub(super) fn shards(&self, id: &str) -> String {
        format!("{}:shards", self.job(id))
    }
    /// Rows running shards have processed so far (hash: shard → rows).
    pub(super) fn live(&self, id: &str) -> String {
        format!("{}:live", self.job(id))
    }
    /// Per-task run counts (hash: task key → starts, `<task key>:failed` → failures).
    pub(super) fn attempts(&self, id: &str) -> String {
        format!("{}:attempts", self.job(id))
    }

    // --- leases ---

    /// The job's lease (`owner token`, with a TTL).
    pub(super) fn job_lease(&self, id: &str) -> String {
        format!("{}:lease", self.job(id))
    }
    /// The job's fencing counter: the latest lease token handed out.
    pub(super) fn job_fence(&self, id: &str) -> String {
        format!("{}:fence", self.job(id))
    }
    /// The job's latest committed checkpoint pointer.
    pub(super) fn checkpoint(&self, id: &str) -> String {
        format!("{}:checkpoint", self.job(id))
    }
    /// One shard's lease (`owner token`, with a TTL).
    pub(super) fn shard_lease(&self, id: &str, shard: u32) -> String {
        format!("{}:shard:{shard}:lease", self.job(id))
    }
    /// The job's per-shard fencing counters (hash: shard → latest token).
    pub(super) fn shard_fences(&self, id: &str) -> String {
        format!("{}:shard_fences", self.job(id))
    }
    /// The job's shard owner records (hash: shard → owner's token).
    pub(super) fn shard_owners(&self, id: &str) -> String {
        format!("{}:shard_owners", self.job(id))
    }
    /// Whose turn it is to sweep (with a TTL).
    pub(super) fn sweeper(&self) -> String {
        format!("{}:sweeper", self.prefix)
    }

    // --- event outbox ---

    /// The outbox: job events waiting to be published (stream).
    pub(super) fn events(&self) -> String {
        format!("{}:events", self.prefix)
    }
    /// The last event the relay published (stream entry id).
    pub(super) fn events_cursor(&self) -> String {
        format!("{}:events:cursor", self.prefix)
    }
    /// The event relay's lease (with a TTL).
    pub(super) fn events_relay(&self) -> String {
        format!("{}:events:relay", self.prefix)
    }

    // --- idempotency ---

    /// The job an idempotency key names (expires with the idempotency window).
    pub(super) fn idempotency(&self, key: &str) -> String {
        format!("{}:idem:{key}", self.prefix)
    }
    /// That a rejected submission is already kept (expires with the idempotency window).
    pub(super) fn rejected(&self, key: &str) -> String {
        format!("{}:rejected:{key}", self.prefix)
    }

    // --- the whole namespace ---

    /// SCAN pattern matching every key of this prefix.
    pub(super) fn everything(&self) -> String {
        format!("{}:*", self.prefix)
    }

    /// The prefix itself (the namespace's name).
    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::Keys;

    /// Every key this module builds, for one job id, shard, output, idempotency key.
    fn all(keys: &Keys, id: &str) -> Vec<(&'static str, String)> {
        vec![
            ("job", keys.job(id)),
            ("jobs", keys.jobs()),
            ("active", keys.active()),
            ("output_claim", keys.output_claim("s3://b/out/")),
            ("plan", keys.plan(id)),
            ("inputs", keys.inputs(id)),
            ("shards", keys.shards(id)),
            ("live", keys.live(id)),
            ("attempts", keys.attempts(id)),
            ("job_lease", keys.job_lease(id)),
            ("job_fence", keys.job_fence(id)),
            ("checkpoint", keys.checkpoint(id)),
            ("shard_lease", keys.shard_lease(id, 0)),
            ("shard_fences", keys.shard_fences(id)),
            ("shard_owners", keys.shard_owners(id)),
            ("sweeper", keys.sweeper()),
            ("events", keys.events()),
            ("events_cursor", keys.events_cursor()),
            ("events_relay", keys.events_relay()),
            ("idempotency", keys.idempotency("k1")),
            ("rejected", keys.rejected("k1")),
        ]
    }

    #[test]
    fn key_names_are_unique_across_concerns() {
        let keys = Keys::new("p");
        let all = all(&keys, "j1");
        let distinct: HashSet<&String> = all.iter().map(|(_, key)| key).collect();
        assert_eq!(
            distinct.len(),
            all.len(),
            "two concerns share a key: {all:?}"
        );
        assert_eq!(all.len(), 21);
    }

    #[test]
    fn every_key_lives_under_the_prefix() {
        let keys = Keys::new("tenant-a");
        for (name, key) in all(&keys, "j1") {
            assert!(
                key.starts_with("tenant-a:"),
                "{name} key `{key}` escapes the prefix"
            );
        }
        assert_eq!(keys.everything(), "tenant-a:*");
        assert_eq!(keys.prefix(), "tenant-a");
    }

    #[test]
    fn key_layout_is_unchanged() {
        // Stored data outlives releases: these names are a contract with running systems.
        let keys = Keys::new("p");
        assert_eq!(keys.job("j"), "p:job:j");
        assert_eq!(keys.job_prefix(), "p:job:");
        assert_eq!(keys.jobs(), "p:jobs");
        assert_eq!(keys.active(), "p:active");
        assert_eq!(keys.output_claim("o"), "p:output:o");
        assert_eq!(keys.plan("j"), "p:job:j:plan");
        assert_eq!(keys.inputs("j"), "p:job:j:inputs");
        assert_eq!(keys.shards("j"), "p:job:j:shards");
        assert_eq!(keys.live("j"), "p:job:j:live");
        assert_eq!(keys.attempts("j"), "p:job:j:attempts");
        assert_eq!(keys.job_lease("j"), "p:job:j:lease");
        assert_eq!(keys.job_fence("j"), "p:job:j:fence");
        assert_eq!(keys.checkpoint("j"), "p:job:j:checkpoint");
        assert_eq!(keys.shard_lease("j", 3), "p:job:j:shard:3:lease");
        assert_eq!(keys.shard_fences("j"), "p:job:j:shard_fences");
        assert_eq!(keys.shard_owners("j"), "p:job:j:shard_owners");
        assert_eq!(keys.sweeper(), "p:sweeper");
        assert_eq!(keys.events(), "p:events");
        assert_eq!(keys.events_cursor(), "p:events:cursor");
        assert_eq!(keys.events_relay(), "p:events:relay");
        assert_eq!(keys.idempotency("k"), "p:idem:k");
        assert_eq!(keys.rejected("k"), "p:rejected:k");
    }
}
