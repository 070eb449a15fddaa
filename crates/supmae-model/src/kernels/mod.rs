//! Fused operations with their own backward pass: multi-head attention on a fused qkv
//! projection, LayerNorm, exact GELU, `Linear` with its bias, the patch embedding's
//! convolution, and the token gathers around the masking.
//!
//! Every function here is generic over `B: Backend` and computes what the model computed with
//! plain Burn ops before, up to float rounding (the `*_unfused` functions, and
//! `Linear::forward` for [`linear`], are that code, kept as the reference and as the path of
//! every other backend). When the backend is Burn's CPU backend `Flex`, or `Autodiff<Flex>`
//! (Burn's default, no checkpointing), the call is routed at run time to a fused kernel that
//! reads its inputs in place, runs on every core, and registers one autodiff node whose
//! backward is written by hand, instead of the 5–40 small nodes (and their copies of
//! permuted views) that the generic ops record. GELU's fused `erf` is the
//! Abramowitz–Stegun approximation PyTorch's CPU kernel uses (within 4e-7 of the exact
//! normal CDF); the parity tests against PyTorch pass on both paths.
//!
//! `tests/kernels.rs` checks every fused op against its reference (values and gradients) on
//! random shapes, odd token counts and a single head included.
//!
//! The routing is a `TypeId` comparison plus a safe `Any` downcast of the tensor primitive,
//! so the public API stays `B: Backend` and a user's own backend needs no kernels. Set
//! `SUPMAE_FUSED=0` in the environment to force the generic path (to compare or debug).

use burn::nn::conv::Conv2d;
use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;
use burn::tensor::activation::softmax;

#[cfg(feature = "flex")]
mod flex;
mod isa;

pub use isa::{CpuIsa, cpu_isa};

/// Multi-head self-attention on a fused `[q | k | v]` projection, heads merged again.
///
/// Head `h` of part `s` (q, k, v) is feature `s·d + h·hd + e` of `qkv`, as in timm; the
/// scores are `(q·kᵀ)·hd^-0.5` (timm 0.3.2 scales the scores, not q), softmax over keys.
///
/// # Shapes
/// - qkv: `[N, T, 3d]`
/// - output: `[N, T, d]` (the input of the output projection)
pub fn attention<B: Backend>(qkv: Tensor<B, 3>, heads: usize) -> Tensor<B, 3> {
    #[cfg(feature = "flex")]
    let qkv = match flex::attention::<B>(qkv, heads) {
        Ok(out) => return out,
        Err(qkv) => qkv,
    };
    attention_unfused(qkv, heads)
}

/// [`attention`] with plain Burn ops (the path of every backend without a fused kernel).
///
/// # Shapes
/// - qkv: `[N, T, 3d]`
/// - output: `[N, T, d]`
pub fn attention_unfused<B: Backend>(qkv: Tensor<B, 3>, heads: usize) -> Tensor<B, 3> {
    let [n, t, d3] = qkv.dims();
    let d = d3 / 3;
    let hd = d / heads;
    let qkv = qkv.reshape([n, t, 3, heads, hd]).permute([2, 0, 3, 1, 4]); // [3, N, heads, T, hd]
    let part = |s: usize| qkv.clone().narrow(0, s, 1).reshape([n, heads, t, hd]);
    let (q, k, v) = (part(0), part(1), part(2));
    let scores = q
        .matmul(k.swap_dims(2, 3))
        .mul_scalar((hd as f64).powf(-0.5)); // [N, heads, T, T]
    softmax(scores, 3)
        .matmul(v) // [N, heads, T, hd]
        .swap_dims(1, 2) // [N, T, heads, hd]
        .reshape([n, t, d])
}

/// LayerNorm over the last dimension: `(x − mean) / sqrt(var + eps) · γ + β`, with the
/// biased variance, as `nn.LayerNorm`. `eps` must be the one `norm` was built with (Burn
/// keeps it private); every LayerNorm of this crate uses `block::LN_EPS`.
///
/// # Shapes
/// - x: `[..., d]` (any rank `D`)
/// - output: same as x
pub fn layer_norm<B: Backend, const D: usize>(
    norm: &LayerNorm<B>,
    x: Tensor<B, D>,
    eps: f64,
) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    let x = match flex::layer_norm::<B, D>(norm, x, eps) {
        Ok(out) => return out,
        Err(x) => x,
    };
    layer_norm_unfused(norm, x, eps)
}

