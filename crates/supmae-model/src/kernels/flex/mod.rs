//! The fused kernels on Burn's `Flex` CPU backend and their autodiff nodes.
//!
//! Each op has a forward kernel, a backward kernel and a [`Backward`] impl that records the
//! op as one node of `Autodiff<Flex>`. The kernels work on the `f32` buffers of
//! [`FlexTensor`]s: matrix products go through Flex's own GEMM on strided views (no copy of
//! the per-head slices), everything element- and row-wise runs in fixed-size chunks across
//! rayon's threads. Chunk sizes never depend on the thread count, so results are bit-for-bit
//! the same with 1 or 64 threads.

use std::any::{Any, TypeId};

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::ops::{Backward, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::backend::BackendTypes;
use burn::tensor::{Bytes, DType, TensorPrimitive};
use burn_flex::{FlexTensor, Layout};
use rayon::prelude::*;

use super::fused_enabled;

type AdFlex = Autodiff<Flex>;
type AdPrim = <AdFlex as BackendTypes>::FloatTensorPrimitive;

/// Elements per parallel task of the element- and row-wise kernels.
const CHUNK: usize = 1 << 14;

// ---------------------------------------------------------------------------------------
// Routing: from a generic `Tensor<B, D>` to the Flex primitive and back.
// ---------------------------------------------------------------------------------------

/// Moves `value` into type `U` when `T` is `U`, or hands it back.
fn cast<T: 'static, U: 'static>(value: T) -> Result<U, T> {
    if TypeId::of::<T>() != TypeId::of::<U>() {
        return Err(value);
    }
    let mut slot = Some(value);
    let taken = (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<U>>()
        .and_then(Option::take);
    match (taken, slot) {
        (Some(u), _) => Ok(u),
        (None, Some(t)) => Err(t),
        (None, None) => unreachable!("the value is either moved out or still in its slot"),
    }
}

/// A float primitive of one of the two backends with fused kernels.
enum Prim {
    /// `Autodiff<Flex>`: the Flex tensor plus its autodiff node.
    Ad(AdPrim),
    /// `Flex` without autodiff.
    Plain(FlexTensor),
}

#[derive(Clone, Copy, PartialEq)]
enum Route {
    Ad,
    Plain,
}

fn route<B: Backend>() -> Option<Route> {
    if !fused_enabled() {
        None
    } else if TypeId::of::<B>() == TypeId::of::<AdFlex>() {
        Some(Route::Ad)
    } else if TypeId::of::<B>() == TypeId::of::<Flex>() {
        Some(Route::Plain)
    } else {
        None
    }
}

/// The primitive of an `f32` tensor on a fused backend, or the tensor back.
fn unwrap<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<Prim, Tensor<B, D>> {
    let Some(route) = route::<B>() else {
        return Err(x);
    };
    if x.dtype() != DType::F32 {
        return Err(x);
    }
    let p = x.into_primitive().tensor();
    let rewrap = |p| Tensor::from_primitive(TensorPrimitive::Float(p));
    match route {
        Route::Ad => cast::<B::FloatTensorPrimitive, AdPrim>(p)
            .map(Prim::Ad)
            .map_err(rewrap),
        Route::Plain => cast::<B::FloatTensorPrimitive, FlexTensor>(p)
            .map(Prim::Plain)
            .map_err(rewrap),
    }
}

/// The tensor of a primitive made by [`unwrap`] for the same `B`.
fn wrap<B: Backend, const D: usize>(p: Prim) -> Tensor<B, D> {
    let p = match p {
        Prim::Ad(p) => cast::<AdPrim, B::FloatTensorPrimitive>(p).ok(),
        Prim::Plain(p) => cast::<FlexTensor, B::FloatTensorPrimitive>(p).ok(),
    };
    match p {
        Some(p) => Tensor::from_primitive(TensorPrimitive::Float(p)),
        None => unreachable!("a primitive made by `unwrap` goes back to the same backend"),
    }
}

// ---------------------------------------------------------------------------------------
// Buffers and views.
// ---------------------------------------------------------------------------------------

/// The tensor with a row-major layout (a copy only when it is not).
fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.is_contiguous() {
        t
    } else {
        t.to_contiguous()
    }
}

/// The elements of a row-major tensor.
fn data(t: &FlexTensor) -> &[f32] {
    let start = t.layout().start_offset();
    &t.storage::<f32>()[start..start + t.layout().num_elements()]
}

/// The whole storage of an `f32` tensor, whatever its layout.
fn data_all(t: &FlexTensor) -> &[f32] {
    t.storage::<f32>()
}

fn dims<const D: usize>(t: &FlexTensor) -> [usize; D] {
    let shape = t.layout().shape();
    std::array::from_fn(|i| shape[i])
}

fn from_vec(values: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(values),
        Layout::contiguous(Shape::from(shape.to_vec())),
        DType::F32,
    )
}

