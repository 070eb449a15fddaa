//! Multi-head attention on a fused qkv projection: forward, backward, autodiff node.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::prelude::*;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::{
    AdPrim, Prim, contiguous, data, dims, for_rows, from_vec, matmul, record, unwrap, view, wrap,
};

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
    for_rows(
        scores,
        t,
        #[inline(always)]
        |_, row| {
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
        },
    );
}

/// Turns `dP` into the gradient of the unscaled scores, in place:
/// `dS = (dP − Σ_j dP∘P) ∘ P · scale`.
fn softmax_backward_rows(grad: &mut [f32], probs: &[f32], t: usize, scale: f32) {
    for_rows(
        grad,
        t,
        #[inline(always)]
        |r, row| {
            let p = &probs[r * t..(r + 1) * t];
            let dot: f32 = row.iter().zip(p).map(|(g, p)| g * p).sum();
            for (g, p) in row.iter_mut().zip(p) {
                *g = (*g - dot) * p * scale;
            }
        },
    );
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
    let input = contiguous(qkv.primitive.clone());
    let (out, probs) = attention_forward(&input, heads);
    record(AttentionBackward, [&qkv], (input, probs, heads), out)
}

/// The fused [`attention`](super::attention), or the input back on other backends.
pub(in crate::kernels) fn attention<B: Backend>(
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
