//! Per-sample random masking by argsort of noise (spec §1.5).

use burn::prelude::*;
use burn::tensor::Distribution;

use crate::error::{ModelError, Result};

/// Which patches a forward pass kept and how to put them back in place.
#[derive(Debug, Clone)]
pub struct Masking<B: Backend> {
    /// Patch indices in ascending-noise order (the first `len_keep` are kept).
    ///
    /// Shape `[N, L]`.
    pub ids_shuffle: Tensor<B, 2, Int>,
    /// Inverse permutation of `ids_shuffle`: `ids_restore[n, l]` is the rank of patch `l`.
    ///
    /// Shape `[N, L]`.
    pub ids_restore: Tensor<B, 2, Int>,
    /// Indices of the kept patches, in ascending-noise order (not raster order).
    ///
    /// Shape `[N, K]`.
    pub ids_keep: Tensor<B, 2, Int>,
    /// `0` where the patch was kept, `1` where it was removed, in raster order.
    ///
    /// Shape `[N, L]`.
    pub mask: Tensor<B, 2>,
    /// Number of kept patches `K`.
    pub len_keep: usize,
}

/// `K = int(L · (1 − ratio))`, with the same f64 arithmetic and truncation as Python.
pub fn len_keep(num_patches: usize, mask_ratio: f64) -> usize {
    (num_patches as f64 * (1.0 - mask_ratio)) as usize
}

/// Checks a mask ratio: `0 <= ratio < 1` and at least one patch kept.
pub fn check_mask_ratio(num_patches: usize, mask_ratio: f64) -> Result<()> {
    if !(0.0..1.0).contains(&mask_ratio) {
        return Err(ModelError::InvalidArgument {
            name: "mask_ratio",
            reason: format!("({mask_ratio}) must satisfy 0 <= ratio < 1"),
        });
    }
    if len_keep(num_patches, mask_ratio) == 0 {
        return Err(ModelError::InvalidArgument {
            name: "mask_ratio",
            reason: format!("({mask_ratio}) keeps no patch out of {num_patches}"),
        });
    }
    Ok(())
}

/// Keeps a random `1 − mask_ratio` share of the tokens of every sample.
///
/// Small noise is kept, large noise removed, exactly as the official `random_masking`. Pass
/// `noise` to make the mask deterministic (tests, visualisation); otherwise it is drawn
/// uniformly in `[0, 1)` from the backend RNG (seed it with `B::seed`).
///
/// `mask_ratio = 0` with no noise keeps every token **in raster order** with an identity
/// `ids_restore` (the official code still shuffles; since the position embeddings are added
/// before masking and attention is permutation-equivariant, every output after unshuffling is
/// the same).
///
/// # Shapes
/// - tokens: `[N, L, D]`
/// - noise: `[N, L]`
/// - output: `[N, K, D]` with `K = int(L·(1 − mask_ratio))`, plus the [`Masking`].
pub fn random_masking<B: Backend>(
    tokens: Tensor<B, 3>,
    mask_ratio: f64,
    noise: Option<Tensor<B, 2>>,
) -> Result<(Tensor<B, 3>, Masking<B>)> {
    let [n, l, d] = tokens.dims();
    let raster_order = noise.is_none() && mask_ratio == 0.0;
    let masking = draw_masking(n, l, mask_ratio, noise, &tokens.device())?;
    if raster_order {
        return Ok((tokens, masking));
    }
    let index = masking
        .ids_keep
        .clone()
        .unsqueeze_dim::<3>(2)
        .repeat_dim(2, d); // [N, K, D]
    Ok((tokens.gather(1, index), masking))
}

/// The permutations and mask of [`random_masking`] without gathering any tokens.
///
/// # Shapes
/// - noise: `[N, L]`
/// - output: a [`Masking`] with `ids_keep` of shape `[N, K]`
pub fn draw_masking<B: Backend>(
    n: usize,
    l: usize,
    mask_ratio: f64,
    noise: Option<Tensor<B, 2>>,
    device: &B::Device,
) -> Result<Masking<B>> {
    check_mask_ratio(l, mask_ratio)?;
    let keep = len_keep(l, mask_ratio);

    let noise = match noise {
        Some(noise) => {
            if noise.dims() != [n, l] {
                return Err(ModelError::Shape {
                    name: "noise",
                    expected: format!("[{n}, {l}]"),
                    got: noise.dims().to_vec(),
                });
            }
            noise
        }
        None if mask_ratio == 0.0 => {
            let ids = Tensor::<B, 1, Int>::arange(0..l as i64, device)
                .unsqueeze_dim::<2>(0)
                .repeat_dim(0, n); // [N, L]
            return Ok(Masking {
                ids_shuffle: ids.clone(),
                ids_restore: ids.clone(),
                ids_keep: ids,
                mask: Tensor::zeros([n, l], device),
                len_keep: l,
            });
        }
        None => Tensor::random([n, l], Distribution::Uniform(0.0, 1.0), device),
    };

    let ids_shuffle = noise.argsort(1); // [N, L], ascending: small is kept
    let ids_restore = ids_shuffle.clone().argsort(1); // [N, L]
    let ids_keep = ids_shuffle.clone().narrow(1, 0, keep); // [N, K]
    // Patch l is removed iff its rank in the shuffle is >= K; this equals gathering the
    // official [0]*K + [1]*(L-K) row with ids_restore.
    let mask = ids_restore.clone().greater_equal_elem(keep as i64).float(); // [N, L]
    Ok(Masking {
        ids_shuffle,
        ids_restore,
        ids_keep,
        mask,
        len_keep: keep,
    })
}

