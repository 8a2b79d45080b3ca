//! `sluice bench`'s texts: sentences of news articles, or short review snippets.

use std::path::Path;

use anyhow::{Context, bail};

/// Sentences of the news articles (split at sentence ends), at least three words each.
pub(super) fn news_sentences(csv_path: &Path, limit: usize) -> anyhow::Result<Vec<String>> {
    let mut reader = csv::Reader::from_path(csv_path)
        .with_context(|| format!("reading {}", csv_path.display()))?;
    let headers = reader.headers()?.clone();
    let column = headers
        .iter()
        .position(|h| h == "text")
        .with_context(|| format!("{}: no `text` column", csv_path.display()))?;
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record?;
        let mut sentence = String::new();
        for word in record[column].split_whitespace() {
            if !sentence.is_empty() {
                sentence.push(' ');
            }
            sentence.push_str(word);
            if word.ends_with(['.', '!', '?']) && word.len() > 2 {
                if sentence.split(' ').count() >= 3 {
                    out.push(std::mem::take(&mut sentence));
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
                sentence.clear();
            }
        }
    }
    if out.is_empty() {
        bail!("{}: no sentences found", csv_path.display());
    }
    Ok(out)
}

/// Review snippets of the Rotten Tomatoes CSV (`category` other than `plot`), whole.
pub(super) fn reviews(csv_path: &Path, limit: usize) -> anyhow::Result<Vec<String>> {
    let mut reader = csv::Reader::from_path(csv_path)
        .with_context(|| format!("reading {}", csv_path.display()))?;
    let headers = reader.headers()?.clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("{}: no `{name}` column", csv_path.display()))
    };
    let (category, text) = (column("category")?, column("text")?);
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record?;
        if &record[category] != "plot" && !record[text].trim().is_empty() {
            out.push(record[text].to_string());
            if out.len() >= limit {
                break;
            }
        }
    }
    if out.is_empty() {
        bail!("{}: no reviews found", csv_path.display());
    }
    Ok(out)
}
