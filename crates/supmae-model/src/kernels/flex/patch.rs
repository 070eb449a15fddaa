//! The patch embedding's convolution (kernel = stride = patch, no padding, with a bias) as
//! one GEMM over the images' patches, forward and backward.
//!
//! A convolution whose kernel equals its stride reads every pixel once, so it is a matrix
//! product: gather each patch into a row (`[N·L, C·p²]`, channel-major inside the patch as
//! the weight is laid out), multiply by the weight viewed as `[C·p², D]`, add the bias and
//! write channels-first (`[N, D, gh, gw]`, as `Conv2d` does). Backward is the same product
//! read the other ways, and the gather undone (a permutation, since patches do not overlap).
//! Flex's generic convolution does this through an `im2col` of strided iterators on one
//! thread; here each image is a parallel task and the product is one GEMM.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::DType;
use burn_flex::{FlexTensor, Layout};
use rayon::prelude::*;

use super::linear::column_sums;
use super::{Prim, contiguous, data, from_vec, matmul, record, route, unwrap, view2, wrap};

/// The sizes of one patch convolution.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    p: usize,
    d: usize,
}

impl Geometry {
    /// Patches per image.
    fn l(&self) -> usize {
        (self.h / self.p) * (self.w / self.p)
    }

    /// Values per patch.
    fn k(&self) -> usize {
        self.c * self.p * self.p
    }

    /// Calls `f(at, pixel)` for every value of one image's patch matrix: `at` is its index
    /// in the `[L, C·p²]` rows (patches in raster order, values as `c, u, v`), `pixel` its
    /// index in the `[C, H, W]` image.
    #[inline(always)]
    fn for_each_value(&self, mut f: impl FnMut(usize, usize)) {
        let (gw, p, k) = (self.w / self.p, self.p, self.k());
        for row in 0..self.l() {
            let (i, j) = (row / gw, row % gw);
            for ch in 0..self.c {
                for u in 0..p {
                    let pixel = (ch * self.h + i * p + u) * self.w + j * p;
                    let col = (ch * p + u) * p;
                    for v in 0..p {
                        f(row * k + col + v, pixel + v);
                    }
                }
            }
        }
    }
}

/// The images' patches as rows: `[N·L, C·p²]`.
fn patches(images: &[f32], g: Geometry) -> Vec<f32> {
    let (img, per) = (g.c * g.h * g.w, g.l() * g.k());
    let mut out = vec![0.0f32; g.n * per];
    out.par_chunks_mut(per)
        .zip(images.par_chunks(img))
        .for_each(|(rows, image)| g.for_each_value(|at, pixel| rows[at] = image[pixel]));
    out
}

/// The inverse of [`patches`]: rows of patch values back to `[N, C, H, W]`.
fn unpatch(rows: &[f32], g: Geometry) -> Vec<f32> {
    let (img, per) = (g.c * g.h * g.w, g.l() * g.k());
    let mut out = vec![0.0f32; g.n * img];
    out.par_chunks_mut(img)
        .zip(rows.par_chunks(per))
        .for_each(|(image, rows)| g.for_each_value(|at, pixel| image[pixel] = rows[at]));
    out
}

/// `[N·L, D]` token-major values to `[N, D, L]` channels-first, plus `bias[d]` when given.
fn channels_first(tokens: &[f32], g: Geometry, bias: Option<&[f32]>) -> Vec<f32> {
    let (l, d) = (g.l(), g.d);
    let mut out = vec![0.0f32; g.n * d * l];
    out.par_chunks_mut(d * l)
        .zip(tokens.par_chunks(l * d))
        .for_each(|(out, tokens)| {
            for (ch, plane) in out.chunks_exact_mut(l).enumerate() {
                let b = bias.map_or(0.0, |b| b[ch]);
                for (t, v) in plane.iter_mut().enumerate() {
                    *v = tokens[t * d + ch] + b;
                }
            }
        });
    out
}

/// `[N, D, L]` channels-first to `[N·L, D]` token-major.
fn tokens_first(planes: &[f32], g: Geometry) -> Vec<f32> {
    let (l, d) = (g.l(), g.d);
    let mut out = vec![0.0f32; g.n * l * d];
    out.par_chunks_mut(l * d)
        .zip(planes.par_chunks(d * l))
        .for_each(|(out, planes)| {
            for (t, row) in out.chunks_exact_mut(d).enumerate() {
                for (ch, v) in row.iter_mut().enumerate() {
                    *v = planes[ch * l + t];
                }
            }
        });
    out
}