/// [`layer_norm`] with Burn's own `LayerNorm::forward` (whose epsilon must be `eps`).
///
/// # Shapes
/// - x: `[..., d]`
/// - output: same as x
pub fn layer_norm_unfused<B: Backend, const D: usize>(
    norm: &LayerNorm<B>,
    x: Tensor<B, D>,
    _eps: f64,
) -> Tensor<B, D> {
    // Burn's `LayerNorm` carries the same epsilon; its backend op is what other backends fuse.
    norm.forward(x)
}

/// Exact (erf) GELU, `x · Φ(x)`, as `nn.GELU()`.
///
/// # Shapes
/// - x: any
/// - output: same as x
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    let x = match flex::gelu::<B, D>(x) {
        Ok(out) => return out,
        Err(x) => x,
    };
    gelu_unfused(x)
}

/// [`gelu`] with plain Burn ops: `x · (1 + erf(x / √2)) / 2`, in the order of Burn's own
/// `gelu`.
///
/// Written out through `erf` rather than calling Burn's `gelu`, because Burn 0.21's
/// `gelu_backward` for backends without a kernel of their own (wgpu, CUDA) is the derivative
/// of the *tanh approximation* (off by up to ~1e-3), while PyTorch's `nn.GELU()` is exact;
/// autodiff through `erf` gives the exact derivative on every backend.
///
/// # Shapes
/// - x: any
/// - output: same as x
pub fn gelu_unfused<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let cdf2 = x
        .clone()
        .div_scalar(std::f64::consts::SQRT_2)
        .erf()
        .add_scalar(1.0);
    (x * cdf2).div_scalar(2.0)
}

/// The patch embedding's convolution (kernel = stride = patch, no padding, a bias), as
/// `Conv2d::forward`. On Flex it is one GEMM over the gathered patches
/// (`flex/patch.rs`); any other convolution, and every other backend, runs `Conv2d`.
///
/// # Shapes
/// - images: `[N, C, H, W]`, `H` and `W` multiples of the patch size `p`
/// - output: `[N, D, H/p, W/p]`
pub fn patch_conv<B: Backend>(conv: &Conv2d<B>, images: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    let images = match flex::patch_conv::<B>(conv, images) {
        Ok(out) => return out,
        Err(images) => images,
    };
    conv.forward(images)
}

/// `x · W + b` of a `Linear` layer with a bias, as `Linear::forward`.
///
/// # Shapes
/// - x: `[M, d_in]`
/// - output: `[M, d_out]`
pub fn linear<B: Backend>(layer: &Linear<B>, x: Tensor<B, 2>) -> Tensor<B, 2> {
    #[cfg(feature = "flex")]
    let x = match flex::linear::<B>(layer, x) {
        Ok(out) => return out,
        Err(x) => x,
    };
    layer.forward(x)
}

/// Whether the fused kernels are switched on (`SUPMAE_FUSED` unset or not `0`).
pub fn fused_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("SUPMAE_FUSED").map_or(true, |v| v != "0"))
}

/// The encoder's input: the kept patch tokens plus their position embeddings, in the order
/// of `ids_keep`, after `cls + pos[0]`.
///
/// Reads the patch embedding channels-first, as the convolution writes it, so the
/// `[N, D, L] → [N, L, D]` transpose, the position add, the gather of the kept patches and
/// the concatenation with the cls token are one pass (and one pass back).
///
/// # Shapes
/// - patches: `[N, D, L]`
/// - pos: `[1, L + 1, D]` (row 0 belongs to the cls token)
/// - cls: `[1, 1, D]`
/// - ids_keep: `[N, K]`, values in `0..L`
/// - output: `[N, 1 + K, D]`
pub fn visible_tokens<B: Backend>(
    patches: Tensor<B, 3>,
    pos: Tensor<B, 3>,
    cls: Tensor<B, 3>,
    ids_keep: Tensor<B, 2, Int>,
) -> Tensor<B, 3> {
    #[cfg(feature = "flex")]
    let (patches, pos, cls, ids_keep) = match flex::visible_tokens(patches, pos, cls, ids_keep) {
        Ok(out) => return out,
        Err(inputs) => inputs,
    };
    visible_tokens_unfused(patches, pos, cls, ids_keep)
}