/// The masking of [`draw_masking`] for given `noise`, with the permutations computed on the
/// host and uploaded: no `argsort` on the device and no read-back.
///
/// Burn 0.21's GPU backends have no device argsort; their fallback reads the noise back
/// synchronously, which a browser's WebGPU cannot do (it panics with "Failed to
/// synchronously read tensor data"). This path builds the same [`Masking`]: every row of
/// `noise` is sorted ascending (ties by patch index, so the order is total), the first `K`
/// patches are kept. Noise without ties (continuous uniform draws) gives exactly the masks
/// of [`random_masking`].
///
/// # Shapes
/// - noise: `n · l` values, row-major `[N, L]`
/// - output: a [`Masking`] with `ids_keep` of shape `[N, K]`
pub fn host_masking<B: Backend>(
    noise: &[f32],
    n: usize,
    l: usize,
    mask_ratio: f64,
    device: &B::Device,
) -> Result<Masking<B>> {
    check_mask_ratio(l, mask_ratio)?;
    if noise.len() != n * l {
        return Err(ModelError::Shape {
            name: "noise",
            expected: format!("[{n}, {l}]"),
            got: vec![noise.len()],
        });
    }
    let keep = len_keep(l, mask_ratio);
    let mut shuffle = Vec::with_capacity(n * l);
    let mut restore = vec![0i64; n * l];
    let mut removed = vec![0f32; n * l];
    for (row, values) in noise.chunks(l).enumerate() {
        let mut order: Vec<usize> = (0..l).collect();
        order.sort_by(|&a, &b| values[a].total_cmp(&values[b]).then(a.cmp(&b)));
        for (rank, &patch) in order.iter().enumerate() {
            restore[row * l + patch] = rank as i64;
            removed[row * l + patch] = if rank >= keep { 1.0 } else { 0.0 };
        }
        shuffle.extend(order.into_iter().map(|p| p as i64));
    }
    let keep_ids: Vec<i64> = shuffle
        .chunks(l)
        .flat_map(|row| row[..keep].iter().copied())
        .collect();
    let ints = |values: Vec<i64>, cols: usize| {
        Tensor::<B, 2, Int>::from_data(TensorData::new(values, [n, cols]), device)
    };
    Ok(Masking {
        ids_shuffle: ints(shuffle, l),
        ids_restore: ints(restore, l),
        ids_keep: ints(keep_ids, keep),
        mask: Tensor::from_data(TensorData::new(removed, [n, l]), device),
        len_keep: keep,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn len_keep_truncates_like_python() {
        assert_eq!(len_keep(196, 0.75), 49);
        // int(196 * 0.09999999999999998) == 19 in Python.
        assert_eq!(len_keep(196, 0.9), 19);
        assert_eq!(len_keep(16, 0.75), 4);
        assert_eq!(len_keep(16, 0.0), 16);
    }

    #[test]
    fn ratio_out_of_range_is_an_error() {
        assert!(check_mask_ratio(16, 1.0).is_err());
        assert!(check_mask_ratio(16, -0.1).is_err());
        assert!(check_mask_ratio(16, 0.99).is_err());
        assert!(check_mask_ratio(16, f64::NAN).is_err());
        assert!(check_mask_ratio(16, 0.75).is_ok());
    }

    #[test]
    fn host_masking_equals_the_device_argsort() {
        type B = burn::backend::Flex;
        let device = Default::default();
        let (n, l) = (3, 16);
        // Distinct noise values in a scrambled order, as uniform draws give.
        let noise: Vec<f32> = (0..n * l)
            .map(|i| ((i * 37 + 11) % (n * l)) as f32 / (n * l) as f32)
            .collect();
        for ratio in [0.0, 0.5, 0.75, 0.9] {
            let tensor = Tensor::<B, 2>::from_data(TensorData::new(noise.clone(), [n, l]), &device);
            let device_side = draw_masking::<B>(n, l, ratio, Some(tensor), &device).unwrap();
            let host_side = host_masking::<B>(&noise, n, l, ratio, &device).unwrap();
            assert_eq!(host_side.len_keep, device_side.len_keep);
            let ints = |t: &Tensor<B, 2, Int>| t.to_data().iter::<i64>().collect::<Vec<_>>();
            assert_eq!(ints(&host_side.ids_shuffle), ints(&device_side.ids_shuffle));
            assert_eq!(ints(&host_side.ids_restore), ints(&device_side.ids_restore));
            assert_eq!(ints(&host_side.ids_keep), ints(&device_side.ids_keep));
            let floats = |t: &Tensor<B, 2>| t.to_data().iter::<f32>().collect::<Vec<_>>();
            assert_eq!(floats(&host_side.mask), floats(&device_side.mask));
        }
        assert!(host_masking::<B>(&noise[1..], n, l, 0.75, &device).is_err());
        assert!(host_masking::<B>(&noise, n, l, 1.0, &device).is_err());
    }
}
