//! Deterministic, stratified train/eval splits: each class keeps its share in both parts,
//! and the same seed always gives the same split.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Row indices of the training and evaluation parts: `eval_fraction` of each class (rounded,
/// at least one row of a class with two or more) goes to evaluation. Both lists are sorted.
pub fn stratified_split(
    labels: &[usize],
    eval_fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let classes = labels.iter().copied().max().map_or(0, |m| m + 1);
    let mut train = Vec::new();
    let mut eval = Vec::new();
    for class in 0..classes {
        let mut rows: Vec<usize> = (0..labels.len()).filter(|&r| labels[r] == class).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(class as u64);
        rows.shuffle(&mut rng);
        let mut take = (rows.len() as f64 * eval_fraction).round() as usize;
        if take == 0 && rows.len() >= 2 && eval_fraction > 0.0 {
            take = 1;
        }
        eval.extend_from_slice(&rows[..take]);
        train.extend_from_slice(&rows[take..]);
    }
    train.sort_unstable();
    eval.sort_unstable();
    (train, eval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_class_keeps_its_share_and_the_seed_fixes_the_split() {
        let labels: Vec<usize> = (0..1000).map(|i| if i % 4 == 0 { 1 } else { 0 }).collect();
        let (train, eval) = stratified_split(&labels, 0.2, 42);
        assert_eq!(train.len() + eval.len(), 1000);
        assert_eq!(eval.iter().filter(|&&r| labels[r] == 1).count(), 50);
        assert_eq!(eval.iter().filter(|&&r| labels[r] == 0).count(), 150);
        assert_eq!(
            (train.clone(), eval.clone()),
            stratified_split(&labels, 0.2, 42)
        );
        assert_ne!(eval, stratified_split(&labels, 0.2, 43).1);
        let mut all: Vec<usize> = train.into_iter().chain(eval).collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
    }
}