/// A 2-D strided view of a tensor's storage from its start offset.
fn view2(t: &FlexTensor, shape: [usize; 2], strides: [usize; 2]) -> FlexTensor {
    FlexTensor::from_arc(
        t.data_arc(),
        Layout::new(
            Shape::from(shape.to_vec()),
            strides.iter().map(|&s| s as isize).collect(),
            t.layout().start_offset(),
        ),
        DType::F32,
    )
}

/// A strided view of a row-major tensor's elements, starting `offset` elements in.
fn view(base: &FlexTensor, shape: [usize; 4], strides: [usize; 4], offset: usize) -> FlexTensor {
    FlexTensor::from_arc(
        base.data_arc(),
        Layout::new(
            Shape::from(shape.to_vec()),
            strides.iter().map(|&s| s as isize).collect(),
            base.layout().start_offset() + offset,
        ),
        DType::F32,
    )
}

/// `out` as the result of `op` on `inputs`: one autodiff node that keeps `state` for its
/// backward pass when any input needs a gradient.
fn record<O: Backward<Flex, N>, const N: usize>(
    op: O,
    inputs: [&AdPrim; N],
    state: O::State,
    out: FlexTensor,
) -> AdPrim {
    match op
        .prepare::<NoCheckpointing>(inputs.map(|t| t.node.clone()))
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

/// The batched GEMM on strided views, read in place, into a fresh row-major output
/// (`product.rs`: Flex's own `gemm` call without its zero-fill-and-copy of the output).
fn matmul(lhs: FlexTensor, rhs: FlexTensor) -> FlexTensor {
    product::matmul(lhs, rhs)
}

/// Runs `f` on every row of length `len` of `values`, rows spread over the threads.
fn for_rows(values: &mut [f32], len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let rows_per_task = (CHUNK / len.max(1)).max(1);
    values
        .par_chunks_mut(rows_per_task * len)
        .enumerate()
        .for_each(|(task, chunk)| {
            simd(
                #[inline(always)]
                || {
                    for (i, row) in chunk.chunks_exact_mut(len).enumerate() {
                        f(task * rows_per_task + i, row);
                    }
                },
            )
        });
}

/// Runs `f` compiled for the best vector instructions this CPU has (AVX-512 on x86-64 v4
/// machines when built with the `avx512` feature, AVX2 on x86-64 v3 machines, the build's
/// baseline, SSE2, otherwise), picked at run time. The loops inside are vectorised wider but
/// not reordered or fused (Rust never contracts `a * b + c` into an FMA), so the results are
/// the same bits on every CPU.
#[inline(always)]
fn simd<R>(f: impl FnOnce() -> R) -> R {
    arch().dispatch(f)
}

/// The instruction set [`simd`] picks, detected once: the best this CPU has, or a lower
/// one named by `SUPMAE_SIMD` (`avx2`, `baseline`), so the tests can run every path the
/// machine can (and a user can compare them).
#[inline(always)]
fn arch() -> pulp::Arch {
    static ARCH: std::sync::OnceLock<pulp::Arch> = std::sync::OnceLock::new();
    *ARCH.get_or_init(|| match std::env::var("SUPMAE_SIMD").as_deref() {
        Ok("baseline") => pulp::Arch::Scalar,
        #[cfg(target_arch = "x86_64")]
        Ok("avx2") => pulp::x86::V3::try_new().map_or(pulp::Arch::Scalar, pulp::Arch::V3),
        _ => pulp::Arch::new(),
    })
}

/// The name of the instruction set [`simd`] picks on this CPU.
pub(super) fn isa_name() -> &'static str {
    #[allow(unreachable_patterns)] // which variants exist depends on the target and features
    match arch() {
        #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
        pulp::Arch::V4(_) => "AVX-512 (x86-64-v4)",
        #[cfg(target_arch = "x86_64")]
        pulp::Arch::V3(_) => "AVX2+FMA (x86-64-v3)",
        _ => "baseline",
    }
}

mod attention;
mod gelu;
mod layer_norm;
mod linear;
mod patch;
mod product;
mod tokens;

pub(super) use attention::attention;
pub(super) use gelu::gelu;
pub(super) use layer_norm::layer_norm;
pub(super) use linear::linear;
pub(super) use patch::patch_conv;
pub(super) use tokens::{decoder_tokens, visible_tokens};
