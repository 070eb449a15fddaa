//! Patch embedding and the `patchify` / `unpatchify` pair (spec §1.2, §1.9).

use burn::module::{Initializer, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::*;

use crate::kernels;

/// `Conv2d(C → D, kernel = stride = patch)` followed by flatten + transpose, as timm's
/// `PatchEmbed` (checkpoint keys `patch_embed.proj.{weight,bias}`).
#[derive(Module, Debug)]
pub struct PatchEmbed<B: Backend> {
    /// The patchifying convolution.
    pub proj: Conv2d<B>,
}

/// How the patch-embedding weight is initialised.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PatchInit {
    /// MAE pre-training: xavier-uniform on the `(D, C·p²)` view, so the bound is
    /// `sqrt(6 / (C·p² + D))` (not Burn's conv fans).
    MaeXavier,
    /// PyTorch's `Conv2d` default (kaiming-uniform with `a = √5`): `U(±1/sqrt(C·p²))`.
    TorchDefault,
}

impl<B: Backend> PatchEmbed<B> {
    pub(crate) fn new(
        in_chans: usize,
        dim: usize,
        patch: usize,
        init: PatchInit,
        device: &B::Device,
    ) -> Self {
        let fan_in = (in_chans * patch * patch) as f64;
        let weight_bound = match init {
            PatchInit::MaeXavier => (6.0 / (fan_in + dim as f64)).sqrt(),
            PatchInit::TorchDefault => 1.0 / fan_in.sqrt(),
        };
        // The bias keeps PyTorch's Conv2d default in both cases (MAE never touches it).
        let bias_bound = 1.0 / fan_in.sqrt();
        let mut proj = Conv2dConfig::new([in_chans, dim], [patch, patch])
            .with_stride([patch, patch])
            .with_initializer(Initializer::Uniform {
                min: -weight_bound,
                max: weight_bound,
            })
            .init(device);
        proj.bias = Some(
            Initializer::Uniform {
                min: -bias_bound,
                max: bias_bound,
            }
            .init([dim], device),
        );
        Self { proj }
    }

    /// Embeds every patch.
    ///
    /// # Shapes
    /// - images: `[N, C, H, W]`
    /// - output: `[N, L, D]` with `L = (H/p)·(W/p)`, tokens in raster (row-major) order.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        let x = kernels::patch_conv(&self.proj, images); // [N, D, g, g]
        let [n, d, gh, gw] = x.dims();
        x.reshape([n, d, gh * gw]).swap_dims(1, 2) // [N, L, D]
    }
}

/// Cuts images into flattened patches in the official order.
///
/// The inner order of a patch is `(row-in-patch, col-in-patch, channel)`, channel fastest,
/// which differs from the conv-weight flattening. The official `patchify` hard-codes 3
/// channels; this one takes any channel count (identical for 3).
///
/// # Shapes
/// - images: `[N, C, H, W]` with `H = W = g·p`
/// - output: `[N, g², p²·C]`
pub fn patchify<B: Backend>(images: Tensor<B, 4>, patch: usize) -> Tensor<B, 3> {
    let [n, c, h, w] = images.dims();
    let (gh, gw) = (h / patch, w / patch);
    images
        .reshape([n, c, gh, patch, gw, patch]) // [N, C, gh, p, gw, p]
        .permute([0, 2, 4, 3, 5, 1]) // [N, gh, gw, p, p, C]
        .reshape([n, gh * gw, patch * patch * c])
}

/// The exact inverse of [`patchify`] for square images.
///
/// # Shapes
/// - patches: `[N, g², p²·C]`
/// - output: `[N, C, g·p, g·p]`
pub fn unpatchify<B: Backend>(patches: Tensor<B, 3>, patch: usize, chans: usize) -> Tensor<B, 4> {
    let [n, l, _] = patches.dims();
    let g = (l as f64).sqrt().round() as usize;
    patches
        .reshape([n, g, g, patch, patch, chans]) // [N, gh, gw, p, p, C]
        .permute([0, 5, 1, 3, 2, 4]) // [N, C, gh, p, gw, p]
        .reshape([n, chans, g * patch, g * patch])
}

/// A fresh `Param` drawn from `N(0, std²)`.
pub(crate) fn normal_param<B: Backend, const D: usize>(
    shape: [usize; D],
    std: f64,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    Initializer::Normal { mean: 0.0, std }.init(shape, device)
}

/// Checks that images are `[N >= 1, chans, size, size]`.
pub(crate) fn check_images(dims: [usize; 4], chans: usize, size: usize) -> crate::Result<()> {
    if dims[0] == 0 || dims[1..] != [chans, size, size] {
        return Err(crate::ModelError::Shape {
            name: "images",
            expected: format!("[N >= 1, {chans}, {size}, {size}]"),
            got: dims.to_vec(),
        });
    }
    Ok(())
}
