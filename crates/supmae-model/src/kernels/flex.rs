//! The fused kernels on Burn's `Flex` CPU backend and their autodiff nodes.
//!
//! Each op has a forward kernel, a backward kernel and a [`Backward`] impl that records the
//! op as one node of `Autodiff<Flex>`. The kernels work on the `f32` buffers of
//! [`FlexTensor`]s: matrix products go through Flex's own GEMM on strided views (no copy of
//! the per-head slices), everything element- and row-wise runs in fixed-size chunks across
//! rayon's threads. Chunk sizes never depend on the thread count, so results are bit-for-bit
//! the same with 1 or 64 threads.

use std::any::{Any, TypeId};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::nn::LayerNorm;
use burn::prelude::*;
use burn::tensor::backend::BackendTypes;
use burn::tensor::ops::FloatTensorOps;
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

/// Flex's batched GEMM, which reads strided views in place.
fn matmul(lhs: FlexTensor, rhs: FlexTensor) -> FlexTensor {
    <Flex as FloatTensorOps<Flex>>::float_matmul(lhs, rhs)
}

/// Runs `f` on every row of length `len` of `values`, rows spread over the threads.
fn for_rows(values: &mut [f32], len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let rows_per_task = (CHUNK / len.max(1)).max(1);
    values
        .par_chunks_mut(rows_per_task * len)
        .enumerate()
        .for_each(|(task, chunk)| {
            for (i, row) in chunk.chunks_exact_mut(len).enumerate() {
                f(task * rows_per_task + i, row);
            }
        });
}

// ---------------------------------------------------------------------------------------
// Attention.
// ---------------------------------------------------------------------------------------

/// Strides of head `h`'s `[T, hd]` slice of part `s` in a `[N, T, 3d]` qkv buffer.
struct QkvViews {
    n: usize,
    t: usize,
    d: usize,
    heads: usize,
    hd: usize,
}

impl QkvViews {
    fn new(qkv: &FlexTensor, heads: usize) -> Self {
        let [n, t, d3] = dims::<3>(qkv);
        let d = d3 / 3;
        Self {
            n,
            t,
            d,
            heads,
            hd: d / heads,
        }
    }

    fn scale(&self) -> f32 {
        (self.hd as f64).powf(-0.5) as f32
    }

    /// Part `s` as `[N, heads, T, hd]`.
    fn part(&self, qkv: &FlexTensor, s: usize) -> FlexTensor {
        let (t, d3, hd) = (self.t, 3 * self.d, self.hd);
        view(
            qkv,
            [self.n, self.heads, t, hd],
            [t * d3, hd, d3, 1],
            s * self.d,
        )
    }

    /// Part `s` transposed, `[N, heads, hd, T]`.
    fn part_t(&self, qkv: &FlexTensor, s: usize) -> FlexTensor {
        let (t, d3, hd) = (self.t, 3 * self.d, self.hd);
        view(
            qkv,
            [self.n, self.heads, hd, t],
            [t * d3, hd, 1, d3],
            s * self.d,
        )
    }

    /// A `[N, T, d]` buffer (heads merged) as `[N, heads, T, hd]`.
    fn heads_of(&self, merged: &FlexTensor) -> FlexTensor {
        let (t, d, hd) = (self.t, self.d, self.hd);
        view(merged, [self.n, self.heads, t, hd], [t * d, hd, d, 1], 0)
    }

    /// A `[N, heads, T, T]` buffer transposed in its last two dimensions.
    fn transposed(&self, probs: &FlexTensor) -> FlexTensor {
        let t = self.t;
        view(
            probs,
            [self.n, self.heads, t, t],
            [self.heads * t * t, t * t, 1, t],
            0,
        )
    }
}

/// Softmax of `scale · row` over every row of length `t`, in place.
fn softmax_rows(scores: &mut [f32], t: usize, scale: f32) {
    for_rows(scores, t, |_, row| {
        let mut max = f32::NEG_INFINITY;
        for x in row.iter_mut() {
            *x *= scale;
            max = max.max(*x);
        }
        let mut sum = 0.0f32;
        for x in row.iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        for x in row.iter_mut() {
            *x /= sum;
        }
    });
}

/// Turns `dP` into the gradient of the unscaled scores, in place:
/// `dS = (dP − Σ_j dP∘P) ∘ P · scale`.
fn softmax_backward_rows(grad: &mut [f32], probs: &[f32], t: usize, scale: f32) {
    for_rows(grad, t, |r, row| {
        let p = &probs[r * t..(r + 1) * t];
        let dot: f32 = row.iter().zip(p).map(|(g, p)| g * p).sum();
        for (g, p) in row.iter_mut().zip(p) {
            *g = (*g - dot) * p * scale;
        }
    });
}