/// Forward: the output `[N, D, gh, gw]` and the patch rows (kept for the weight gradient).
fn forward(
    images: &FlexTensor,
    weight: &FlexTensor,
    bias: &[f32],
    g: Geometry,
) -> (FlexTensor, FlexTensor) {
    let rows = from_vec(patches(data(images), g), &[g.n * g.l(), g.k()]);
    // The `[D, C, p, p]` weight read as the `[C·p², D]` right-hand side.
    let tokens = matmul(rows.clone(), view2(weight, [g.k(), g.d], [1, g.k()])); // [N·L, D]
    let out = channels_first(data(&tokens), g, Some(bias));
    let (gh, gw) = (g.h / g.p, g.w / g.p);
    (from_vec(out, &[g.n, g.d, gh, gw]), rows)
}

#[derive(Debug)]
struct PatchConvBackward;

impl Backward<Flex, 3> for PatchConvBackward {
    /// The patch rows, the weight and the sizes.
    type State = (FlexTensor, FlexTensor, Geometry);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pw, pb] = ops.parents;
        let grad = contiguous(grads.consume::<Flex>(&ops.node)); // [N, D, gh, gw]
        let (rows, weight, g) = ops.state;
        let tokens = from_vec(tokens_first(data(&grad), g), &[g.n * g.l(), g.d]); // [N·L, D]
        if let Some(pw) = pw {
            // dW = tokensᵀ · rows, [D, C·p²] = the weight's own layout.
            let t = view2(&tokens, [g.d, g.n * g.l()], [1, g.d]);
            let dw = contiguous(matmul(t, rows));
            grads.register::<Flex>(pw.id, reshape(dw, &[g.d, g.c, g.p, g.p]));
        }
        if let Some(pb) = pb {
            grads.register::<Flex>(pb.id, from_vec(column_sums(data(&tokens), g.d), &[g.d]));
        }
        if let Some(px) = px {
            // d(rows) = tokens · W, [N·L, C·p²], then back to pixels.
            let w = view2(&weight, [g.d, g.k()], [g.k(), 1]);
            let d_rows = contiguous(matmul(tokens, w));
            let dx = unpatch(data(&d_rows), g);
            grads.register::<Flex>(px.id, from_vec(dx, &[g.n, g.c, g.h, g.w]));
        }
    }
}

/// A row-major tensor with another shape of the same size.
fn reshape(t: FlexTensor, shape: &[usize]) -> FlexTensor {
    FlexTensor::from_arc(
        t.data_arc(),
        Layout::new(
            Shape::from(shape.to_vec()),
            row_major_strides(shape),
            t.layout().start_offset(),
        ),
        DType::F32,
    )
}

fn row_major_strides(shape: &[usize]) -> Vec<isize> {
    let mut strides = vec![1isize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1] as isize;
    }
    strides
}

/// The fused [`patch_conv`](crate::kernels::patch_conv), or the input back when the
/// convolution is not a plain patch embedding or the backend has no kernel.
pub(in crate::kernels) fn patch_conv<B: Backend>(
    conv: &Conv2d<B>,
    images: Tensor<B, 4>,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let Some(bias) = &conv.bias else {
        return Err(images);
    };
    let [n, c, h, w] = images.dims();
    let [d, wc, kh, kw] = conv.weight.dims();
    let p = kh;
    let plain = conv.stride == [p, p]
        && kw == p
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && matches!(
            conv.padding,
            PaddingConfig2d::Valid | PaddingConfig2d::Explicit(0, 0, 0, 0)
        );
    if !plain
        || p == 0
        || wc != c
        || h % p != 0
        || w % p != 0
        || n * h * w * c == 0
        || route::<B>().is_none()
    {
        return Err(images);
    }
    let g = Geometry { n, c, h, w, p, d };
    let x = unwrap(images)?;
    let (Ok(weight), Ok(bias)) = (unwrap(conv.weight.val()), unwrap(bias.val())) else {
        return Err(wrap(x));
    };
    Ok(wrap::<B, 4>(match (x, weight, bias) {
        (Prim::Ad(x), Prim::Ad(wt), Prim::Ad(b)) => {
            let wc = contiguous(wt.primitive.clone());
            let (y, rows) = forward(
                &contiguous(x.primitive.clone()),
                &wc,
                data(&contiguous(b.primitive.clone())),
                g,
            );
            Prim::Ad(record(PatchConvBackward, [&x, &wt, &b], (rows, wc, g), y))
        }
        (Prim::Plain(x), Prim::Plain(wt), Prim::Plain(b)) => {
            let (y, _) = forward(&contiguous(x), &contiguous(wt), data(&contiguous(b)), g);
            Prim::Plain(y)
        }
        _ => unreachable!("one backend, one kind of primitive"),
    }))
}
