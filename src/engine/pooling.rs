//! Turning token vectors into one sentence vector: mean under the attention mask, the first
//! or the last unmasked token, or the model's own sentence vector; then optional L2
//! normalisation.

use crate::job::Pooling;

/// `hidden` is `[rows, seq, dim]` row-major (`[rows, dim]` for `Pooling::None`); `mask` is
/// `[rows, seq]`.
pub fn pool(
    hidden: &[f32],
    mask: &[i64],
    rows: usize,
    seq: usize,
    dim: usize,
    pooling: Pooling,
    normalize: bool,
) -> Vec<Vec<f32>> {
    (0..rows)
        .map(|r| {
            let mut out = vec![0f32; dim];
            match pooling {
                Pooling::Cls => out.copy_from_slice(&hidden[r * seq * dim..r * seq * dim + dim]),
                Pooling::None => out.copy_from_slice(&hidden[r * dim..(r + 1) * dim]),
                Pooling::LastToken => {
                    // Rows are padded on the right: the last unmasked position is the last
                    // token (an all-masked row falls back to the first).
                    let t = (0..seq)
                        .rev()
                        .find(|&t| mask[r * seq + t] != 0)
                        .unwrap_or(0);
                    let base = (r * seq + t) * dim;
                    out.copy_from_slice(&hidden[base..base + dim]);
                }
                Pooling::Mean => {
                    let mut count = 0f32;
                    for t in 0..seq {
                        if mask[r * seq + t] == 0 {
                            continue;
                        }
                        count += 1.0;
                        let token = &hidden[(r * seq + t) * dim..(r * seq + t + 1) * dim];
                        for (o, v) in out.iter_mut().zip(token) {
                            *o += v;
                        }
                    }
                    let count = count.max(1e-9);
                    out.iter_mut().for_each(|o| *o /= count);
                }
            }
            if normalize {
                let norm = out.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                out.iter_mut().for_each(|o| *o /= norm);
            }
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_ignores_masked_tokens_and_normalises() {
        // 1 row, 3 tokens, dim 2; the third token is padding.
        let hidden = [1.0, 0.0, 3.0, 4.0, 100.0, 100.0];
        let mask = [1, 1, 0];
        let out = pool(&hidden, &mask, 1, 3, 2, Pooling::Mean, false);
        assert_eq!(out, vec![vec![2.0, 2.0]]);
        let out = pool(&hidden, &mask, 1, 3, 2, Pooling::Mean, true);
        let norm: f32 = out[0].iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-6);
    }

    #[test]
    fn last_token_and_none() {
        // 2 rows, 3 tokens, dim 1; row 0 has two real tokens, row 1 three.
        let hidden = [1.0, 2.0, 9.0, 4.0, 5.0, 6.0];
        let mask = [1, 1, 0, 1, 1, 1];
        let out = pool(&hidden, &mask, 2, 3, 1, Pooling::LastToken, false);
        assert_eq!(out, vec![vec![2.0], vec![6.0]]);
        // Already one vector per row: [2, 2].
        let out = pool(&[3.0, 4.0, 1.0, 0.0], &mask, 2, 3, 2, Pooling::None, true);
        assert_eq!(out, vec![vec![0.6, 0.8], vec![1.0, 0.0]]);
    }

    #[test]
    fn cls_takes_first_token() {
        let hidden = [1.0, 2.0, 3.0, 4.0];
        let out = pool(&hidden, &[1, 1], 1, 2, 2, Pooling::Cls, false);
        assert_eq!(out, vec![vec![1.0, 2.0]]);
    }
}