/// `[N, heads, T, hd]` → `[N, T, heads·hd]`.
fn merge_heads(v: &QkvViews, per_head: &[f32]) -> Vec<f32> {
    let (t, d, hd, heads) = (v.t, v.d, v.hd, v.heads);
    let mut out = vec![0.0f32; v.n * t * d];
    out.par_chunks_mut(t * d).enumerate().for_each(|(n, out)| {
        for h in 0..heads {
            let src = &per_head[(n * heads + h) * t * hd..(n * heads + h + 1) * t * hd];
            for (i, row) in src.chunks_exact(hd).enumerate() {
                out[i * d + h * hd..i * d + (h + 1) * hd].copy_from_slice(row);
            }
        }
    });
    out
}

/// Forward pass; returns the merged output `[N, T, d]` and the probabilities
/// `[N, heads, T, T]` (what the backward pass needs besides `qkv`).
fn attention_forward(qkv: &FlexTensor, heads: usize) -> (FlexTensor, FlexTensor) {
    let v = QkvViews::new(qkv, heads);
    let mut probs = matmul(v.part(qkv, 0), v.part_t(qkv, 1)); // [N, heads, T, T]
    softmax_rows(probs.storage_mut::<f32>(), v.t, v.scale());
    let out = matmul(probs.clone(), v.part(qkv, 2)); // [N, heads, T, hd]
    let merged = merge_heads(&v, data(&out));
    (from_vec(merged, &[v.n, v.t, v.d]), probs)
}

/// Backward pass: the gradient of `qkv` from the output's gradient `grad` (`[N, T, d]`).
fn attention_backward(
    qkv: &FlexTensor,
    probs: &FlexTensor,
    grad: FlexTensor,
    heads: usize,
) -> FlexTensor {
    let v = QkvViews::new(qkv, heads);
    let grad = contiguous(grad);
    let d_out = v.heads_of(&grad); // [N, heads, T, hd]
    let d_v = matmul(v.transposed(probs), d_out.clone()); // Pᵀ·dO
    let mut d_s = matmul(d_out, v.part_t(qkv, 2)); // dP = dO·Vᵀ
    softmax_backward_rows(d_s.storage_mut::<f32>(), data(probs), v.t, v.scale());
    let d_q = matmul(d_s.clone(), v.part(qkv, 1)); // dS·K
    let d_k = matmul(v.transposed(&d_s), v.part(qkv, 0)); // dSᵀ·Q
    let (t, d, hd, heads) = (v.t, v.d, v.hd, v.heads);
    let parts = [data(&d_q), data(&d_k), data(&d_v)];
    let mut out = vec![0.0f32; v.n * t * 3 * d];
    out.par_chunks_mut(t * 3 * d)
        .enumerate()
        .for_each(|(n, out)| {
            for (s, part) in parts.iter().enumerate() {
                for h in 0..heads {
                    let src = &part[(n * heads + h) * t * hd..(n * heads + h + 1) * t * hd];
                    for (i, row) in src.chunks_exact(hd).enumerate() {
                        let at = i * 3 * d + s * d + h * hd;
                        out[at..at + hd].copy_from_slice(row);
                    }
                }
            }
        });
    from_vec(out, &[v.n, t, 3 * d])
}

#[derive(Debug)]
struct AttentionBackward;

impl Backward<Flex, 1> for AttentionBackward {
    /// The input `qkv`, the softmax probabilities and the number of heads.
    type State = (FlexTensor, FlexTensor, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (qkv, probs, heads) = ops.state;
        if let Some(parent) = parent {
            grads.register::<Flex>(parent.id, attention_backward(&qkv, &probs, grad, heads));
        }
    }
}

fn attention_ad(qkv: AdPrim, heads: usize) -> AdPrim {
    match AttentionBackward
        .prepare::<NoCheckpointing>([qkv.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let input = contiguous(qkv.primitive);
            let (out, probs) = attention_forward(&input, heads);
            prep.finish((input, probs, heads), out)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(attention_forward(&contiguous(qkv.primitive), heads).0)
        }
    }
}

/// The fused [`attention`](super::attention), or the input back on other backends.
pub(super) fn attention<B: Backend>(
    qkv: Tensor<B, 3>,
    heads: usize,
) -> Result<Tensor<B, 3>, Tensor<B, 3>> {
    let [_, _, d3] = qkv.dims();
    if heads == 0 || d3 % (3 * heads) != 0 {
        return Err(qkv);
    }
    Ok(wrap::<B, 3>(match unwrap(qkv)? {
        Prim::Ad(p) => Prim::Ad(attention_ad(p, heads)),
        Prim::Plain(p) => Prim::Plain(attention_forward(&contiguous(p), heads).0),
    }))
}

// ---------------------------------------------------------------------------------------
// LayerNorm.
// ---------------------------------------------------------------------------------------

