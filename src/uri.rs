//! `s3://bucket/key` URIs: parsing (by S3's own naming rules), joining and display, shared
//! by every module.

use std::fmt;

/// Longest object key S3 accepts, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;

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

    /// Parses `s3://bucket[/key]`; the error says what is wrong with the text. The bucket
    /// must follow S3's naming rules and the key fit S3's 1,024 bytes, so that nothing
    /// downstream (the SDK builds an HTTP URI from them) ever sees a name S3 would refuse.
    pub fn parse(text: &str) -> Result<Self, String> {
        let shown = abbreviated(text, 120);
        let rest = text
            .strip_prefix("s3://")
            .ok_or_else(|| format!("`{shown}` is not an s3:// URI (expected s3://bucket/key)"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if let Some(problem) = bucket_problem(bucket) {
            return Err(format!(
                "`{shown}`: bucket `{}` is not a valid S3 bucket name: {problem}",
                abbreviated(bucket, 70)
            ));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(format!(
                "`{shown}`: the key is {} bytes; S3 keys are at most {MAX_KEY_BYTES} bytes of UTF-8 (use a shorter key)",
                key.len()
            ));
        }
        // S3 stores them, but XML listings cannot carry them and HTTP tooling mangles
        // them: such a key would fail later, far from the spec that named it.
        if let Some(c) = key.chars().find(|c| c.is_ascii_control()) {
            return Err(format!(
                "`{shown}`: the key holds the control character {c:?}; rename the object without control characters"
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

/// What breaks S3's bucket naming rules in `name`, if anything: 3-63 characters of
/// lowercase letters, digits, '.' and '-', starting and ending with a letter or digit, no
/// "..", not shaped like an IP address, none of S3's reserved prefixes and suffixes.
fn bucket_problem(name: &str) -> Option<String> {
    const RESERVED_PREFIXES: [&str; 3] = ["xn--", "sthree-", "amzn-s3-demo-"];
    const RESERVED_SUFFIXES: [&str; 5] = ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"];
    if !(3..=63).contains(&name.len()) {
        return Some(format!("it is {} characters; use 3-63", name.len()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        return Some(format!(
            "{c:?} is not allowed; use lowercase letters, digits, '.' and '-'"
        ));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !alnum(name.chars().next()) || !alnum(name.chars().last()) {
        return Some("it must start and end with a letter or digit".into());
    }
    if name.contains("..") {
        return Some("it must not contain \"..\"".into());
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Some("it must not be shaped like an IP address".into());
    }
    if let Some(p) = RESERVED_PREFIXES.iter().find(|p| name.starts_with(*p)) {
        return Some(format!("the prefix `{p}` is reserved by S3"));
    }
    if let Some(s) = RESERVED_SUFFIXES.iter().find(|s| name.ends_with(*s)) {
        return Some(format!("the suffix `{s}` is reserved by S3"));
    }
    None
}

/// `text` cut to about `max` bytes (on a character boundary) with its full length noted, so
/// that an error about a huge value does not repeat the value.
pub fn abbreviated(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
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

    #[test]
    fn keys_are_bounded_by_s3s_limit() {
        let at = format!("s3://bkt/{}", "k".repeat(MAX_KEY_BYTES));
        assert_eq!(S3Uri::parse(&at).unwrap().key.len(), MAX_KEY_BYTES);
        let over = format!("s3://bkt/{}", "k".repeat(MAX_KEY_BYTES + 1));
        let err = S3Uri::parse(&over).unwrap_err();
        assert!(
            err.contains("1025 bytes") && err.contains("at most 1024"),
            "{err}"
        );
        // The message does not repeat a huge value.
        assert!(err.len() < 400, "{err}");
        // Bytes, not characters: 512 two-byte characters fit, one more does not.
        let wide = format!("s3://bkt/{}", "é".repeat(512));
        assert!(S3Uri::parse(&wide).is_ok());
        let wider = format!("s3://bkt/{}x", "é".repeat(512));
        assert!(S3Uri::parse(&wider).unwrap_err().contains("1025 bytes"));
        let huge = format!("s3://bkt/{}", "k".repeat(300_000));
        assert!(S3Uri::parse(&huge).unwrap_err().len() < 400);
    }

    #[test]
    fn buckets_follow_s3_naming_rules() {
        for good in ["abc", "a.b-c", &"a".repeat(63), "my-bucket.2024", "1bucket"] {
            assert!(S3Uri::parse(&format!("s3://{good}/k")).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("ab", "3-63"),
            (&"a".repeat(64) as &str, "3-63"),
            ("Abc", "not allowed"),
            ("a_b", "not allowed"),
            ("-abc", "start and end"),
            ("abc-", "start and end"),
            (".abc", "start and end"),
            ("a..b", "\"..\""),
            ("192.168.5.4", "IP address"),
            ("xn--abc", "prefix `xn--`"),
            ("sthree-abc", "prefix `sthree-`"),
            ("abc-s3alias", "suffix `-s3alias`"),
            ("abc--ol-s3", "suffix `--ol-s3`"),
            ("bucket\u{e9}", "not allowed"),
        ] {
            let err = S3Uri::parse(&format!("s3://{bad}/k")).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn control_characters_in_keys_are_refused() {
        for key in ["a\u{0}b", "tab\there", "new\nline", "del\u{7f}"] {
            let err = S3Uri::parse(&format!("s3://bkt/{key}")).unwrap_err();
            assert!(err.contains("control character"), "{err}");
        }
        assert!(S3Uri::parse("s3://bkt/caf\u{e9} \u{1F600}/x").is_ok());
    }

    #[test]
    fn abbreviation_respects_character_boundaries() {
        assert_eq!(abbreviated("short", 10), "short");
        let cut = abbreviated(&"é".repeat(100), 11);
        assert!(
            cut.starts_with(&"é".repeat(5)) && cut.ends_with("(200 bytes)"),
            "{cut}"
        );
    }
}
