//! Row accounting: what planning found in each input object and what each shard did with
//! every record of its pieces, so the finisher can prove that read = written + failed +
//! skipped for every object before it writes `_SUCCESS`.

use serde::{Deserialize, Serialize};

/// One input object as the planner read it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedObject {
    /// `s3://bucket/key`.
    pub uri: String,
    pub etag: String,
    /// Object size in bytes.
    pub bytes: u64,
    /// Non-blank records (data rows, good or bad; the CSV header excluded).
    pub records: u64,
    /// Blank lines, skipped.
    pub blank: u64,
    /// A CSV header line was read (and is not a row).
    pub header: bool,
    /// Records spanning more than one line (CSV quoted fields holding newlines), and the
    /// lines they join: counted so a quote that swallows rows is visible.
    pub multiline_records: u64,
    pub joined_lines: u64,
    /// Planning cut the object without reading it, so `records` and `blank` are 0 and the
    /// shards' counts are the object's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rows_unknown: bool,
}

/// What one shard did with the records of one of its pieces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceCounts {
    /// The object (`s3://bucket/key`) and the piece's first byte.
    pub uri: String,
    pub start: u64,
    /// Non-blank records read.
    pub read: u64,
    pub written: u64,
    pub failed: u64,
    /// Blank lines skipped.
    pub skipped: u64,
    /// Written rows whose text was cut to the model's max length.
    pub truncated: u64,
}

/// One object's line in `_manifest.json`: read = written + failed + skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRows {
    pub uri: String,
    /// Records and blank lines (the CSV header line excluded).
    pub read: u64,
    pub written: u64,
    pub failed: u64,
    /// Blank lines.
    pub skipped: u64,
    pub truncated: u64,
    pub multiline_records: u64,
    /// Only a header line or blank lines: an empty input, not an error.
    pub empty: bool,
}

/// A planned piece: object uri, first byte, records, blank lines.
pub type PlannedPiece = (String, u64, u64, u64);

