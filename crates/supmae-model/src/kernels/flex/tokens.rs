//! Gathering and scattering tokens around the masking: the encoder's visible tokens and the
//! decoder's unshuffled sequence, each one pass forward and one pass back.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::prelude::*;
use burn::tensor::DType;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::{Prim, contiguous, data, from_vec, record, route, unwrap, wrap};

/// Sizes and indices of one call; the indices were checked against the sizes.
#[derive(Debug, Clone)]
struct Indexing {
    n: usize,
    /// Token width.
    d: usize,
    /// Patches per image.
    l: usize,
    /// Kept patches per image.
    k: usize,
    /// `ids_keep` (`[N, K]`) or `ids_restore` (`[N, L]`), row-major.
    ids: Vec<usize>,
}

/// The values of an index tensor when every one is in `0..bound`.
fn indices<B: Backend>(ids: &Tensor<B, 2, Int>, bound: usize) -> Option<Vec<usize>> {
    let values = ids.to_data().convert::<i64>().to_vec::<i64>().ok()?;
    values
        .into_iter()
        .map(|v| usize::try_from(v).ok().filter(|&v| v < bound))
        .collect()
}

/// Whether every row of `ids` (rows of `l`) is a permutation of `0..l`.
fn rows_are_permutations(ids: &[usize], l: usize) -> bool {
    let mut seen = vec![false; l];
    ids.chunks_exact(l).all(|row| {
        seen.iter_mut().for_each(|s| *s = false);
        row.iter().all(|&i| !std::mem::replace(&mut seen[i], true))
    })
}

/// Whether all of `tensors` are `f32` tensors of a backend with fused kernels.
fn all_fusable<B: Backend>(tensors: &[&Tensor<B, 3>]) -> bool {
    route::<B>().is_some() && tensors.iter().all(|t| t.dtype() == DType::F32)
}

/// The primitive of a tensor that [`all_fusable`] accepted.
fn prim<B: Backend, const D: usize>(x: Tensor<B, D>) -> Prim {
    match unwrap(x) {
        Ok(p) => p,
        Err(_) => unreachable!("checked by all_fusable"),
    }
}

/// Adds `src` into `dst` element by element.
fn add_into(dst: &mut [f32], src: &[f32]) {
    for (a, b) in dst.iter_mut().zip(src) {
        *a += b;
    }
}

// ---------------------------------------------------------------------------------------
// Encoder: visible tokens.
// ---------------------------------------------------------------------------------------

/// `out[n, 0] = cls + pos[0]`, `out[n, 1 + k, j] = patches[n, j, id] + pos[1 + id, j]` with
/// `id = ids_keep[n, k]`.
fn visible_forward(ix: &Indexing, patches: &[f32], pos: &[f32], cls: &[f32]) -> Vec<f32> {
    let (d, l, k) = (ix.d, ix.l, ix.k);
    let mut out = vec![0.0f32; ix.n * (1 + k) * d];
    out.par_chunks_mut((1 + k) * d)
        .enumerate()
        .for_each(|(n, out)| {
            for j in 0..d {
                out[j] = cls[j] + pos[j];
            }
            let patches = &patches[n * d * l..(n + 1) * d * l];
            for (slot, &id) in ix.ids[n * k..(n + 1) * k].iter().enumerate() {
                let row = &mut out[(1 + slot) * d..(2 + slot) * d];
                let pos = &pos[(1 + id) * d..(2 + id) * d];
                for j in 0..d {
                    row[j] = patches[j * l + id] + pos[j];
                }
            }
        });
    out
}

#[derive(Debug)]
struct VisibleBackward;

