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
}
