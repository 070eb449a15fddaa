//! Fused operations with their own backward pass: multi-head attention on a fused qkv
//! projection, LayerNorm and exact GELU.
//!
//! Every function here is generic over `B: Backend` and computes exactly what the model
//! computed with plain Burn ops before (the `*_unfused` functions are that code, kept as the
//! reference and as the path of every other backend). When the backend is Burn's CPU backend
//! `Flex`, or `Autodiff<Flex>` (Burn's default, no checkpointing), the call is routed at run
//! time to a fused kernel in [`flex`](self) that reads its inputs in place, runs on every
//! core, and registers one autodiff node whose backward is written by hand, instead of the
//! 10–40 small nodes (and their copies of permuted views) that the generic ops record.
//!
//! The routing is a `TypeId` comparison plus a safe `Any` downcast of the tensor primitive,
//! so the public API stays `B: Backend` and a user's own backend needs no kernels. Set
//! `SUPMAE_FUSED=0` in the environment to force the generic path (to compare or debug).

use burn::nn::LayerNorm;
use burn::prelude::*;
use burn::tensor::activation::{gelu as gelu_op, softmax};

#[cfg(feature = "flex")]
mod flex;

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
/// keeps it private); every LayerNorm of this crate uses [`LN_EPS`](crate::block::LN_EPS).
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
    gelu_op(x)
}

/// [`gelu`] with Burn's own op.
///
/// # Shapes
/// - x: any
/// - output: same as x
pub fn gelu_unfused<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    gelu_op(x)
}

/// Whether the fused kernels are switched on (`SUPMAE_FUSED` unset or not `0`).
pub fn fused_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("SUPMAE_FUSED").map_or(true, |v| v != "0"))
}