impl Backward<Flex, 3> for VisibleBackward {
    type State = Indexing;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [p_patches, p_pos, p_cls] = ops.parents;
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let g = data(&grad); // [N, 1 + K, D]
        let ix = ops.state;
        let (d, l, k) = (ix.d, ix.l, ix.k);
        if let Some(parent) = p_patches {
            let mut dp = vec![0.0f32; ix.n * d * l];
            dp.par_chunks_mut(d * l).enumerate().for_each(|(n, dp)| {
                let g = &g[n * (1 + k) * d..(n + 1) * (1 + k) * d];
                for (slot, &id) in ix.ids[n * k..(n + 1) * k].iter().enumerate() {
                    for j in 0..d {
                        dp[j * l + id] += g[(1 + slot) * d + j];
                    }
                }
            });
            grads.register::<Flex>(parent.id, from_vec(dp, &[ix.n, d, l]));
        }
        let cls_sum = || {
            let mut sum = vec![0.0f32; d];
            for row in g.chunks_exact((1 + k) * d) {
                add_into(&mut sum, &row[..d]);
            }
            sum
        };
        if let Some(parent) = p_pos {
            let mut dpos = vec![0.0f32; (1 + l) * d];
            dpos[..d].copy_from_slice(&cls_sum());
            for (n, row) in g.chunks_exact((1 + k) * d).enumerate() {
                for (slot, &id) in ix.ids[n * k..(n + 1) * k].iter().enumerate() {
                    let src = &row[(1 + slot) * d..(2 + slot) * d];
                    add_into(&mut dpos[(1 + id) * d..(2 + id) * d], src);
                }
            }
            grads.register::<Flex>(parent.id, from_vec(dpos, &[1, 1 + l, d]));
        }
        if let Some(parent) = p_cls {
            grads.register::<Flex>(parent.id, from_vec(cls_sum(), &[1, 1, d]));
        }
    }
}

/// The fused [`visible_tokens`](crate::kernels::visible_tokens), or the inputs back.
#[allow(clippy::type_complexity)]
pub(in crate::kernels) fn visible_tokens<B: Backend>(
    patches: Tensor<B, 3>,
    pos: Tensor<B, 3>,
    cls: Tensor<B, 3>,
    ids_keep: Tensor<B, 2, Int>,
) -> Result<Tensor<B, 3>, (Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 2, Int>)> {
    let [n, d, l] = patches.dims();
    let [n_ids, k] = ids_keep.dims();
    let fits = pos.dims() == [1, l + 1, d] && cls.dims() == [1, 1, d] && n_ids == n;
    let ids = (fits && all_fusable(&[&patches, &pos, &cls]))
        .then(|| indices(&ids_keep, l))
        .flatten();
    let Some(ids) = ids else {
        return Err((patches, pos, cls, ids_keep));
    };
    let ix = Indexing { n, d, l, k, ids };
    let run = |patches: &FlexTensor, pos: &FlexTensor, cls: &FlexTensor| {
        let out = visible_forward(&ix, data(patches), data(pos), data(cls));
        from_vec(out, &[n, 1 + k, d])
    };
    Ok(wrap::<B, 3>(match (prim(patches), prim(pos), prim(cls)) {
        (Prim::Ad(patches), Prim::Ad(pos), Prim::Ad(cls)) => {
            let out = run(
                &contiguous(patches.primitive.clone()),
                &contiguous(pos.primitive.clone()),
                &contiguous(cls.primitive.clone()),
            );
            Prim::Ad(record(VisibleBackward, [&patches, &pos, &cls], ix, out))
        }
        (Prim::Plain(patches), Prim::Plain(pos), Prim::Plain(cls)) => Prim::Plain(run(
            &contiguous(patches),
            &contiguous(pos),
            &contiguous(cls),
        )),
        _ => unreachable!("one backend, one kind of primitive"),
    }))
}

// ---------------------------------------------------------------------------------------
// Decoder: unshuffled tokens with mask tokens.
// ---------------------------------------------------------------------------------------

/// `out[n, 0] = y[n, 0] + pos[0]`, `out[n, 1 + l] = (r < K ? y[n, 1 + r] : mask) + pos[1 + l]`
/// with `r = ids_restore[n, l]`.
fn decoder_forward(ix: &Indexing, y: &[f32], mask: &[f32], pos: &[f32]) -> Vec<f32> {
    let (d, l, k) = (ix.d, ix.l, ix.k);
    let mut out = vec![0.0f32; ix.n * (1 + l) * d];
    out.par_chunks_mut((1 + l) * d)
        .enumerate()
        .for_each(|(n, out)| {
            let y = &y[n * (1 + k) * d..(n + 1) * (1 + k) * d];
            for (t, row) in out.chunks_exact_mut(d).enumerate() {
                let src = match t {
                    0 => &y[..d],
                    _ => match ix.ids[n * l + t - 1] {
                        r if r < k => &y[(1 + r) * d..(2 + r) * d],
                        _ => mask,
                    },
                };
                for ((o, s), p) in row.iter_mut().zip(src).zip(&pos[t * d..(t + 1) * d]) {
                    *o = s + p;
                }
            }
        });
    out
}