/// Forward pass over rows of length `d`; returns `y` and, per row, `(mean, sqrt(var + eps))`.
///
/// The arithmetic is Burn's decomposition (and PyTorch's): centre, biased variance of the
/// centred values, divide by the square root, then scale and shift.
fn layer_norm_forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    d: usize,
    eps: f32,
) -> (Vec<f32>, Vec<f32>) {
    let rows = x.len() / d.max(1);
    let mut y = x.to_vec();
    let mut stats = vec![0.0f32; 2 * rows];
    let rows_per_task = (CHUNK / d.max(1)).max(1);
    y.par_chunks_mut(rows_per_task * d)
        .zip(stats.par_chunks_mut(rows_per_task * 2))
        .for_each(|(y, stats)| {
            for (row, stat) in y.chunks_exact_mut(d).zip(stats.chunks_exact_mut(2)) {
                let mean = row.iter().sum::<f32>() / d as f32;
                let mut var = 0.0f32;
                for x in row.iter_mut() {
                    *x -= mean;
                    var += *x * *x;
                }
                let denom = (var / d as f32 + eps).sqrt();
                for ((x, g), b) in row.iter_mut().zip(gamma).zip(beta) {
                    *x = *x / denom * g + b;
                }
                stat[0] = mean;
                stat[1] = denom;
            }
        });
    (y, stats)
}

/// Backward pass: `(dx, dγ, dβ)` from the output gradient `g`.
///
/// With `x̂ = (x − mean) / σ`: `dx = (g·γ − mean(g·γ) − x̂·mean(g·γ·x̂)) / σ`,
/// `dγ = Σ_rows g·x̂`, `dβ = Σ_rows g`; the row sums are taken per fixed chunk of rows and
/// the chunks added in order.
fn layer_norm_backward(
    x: &[f32],
    gamma: &[f32],
    stats: &[f32],
    g: &[f32],
    d: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut dx = vec![0.0f32; x.len()];
    let rows_per_task = (CHUNK / d.max(1)).max(1);
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(rows_per_task * d)
        .zip(x.par_chunks(rows_per_task * d))
        .zip(g.par_chunks(rows_per_task * d))
        .zip(stats.par_chunks(rows_per_task * 2))
        .map(|(((dx, x), g), stats)| {
            let mut d_gamma = vec![0.0f32; d];
            let mut d_beta = vec![0.0f32; d];
            let mut xhat = vec![0.0f32; d];
            let mut gg = vec![0.0f32; d];
            for (((dx, x), g), stat) in dx
                .chunks_exact_mut(d)
                .zip(x.chunks_exact(d))
                .zip(g.chunks_exact(d))
                .zip(stats.chunks_exact(2))
            {
                let (mean, denom) = (stat[0], stat[1]);
                let (mut sum_gg, mut sum_ggx) = (0.0f32, 0.0f32);
                for j in 0..d {
                    xhat[j] = (x[j] - mean) / denom;
                    gg[j] = g[j] * gamma[j];
                    sum_gg += gg[j];
                    sum_ggx += gg[j] * xhat[j];
                    d_gamma[j] += g[j] * xhat[j];
                    d_beta[j] += g[j];
                }
                let (mean_gg, mean_ggx) = (sum_gg / d as f32, sum_ggx / d as f32);
                for j in 0..d {
                    dx[j] = (gg[j] - mean_gg - xhat[j] * mean_ggx) / denom;
                }
            }
            (d_gamma, d_beta)
        })
        .collect();
    let mut d_gamma = vec![0.0f32; d];
    let mut d_beta = vec![0.0f32; d];
    for (pg, pb) in partials {
        for j in 0..d {
            d_gamma[j] += pg[j];
            d_beta[j] += pb[j];
        }
    }
    (dx, d_gamma, d_beta)
}

#[derive(Debug)]
struct LayerNormBackward;

impl Backward<Flex, 3> for LayerNormBackward {
    /// The input, γ and the per-row `(mean, σ)`.
    type State = (FlexTensor, FlexTensor, Vec<f32>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pg, pb] = ops.parents;
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let (x, gamma, stats) = ops.state;
        let shape = x.layout().shape().clone();
        let d = gamma.layout().num_elements();
        let (dx, d_gamma, d_beta) =
            layer_norm_backward(data(&x), data(&gamma), &stats, data(&grad), d);
        if let Some(px) = px {
            let dx = FlexTensor::new(Bytes::from_elems(dx), Layout::contiguous(shape), DType::F32);
            grads.register::<Flex>(px.id, dx);
        }
        if let Some(pg) = pg {
            grads.register::<Flex>(pg.id, from_vec(d_gamma, &[d]));
        }
        if let Some(pb) = pb {
            grads.register::<Flex>(pb.id, from_vec(d_beta, &[d]));
        }
    }
}

