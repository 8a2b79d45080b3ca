//! `sluice results`: downloads the parts a finished job's manifest lists, through the API,
//! streamed to disk with a byte progress bar; parts already there with the right size are
//! skipped, and every part's size is checked before it takes its final name.

use std::path::{Component, Path, PathBuf};

use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncWriteExt;

use super::{Client, ClientError};
use crate::api::{ResultPart, ResultsIndex};

/// Parts downloaded at once.
const PARALLEL_DOWNLOADS: usize = 4;

/// The two shapes a part can have on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ResultFormat {
    /// JSON lines, plain or compressed (`.jsonl`, `.jsonl.gz`, `.jsonl.zst`).
    Jsonl,
    Parquet,
}

impl ResultFormat {
    /// The format a part's name says it has: `None` for a name of neither.
    pub fn of(name: &str) -> Option<Self> {
        if name.ends_with(".parquet") {
            Some(ResultFormat::Parquet)
        } else if [".jsonl", ".jsonl.gz", ".jsonl.zst"]
            .iter()
            .any(|s| name.ends_with(s))
        {
            Some(ResultFormat::Jsonl)
        } else {
            None
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            ResultFormat::Jsonl => "jsonl",
            ResultFormat::Parquet => "parquet",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ResultsOptions {
    /// Folder the parts go to (made when missing).
    pub out: PathBuf,
    /// Refuse unless the parts are in this format.
    pub format: Option<ResultFormat>,
    /// Download a failed job's parts too.
    pub partial: bool,
    /// Also download the error parts (rows that failed, and why) under `errors/`.
    pub errors: bool,
}

/// What a download did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub parts: usize,
    pub bytes: u64,
    /// Parts already in the folder with the right size.
    pub skipped: usize,
    /// Rows in the output parts, as the manifest counts them.
    pub rows: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error(transparent)]
    Api(#[from] ClientError),
    /// The parts are not in the asked format; nothing was downloaded.
    #[error("{0}")]
    Format(String),
    #[error("{path}: {source} (check the --out folder is writable and has room)")]
    Disk {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Download(String),
}

/// Downloads job `id`'s results into `options.out`; `_manifest.json` is written last, so
/// its presence means every part listed is there, whole.
pub async fn download(
    client: &Client,
    id: &str,
    options: &ResultsOptions,
) -> Result<Downloaded, ResultsError> {
    let index = client.results(id, options.partial).await?;
    check_format(&index, options.format)?;
    let mut wanted: Vec<&ResultPart> = index.parts.iter().collect();
    if options.errors {
        wanted.extend(index.error_parts.iter());
    }
    for part in &wanted {
        if !is_plain_relative(&part.name) {
            return Err(ResultsError::Download(format!(
                "the API named a part `{}`, which is not a plain path under the output folder; refusing to write it",
                part.name
            )));
        }
    }
    tokio::fs::create_dir_all(&options.out)
        .await
        .map_err(|source| disk(&options.out, source))?;
    let mut todo = Vec::new();
    let mut skipped = 0;
    let mut skipped_bytes = 0;
    for part in wanted {
        let target = options.out.join(&part.name);
        match tokio::fs::metadata(&target).await {
            Ok(meta) if meta.is_file() && meta.len() == part.bytes => {
                skipped += 1;
                skipped_bytes += part.bytes;
            }
            _ => todo.push((part, target)),
        }
    }
    let total: u64 = skipped_bytes + todo.iter().map(|(p, _)| p.bytes).sum::<u64>();
    let bar = byte_bar(total, skipped_bytes);
    let downloaded = todo.len();
    let bytes: u64 = futures::stream::iter(todo)
        .map(|(part, target)| {
            let bar = bar.clone();
            async move { fetch_part(client, id, options.partial, part, &target, &bar).await }
        })
        .buffer_unordered(PARALLEL_DOWNLOADS)
        .try_fold(0u64, |sum, n| async move { Ok(sum + n) })
        .await?;
    bar.finish_and_clear();
    let manifest_path = options.out.join("_manifest.json");
    let mut manifest = serde_json::to_vec_pretty(&index.manifest).expect("a JSON value serialises");
    manifest.push(b'\n');
    tokio::fs::write(&manifest_path, manifest)
        .await
        .map_err(|source| disk(&manifest_path, source))?;
    Ok(Downloaded {
        parts: downloaded,
        bytes,
        skipped,
        rows: index.parts.iter().filter_map(|p| p.rows).sum(),
    })
}

/// Refuses, before anything is written, parts in another format than asked. Converting
/// is left to tools that know both formats fully (DuckDB, pyarrow): the job fixed the
/// column types and layout, and a conversion here could change ids or numbers.
fn check_format(index: &ResultsIndex, asked: Option<ResultFormat>) -> Result<(), ResultsError> {
    let Some(asked) = asked else {
        return Ok(());
    };
    for part in &index.parts {
        match ResultFormat::of(&part.name) {
            Some(found) if found == asked => {}
            found => {
                let how = match (found, asked) {
                    (Some(ResultFormat::Parquet), ResultFormat::Jsonl) => {
                        "; to get JSON lines from them, run: duckdb -c \"COPY (SELECT * FROM 'DIR/*.parquet') TO 'results.jsonl' (FORMAT json)\""
                    }
                    (Some(ResultFormat::Jsonl), ResultFormat::Parquet) => {
                        "; submit the job with output.format = \"parquet\" for Parquet parts with the job's own column types"
                    }
                    _ => "",
                };
                return Err(ResultsError::Format(format!(
                    "job {} wrote {} parts (`{}`), not {}; sluice downloads parts as they are and does not convert them. Leave out --format to download them{how}",
                    index.job_id,
                    found.map_or("unrecognised", ResultFormat::as_str),
                    part.name,
                    asked.as_str(),
                )));
            }
        }
    }
    Ok(())
}

/// Streams one part to `<target>.partial`, checks its size, then renames it into place.
async fn fetch_part(
    client: &Client,
    id: &str,
    partial: bool,
    part: &ResultPart,
    target: &Path,
    bar: &ProgressBar,
) -> Result<u64, ResultsError> {
    if let Some(parent) = target.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|source| disk(parent, source))?;
    }
    let response = client.part(id, &part.name, partial).await?;
    if let Some(announced) = response.content_length()
        && announced != part.bytes
    {
        return Err(ResultsError::Download(format!(
            "part {}: the API sends {announced} bytes but listed {}; the part changed since it was listed: run `sluice results {id}` again",
            part.name, part.bytes
        )));
    }
    let mut temporary = target.as_os_str().to_owned();
    temporary.push(".partial");
    let temporary = PathBuf::from(temporary);
    let mut file = tokio::fs::File::create(&temporary)
        .await
        .map_err(|source| disk(&temporary, source))?;
    let mut written = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            ResultsError::Download(format!(
                "part {}: the download broke off after {written} of {} bytes ({e}); run the command again: finished parts are kept",
                part.name, part.bytes
            ))
        })?;
        file.write_all(&chunk)
            .await
            .map_err(|source| disk(&temporary, source))?;
        written += chunk.len() as u64;
        bar.inc(chunk.len() as u64);
    }
    file.flush()
        .await
        .map_err(|source| disk(&temporary, source))?;
    file.sync_all()
        .await
        .map_err(|source| disk(&temporary, source))?;
    drop(file);
    if written != part.bytes {
        let _ = tokio::fs::remove_file(&temporary).await;
        return Err(ResultsError::Download(format!(
            "part {}: received {written} bytes, the stored part has {}; run the command again",
            part.name, part.bytes
        )));
    }
    tokio::fs::rename(&temporary, target)
        .await
        .map_err(|source| disk(target, source))?;
    Ok(written)
}

