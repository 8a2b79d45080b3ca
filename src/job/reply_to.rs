//! Which queues an AMQP submitter's `reply_to` may name: the broker's direct reply-to, or
//! a name matching `api.reply_queue_patterns`, and never one of sluice's own queues.

/// The broker's direct reply-to pseudo-queue (RabbitMQ), always allowed: it reaches only
/// the connection that published the submission.
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";
/// AMQP short strings (queue names) are at most 255 bytes.
const MAX_QUEUE_NAME_BYTES: usize = 255;

/// Default `api.reply_queue_patterns`: server-named queues (`amq.gen-…`, what a client gets
/// when it declares a queue without a name) and queues named `reply.…`.
pub fn default_reply_queue_patterns() -> Vec<String> {
    vec!["amq.gen-*".into(), "reply.*".into()]
}

/// The rule, built from settings once.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyPolicy {
    /// The deployment's prefix: `{prefix}` and everything under `{prefix}.` are sluice's.
    own_prefix: String,
    /// Glob patterns (`*` matches any run of characters).
    patterns: Vec<String>,
}

impl ReplyPolicy {
    pub fn new(own_prefix: &str, patterns: &[String]) -> Self {
        Self {
            own_prefix: own_prefix.to_string(),
            patterns: patterns.to_vec(),
        }
    }

    /// `Ok` when a reply may be published to `queue`; otherwise the reason, for the
    /// rejected queue and the log.
    pub fn check(&self, queue: &str) -> Result<(), String> {
        let shown = crate::uri::abbreviated(queue, 80);
        if queue.is_empty() || queue.len() > MAX_QUEUE_NAME_BYTES {
            return Err(format!(
                "reply_to `{shown}` is not a queue name (1-{MAX_QUEUE_NAME_BYTES} bytes)"
            ));
        }
        let own = queue == self.own_prefix
            || queue
                .strip_prefix(&self.own_prefix)
                .is_some_and(|rest| rest.starts_with('.'));
        if own {
            return Err(format!(
                "reply_to `{shown}` is one of sluice's own queues (prefix `{}`); replies go only to the submitter's queues: use the direct reply-to `{DIRECT_REPLY_TO}` or a queue matching {}",
                self.own_prefix,
                self.describe()
            ));
        }
        if queue.starts_with(DIRECT_REPLY_TO) || self.patterns.iter().any(|p| glob(p, queue)) {
            return Ok(());
        }
        Err(format!(
            "reply_to `{shown}` is not a reply queue sluice answers on: use the direct reply-to `{DIRECT_REPLY_TO}` or a queue matching {} (api.reply_queue_patterns)",
            self.describe()
        ))
    }

    fn describe(&self) -> String {
        if self.patterns.is_empty() {
            return "no pattern (none configured)".into();
        }
        self.patterns
            .iter()
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters (none
/// included) and everything else for itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ReplyPolicy {
        ReplyPolicy::new("sluice-prod", &default_reply_queue_patterns())
    }

    #[test]
    fn submitters_queues_are_allowed() {
        for queue in [
            "amq.rabbitmq.reply-to",
            "amq.rabbitmq.reply-to.g1h2AA.abc",
            "amq.gen-JzTY20BRgKO-HjmUJj0wLg",
            "reply.etl",
            "reply.team-a.results",
        ] {
            assert_eq!(policy().check(queue), Ok(()), "{queue}");
        }
    }

    #[test]
    fn sluices_own_and_unknown_queues_are_refused() {
        for own in [
            "sluice-prod",
            "sluice-prod.inference.cpu",
            "sluice-prod.dead",
            "sluice-prod.rejected",
            "sluice-prod.submissions",
        ] {
            let err = policy().check(own).unwrap_err();
            assert!(err.contains("sluice's own queues"), "{own}: {err}");
        }
        // Another deployment on the same broker, or anything not a reply queue.
        for other in [
            "sluice-staging.inference.cpu",
            "orders",
            "amq.gen",
            "replyx",
        ] {
            let err = policy().check(other).unwrap_err();
            assert!(err.contains("api.reply_queue_patterns"), "{other}: {err}");
        }
        // A prefix that a pattern would also match stays refused.
        let broad = ReplyPolicy::new("reply", &["reply.*".into()]);
        assert!(broad.check("reply.inference.cpu").is_err());
        // A name sharing the prefix without the dot is not sluice's.
        assert!(
            ReplyPolicy::new("sluice", &["sluice*".into()])
                .check("sluicey")
                .is_ok()
        );
        let err = policy().check(&"r".repeat(256)).unwrap_err();
        assert!(err.contains("1-255"), "{err}");
        assert!(policy().check("").is_err());
    }

    #[test]
    fn globs_match_runs_of_characters() {
        assert!(glob("reply.*", "reply.x"));
        assert!(glob("reply.*", "reply."));
        assert!(!glob("reply.*", "reply"));
        assert!(glob("*-replies", "team-replies"));
        assert!(glob("a*b*c", "a-b-b-c"));
        assert!(!glob("a*b*c", "a-c"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
        assert!(glob("*", "anything"));
        assert!(!glob("ab*ba", "aba"));
    }
}
