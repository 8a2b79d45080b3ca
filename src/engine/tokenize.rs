//! Tokenizing a request's texts so that one bad text fails only its own row, and rows cut
//! to the model's `max_length` are known (reported, or refused when truncation is off).

use std::panic::{AssertUnwindSafe, catch_unwind};

use tokenizers::{Encoding, Tokenizer};

/// The request's texts as token rows, in input order.
pub(crate) struct Tokenized {
    /// One per text; empty for a failed one.
    pub encodings: Vec<Encoding>,
    /// Why a text cannot run (tokenizer error, too long with truncation off).
    pub failures: Vec<Option<String>>,
    /// Cut to `max_length` (only with truncation on).
    pub truncated: Vec<bool>,
}

/// Tokenizes all texts in one batch call (the common case, no extra pass), spread over the
/// caller's rayon pool. When the batch
/// call fails, each text is tokenized alone so the failure lands on the texts that cause it.
/// `tokenizer` truncates at `max_length` (see `load_tokenizer`); a text it cut has
/// overflowing parts. Only texts refused for their length are tokenized again, uncut, to
/// name their full length.
pub(crate) fn tokenize(
    tokenizer: &Tokenizer,
    texts: &[String],
    max_length: usize,
    truncate: bool,
) -> Tokenized {
    let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
    // The `_fast` calls skip offsets, which nothing downstream reads; ids, masks, type ids
    // and overflow are the same.
    let batch = catch_unwind(AssertUnwindSafe(|| {
        tokenizer.encode_batch_fast(inputs, true)
    }));
    let results: Vec<Result<Encoding, String>> = match batch {
        Ok(Ok(encodings)) => encodings.into_iter().map(Ok).collect(),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, rows = texts.len(), "batch tokenization failed; tokenizing each text alone");
            texts.iter().map(|t| encode_one(tokenizer, t)).collect()
        }
        Err(panic) => {
            tracing::warn!(panic = %panic_message(&*panic), rows = texts.len(), "the tokenizer panicked on a batch; tokenizing each text alone");
            texts.iter().map(|t| encode_one(tokenizer, t)).collect()
        }
    };
    let mut uncut: Option<Tokenizer> = None;
    // Tokens in the text without truncation; only asked for texts at or past the limit.
    let mut count = |index: usize| -> Option<usize> {
        let uncut = uncut.get_or_insert_with(|| {
            let mut uncut = tokenizer.clone();
            uncut
                .with_truncation(None)
                .expect("no truncation is always valid");
            uncut
        });
        encode_one(uncut, &texts[index]).ok().map(|full| full.len())
    };
    let mut out = Tokenized {
        encodings: Vec::with_capacity(texts.len()),
        failures: Vec::with_capacity(texts.len()),
        truncated: Vec::with_capacity(texts.len()),
    };
    for (index, result) in results.into_iter().enumerate() {
        let (encoding, failure, truncated) = match result {
            Err(reason) => (Encoding::default(), Some(reason), false),
            Ok(encoding) => {
                // The tokenizer stops at `max_length` tokens before it truncates, so a text
                // cut exactly there (no special tokens to make room for) leaves no
                // overflowing part: for those only a count without truncation tells.
                let mut full = None;
                let cut = !encoding.get_overflowing().is_empty()
                    || (encoding.len() >= max_length && {
                        full = count(index);
                        full.is_some_and(|tokens| tokens > max_length)
                    });
                if !cut || truncate {
                    (encoding, None, cut)
                } else {
                    let tokens = full
                        .or_else(|| count(index))
                        .map_or("more tokens".to_string(), |n| format!("{n} tokens"));
                    let reason = format!(
                        "{tokens} > max {max_length} (the package's max_length); \
                         shorten the text, or set truncate = true in the job spec to cut it"
                    );
                    (Encoding::default(), Some(reason), false)
                }
            }
        };
        out.encodings.push(encoding);
        out.failures.push(failure);
        out.truncated.push(truncated);
    }
    out
}

fn encode_one(tokenizer: &Tokenizer, text: &str) -> Result<Encoding, String> {
    match catch_unwind(AssertUnwindSafe(|| tokenizer.encode_fast(text, true))) {
        Ok(Ok(encoding)) => Ok(encoding),
        Ok(Err(e)) => Err(format!("the tokenizer cannot encode this text: {e}")),
        Err(panic) => Err(format!(
            "the tokenizer panicked on this text: {}",
            panic_message(&*panic)
        )),
    }
}

