//! Duplicate ids: each shard writes its ids sorted by hash; the finisher merges the files and
//! reports ids that occur more than once in the job (count and the first few).

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::io::AsyncBufReadExt;

use super::TaskError;
use crate::state::ShardCommit;
use crate::storage::Storage;
use crate::uri::S3Uri;

/// The shard's ids, one line each (`<hash> <id as JSON>`), for the finisher's duplicate check.
#[derive(Default)]
pub struct IdLog {
    lines: Vec<(u64, Box<RawValue>)>,
}

impl IdLog {
    pub fn push(&mut self, id: &RawValue) {
        self.lines.push((id_hash(id), id.to_owned()));
    }

    /// The lines sorted by hash, so the finisher can merge shards' files.
    pub fn into_sorted(mut self) -> Vec<u8> {
        self.lines.sort_unstable_by_key(|(hash, _)| *hash);
        let mut out = Vec::with_capacity(self.lines.len() * 32);
        for (hash, id) in &self.lines {
            out.extend_from_slice(format!("{hash:016x} {}\n", id.get()).as_bytes());
        }
        out
    }
}

/// A stable 64-bit hash of an id's identity: a string by its contents (however escaped), a
/// number by its spelling.
pub fn id_hash(id: &RawValue) -> u64 {
    use sha2::Digest;
    let key = id_identity(id);
    let digest = sha2::Sha256::digest(key.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// What makes two ids the same: `s:<contents>` for strings, `n:<spelling>` for numbers.
pub fn id_identity(id: &RawValue) -> String {
    match serde_json::from_str::<String>(id.get()) {
        Ok(text) => format!("s:{text}"),
        Err(_) => format!("n:{}", id.get()),
    }
}

/// Ids file of a shard, read by the finisher's duplicate check.
pub fn ids_part_uri(output: &S3Uri, shard: u32) -> S3Uri {
    output.join(&format!("_ids/part-{shard:05}.txt"))
}

/// Ids that occur more than once in a job: how many rows repeat an earlier id, and the
/// first few such ids with their counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Duplicates {
    pub rows: u64,
    pub ids: u64,
    pub examples: Vec<DuplicateId>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DuplicateId {
    pub id: Box<RawValue>,
    pub count: u64,
}

/// How many duplicate ids are named in the manifest.
const EXAMPLES: usize = 10;

/// Reads every shard's ids file and finds the ids seen more than once. Memory: 8 bytes per
/// row for the hashes, plus the texts of the duplicated ids only.
pub async fn find_duplicates(
    storage: &Storage,
    commits: &[ShardCommit],
) -> Result<Duplicates, TaskError> {
    let files: Vec<S3Uri> = commits
        .iter()
        .filter_map(|c| c.ids_part.as_deref())
        .map(|u| S3Uri::parse(u).map_err(TaskError::permanent))
        .collect::<Result<_, _>>()?;
    let mut hashes = Vec::new();
    for file in &files {
        each_line(storage, file, |hash, _| {
            hashes.push(hash);
            Ok(())
        })
        .await?;
    }
    hashes.sort_unstable();
    let repeated: std::collections::HashSet<u64> = hashes
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    drop(hashes);
    if repeated.is_empty() {
        return Ok(Duplicates::default());
    }
    // Second pass: only the ids whose hash repeats, compared by identity (a hash collision
    // is not a duplicate).
    let mut seen: std::collections::BTreeMap<String, (Box<RawValue>, u64, usize)> =
        std::collections::BTreeMap::new();
    let mut order = 0usize;
    for file in &files {
        each_line(storage, file, |hash, raw| {
            if repeated.contains(&hash) {
                let id = RawValue::from_string(raw.to_string())
                    .map_err(|e| TaskError::permanent(format!("ids file {file}: {e}")))?;
                let entry = seen.entry(id_identity(&id)).or_insert((id, 0, order));
                entry.1 += 1;
                order += 1;
            }
            Ok(())
        })
        .await?;
    }
    let mut repeats: Vec<(Box<RawValue>, u64, usize)> =
        seen.into_values().filter(|(_, n, _)| *n > 1).collect();
    repeats.sort_by_key(|(_, _, first)| *first);
    Ok(Duplicates {
        rows: repeats.iter().map(|(_, n, _)| n - 1).sum(),
        ids: repeats.len() as u64,
        examples: repeats
            .into_iter()
            .take(EXAMPLES)
            .map(|(id, count, _)| DuplicateId { id, count })
            .collect(),
    })
}

async fn each_line(
    storage: &Storage,
    file: &S3Uri,
    mut f: impl FnMut(u64, &str) -> Result<(), TaskError>,
) -> Result<(), TaskError> {
    let mut lines = storage.read(file).await?.lines();
    while let Some(line) = lines
        .next_line()
        .await
        .map_err(|e| TaskError::reading(file, e))?
    {
        let (hash, raw) = line
            .split_once(' ')
            .ok_or_else(|| TaskError::permanent(format!("ids file {file}: bad line {line:?}")))?;
        let hash = u64::from_str_radix(hash, 16)
            .map_err(|e| TaskError::permanent(format!("ids file {file}: {e}")))?;
        f(hash, raw)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::records::raw_string;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    #[test]
    fn identity_is_a_strings_contents_or_a_numbers_spelling() {
        assert_eq!(
            id_identity(&raw(r#""\u0061b""#)),
            id_identity(&raw_string("ab"))
        );
        assert_ne!(id_identity(&raw("1")), id_identity(&raw_string("1")));
        assert_ne!(id_identity(&raw("1e3")), id_identity(&raw("1000")));
        assert_eq!(
            id_hash(&raw("12345678901234567890123")),
            id_hash(&raw("12345678901234567890123"))
        );
        assert_ne!(
            id_hash(&raw("12345678901234567890123")),
            id_hash(&raw("12345678901234567890124"))
        );
    }

    #[test]
    fn the_ids_file_is_sorted_by_hash() {
        let mut log = IdLog::default();
        for id in ["3", "1", "\"x\"", "2"] {
            log.push(&raw(id));
        }
        let text = String::from_utf8(log.into_sorted()).unwrap();
        let hashes: Vec<u64> = text
            .lines()
            .map(|l| u64::from_str_radix(l.split_once(' ').unwrap().0, 16).unwrap())
            .collect();
        assert_eq!(hashes.len(), 4);
        assert!(hashes.windows(2).all(|w| w[0] <= w[1]));
    }
}
