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

/// PyTorch's cubic convolution kernel with `A = -0.75` (`upsample_bicubic2d`).
fn cubic_weights(t: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0; // |x| <= 1
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A; // 1 < |x| < 2
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// Resizes a learned position embedding to another grid, as MAE's `interpolate_pos_embed`:
/// the leading `extra` rows (the cls token) are kept unchanged, and the `old_grid²` patch
/// rows are resampled to `new_grid²` with PyTorch's bicubic interpolation
/// (`F.interpolate(mode="bicubic", align_corners=False)`, kernel `A = -0.75`, borders
/// clamped). Same-size grids are returned unchanged.
///
/// # Shapes
/// - `table`: `[extra + old_grid², dim]` flattened, row-major
/// - output: `[extra + new_grid², dim]` flattened
pub fn interpolate_pos_embed(
    table: &[f32],
    dim: usize,
    extra: usize,
    old_grid: usize,
    new_grid: usize,
) -> Vec<f32> {
    if old_grid == new_grid {
        return table.to_vec();
    }
    let mut out = table[..extra * dim].to_vec();
    out.resize((extra + new_grid * new_grid) * dim, 0.0);
    let patches = &table[extra * dim..];
    let scale = old_grid as f64 / new_grid as f64;
    // For each output coordinate: the 4 source indices (clamped) and their weights.
    let taps: Vec<([usize; 4], [f64; 4])> = (0..new_grid)
        .map(|o| {
            let src = (o as f64 + 0.5) * scale - 0.5;
            let base = src.floor();
            let w = cubic_weights(src - base);
            let idx =
                [-1i64, 0, 1, 2].map(|k| (base as i64 + k).clamp(0, old_grid as i64 - 1) as usize);
            (idx, w)
        })
        .collect();
    for (oy, (iy, wy)) in taps.iter().enumerate() {
        for (ox, (ix, wx)) in taps.iter().enumerate() {
            let dst = &mut out[(extra + oy * new_grid + ox) * dim..][..dim];
            for (c, value) in dst.iter_mut().enumerate() {
                let mut acc = 0.0f64;
                for (a, &y) in iy.iter().enumerate() {
                    let mut row = 0.0f64;
                    for (b, &x) in ix.iter().enumerate() {
                        row += wx[b] * f64::from(patches[(y * old_grid + x) * dim + c]);
                    }
                    acc += wy[a] * row;
                }
                *value = acc as f32;
            }
        }
    }
    out
}

#[cfg(test)]
mod interpolation_tests {
    use super::*;

    #[test]
    fn matches_torch_bicubic_and_keeps_the_cls_row() {
        // torch: F.interpolate(x, size=(5, 5), mode="bicubic", align_corners=False) of a
        // 3x3 grid of 2-D rows sin(0.1·i - 0.5) (values printed by torch 2.15).
        let input: Vec<f32> = (0..18).map(|i| (0.1 * i as f32 - 0.5).sin()).collect();
        let expected = [
            -0.5525808, -0.4641868, -0.4782888, -0.3863303, -0.3522601, -0.2551257, -0.2186479,
            -0.1184288, -0.1365478, -0.0349173, -0.3123533, -0.217358, -0.2333133, -0.1368014,
            -0.1013183, -0.0030388, 0.0328579, 0.1307892, 0.1141436, 0.2114131, 0.0810475,
            0.1803574, 0.1625188, 0.2600639, 0.2955202, 0.3894184, 0.4221597, 0.5103895, 0.4970805,
            0.5814641, 0.4591599, 0.544051, 0.527694, 0.6078716, 0.6366128, 0.7084168, 0.7318266,
            0.7937113, 0.7862496, 0.8418294, 0.6836457, 0.7558494, 0.7411038, 0.806889, 0.8301564,
            0.8848681, 0.9013376, 0.9437979, 0.9403946, 0.975224,
        ];
        let cls = [7.0f32, -3.0];
        let table: Vec<f32> = cls.iter().copied().chain(input.iter().copied()).collect();
        let out = interpolate_pos_embed(&table, 2, 1, 3, 5);
        assert_eq!(out.len(), (1 + 25) * 2);
        assert_eq!(&out[..2], &cls, "the cls row is kept");
        for (i, (a, b)) in out[2..].iter().zip(expected).enumerate() {
            assert!((a - b).abs() < 1e-6, "element {i}: {a} vs {b}");
        }
        // The same size reproduces the input exactly.
        assert_eq!(interpolate_pos_embed(&table, 2, 1, 3, 3), table);
    }
}