/// The text of a panic's payload (`panic!` with a message or a format string).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::load_tokenizer;

    /// Word-level, `[CLS] … [SEP]` around each text; `unk` decides whether unknown words
    /// are an error (an unknown-token name missing from the vocabulary).
    fn tokenizer(max_length: usize, unk: &str) -> Tokenizer {
        let json = serde_json::json!({
            "version": "1.0",
            "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "a": 1, "b": 2, "c": 3, "[CLS]": 5, "[SEP]": 6}, "unk_token": unk},
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
                "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [5], "tokens": ["[CLS]"]}, "[SEP]": {"id": "[SEP]", "ids": [6], "tokens": ["[SEP]"]}}
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, json.to_string()).unwrap();
        load_tokenizer(&path, max_length).unwrap()
    }

    fn texts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_untokenizable_text_fails_only_its_own_row() {
        let tokenizer = tokenizer(8, "[MISSING]");
        let out = tokenize(&tokenizer, &texts(&["a b", "a zzz", "c"]), 8, true);
        assert_eq!(out.encodings[0].get_ids(), &[5, 1, 2, 6]);
        assert_eq!(out.encodings[2].get_ids(), &[5, 3, 6]);
        assert_eq!(out.failures[0], None);
        assert_eq!(out.failures[2], None);
        let reason = out.failures[1].as_deref().unwrap();
        assert!(
            reason.starts_with("the tokenizer cannot encode this text:")
                && reason.contains("Missing [UNK] token"),
            "{reason}"
        );
        assert!(out.encodings[1].is_empty());
    }

    #[test]
    fn cut_rows_are_flagged_or_refused_with_their_full_length() {
        let tokenizer = tokenizer(5, "[UNK]");
        // 3 + 2 specials fits in 5; 9 words + 2 specials do not.
        let list = texts(&["a b c", "a b c a b c a b c", "a"]);
        let cut = tokenize(&tokenizer, &list, 5, true);
        assert_eq!(cut.truncated, vec![false, true, false]);
        assert_eq!(cut.failures, vec![None, None, None]);
        assert_eq!(cut.encodings[1].get_ids(), &[5, 1, 2, 3, 6]);
        let refused = tokenize(&tokenizer, &list, 5, false);
        assert_eq!(refused.truncated, vec![false, false, false]);
        assert_eq!(refused.failures[0], None);
        assert_eq!(
            refused.failures[1].as_deref(),
            Some(
                "11 tokens > max 5 (the package's max_length); shorten the text, \
                 or set truncate = true in the job spec to cut it"
            )
        );
        assert_eq!(refused.encodings[2].get_ids(), &[5, 1, 6]);
    }

    /// With the real tokenizer (when the suite exports it): the full length told for a
    /// refused row is what an untruncated tokenizer counts.
    #[test]
    fn full_length_matches_an_untruncated_count_on_the_real_tokenizer() {
        let Ok(dir) = std::env::var("SLUICE_TEST_MODEL_DIR") else {
            return;
        };
        let path = std::path::Path::new(&dir).join("tokenizer.json");
        let tokenizer = load_tokenizer(&path, 16).unwrap();
        let mut untruncated = tokenizer.clone();
        untruncated.with_truncation(None).unwrap();
        let text = "the quick brown fox jumps over the lazy dog, twice and again; ".repeat(7);
        let expected = untruncated.encode(text.as_str(), true).unwrap().len();
        let out = tokenize(&tokenizer, &[text], 16, false);
        let reason = out.failures[0].as_deref().unwrap();
        assert!(
            reason.starts_with(&format!("{expected} tokens > max 16")),
            "{reason} (expected {expected})"
        );
    }

    /// Without special tokens the tokenizer stops at exactly `max_length` tokens, so a cut
    /// there shows no overflowing part; a text of exactly that length is not cut.
    #[test]
    fn a_cut_at_exactly_max_length_is_told_from_a_text_of_that_length() {
        let mut tokenizer = crate::engine::test_support::word_level_tokenizer();
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: 4,
                ..Default::default()
            }))
            .unwrap();
        let list = texts(&["a b c d", "a b c d a", "a b"]);
        let cut = tokenize(&tokenizer, &list, 4, true);
        assert_eq!(cut.truncated, vec![false, true, false]);
        assert_eq!(cut.encodings[1].get_ids(), &[1, 2, 3, 4]);
        let refused = tokenize(&tokenizer, &list, 4, false);
        assert_eq!(refused.failures[0], None);
        assert!(
            refused.failures[1]
                .as_deref()
                .unwrap()
                .starts_with("5 tokens > max 4"),
            "{:?}",
            refused.failures[1]
        );
        assert_eq!(refused.failures[2], None);
    }
}
