//! Fixed 2-D sin-cos position embeddings (spec §1.3).

use burn::prelude::*;

/// The 2-D sin-cos table of MAE, with a leading all-zero row for the cls token.
///
/// For patch `n = i·grid + j` (row `i`, column `j`), with `q = dim / 4` and
/// `ω_k = 10000^(-k/q)`, the row is `[sin(j·ω), cos(j·ω), sin(i·ω), cos(i·ω)]`: the first half
/// encodes the column, the second half the row, as the official `get_2d_sincos_pos_embed` does
/// (its meshgrid puts the column coordinate first). Computed in `f64` and rounded to `f32`,
/// which is bit-identical to the official table.
///
/// Returns `(grid² + 1) · dim` values, row-major. `dim` must be divisible by 4 (checked by the
/// configs before this is called).
///
/// # Shapes
/// - output: `[grid² + 1, dim]` flattened.
pub fn sincos_2d_table(dim: usize, grid: usize) -> Vec<f32> {
    let q = dim / 4;
    let omega: Vec<f64> = (0..q)
        .map(|k| 1.0 / 10000f64.powf(k as f64 / q as f64))
        .collect();
    let mut out = vec![0f32; (grid * grid + 1) * dim];
    for i in 0..grid {
        for j in 0..grid {
            let row = &mut out[(1 + i * grid + j) * dim..(2 + i * grid + j) * dim];
            for (k, w) in omega.iter().enumerate() {
                // The official grid is float32; integers up to 2^24 are exact there.
                let (x, y) = (j as f64 * w, i as f64 * w);
                row[k] = x.sin() as f32;
                row[q + k] = x.cos() as f32;
                row[2 * q + k] = y.sin() as f32;
                row[3 * q + k] = y.cos() as f32;
            }
        }
    }
    out
}

/// [`sincos_2d_table`] as a tensor.
///
/// # Shapes
/// - output: `[1, grid² + 1, dim]`
pub fn sincos_2d<B: Backend>(dim: usize, grid: usize, device: &B::Device) -> Tensor<B, 3> {
    let data = TensorData::new(sincos_2d_table(dim, grid), [1, grid * grid + 1, dim]);
    Tensor::from_data(data, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_spec_test_vector() {
        // Spec §1.3: D = 8, grid 2, rows [cls, n0, n1, n2, n3].
        let t = sincos_2d_table(8, 2);
        #[rustfmt::skip]
        let expected: [f32; 40] = [
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0,
            0.841471, 0.01, 0.540302, 0.99995, 0.0, 0.0, 1.0, 1.0,
            0.0, 0.0, 1.0, 1.0, 0.841471, 0.01, 0.540302, 0.99995,
            0.841471, 0.01, 0.540302, 0.99995, 0.841471, 0.01, 0.540302, 0.99995,
        ];
        for (i, (a, b)) in t.iter().zip(expected).enumerate() {
            assert!((a - b).abs() < 5e-7, "element {i}: {a} vs {b}");
        }
    }
}
