//! The values each labelled metric can take, one enum per label, each with its `ALL` list:
//! call sites name a variant, and `init` exports every combination at 0.

/// A label value known in advance.
pub trait Label: Copy + 'static {
    /// Every value, in export order.
    const ALL: &'static [Self];
    /// The value as exported.
    fn as_str(self) -> &'static str;
    /// The value exported as `text`, if it is one.
    fn named(text: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|value| value.as_str() == text)
    }
}

/// Values of one or more labels, in the metric's label order.
pub trait Labels: Copy + 'static {
    fn values(self) -> Vec<&'static str>;
    /// Every combination, for exporting each series at 0 from the start.
    fn all() -> Vec<Self>;
}

impl<A: Label> Labels for A {
    fn values(self) -> Vec<&'static str> {
        vec![self.as_str()]
    }
    fn all() -> Vec<Self> {
        A::ALL.to_vec()
    }
}

impl<A: Label, B: Label> Labels for (A, B) {
    fn values(self) -> Vec<&'static str> {
        vec![self.0.as_str(), self.1.as_str()]
    }
    fn all() -> Vec<Self> {
        A::ALL
            .iter()
            .flat_map(|a| B::ALL.iter().map(move |b| (*a, *b)))
            .collect()
    }
}

macro_rules! label {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// The value as exported.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            /// The value exported as `text`, if it is one.
            pub fn named(text: &str) -> Option<Self> {
                <Self as Label>::named(text)
            }
        }

        impl Label for $name {
            const ALL: &'static [Self] = &[$(Self::$variant),+];
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
        }
    };
}

label!(
    /// What kind of job.
    JobKind { Inference = "inference", Training = "training", Compress = "compress" }
);
label!(
    /// Which front door a job came through.
    Source { Http = "http", Amqp = "amqp", Ingest = "ingest", Bench = "bench" }
);
label!(
    /// How a job ended.
    FinalStatus { Succeeded = "succeeded", Failed = "failed", Cancelled = "cancelled" }
);
label!(
    /// What kind of task a delivery carried (`unknown` when it could not be read).
    TaskKind { Plan = "plan", Shard = "shard", Train = "train", Unknown = "unknown" }
);
label!(
    /// What became of a task delivery.
    TaskOutcome {
        Ok = "ok",
        Retried = "retried",
        DeadLettered = "dead_lettered",
        Skipped = "skipped",
        Failed = "failed",
    }
);
label!(
    /// What became of an input row.
    RowOutcome { Ok = "ok", Failed = "failed" }
);
label!(
    /// A stage of a shard's pipeline.
    Stage { Read = "read", Tokenize = "tokenize", Run = "run", Pool = "pool", Write = "write", Commit = "commit" }
);
label!(
    /// Tokens the model saw: real ones, or padding up to the longest row of the batch.
    TokenKind { Real = "real", Padded = "padded" }
);
label!(
    /// Where a model package came from on a worker.
    ModelSource { Memory = "memory", Disk = "disk", Download = "download" }
);
label!(
    /// Whether cached training features were found.
    CacheResult { Hit = "hit", Miss = "miss" }
);
label!(
    /// What a lease did.
    LeaseEvent {
        Acquired = "acquired",
        Busy = "busy",
        Renewed = "renewed",
        Lost = "lost",
        Released = "released",
        Expired = "expired",
    }
);
label!(
    /// Whether a training checkpoint was committed or refused (the lease was lost).
    CheckpointOutcome { Committed = "committed", Refused = "refused" }
);
label!(
    /// What became of an AMQP submission.
    SubmissionOutcome {
        Accepted = "accepted",
        Duplicate = "duplicate",
        Rejected = "rejected",
        Requeued = "requeued",
    }
);
label!(
    /// Why an AMQP submission was kept on the rejected queue (also its
    /// `x-sluice-reason-class` header).
    RejectionClass {
        NotJson = "not_json",
        InvalidSpec = "invalid_spec",
        UnknownModel = "unknown_model",
        TooLarge = "too_large",
        MissingMessageId = "missing_message_id",
        OutputInUse = "output_in_use",
        ForbiddenLocation = "forbidden_location",
        ForbiddenReplyTo = "forbidden_reply_to",
        Panicked = "panicked",
    }
);
label!(
    /// What became of a file in the drop folder.
    IngestOutcome { Submitted = "submitted", Archived = "archived", Failed = "failed" }
);
label!(
    /// The front door a caught panic happened in.
    Door { Http = "http", Amqp = "amqp" }
);
label!(
    /// A service sluice depends on.
    Dependency { S3 = "s3", Redis = "redis", Amqp = "amqp" }
);
label!(
    /// How a call to a dependency failed: no answer in time, or a refusal.
    FailureKind { Timeout = "timeout", Error = "error" }
);
label!(
    /// What found broker topology missing.
    Trigger { Publish = "publish", Consume = "consume", Check = "check" }
);
label!(
    /// Which way bytes moved.
    Direction { Sent = "sent", Received = "received" }
);
label!(
    /// An S3 operation sluice makes; any other is `other`, which keeps the series few.
    S3Op {
        GetObject = "GetObject",
        PutObject = "PutObject",
        HeadObject = "HeadObject",
        ListObjectsV2 = "ListObjectsV2",
        DeleteObject = "DeleteObject",
        CopyObject = "CopyObject",
        UploadPart = "UploadPart",
        CreateMultipartUpload = "CreateMultipartUpload",
        CompleteMultipartUpload = "CompleteMultipartUpload",
        AbortMultipartUpload = "AbortMultipartUpload",
        ListBuckets = "ListBuckets",
        Other = "other",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_combination_is_listed_once() {
        let all = <(TaskKind, TaskOutcome)>::all();
        assert_eq!(all.len(), TaskKind::ALL.len() * TaskOutcome::ALL.len());
        let unique: std::collections::HashSet<_> = all.iter().map(|l| l.values()).collect();
        assert_eq!(unique.len(), all.len());
        assert_eq!(
            (TaskKind::Train, TaskOutcome::DeadLettered).values(),
            ["train", "dead_lettered"]
        );
    }
}