/// [`visible_tokens`] with plain Burn ops.
///
/// # Shapes
/// - patches: `[N, D, L]`, pos: `[1, L + 1, D]`, cls: `[1, 1, D]`, ids_keep: `[N, K]`
/// - output: `[N, 1 + K, D]`
pub fn visible_tokens_unfused<B: Backend>(
    patches: Tensor<B, 3>,
    pos: Tensor<B, 3>,
    cls: Tensor<B, 3>,
    ids_keep: Tensor<B, 2, Int>,
) -> Tensor<B, 3> {
    let [n, d, l] = patches.dims();
    let x = patches.swap_dims(1, 2) + pos.clone().narrow(1, 1, l); // [N, L, D]
    let index = ids_keep.unsqueeze_dim::<3>(2).repeat_dim(2, d); // [N, K, D]
    let x = x.gather(1, index); // [N, K, D]
    let cls = (cls + pos.narrow(1, 0, 1)).expand([n, 1, d]); // [N, 1, D]
    Tensor::cat(vec![cls, x], 1)
}

/// The decoder's input: the embedded visible tokens and mask tokens put back in raster
/// order, the embedded cls token in front, plus the position embeddings.
///
/// # Shapes
/// - embedded: `[N, 1 + K, Dd]` (cls, then the visible tokens in ascending-noise order)
/// - mask_token: `[1, 1, Dd]`
/// - pos: `[1, L + 1, Dd]`
/// - ids_restore: `[N, L]`, a permutation of `0..L` per row
/// - output: `[N, L + 1, Dd]`
pub fn decoder_tokens<B: Backend>(
    embedded: Tensor<B, 3>,
    mask_token: Tensor<B, 3>,
    pos: Tensor<B, 3>,
    ids_restore: Tensor<B, 2, Int>,
) -> Tensor<B, 3> {
    #[cfg(feature = "flex")]
    let (embedded, mask_token, pos, ids_restore) =
        match flex::decoder_tokens(embedded, mask_token, pos, ids_restore) {
            Ok(out) => return out,
            Err(inputs) => inputs,
        };
    decoder_tokens_unfused(embedded, mask_token, pos, ids_restore)
}

/// [`decoder_tokens`] with plain Burn ops (the official `forward_decoder` prologue).
///
/// # Shapes
/// - embedded: `[N, 1 + K, Dd]`, mask_token: `[1, 1, Dd]`, pos: `[1, L + 1, Dd]`,
///   ids_restore: `[N, L]`
/// - output: `[N, L + 1, Dd]`
pub fn decoder_tokens_unfused<B: Backend>(
    embedded: Tensor<B, 3>,
    mask_token: Tensor<B, 3>,
    pos: Tensor<B, 3>,
    ids_restore: Tensor<B, 2, Int>,
) -> Tensor<B, 3> {
    let [n, t, dd] = embedded.dims();
    let [_, l] = ids_restore.dims();
    let visible = embedded.clone().narrow(1, 1, t - 1); // [N, K, Dd]
    let z = if l + 1 > t {
        let masks = mask_token.expand([n, l + 1 - t, dd]); // [N, L - K, Dd]
        Tensor::cat(vec![visible, masks], 1) // [N, L, Dd]
    } else {
        visible
    };
    let index = ids_restore.unsqueeze_dim::<3>(2).repeat_dim(2, dd); // [N, L, Dd]
    let z = z.gather(1, index); // unshuffle: [N, L, Dd]
    let z = Tensor::cat(vec![embedded.narrow(1, 0, 1), z], 1); // [N, L + 1, Dd]
    z + pos
}