/// A relative path of normal segments only: nothing that could land outside `--out`.
fn is_plain_relative(name: &str) -> bool {
    let path = Path::new(name);
    !name.is_empty()
        && !name.contains('\\')
        && path.components().all(|c| matches!(c, Component::Normal(_)))
}

fn byte_bar(total: u64, done: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_position(done);
    bar
}

fn disk(path: &Path, source: std::io::Error) -> ResultsError {
    ResultsError::Disk {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(names: &[&str]) -> ResultsIndex {
        ResultsIndex {
            job_id: "j".into(),
            status: crate::job::JobStatus::Succeeded,
            output_uri: "s3://b/out/".into(),
            parts: names
                .iter()
                .map(|n| ResultPart {
                    name: n.to_string(),
                    uri: format!("s3://b/out/{n}"),
                    bytes: 1,
                    rows: Some(1),
                })
                .collect(),
            error_parts: Vec::new(),
            manifest: serde_json::json!({}),
        }
    }

    #[test]
    fn formats_come_from_part_names() {
        assert_eq!(
            ResultFormat::of("part-00000.jsonl"),
            Some(ResultFormat::Jsonl)
        );
        assert_eq!(
            ResultFormat::of("part-00000.jsonl.gz"),
            Some(ResultFormat::Jsonl)
        );
        assert_eq!(
            ResultFormat::of("part-00000.jsonl.zst"),
            Some(ResultFormat::Jsonl)
        );
        assert_eq!(
            ResultFormat::of("part-00000.parquet"),
            Some(ResultFormat::Parquet)
        );
        assert_eq!(ResultFormat::of("part-00000.csv"), None);
    }

    #[test]
    fn another_format_is_refused_before_anything_is_written() {
        let parquet = index(&["part-00000.parquet", "part-00001.parquet"]);
        assert!(check_format(&parquet, None).is_ok());
        assert!(check_format(&parquet, Some(ResultFormat::Parquet)).is_ok());
        let refused = check_format(&parquet, Some(ResultFormat::Jsonl))
            .unwrap_err()
            .to_string();
        assert!(refused.contains("wrote parquet parts"), "{refused}");
        assert!(refused.contains("duckdb"), "{refused}");
        let jsonl = index(&["part-00000.jsonl.zst"]);
        assert!(check_format(&jsonl, Some(ResultFormat::Jsonl)).is_ok());
        let refused = check_format(&jsonl, Some(ResultFormat::Parquet))
            .unwrap_err()
            .to_string();
        assert!(refused.contains("output.format"), "{refused}");
    }

    #[test]
    fn only_plain_relative_names_are_written() {
        assert!(is_plain_relative("part-00000.jsonl"));
        assert!(is_plain_relative("errors/part-00000.jsonl"));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./x", "a\\b"] {
            assert!(!is_plain_relative(bad), "{bad}");
        }
    }
}
