//! Compressed objects (gzip, zstd): recognised by their magic bytes, their `Content-Encoding`
//! or their suffix, and decoded as a stream so a worker never holds a whole object.

use std::pin::Pin;

use async_compression::tokio::bufread::{GzipDecoder, ZstdDecoder};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

/// A whole-object compression sluice reads. A compressed object cannot be split by byte
/// range (a decoder must start at its beginning), so it is always one shard piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Gzip,
    Zstd,
}

/// The gzip member header (RFC 1952 §2.3.1).
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
/// The zstd frame magic number, little-endian 0xFD2FB528 (RFC 8878 §3.1.1).
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// How many leading bytes [`Compression::sniff`] needs.
pub const SNIFF_BYTES: u64 = 4;

impl Compression {
    /// From an object's first bytes.
    pub fn sniff(head: &[u8]) -> Option<Self> {
        if head.starts_with(GZIP_MAGIC) {
            Some(Compression::Gzip)
        } else if head.starts_with(ZSTD_MAGIC) {
            Some(Compression::Zstd)
        } else {
            None
        }
    }

    /// From a key's suffix (`.gz`, `.gzip`, `.zst`, `.zstd`), case-insensitively.
    pub fn from_suffix(key: &str) -> Option<Self> {
        let lower = key.to_ascii_lowercase();
        if lower.ends_with(".gz") || lower.ends_with(".gzip") {
            Some(Compression::Gzip)
        } else if lower.ends_with(".zst") || lower.ends_with(".zstd") {
            Some(Compression::Zstd)
        } else {
            None
        }
    }

    /// From a `Content-Encoding` header (`gzip`, `x-gzip`, `zstd`; others, such as
    /// `identity` or `aws-chunked`, are not a compression of the content).
    pub fn from_content_encoding(value: &str) -> Option<Self> {
        value.split(',').map(str::trim).find_map(|coding| {
            match coding.to_ascii_lowercase().as_str() {
                "gzip" | "x-gzip" => Some(Compression::Gzip),
                "zstd" => Some(Compression::Zstd),
                _ => None,
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// A boxed byte stream.
pub type ByteReader = Pin<Box<dyn AsyncBufRead + Send>>;

/// Decodes `reader` when its first bytes (or, failing those, `content_encoding`) say it is
/// compressed; returns the stream to read and the compression found. Concatenated gzip
/// members and zstd frames (as `cat a.gz b.gz` or `pigz` make) are read as one stream.
pub async fn decoded(
    reader: impl AsyncBufRead + Send + 'static,
    content_encoding: Option<&str>,
) -> std::io::Result<(ByteReader, Option<Compression>)> {
    let mut reader: ByteReader = Box::pin(reader);
    let found = {
        let head = reader.fill_buf().await?;
        Compression::sniff(head).or_else(|| {
            // An empty or tiny object cannot carry magic bytes; trust the header then.
            (head.len() < SNIFF_BYTES as usize)
                .then(|| content_encoding.and_then(Compression::from_content_encoding))
                .flatten()
        })
    };
    Ok(match found {
        None => (reader, None),
        Some(c) => (decoder(reader, c), Some(c)),
    })
}

/// The decoding stream for `compression` over `reader`.
pub fn decoder(reader: ByteReader, compression: Compression) -> ByteReader {
    match compression {
        Compression::Gzip => {
            let mut d = GzipDecoder::new(reader);
            d.multiple_members(true);
            Box::pin(BufReader::new(d))
        }
        Compression::Zstd => {
            let mut d = ZstdDecoder::new(reader);
            d.multiple_members(true);
            Box::pin(BufReader::new(d))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_compression::tokio::write::{GzipEncoder, ZstdEncoder};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzipEncoder::new(Vec::new());
        e.write_all(data).await.unwrap();
        e.shutdown().await.unwrap();
        e.into_inner()
    }

    async fn zstd(data: &[u8]) -> Vec<u8> {
        let mut e = ZstdEncoder::new(Vec::new());
        e.write_all(data).await.unwrap();
        e.shutdown().await.unwrap();
        e.into_inner()
    }

    async fn read_all(bytes: Vec<u8>, encoding: Option<&str>) -> (Vec<u8>, Option<Compression>) {
        let (mut reader, found) = decoded(std::io::Cursor::new(bytes), encoding)
            .await
            .unwrap();
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.unwrap();
        (out, found)
    }

    #[tokio::test]
    async fn compressed_streams_are_found_by_magic_bytes_and_decoded() {
        let text = b"{\"text\":\"a\"}\n{\"text\":\"b\"}\n".to_vec();
        assert_eq!(
            read_all(gzip(&text).await, None).await,
            (text.clone(), Some(Compression::Gzip))
        );
        assert_eq!(
            read_all(zstd(&text).await, None).await,
            (text.clone(), Some(Compression::Zstd))
        );
        // A wrong header does not beat the bytes: plain text stays plain.
        assert_eq!(
            read_all(text.clone(), Some("gzip")).await,
            (text.clone(), None)
        );
    }

    #[tokio::test]
    async fn concatenated_members_read_as_one_stream() {
        let mut two = gzip(b"a\n").await;
        two.extend(gzip(b"b\n").await);
        assert_eq!(read_all(two, None).await.0, b"a\nb\n");
        let mut frames = zstd(b"a\n").await;
        frames.extend(zstd(b"b\n").await);
        assert_eq!(read_all(frames, None).await.0, b"a\nb\n");
    }

    #[test]
    fn suffixes_and_content_encodings_name_the_compression() {
        assert_eq!(
            Compression::from_suffix("x/data.JSONL.GZ"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_suffix("data.csv.zst"),
            Some(Compression::Zstd)
        );
        assert_eq!(Compression::from_suffix("data.jsonl"), None);
        assert_eq!(
            Compression::from_content_encoding("aws-chunked, gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(Compression::from_content_encoding("identity"), None);
    }
}
