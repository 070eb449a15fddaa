//! LayerNorm over the last dimension: forward, backward, autodiff node.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::prelude::*;
use burn::tensor::{Bytes, DType};
use burn_flex::{FlexTensor, Layout};
use rayon::prelude::*;

use burn::nn::LayerNorm;

use super::{AdPrim, CHUNK, Prim, contiguous, data, from_vec, record, route, simd, unwrap, wrap};

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
    // Each task copies its own rows in (the copy runs on every core, not before the loop).
    let mut y = vec![0.0f32; x.len()];
    let mut stats = vec![0.0f32; 2 * rows];
    let rows_per_task = (CHUNK / d.max(1)).max(1);
    y.par_chunks_mut(rows_per_task * d)
        .zip(x.par_chunks(rows_per_task * d))
        .zip(stats.par_chunks_mut(rows_per_task * 2))
        .for_each(|((y, x), stats)| {
            y.copy_from_slice(x);
            simd(
                #[inline(always)]
                || layer_norm_rows(y, stats, gamma, beta, d, eps),
            )
        });
    (y, stats)
}

/// [`layer_norm_forward`] on one task's rows.
#[inline(always)]
fn layer_norm_rows(
    y: &mut [f32],
    stats: &mut [f32],
    gamma: &[f32],
    beta: &[f32],
    d: usize,
    eps: f32,
) {
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
            simd(
                #[inline(always)]
                || {
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
                },
            )
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
    let input = contiguous(x.primitive.clone());
    let g = contiguous(gamma.primitive.clone());
    let (y, stats) = layer_norm_flex(&input, &g, &contiguous(beta.primitive.clone()), eps);
    record(LayerNormBackward, [&x, &gamma, &beta], (input, g, stats), y)
}

/// The fused [`layer_norm`](super::layer_norm), or the input back on other backends.
pub(in crate::kernels) fn layer_norm<B: Backend, const D: usize>(
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
