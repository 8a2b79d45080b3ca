//! Grouping pieces into shards of about `planner.shard_bytes` each, in input order, so
//! many small objects share a shard and a large one spans several.

use crate::job::InputPiece;

/// Shards being filled.
pub(super) struct Packer {
    shard_bytes: u64,
    shards: Vec<Vec<InputPiece>>,
    current: Vec<InputPiece>,
    current_bytes: u64,
}

impl Packer {
    pub(super) fn new(shard_bytes: u64) -> Self {
        Self {
            shard_bytes: shard_bytes.max(1),
            shards: Vec::new(),
            current: Vec::new(),
            current_bytes: 0,
        }
    }

    /// Bytes the open shard takes before it is full.
    pub(super) fn room(&self) -> u64 {
        self.shard_bytes.saturating_sub(self.current_bytes)
    }

    /// Whether a piece of `bytes` fills the open shard.
    pub(super) fn fills(&self, bytes: u64) -> bool {
        self.current_bytes + bytes >= self.shard_bytes
    }

    /// Adds a piece of `bytes` (its share of the shard budget); closes the shard once full.
    pub(super) fn add(&mut self, piece: InputPiece, bytes: u64) {
        self.current_bytes += bytes;
        self.current.push(piece);
        if self.current_bytes >= self.shard_bytes {
            self.close();
        }
    }

    pub(super) fn close(&mut self) {
        if !self.current.is_empty() {
            self.shards.push(std::mem::take(&mut self.current));
        }
        self.current_bytes = 0;
    }

    /// The shards, without pieces that carry no work: a counted piece of blank lines only
    /// (planning counted them as skipped).
    pub(super) fn finish(mut self) -> Vec<Vec<InputPiece>> {
        self.close();
        let mut shards = self.shards;
        for shard in &mut shards {
            shard.retain(|p| !p.counted || p.rows > 0);
        }
        shards.retain(|s| !s.is_empty());
        shards
    }
}
