//! `s3://bucket/key` URIs: parsing, joining and display, shared by every module.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct S3Uri {
    pub bucket: String,
    pub key: String,
}

impl S3Uri {
    pub fn new(bucket: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            key: key.into(),
        }
    }

    /// Parses `s3://bucket[/key]`; the error says what is wrong with the text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix("s3://")
            .ok_or_else(|| format!("`{text}` is not an s3:// URI (expected s3://bucket/key)"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !valid_bucket {
            return Err(format!(
                "`{text}`: bucket `{bucket}` is not a valid bucket name (3-63 characters: a-z, 0-9, '-', '.')"
            ));
        }
        Ok(Self::new(bucket, key))
    }

    /// This URI as a folder: the key ends with `/` (or is empty, the bucket root).
    pub fn as_prefix(&self) -> S3Uri {
        if self.key.is_empty() || self.key.ends_with('/') {
            self.clone()
        } else {
            S3Uri::new(&self.bucket, format!("{}/", self.key))
        }
    }

    /// `name` under this URI taken as a folder.
    pub fn join(&self, name: &str) -> S3Uri {
        let prefix = self.as_prefix();
        S3Uri::new(prefix.bucket, format!("{}{}", prefix.key, name))
    }

    /// Whether `other` is this URI or lies under it as a folder.
    pub fn contains(&self, other: &S3Uri) -> bool {
        self.bucket == other.bucket && other.key.starts_with(&self.as_prefix().key)
    }
}

impl fmt::Display for S3Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        let uri = S3Uri::parse("s3://my-bucket/a/b.jsonl").unwrap();
        assert_eq!(uri.bucket, "my-bucket");
        assert_eq!(uri.key, "a/b.jsonl");
        assert_eq!(uri.to_string(), "s3://my-bucket/a/b.jsonl");
        assert_eq!(S3Uri::parse("s3://bkt").unwrap().key, "");
    }

    #[test]
    fn rejects_non_s3_and_bad_buckets() {
        assert!(
            S3Uri::parse("http://x/y")
                .unwrap_err()
                .contains("not an s3://")
        );
        assert!(S3Uri::parse("s3://A_B/k").unwrap_err().contains("bucket"));
    }

    #[test]
    fn joins_as_folder() {
        let out = S3Uri::parse("s3://bkt/out").unwrap();
        assert_eq!(out.join("part-00001.jsonl").key, "out/part-00001.jsonl");
        assert!(out.contains(&S3Uri::parse("s3://bkt/out/x").unwrap()));
        assert!(!out.contains(&S3Uri::parse("s3://bkt/outer/x").unwrap()));
    }
}
