//! The fused kernels' matrix products: `gemm` (the crate Flex's own matmul calls) writing
//! straight into a buffer of ours.
//!
//! Flex's `float_matmul` allocates every output with `FlexTensor::empty`, which zero-fills a
//! byte vector and then copies it into a 16-byte-aligned one: a `memset` and a `memcpy` of
//! the whole output on the calling thread before the GEMM starts. For the products of small
//! models (px32's decoder: 8,320 x 512 outputs from K = 128) that serial traffic cost a third
//! of the product's time. Here the output is one zeroed `Vec<f32>` that becomes the
//! tensor's storage as it is (Burn's `Bytes::from_elems` keeps the vector), and `gemm` is
//! called with the same arguments, thread split and thresholds as Flex, so the results are
//! the same bits as Flex's matmul.
//!
//! This is the library's one `unsafe` block: `gemm::gemm` takes raw pointers and strides.
//! Every operand is checked first: its strides are non-negative and its farthest element
//! lies inside the slice the pointer comes from; the output is a fresh vector of exactly
//! `batch·m·n` elements that nothing else borrows. Anything else (negative strides,
//! broadcast batches, empty shapes, other ranks) goes to Flex's own matmul.

use burn::backend::Flex;
use burn::tensor::ops::FloatTensorOps;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::{data_all, from_vec};

/// Flex's rule for letting `gemm` split one product over the threads (`m·n·k` at least
/// 192³), kept so the thread split, and the bits, stay Flex's.
const PARALLEL_THRESHOLD: usize = 192 * 192 * 192;
/// Flex's rule for spreading a batch of small products over the threads instead.
const BATCH_PARALLEL_THRESHOLD: usize = 128 * 128 * 128;

/// `lhs · rhs` on the last two dimensions (`[.., M, K] · [.., K, N]`), batch dimensions
/// equal on both sides. Reads strided views in place.
pub(super) fn matmul(lhs: FlexTensor, rhs: FlexTensor) -> FlexTensor {
    match (Operand::of(&lhs), Operand::of(&rhs)) {
        (Some(a), Some(b)) if a.batch == b.batch && a.cols == b.rows => product(&a, &b),
        _ => <Flex as FloatTensorOps<Flex>>::float_matmul(lhs, rhs),
    }
}

/// One side of a product: a batch of strided matrices in a slice.
struct Operand<'a> {
    data: &'a [f32],
    /// Index of the first matrix's first element in `data`.
    start: usize,
    /// The batch dimensions (at most two; the rest of the shape is the matrix).
    batch: Vec<usize>,
    batch_strides: Vec<usize>,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Operand<'a> {
    /// The operand of an `f32` tensor of rank 2 to 4, or `None` when it cannot be read in
    /// place safely (a negative stride, an empty dimension, an element outside the storage).
    fn of(t: &'a FlexTensor) -> Option<Self> {
        let layout = t.layout();
        let shape = layout.shape();
        let rank = shape.num_dims();
        if !(2..=4).contains(&rank) || t.dtype() != burn::tensor::DType::F32 {
            return None;
        }
        let dims: Vec<usize> = (0..rank).map(|i| shape[i]).collect();
        let strides: Vec<usize> = layout
            .strides()
            .iter()
            .map(|&s| usize::try_from(s).ok())
            .collect::<Option<_>>()?;
        if dims.contains(&0) {
            return None;
        }
        let data = data_all(t);
        let start = layout.start_offset();
        // The farthest element any product can read: every index at its last value.
        let mut last = start;
        for (&d, &s) in dims.iter().zip(&strides) {
            last = last.checked_add((d - 1).checked_mul(s)?)?;
        }
        if last >= data.len() || isize::try_from(last).is_err() {
            return None;
        }
        Some(Self {
            data,
            start,
            batch: dims[..rank - 2].to_vec(),
            batch_strides: strides[..rank - 2].to_vec(),
            rows: dims[rank - 2],
            cols: dims[rank - 1],
            row_stride: strides[rank - 2],
            col_stride: strides[rank - 1],
        })
    }

    /// Index in `data` of matrix `b`'s first element (`b` counts the batch in row-major order).
    fn matrix_start(&self, mut b: usize) -> usize {
        let mut at = self.start;
        for (&d, &s) in self.batch.iter().zip(&self.batch_strides).rev() {
            at += (b % d) * s;
            b /= d;
        }
        at
    }
}

/// The product of two checked operands, as a new row-major tensor.
fn product(a: &Operand, b: &Operand) -> FlexTensor {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let batch: usize = a.batch.iter().product();
    let mut out = vec![0.0f32; batch * m * n];
    let ops = m.saturating_mul(n).saturating_mul(k);
    let one = |dst: &mut [f32], i: usize, split: bool| {
        gemm_one(dst, a, a.matrix_start(i), b, b.matrix_start(i), split)
    };
    if ops >= PARALLEL_THRESHOLD && !(batch >= 4 && batch * ops >= BATCH_PARALLEL_THRESHOLD) {
        for (i, dst) in out.chunks_exact_mut(m * n).enumerate() {
            one(dst, i, true);
        }
    } else if batch > 1 && batch * ops >= BATCH_PARALLEL_THRESHOLD {
        out.par_chunks_exact_mut(m * n)
            .enumerate()
            .for_each(|(i, dst)| one(dst, i, false));
    } else {
        for (i, dst) in out.chunks_exact_mut(m * n).enumerate() {
            one(dst, i, false);
        }
    }
    let mut shape = a.batch.clone();
    shape.extend([m, n]);
    from_vec(out, &shape)
}

/// `dst = lhs · rhs` for one matrix of each side, `dst` row-major `[m, n]`; `split` lets
/// `gemm` spread the product over rayon's threads.
fn gemm_one(dst: &mut [f32], a: &Operand, a_at: usize, b: &Operand, b_at: usize, split: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    // The bounds `gemm` relies on: checked here again, on the exact pointers it gets.
    let reach = |o: &Operand, at: usize| {
        at + (o.rows - 1) * o.row_stride + (o.cols - 1) * o.col_stride < o.data.len()
    };
    if dst.len() != m * n || !reach(a, a_at) || !reach(b, b_at) {
        unreachable!("operands are checked by `Operand::of`, the output sized by `product`");
    }
    let lhs = &a.data[a_at..];
    let rhs = &b.data[b_at..];
    let parallelism = if split {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    let stride = |s: usize| s as isize; // fits: every reachable index fits an isize
    #[allow(unsafe_code)]
    // SAFETY: `gemm` reads `lhs[i·rs + p·cs]` for i < m, p < k and `rhs[p·rs + j·cs]` for
    // p < k, j < n; `reach` proved the largest such index lies inside each slice (strides
    // are non-negative, so it is the largest). It writes `dst[i·n + j]` for i < m, j < n,
    // inside `dst`, which is exclusively borrowed and so overlaps neither input. With
    // `read_dst = false` it never reads `dst`. The slices outlive the call, and `gemm`
    // joins its threads before returning.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            stride(n),
            false,
            lhs.as_ptr(),
            stride(a.col_stride),
            stride(a.row_stride),
            rhs.as_ptr(),
            stride(b.col_stride),
            stride(b.row_stride),
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    };
}
