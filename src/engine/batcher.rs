//! Length-ordered, token-budget batching: rows sorted by token count are cut into batches
//! whose padded size (rows × longest row) stays within a budget, so padding stays small.

/// Indices of rows (into the caller's slice) making up one batch, and its padded length.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchPlan {
    pub rows: Vec<usize>,
    pub seq_len: usize,
}

/// Plans batches over rows of the given token lengths: shortest first, each batch holding
/// at most `max_rows` rows and `max_tokens` padded tokens (a single row longer than the
/// budget still gets a batch of its own).
pub fn plan_batches(lengths: &[usize], max_rows: usize, max_tokens: usize) -> Vec<BatchPlan> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| (lengths[i], i));
    let mut batches = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut longest = 0usize;
    for index in order {
        let len = lengths[index].max(1);
        let grown = longest.max(len) * (current.len() + 1);
        if !current.is_empty() && (current.len() >= max_rows || grown > max_tokens) {
            batches.push(BatchPlan {
                rows: std::mem::take(&mut current),
                seq_len: longest,
            });
            longest = 0;
        }
        longest = longest.max(len);
        current.push(index);
    }
    if !current.is_empty() {
        batches.push(BatchPlan {
            rows: current,
            seq_len: longest,
        });
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn respects_row_cap_and_token_budget_and_covers_every_row_once() {
        let lengths = [5, 30, 7, 7, 100, 6, 12, 8];
        let batches = plan_batches(&lengths, 3, 40);
        let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.rows.clone()).collect();
        seen.sort();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        for batch in &batches {
            assert!(batch.rows.len() <= 3);
            let longest = batch.rows.iter().map(|&i| lengths[i]).max().unwrap();
            assert_eq!(batch.seq_len, longest);
            assert!(batch.rows.len() == 1 || longest * batch.rows.len() <= 40);
        }
        // Sorted by length: the first batch holds the three shortest rows.
        assert_eq!(batches[0].rows, vec![0, 5, 2]);
        // The over-budget row is alone.
        assert_eq!(batches.last().unwrap().rows, vec![4]);
    }

    #[test]
    fn empty_input_plans_nothing() {
        assert!(plan_batches(&[], 32, 4096).is_empty());
    }
}