/// Reconciles the plan with the shards' counts. `planned` pairs every shard's pieces with
/// the planner's row and blank counts; `committed` gives, per shard, what it reported.
/// Returns one line per object, or the first mismatch, naming the object and the numbers.
pub fn reconcile(
    objects: &[PlannedObject],
    planned: &[(u32, Vec<PlannedPiece>)],
    committed: &[(u32, Vec<PieceCounts>)],
) -> Result<Vec<ObjectRows>, String> {
    let mut rows: Vec<ObjectRows> = objects
        .iter()
        .map(|o| ObjectRows {
            uri: o.uri.clone(),
            read: o.records + o.blank,
            skipped: o.blank,
            multiline_records: o.multiline_records,
            empty: o.records == 0,
            ..Default::default()
        })
        .collect();
    let mut planned_records = vec![0u64; objects.len()];
    let find = |uri: &str| objects.iter().position(|o| o.uri == uri);
    for (shard, pieces) in planned {
        let Some((_, counts)) = committed.iter().find(|(s, _)| s == shard) else {
            return Err(format!("shard {shard} has no commit"));
        };
        for (uri, start, records, blank) in pieces {
            let object = find(uri)
                .ok_or_else(|| format!("shard {shard} reads {uri}, which planning did not list"))?;
            let Some(c) = counts.iter().find(|c| &c.uri == uri && c.start == *start) else {
                return Err(format!(
                    "shard {shard} reported no counts for {uri} from byte {start}"
                ));
            };
            let unknown = objects[object].rows_unknown;
            let as_planned = unknown || (c.read == *records && c.skipped == *blank);
            if !as_planned || c.written + c.failed != c.read {
                return Err(format!(
                    "input {uri} from byte {start} (shard {shard}): planned {records} records and {blank} blank lines; the shard read {} (written {}, failed {}) and skipped {}",
                    c.read, c.written, c.failed, c.skipped
                ));
            }
            planned_records[object] += if unknown { c.read } else { *records };
            let r = &mut rows[object];
            if unknown {
                r.read += c.read + c.skipped;
                r.skipped += c.skipped;
            }
            r.written += c.written;
            r.failed += c.failed;
            r.truncated += c.truncated;
        }
    }
    for ((object, r), planned) in objects.iter().zip(&mut rows).zip(&planned_records) {
        if object.rows_unknown {
            r.empty = *planned == 0;
        }
        let records = if object.rows_unknown {
            *planned
        } else {
            object.records
        };
        if *planned != records || r.written + r.failed + r.skipped != r.read {
            return Err(format!(
                "input {}: read {} records and {} blank lines, but shards account for {} written + {} failed",
                object.uri, object.records, object.blank, r.written, r.failed
            ));
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(uri: &str, records: u64, blank: u64) -> PlannedObject {
        PlannedObject {
            uri: uri.into(),
            records,
            blank,
            ..Default::default()
        }
    }

    fn counts(uri: &str, start: u64, written: u64, failed: u64, skipped: u64) -> PieceCounts {
        PieceCounts {
            uri: uri.into(),
            start,
            read: written + failed,
            written,
            failed,
            skipped,
            truncated: 0,
        }
    }

    #[test]
    fn counts_that_add_up_make_one_line_per_object() {
        let objects = [object("s3://b/a", 5, 1), object("s3://b/empty", 0, 3)];
        let planned = vec![
            (0, vec![("s3://b/a".to_string(), 0, 3, 1)]),
            (1, vec![("s3://b/a".to_string(), 40, 2, 0)]),
        ];
        let committed = vec![
            (0, vec![counts("s3://b/a", 0, 2, 1, 1)]),
            (1, vec![counts("s3://b/a", 40, 2, 0, 0)]),
        ];
        let rows = reconcile(&objects, &planned, &committed).unwrap();
        assert_eq!(
            (
                rows[0].read,
                rows[0].written,
                rows[0].failed,
                rows[0].skipped
            ),
            (6, 4, 1, 1)
        );
        assert!(rows[1].empty && rows[1].read == 3 && rows[1].skipped == 3);
    }

    #[test]
    fn objects_cut_without_reading_take_their_counts_from_the_shards() {
        let mut split = object("s3://b/big", 0, 0);
        split.rows_unknown = true;
        let planned = vec![
            (0, vec![("s3://b/big".to_string(), 0, 0, 0)]),
            (1, vec![("s3://b/big".to_string(), 100, 0, 0)]),
        ];
        let committed = vec![
            (0, vec![counts("s3://b/big", 0, 3, 1, 2)]),
            (1, vec![counts("s3://b/big", 100, 5, 0, 0)]),
        ];
        let rows = reconcile(std::slice::from_ref(&split), &planned, &committed).unwrap();
        let r = &rows[0];
        assert_eq!((r.read, r.written, r.failed, r.skipped), (11, 8, 1, 2));
        assert!(!r.empty);
        // A piece whose counts do not add up still fails, and a missing piece too.
        let mut bad = counts("s3://b/big", 100, 5, 0, 0);
        bad.read = 6;
        let err = reconcile(
            std::slice::from_ref(&split),
            &planned,
            &[committed[0].clone(), (1, vec![bad])],
        )
        .unwrap_err();
        assert!(err.contains("from byte 100"), "{err}");
        assert!(
            reconcile(std::slice::from_ref(&split), &planned, &committed[..1])
                .unwrap_err()
                .contains("no commit")
        );
    }

    #[test]
    fn a_lost_row_fails_the_reconciliation_naming_the_object() {
        let objects = [object("s3://b/a", 5, 0)];
        let planned = vec![(0, vec![("s3://b/a".to_string(), 0, 5, 0)])];
        let mut short = counts("s3://b/a", 0, 4, 0, 0);
        short.read = 5;
        let err = reconcile(&objects, &planned, &[(0, vec![short])]).unwrap_err();
        assert!(
            err.contains("s3://b/a") && err.contains("planned 5 records"),
            "{err}"
        );
        // A shard never committed, or a plan that does not cover the object's records.
        assert!(
            reconcile(&objects, &planned, &[])
                .unwrap_err()
                .contains("no commit")
        );
        let partial = vec![(0, vec![("s3://b/a".to_string(), 0, 4, 0)])];
        let err = reconcile(
            &objects,
            &partial,
            &[(0, vec![counts("s3://b/a", 0, 4, 0, 0)])],
        )
        .unwrap_err();
        assert!(err.contains("read 5 records"), "{err}");
    }
}
