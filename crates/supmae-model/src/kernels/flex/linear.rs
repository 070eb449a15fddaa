//! `Linear` on a matrix with its bias: GEMM plus a parallel bias pass, forward and backward.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::nn::Linear;
use burn::prelude::*;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::{
    CHUNK, Prim, contiguous, data, dims, for_rows, from_vec, matmul, record, route, unwrap, view2,
    wrap,
};

/// A `[rows, cols]` row-major matrix transposed, as a strided view.
fn transposed(m: &FlexTensor) -> FlexTensor {
    let [rows, cols] = dims::<2>(m);
    view2(m, [cols, rows], [1, cols])
}

/// `x · W + b`.
fn linear_forward(x: &FlexTensor, weight: &FlexTensor, bias: &[f32]) -> FlexTensor {
    let mut y = matmul(x.clone(), weight.clone()); // [M, out], fresh and row-major
    let out = bias.len();
    for_rows(
        y.storage_mut::<f32>(),
        out,
        #[inline(always)]
        |_, row| {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        },
    );
    y
}

/// Column sums of a `[rows, cols]` matrix, per fixed chunk of rows, chunks added in order.
pub(super) fn column_sums(g: &[f32], cols: usize) -> Vec<f32> {
    let rows_per_task = (CHUNK / cols.max(1)).max(1);
    let partials: Vec<Vec<f32>> = g
        .par_chunks(rows_per_task * cols)
        .map(|chunk| {
            let mut sum = vec![0.0f32; cols];
            for row in chunk.chunks_exact(cols) {
                for (s, v) in sum.iter_mut().zip(row) {
                    *s += v;
                }
            }
            sum
        })
        .collect();
    let mut sum = vec![0.0f32; cols];
    for p in partials {
        for (s, v) in sum.iter_mut().zip(&p) {
            *s += v;
        }
    }
    sum
}

#[derive(Debug)]
struct LinearBackward;

impl Backward<Flex, 3> for LinearBackward {
    /// The input and the weight.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pw, pb] = ops.parents;
        let grad = contiguous(grads.consume::<Flex>(&ops.node)); // [M, out]
        let (x, weight) = ops.state;
        if let Some(px) = px {
            grads.register::<Flex>(px.id, matmul(grad.clone(), transposed(&weight)));
        }
        if let Some(pw) = pw {
            grads.register::<Flex>(pw.id, matmul(transposed(&x), grad.clone()));
        }
        if let Some(pb) = pb {
            let [_, out] = dims::<2>(&grad);
            grads.register::<Flex>(pb.id, from_vec(column_sums(data(&grad), out), &[out]));
        }
    }
}

/// The fused [`linear`](crate::kernels::linear), or the input back on other backends.
pub(in crate::kernels) fn linear<B: Backend>(
    layer: &Linear<B>,
    x: Tensor<B, 2>,
) -> Result<Tensor<B, 2>, Tensor<B, 2>> {
    let Some(bias) = &layer.bias else {
        return Err(x);
    };
    let [_, d_in] = x.dims();
    let [w_in, d_out] = layer.weight.dims();
    if w_in != d_in || bias.dims() != [d_out] || route::<B>().is_none() {
        return Err(x);
    }
    let x = unwrap(x)?;
    let (Ok(weight), Ok(bias)) = (unwrap(layer.weight.val()), unwrap(bias.val())) else {
        return Err(wrap(x));
    };
    Ok(wrap::<B, 2>(match (x, weight, bias) {
        (Prim::Ad(x), Prim::Ad(w), Prim::Ad(b)) => {
            let (xc, wc) = (
                contiguous(x.primitive.clone()),
                contiguous(w.primitive.clone()),
            );
            let y = linear_forward(&xc, &wc, data(&contiguous(b.primitive.clone())));
            Prim::Ad(record(LinearBackward, [&x, &w, &b], (xc, wc), y))
        }
        (Prim::Plain(x), Prim::Plain(w), Prim::Plain(b)) => Prim::Plain(linear_forward(
            &contiguous(x),
            &contiguous(w),
            data(&contiguous(b)),
        )),
        _ => unreachable!("one backend, one kind of primitive"),
    }))
}