fn layer_norm_flex(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    eps: f32,
) -> (FlexTensor, Vec<f32>) {
    let d = gamma.layout().num_elements();
    let (y, stats) = layer_norm_forward(data(x), data(gamma), data(beta), d, eps);
    let y = FlexTensor::new(
        Bytes::from_elems(y),
        Layout::contiguous(x.layout().shape().clone()),
        DType::F32,
    );
    (y, stats)
}

fn layer_norm_ad(x: AdPrim, gamma: AdPrim, beta: AdPrim, eps: f32) -> AdPrim {
    match LayerNormBackward
        .prepare::<NoCheckpointing>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let input = contiguous(x.primitive);
            let gamma = contiguous(gamma.primitive);
            let (y, stats) = layer_norm_flex(&input, &gamma, &contiguous(beta.primitive), eps);
            prep.finish((input, gamma, stats), y)
        }
        OpsKind::UnTracked(prep) => {
            let input = contiguous(x.primitive);
            let (y, _) = layer_norm_flex(
                &input,
                &contiguous(gamma.primitive),
                &contiguous(beta.primitive),
                eps,
            );
            prep.finish(y)
        }
    }
}

/// The fused [`layer_norm`](super::layer_norm), or the input back on other backends.
pub(super) fn layer_norm<B: Backend, const D: usize>(
    norm: &LayerNorm<B>,
    x: Tensor<B, D>,
    eps: f64,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let Some(beta) = &norm.beta else {
        return Err(x);
    };
    let d = x.dims()[D - 1];
    if d == 0 || norm.gamma.dims() != [d] || route::<B>().is_none() {
        return Err(x);
    }
    let x = unwrap(x)?;
    let (Ok(gamma), Ok(beta)) = (unwrap(norm.gamma.val()), unwrap(beta.val())) else {
        return Err(wrap(x));
    };
    let eps = eps as f32;
    Ok(wrap::<B, D>(match (x, gamma, beta) {
        (Prim::Ad(x), Prim::Ad(g), Prim::Ad(b)) => Prim::Ad(layer_norm_ad(x, g, b, eps)),
        (Prim::Plain(x), Prim::Plain(g), Prim::Plain(b)) => {
            let x = contiguous(x);
            Prim::Plain(layer_norm_flex(&x, &contiguous(g), &contiguous(b), eps).0)
        }
        _ => unreachable!("one backend, one kind of primitive"),
    }))
}

// ---------------------------------------------------------------------------------------
// GELU.
// ---------------------------------------------------------------------------------------

const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// `Φ(x)` with Flex's own `erf`, as Flex's `gelu` computes it.
fn cdf(x: f32) -> f32 {
    0.5 * (1.0 + burn_flex::ops::unary::erf_f32(x / std::f32::consts::SQRT_2))
}

fn gelu_forward(x: &[f32]) -> Vec<f32> {
    let mut y = x.to_vec();
    y.par_chunks_mut(CHUNK).for_each(|chunk| {
        for v in chunk {
            *v = 0.5 * *v * (1.0 + burn_flex::ops::unary::erf_f32(*v / std::f32::consts::SQRT_2));
        }
    });
    y
}

fn gelu_backward(x: &[f32], g: &[f32]) -> Vec<f32> {
    let mut dx = g.to_vec();
    dx.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(dx, x)| {
            for (g, &x) in dx.iter_mut().zip(x) {
                let pdf = FRAC_1_SQRT_2PI * (-0.5 * x * x).exp();
                *g *= cdf(x) + x * pdf;
            }
        });
    dx
}

fn gelu_flex(x: &FlexTensor) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(gelu_forward(data(x))),
        Layout::contiguous(x.layout().shape().clone()),
        DType::F32,
    )
}

#[derive(Debug)]
struct GeluBackward;

impl Backward<Flex, 1> for GeluBackward {
    /// The input.
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let x = ops.state;
        if let Some(parent) = parent {
            let dx = FlexTensor::new(
                Bytes::from_elems(gelu_backward(data(&x), data(&grad))),
                Layout::contiguous(x.layout().shape().clone()),
                DType::F32,
            );
            grads.register::<Flex>(parent.id, dx);
        }
    }
}

fn gelu_ad(x: AdPrim) -> AdPrim {
    match GeluBackward
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let input = contiguous(x.primitive);
            let y = gelu_flex(&input);
            prep.finish(input, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(gelu_flex(&contiguous(x.primitive))),
    }
}

/// The fused [`gelu`](super::gelu), or the input back on other backends.
pub(super) fn gelu<B: Backend, const D: usize>(
    x: Tensor<B, D>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    Ok(wrap::<B, D>(match unwrap(x)? {
        Prim::Ad(p) => Prim::Ad(gelu_ad(p)),
        Prim::Plain(p) => Prim::Plain(gelu_flex(&contiguous(p))),
    }))
}
