//! Datasets and the input pipeline for SupMAE (ImageNet folders, Fashion-MNIST, transforms).
//!
//! This crate is at its start: it holds the normalisation constants every pipeline shares.
//! Loaders and augmentations land with the data issue.

#![warn(missing_docs)]

/// ImageNet per-channel mean (RGB), as used by the official recipes.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];

/// ImageNet per-channel standard deviation (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Fashion-MNIST pixel mean (single channel, on `[0, 1]` pixels).
pub const FASHION_MNIST_MEAN: f32 = 0.2860;

/// Fashion-MNIST pixel standard deviation.
pub const FASHION_MNIST_STD: f32 = 0.3530;

/// Normalises `[0, 1]` pixel values of one channel in place: `(x - mean) / std`.
pub fn normalize_channel(values: &mut [f32], mean: f32, std: f32) {
    let inv = 1.0 / std;
    for v in values {
        *v = (*v - mean) * inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_maps_the_mean_to_zero_and_one_std_to_one() {
        let mut v = [IMAGENET_MEAN[0], IMAGENET_MEAN[0] + IMAGENET_STD[0]];
        normalize_channel(&mut v, IMAGENET_MEAN[0], IMAGENET_STD[0]);
        assert!(v[0].abs() < 1e-7 && (v[1] - 1.0).abs() < 1e-6);
    }
}
