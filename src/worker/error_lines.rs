//! Line numbers for row errors in byte ranges planned without reading: a shard reading from
//! the middle of an object cannot know how many lines came before it, so it reports the line
//! within its piece; once every piece has counted its lines, the finisher turns those into
//! the object's line numbers in the errors parts.

use std::collections::HashMap;

use serde_json::Value;

use super::{TaskError, WorkerContext};
use crate::job::{InputPiece, PieceLayout, TaskMessage};
use crate::state::ShardCommit;
use crate::uri::S3Uri;

/// A split piece's first line in its object: 1 + the lines of the object's earlier pieces.
#[derive(Debug, Clone, PartialEq)]
struct PieceStart {
    start: u64,
    end: u64,
    first_line: u64,
}

/// Rewrites the errors parts that hold rows without a line. Safe to repeat: a part already
/// rewritten has none left.
pub(super) async fn fill(
    ctx: &WorkerContext,
    job_id: &str,
    commits: &[ShardCommit],
) -> Result<(), TaskError> {
    if commits.iter().all(|c| c.errors_part.is_none()) {
        return Ok(());
    }
    let mut pieces: Vec<InputPiece> = Vec::new();
    for (_, task) in ctx.state.plan(job_id).await? {
        if let Ok(TaskMessage::Shard(shard)) = serde_json::from_str::<TaskMessage>(&task) {
            pieces.extend(shard.pieces);
        }
    }
    if pieces.iter().all(|p| p.layout != PieceLayout::Split) {
        return Ok(());
    }
    let starts = piece_starts(&pieces, commits);
    for part in commits.iter().filter_map(|c| c.errors_part.as_deref()) {
        let uri = S3Uri::parse(part).map_err(TaskError::permanent)?;
        let body = ctx.storage.get_bytes(&uri).await?;
        if let Some(rewritten) = with_lines(&body, &starts) {
            ctx.storage
                .put(&uri, rewritten, "application/x-ndjson")
                .await?;
        }
    }
    Ok(())
}

/// Every piece's first line, per object, from the shards' counts: in a line format each
/// record read or blank line skipped is one line.
fn piece_starts(
    pieces: &[InputPiece],
    commits: &[ShardCommit],
) -> HashMap<String, Vec<PieceStart>> {
    let lines: HashMap<(&str, u64), u64> = commits
        .iter()
        .flat_map(|c| &c.pieces)
        .map(|p| ((p.uri.as_str(), p.start), p.read + p.skipped))
        .collect();
    let mut by_object: HashMap<String, Vec<&InputPiece>> = HashMap::new();
    for piece in pieces {
        by_object.entry(piece.uri.clone()).or_default().push(piece);
    }
    by_object
        .into_iter()
        .map(|(uri, mut pieces)| {
            pieces.sort_by_key(|p| p.start);
            let mut next = 1;
            let starts = pieces
                .iter()
                .map(|p| {
                    let start = PieceStart {
                        start: p.start,
                        end: p.end,
                        first_line: next,
                    };
                    next += lines.get(&(p.uri.as_str(), p.start)).copied().unwrap_or(0);
                    start
                })
                .collect();
            (uri, starts)
        })
        .collect()
}

/// The errors part with every `piece_line` turned into a `line`; `None` when it has none.
fn with_lines(body: &[u8], starts: &HashMap<String, Vec<PieceStart>>) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(body).ok()?;
    let mut changed = false;
    let mut out = Vec::with_capacity(body.len());
    for line in text.lines() {
        let mut row: Value = match serde_json::from_str(line) {
            Ok(row) => row,
            Err(_) => {
                out.extend_from_slice(line.as_bytes());
                out.push(b'\n');
                continue;
            }
        };
        let found = (|| {
            let piece_line = row.get("piece_line")?.as_u64()?;
            let offset = row.get("offset")?.as_u64()?;
            let uri = row.get("uri")?.as_str()?;
            // The split rule: a record belongs to the piece with start < offset <= end.
            let piece = starts
                .get(uri)?
                .iter()
                .find(|p| (p.start < offset || offset == 0) && offset <= p.end)?;
            Some(piece.first_line + piece_line - 1)
        })();
        if let Some(number) = found {
            row["line"] = Value::from(number);
            row.as_object_mut()
                .expect("a row is an object")
                .remove("piece_line");
            changed = true;
        }
        serde_json::to_writer(&mut out, &row).expect("row serialises");
        out.push(b'\n');
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piece_lines_become_object_lines() {
        let starts = HashMap::from([(
            "s3://b/k".to_string(),
            vec![
                PieceStart {
                    start: 0,
                    end: 100,
                    first_line: 1,
                },
                PieceStart {
                    start: 100,
                    end: 200,
                    first_line: 8,
                },
            ],
        )]);
        let body = concat!(
            r#"{"uri":"s3://b/k","line":null,"offset":150,"piece_line":3,"error":"x","record":""}"#,
            "\n",
            r#"{"uri":"s3://b/k","line":4,"offset":40,"error":"y","record":""}"#,
            "\n",
            // A record starting exactly at a piece's end belongs to that piece.
            r#"{"uri":"s3://b/k","line":null,"offset":200,"piece_line":9,"error":"z","record":""}"#,
            "\n",
        );
        let out = String::from_utf8(with_lines(body.as_bytes(), &starts).unwrap()).unwrap();
        let rows: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows[0]["line"], 10);
        assert!(rows[0].get("piece_line").is_none());
        assert_eq!(rows[1]["line"], 4);
        assert_eq!(rows[2]["line"], 16);
        // Nothing left to fill: no rewrite.
        assert!(with_lines(out.as_bytes(), &starts).is_none());
    }
}
