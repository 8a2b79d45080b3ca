//! Length-ordered, token-budget batching: rows sorted by token count are cut into batches
//! whose padded size (rows × longest row) stays within a budget, so padding stays small.

/// Indices of rows (into the caller's slice) making up one batch, and its padded length.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchPlan {
    pub rows: Vec<usize>,
    pub seq_len: usize,
}

/// Row indices ordered shortest first (ties by position, so the order is deterministic).
pub fn length_order(lengths: &[usize]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| (lengths[i], i));
    order
}

/// The next batch from `order[start..]`: as many rows as fit `max_rows` and `max_tokens`
/// padded tokens (a single row longer than the budget still gets a batch of its own).
pub fn next_batch(
    order: &[usize],
    start: usize,
    lengths: &[usize],
    max_rows: usize,
    max_tokens: usize,
) -> BatchPlan {
    let mut rows = Vec::new();
    let mut longest = 0usize;
    for &index in &order[start..] {
        let len = lengths[index].max(1);
        let grown = longest.max(len) * (rows.len() + 1);
        if !rows.is_empty() && (rows.len() >= max_rows || grown > max_tokens) {
            break;
        }
        longest = longest.max(len);
        rows.push(index);
    }
    BatchPlan {
        rows,
        seq_len: longest,
    }
}

/// Plans batches over rows of the given token lengths: shortest first, each batch holding
/// at most `max_rows` rows and `max_tokens` padded tokens.
pub fn plan_batches(lengths: &[usize], max_rows: usize, max_tokens: usize) -> Vec<BatchPlan> {
    let order = length_order(lengths);
    let mut batches = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let batch = next_batch(&order, start, lengths, max_rows, max_tokens);
        start += batch.rows.len();
        batches.push(batch);
    }
    batches
}

/// The batch budget in force: halved when a batch runs out of memory, grown back after a
/// run of successes, never above the configured one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub rows: usize,
    pub tokens: usize,
    max_rows: usize,
    max_tokens: usize,
    successes: u32,
}

/// Successful batches after which a shrunk budget doubles again.
const GROW_AFTER: u32 = 8;

impl Budget {
    pub fn new(max_rows: usize, max_tokens: usize) -> Self {
        Self {
            rows: max_rows,
            tokens: max_tokens,
            max_rows,
            max_tokens,
            successes: 0,
        }
    }

    pub fn shrink(&mut self) {
        self.rows = (self.rows / 2).max(1);
        self.tokens = (self.tokens / 2).max(1);
        self.successes = 0;
    }

    pub fn succeeded(&mut self) {
        self.successes += 1;
        if self.successes >= GROW_AFTER
            && (self.rows < self.max_rows || self.tokens < self.max_tokens)
        {
            self.rows = (self.rows * 2).min(self.max_rows);
            self.tokens = (self.tokens * 2).min(self.max_tokens);
            self.successes = 0;
        }
    }
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
    fn budget_halves_and_grows_back_to_the_limit() {
        let mut budget = Budget::new(32, 4096);
        budget.shrink();
        budget.shrink();
        assert_eq!((budget.rows, budget.tokens), (8, 1024));
        for _ in 0..GROW_AFTER {
            budget.succeeded();
        }
        assert_eq!((budget.rows, budget.tokens), (16, 2048));
        for _ in 0..10 * GROW_AFTER {
            budget.succeeded();
        }
        assert_eq!((budget.rows, budget.tokens), (32, 4096));
        for _ in 0..20 {
            budget.shrink();
        }
        assert_eq!((budget.rows, budget.tokens), (1, 1));
    }

    #[test]
    fn empty_input_plans_nothing() {
        assert!(plan_batches(&[], 32, 4096).is_empty());
    }
}
