//! JSONL output rows (`{"id", <include_fields>…, "embedding"}` or `"label"` and
//! `"probabilities"`), optionally gzip- or zstd-compressed as they stream out.

use std::collections::BTreeMap;

use async_compression::Level;
use async_compression::tokio::write::{GzipEncoder, ZstdEncoder};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use tokio::io::AsyncWriteExt;

use super::{FinishedRow, best_label};
use crate::job::OutputCompression;

/// Encodes chunks of rows to JSONL bytes. Compression runs here too, so the whole encoder
/// belongs on a blocking thread: its async writers only ever write into a `Vec`, so
/// `block_on` never waits.
pub(super) struct JsonlEncoder {
    /// `output.include_fields`, the keys of the carried values.
    fields: Vec<String>,
    /// A classifier's labels; empty for embeddings.
    labels: Vec<String>,
    compressor: Option<Compressor>,
}

enum Compressor {
    Gzip(GzipEncoder<Vec<u8>>),
    Zstd(ZstdEncoder<Vec<u8>>),
}

impl JsonlEncoder {
    pub(super) fn new(
        fields: Vec<String>,
        labels: Vec<String>,
        compression: Option<OutputCompression>,
    ) -> Self {
        // Library defaults (gzip 6, zstd 3): what `gzip`/`zstd` on the command line do.
        let compressor = compression.map(|c| match c {
            OutputCompression::Gzip => {
                Compressor::Gzip(GzipEncoder::with_quality(Vec::new(), Level::Default))
            }
            OutputCompression::Zstd => {
                Compressor::Zstd(ZstdEncoder::with_quality(Vec::new(), Level::Default))
            }
        });
        Self {
            fields,
            labels,
            compressor,
        }
    }

    /// The bytes to append to the part for these rows (with compression, whatever the
    /// compressor has let out so far).
    pub(super) fn encode(&mut self, rows: &[FinishedRow]) -> std::io::Result<Vec<u8>> {
        let mut lines = Vec::with_capacity(rows.len() * 64);
        for row in rows {
            let line = JsonRow {
                row,
                fields: &self.fields,
                labels: &self.labels,
            };
            serde_json::to_writer(&mut lines, &line).map_err(std::io::Error::other)?;
            lines.push(b'\n');
        }
        match &mut self.compressor {
            None => Ok(lines),
            Some(Compressor::Gzip(encoder)) => compress(encoder, &lines),
            Some(Compressor::Zstd(encoder)) => compress(encoder, &lines),
        }
    }

    /// The part's last bytes: the compressed stream's end (nothing when uncompressed).
    pub(super) fn finish(self) -> std::io::Result<Vec<u8>> {
        match self.compressor {
            None => Ok(Vec::new()),
            Some(Compressor::Gzip(mut encoder)) => {
                futures::executor::block_on(encoder.shutdown())?;
                Ok(encoder.into_inner())
            }
            Some(Compressor::Zstd(mut encoder)) => {
                futures::executor::block_on(encoder.shutdown())?;
                Ok(encoder.into_inner())
            }
        }
    }
}

/// Feeds `data` to a compressor and takes what it has written so far.
fn compress<E>(encoder: &mut E, data: &[u8]) -> std::io::Result<Vec<u8>>
where
    E: tokio::io::AsyncWrite + Unpin + Drain,
{
    futures::executor::block_on(encoder.write_all(data))?;
    Ok(encoder.drain())
}

/// Takes the compressed bytes written so far out of an encoder's `Vec`.
trait Drain {
    fn drain(&mut self) -> Vec<u8>;
}

impl Drain for GzipEncoder<Vec<u8>> {
    fn drain(&mut self) -> Vec<u8> {
        std::mem::take(self.get_mut())
    }
}

impl Drain for ZstdEncoder<Vec<u8>> {
    fn drain(&mut self) -> Vec<u8> {
        std::mem::take(self.get_mut())
    }
}

/// One output line: the id and carried values exactly as read, then the model's output.
struct JsonRow<'a> {
    row: &'a FinishedRow,
    fields: &'a [String],
    labels: &'a [String],
}

impl Serialize for JsonRow<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let row = self.row;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("id", &row.id)?;
        for (name, value) in self.fields.iter().zip(&row.carried) {
            map.serialize_entry(name, value as &RawValue)?;
        }
        if self.labels.is_empty() {
            map.serialize_entry("embedding", &row.values)?;
        } else {
            map.serialize_entry("label", best_label(self.labels, &row.values))?;
            let probabilities: BTreeMap<&str, f32> = self
                .labels
                .iter()
                .map(String::as_str)
                .zip(row.values.iter().copied())
                .collect();
            map.serialize_entry("probabilities", &probabilities)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use async_compression::tokio::bufread::{GzipDecoder, ZstdDecoder};
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::worker::output::tests::row;

    fn rows() -> Vec<FinishedRow> {
        (0..500)
            .map(|i| {
                row(
                    &i.to_string(),
                    &[r#""t""#, "[1,2]"],
                    vec![0.25, -1.5 + i as f32],
                )
            })
            .collect()
    }

    fn encode_all(mut encoder: JsonlEncoder, rows: &[FinishedRow]) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in rows.chunks(64) {
            out.extend(encoder.encode(chunk).unwrap());
        }
        out.extend(encoder.finish().unwrap());
        out
    }

    fn decompress(mut decoder: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
        let mut out = Vec::new();
        futures::executor::block_on(decoder.read_to_end(&mut out)).unwrap();
        out
    }

    fn fields() -> Vec<String> {
        vec!["title".into(), "tags".into()]
    }

    #[test]
    fn rows_keep_id_then_carried_fields_then_the_output() {
        let plain = encode_all(JsonlEncoder::new(fields(), vec![], None), &rows()[..1]);
        assert_eq!(
            String::from_utf8(plain).unwrap(),
            "{\"id\":0,\"title\":\"t\",\"tags\":[1,2],\"embedding\":[0.25,-1.5]}\n"
        );
        let labels = vec!["neg".to_string(), "pos".to_string()];
        let classified = encode_all(JsonlEncoder::new(vec![], labels, None), &rows()[3..4]);
        assert_eq!(
            String::from_utf8(classified).unwrap(),
            "{\"id\":3,\"label\":\"pos\",\"probabilities\":{\"neg\":0.25,\"pos\":1.5}}\n"
        );
    }

    #[test]
    fn compressed_parts_decompress_to_the_plain_rows() {
        let rows = rows();
        let plain = encode_all(JsonlEncoder::new(fields(), vec![], None), &rows);
        let gzip = encode_all(
            JsonlEncoder::new(fields(), vec![], Some(OutputCompression::Gzip)),
            &rows,
        );
        let zstd = encode_all(
            JsonlEncoder::new(fields(), vec![], Some(OutputCompression::Zstd)),
            &rows,
        );
        assert_eq!(&gzip[..2], [0x1f, 0x8b]);
        assert_eq!(&zstd[..4], [0x28, 0xb5, 0x2f, 0xfd]);
        assert!(gzip.len() < plain.len() / 2 && zstd.len() < plain.len() / 2);
        assert_eq!(decompress(GzipDecoder::new(&gzip[..])), plain);
        assert_eq!(decompress(ZstdDecoder::new(&zstd[..])), plain);
    }
}
