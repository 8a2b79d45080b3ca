//! Turning token vectors into one sentence vector: mean under the attention mask or the
//! first token, then optional L2 normalisation.

use crate::job::Pooling;

/// `hidden` is `[rows, seq, dim]` row-major; `mask` is `[rows, seq]`.
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
    fn cls_takes_first_token() {
        let hidden = [1.0, 2.0, 3.0, 4.0];
        let out = pool(&hidden, &[1, 1], 1, 2, 2, Pooling::Cls, false);
        assert_eq!(out, vec![vec![1.0, 2.0]]);
    }
}
