//! The quantization arithmetic of onnxruntime's `quantize_dynamic` for weights: symmetric
//! int8 in [-127, 127] with zero point 0, per tensor or per output column, scales and
//! rounding (half to even) computed in f32 as numpy does.

/// An int8 weight and how to read it back: `w ≈ scale * (q - zero_point)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    /// Same layout as the input.
    pub values: Vec<i8>,
    /// One scale (per tensor) or one per column.
    pub scales: Vec<f32>,
}

const QMAX: f32 = 127.0;

/// The scale of values spanning `[-absmax, absmax]`; 1 for an all-zero range (any scale
/// reproduces zeros, and 1 keeps the graph finite).
fn scale_of(absmax: f32) -> f32 {
    let scale = (absmax - -absmax) / (QMAX - -QMAX);
    if scale == 0.0 || !scale.is_finite() {
        1.0
    } else {
        scale
    }
}

fn quantize_with(value: f32, scale: f32) -> i8 {
    (value / scale).round_ties_even().clamp(-QMAX, QMAX) as i8
}

/// Per-tensor symmetric int8 of any-shaped `values`.
pub fn per_tensor(values: &[f32]) -> Quantized {
    let absmax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = scale_of(absmax);
    Quantized {
        values: values.iter().map(|&v| quantize_with(v, scale)).collect(),
        scales: vec![scale],
    }
}

/// Per-column symmetric int8 of a row-major `[rows, cols]` matrix (one scale per column,
/// the output channel of `x @ W`).
pub fn per_column(values: &[f32], cols: usize) -> Quantized {
    let mut absmax = vec![0f32; cols];
    for row in values.chunks_exact(cols) {
        for (m, v) in absmax.iter_mut().zip(row) {
            *m = m.max(v.abs());
        }
    }
    let scales: Vec<f32> = absmax.into_iter().map(scale_of).collect();
    let values = values
        .chunks_exact(cols)
        .flat_map(|row| {
            row.iter()
                .zip(&scales)
                .map(|(&v, &s)| quantize_with(v, s))
                .collect::<Vec<_>>()
        })
        .collect();
    Quantized { values, scales }
}

/// Row-major `[rows, cols]` → `[cols, rows]`.
pub fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_tensor_maps_the_largest_magnitude_to_127() {
        let q = per_tensor(&[0.5, -1.27, 0.0, 0.005]);
        assert_eq!(q.scales, vec![0.01]);
        assert_eq!(q.values, vec![50, -127, 0, 0]);
    }

    #[test]
    fn halves_round_to_even_like_numpy() {
        // 2.5 and 3.5 steps: numpy's round gives 2 and 4.
        let q = per_tensor(&[2.5, 3.5, 127.0]);
        assert_eq!(q.values, vec![2, 4, 127]);
    }

    #[test]
    fn per_column_scales_each_output_channel() {
        let q = per_column(&[1.0, 10.0, -0.5, 5.0], 2);
        assert_eq!(q.scales, vec![1.0 / 127.0, 10.0 / 127.0]);
        assert_eq!(q.values, vec![127, 127, -64, 64]);
    }

    #[test]
    fn zeros_keep_a_usable_scale() {
        let q = per_tensor(&[0.0, 0.0]);
        assert_eq!((q.scales, q.values), (vec![1.0], vec![0, 0]));
    }

    #[test]
    fn transpose_swaps_rows_and_columns() {
        assert_eq!(
            transpose(&[1., 2., 3., 4., 5., 6.], 2, 3),
            [1., 4., 2., 5., 3., 6.]
        );
    }
}
