//! Planning without reading, for JSONL with an id field: an object is cut into byte ranges
//! of `planner.shard_bytes` whose readers find their own first and last lines (the standard
//! split for line formats), so planning costs one listing however large the input.

use super::pack::Packer;
use crate::job::accounting::PlannedObject;
use crate::job::{InputPiece, PieceLayout};
use crate::storage::ObjectInfo;
use crate::storage::decode::{Compression, SNIFF_BYTES};
use crate::worker::{TaskError, WorkerContext};

/// Adds an object's pieces to the shards being filled, reading at most its first bytes:
/// an object that fits the open shard is one whole piece (its reader decodes it if it is
/// compressed); a larger one is checked for compression (suffix, then magic bytes and
/// `Content-Encoding`) and, when plain, cut into `split` ranges.
pub(super) async fn cut_object(
    ctx: &WorkerContext,
    object: &ObjectInfo,
    packer: &mut Packer,
) -> Result<PlannedObject, TaskError> {
    let planned = PlannedObject {
        uri: object.uri.to_string(),
        etag: object.etag.clone(),
        bytes: object.size,
        rows_unknown: true,
        ..Default::default()
    };
    let piece = |start: u64, end: u64, layout: PieceLayout| InputPiece {
        uri: object.uri.to_string(),
        start,
        end,
        first_line: u64::from(start == 0),
        rows: 0,
        blank: 0,
        etag: object.etag.clone(),
        header: None,
        layout,
        counted: false,
    };
    if object.size <= packer.room() {
        packer.add(piece(0, object.size, PieceLayout::Whole), object.size);
        return Ok(planned);
    }
    if let Some(c) = compression(ctx, object).await? {
        tracing::info!(uri = %object.uri, compression = c.as_str(), bytes = object.size,
            "compressed input: read as one piece (a compressed object cannot be split by byte range)");
        packer.close();
        packer.add(piece(0, object.size, PieceLayout::Whole), object.size);
        return Ok(planned);
    }
    let mut start = 0;
    while start < object.size {
        let end = (start + packer.room()).min(object.size);
        packer.add(piece(start, end, PieceLayout::Split), end - start);
        start = end;
    }
    Ok(planned)
}

/// Whether a large object is compressed: by its suffix, else by its first bytes.
async fn compression(
    ctx: &WorkerContext,
    object: &ObjectInfo,
) -> Result<Option<Compression>, TaskError> {
    if let Some(c) = Compression::from_suffix(&object.uri.key) {
        return Ok(Some(c));
    }
    let head = ctx
        .storage
        .get_range(&object.uri, 0, SNIFF_BYTES, Some(&object.etag))
        .await?;
    Ok(Compression::sniff(&head))
}