#[derive(Debug)]
struct DecoderBackward;

impl Backward<Flex, 3> for DecoderBackward {
    type State = Indexing;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [p_y, p_mask, p_pos] = ops.parents;
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let g = data(&grad); // [N, L + 1, D]
        let ix = ops.state;
        let (d, l, k) = (ix.d, ix.l, ix.k);
        if let Some(parent) = p_y {
            let mut dy = vec![0.0f32; ix.n * (1 + k) * d];
            dy.par_chunks_mut((1 + k) * d)
                .enumerate()
                .for_each(|(n, dy)| {
                    let g = &g[n * (1 + l) * d..(n + 1) * (1 + l) * d];
                    dy[..d].copy_from_slice(&g[..d]);
                    for (t, &r) in ix.ids[n * l..(n + 1) * l].iter().enumerate() {
                        if r < k {
                            dy[(1 + r) * d..(2 + r) * d]
                                .copy_from_slice(&g[(1 + t) * d..(2 + t) * d]);
                        }
                    }
                });
            grads.register::<Flex>(parent.id, from_vec(dy, &[ix.n, 1 + k, d]));
        }
        if let Some(parent) = p_mask {
            let mut dmask = vec![0.0f32; d];
            for (n, g) in g.chunks_exact((1 + l) * d).enumerate() {
                for (t, &r) in ix.ids[n * l..(n + 1) * l].iter().enumerate() {
                    if r >= k {
                        add_into(&mut dmask, &g[(1 + t) * d..(2 + t) * d]);
                    }
                }
            }
            grads.register::<Flex>(parent.id, from_vec(dmask, &[1, 1, d]));
        }
        if let Some(parent) = p_pos {
            let mut dpos = vec![0.0f32; (1 + l) * d];
            for g in g.chunks_exact((1 + l) * d) {
                add_into(&mut dpos, g);
            }
            grads.register::<Flex>(parent.id, from_vec(dpos, &[1, 1 + l, d]));
        }
    }
}

/// The fused [`decoder_tokens`](crate::kernels::decoder_tokens), or the inputs back.
#[allow(clippy::type_complexity)]
pub(in crate::kernels) fn decoder_tokens<B: Backend>(
    embedded: Tensor<B, 3>,
    mask_token: Tensor<B, 3>,
    pos: Tensor<B, 3>,
    ids_restore: Tensor<B, 2, Int>,
) -> Result<Tensor<B, 3>, (Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 2, Int>)> {
    let [n, t, d] = embedded.dims();
    let [n_ids, l] = ids_restore.dims();
    let fits = t >= 1
        && t <= l + 1
        && n_ids == n
        && mask_token.dims() == [1, 1, d]
        && pos.dims() == [1, l + 1, d];
    let ids = (fits && all_fusable(&[&embedded, &mask_token, &pos]))
        .then(|| indices(&ids_restore, l))
        .flatten()
        .filter(|ids| rows_are_permutations(ids, l));
    let Some(ids) = ids else {
        return Err((embedded, mask_token, pos, ids_restore));
    };
    let ix = Indexing {
        n,
        d,
        l,
        k: t - 1,
        ids,
    };
    let run = |y: &FlexTensor, mask: &FlexTensor, pos: &FlexTensor| {
        let out = decoder_forward(&ix, data(y), data(mask), data(pos));
        from_vec(out, &[n, 1 + l, d])
    };
    Ok(wrap::<B, 3>(
        match (prim(embedded), prim(mask_token), prim(pos)) {
            (Prim::Ad(y), Prim::Ad(mask), Prim::Ad(pos)) => {
                let out = run(
                    &contiguous(y.primitive.clone()),
                    &contiguous(mask.primitive.clone()),
                    &contiguous(pos.primitive.clone()),
                );
                Prim::Ad(record(DecoderBackward, [&y, &mask, &pos], ix, out))
            }
            (Prim::Plain(y), Prim::Plain(mask), Prim::Plain(pos)) => {
                Prim::Plain(run(&contiguous(y), &contiguous(mask), &contiguous(pos)))
            }
            _ => unreachable!("one backend, one kind of primitive"),
        },
    ))
}
