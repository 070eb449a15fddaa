//! Exact GELU (`x·Φ(x)`): forward, backward, autodiff node, and the vectorisable `exp`
//! and normal CDF it is built on.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::prelude::*;
use burn::tensor::{Bytes, DType};
use burn_flex::{FlexTensor, Layout};
use rayon::prelude::*;

use super::{AdPrim, CHUNK, Prim, contiguous, data, record, simd, unwrap, wrap};

const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// `e^x` in `f32`, written so the compiler vectorises loops over it (no libm call, no
/// branch): `x = n·ln 2 + r` with `|r| <= ln 2 / 2` (Cody–Waite split of ln 2), Cephes'
/// degree-6 polynomial for `e^r`, and `2^n` assembled in the exponent bits. Within 2 ulp of
/// `f32::exp` on `[-87, 88]`; below that it returns ~1e-38 instead of a subnormal or zero.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    let x = x.clamp(-87.3, 88.7);
    let k = x * std::f32::consts::LOG2_E + ROUND;
    let n = k - ROUND;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // The low mantissa bits of `k` hold n; shift n + 127 into the exponent field.
    let scale = f32::from_bits(k.to_bits().wrapping_add(127) << 23);
    e_r * scale
}

/// `(Φ(x), φ(x))`, the standard normal CDF and density, sharing one exponential.
///
/// `erf` is Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7; evaluated in `f32`,
/// `Φ` is within 4e-7), the rational approximation PyTorch's vectorised CPU `erf` (and so
/// `nn.GELU` on the CPU) uses.
#[inline(always)]
fn normal_cdf_pdf(x: f32) -> (f32, f32) {
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    let a = z.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152) * t + 1.421_413_8) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    let e = exp_f32(-(z * z)); // e^(-x²/2)
    let erf_abs = 1.0 - poly * e;
    let erf = if z < 0.0 { -erf_abs } else { erf_abs };
    (0.5 * (1.0 + erf), FRAC_1_SQRT_2PI * e)
}

fn gelu_forward(x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| {
            simd(
                #[inline(always)]
                || {
                    for (y, &x) in y.iter_mut().zip(x) {
                        *y = x * normal_cdf_pdf(x).0;
                    }
                },
            )
        });
    y
}

fn gelu_backward(x: &[f32], g: &[f32]) -> Vec<f32> {
    let mut dx = vec![0.0f32; g.len()];
    dx.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
        .for_each(|(dx, (x, g))| {
            simd(
                #[inline(always)]
                || {
                    for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(g) {
                        let (cdf, pdf) = normal_cdf_pdf(x);
                        *dx = g * (cdf + x * pdf);
                    }
                },
            )
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
    let input = contiguous(x.primitive.clone());
    let y = gelu_flex(&input);
    record(GeluBackward, [&x], input, y)
}

/// The fused [`gelu`](super::gelu), or the input back on other backends.
pub(in crate::kernels) fn gelu<B: Backend, const D: usize>(
    x: Tensor<B, D>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    Ok(wrap::<B, D>(match unwrap(x)? {
        Prim::Ad(p) => Prim::Ad(gelu_ad(p)),
        Prim::Plain(p) => Prim::Plain(gelu_flex(&contiguous(p))),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut worst = 0.0f64;
        for i in -87_000..=88_000 {
            let x = i as f32 * 1e-3 + 1.7e-4;
            let (ours, libm) = (exp_f32(x) as f64, (x as f64).exp());
            worst = worst.max(((ours - libm) / libm).abs());
        }
        assert!(worst < 2.5e-7, "relative error {worst}");
        assert!(exp_f32(-200.0) < 1e-37 && exp_f32(-200.0) >= 0.0);
        assert!(exp_f32(f32::NAN).is_nan() || exp_f32(f32::NAN) >= 0.0);
    }

    #[test]
    fn normal_cdf_and_pdf_are_within_the_erf_approximation_error() {
        for i in -10_000..=10_000 {
            let x = i as f32 * 1e-3;
            let (cdf, pdf) = normal_cdf_pdf(x);
            let xd = x as f64;
            // Φ(x) = (1 + erf(x/√2))/2 with a series erf exact to the digits compared here.
            let exact_cdf = 0.5 * (1.0 + erf_f64(xd / std::f64::consts::SQRT_2));
            let exact_pdf = (-0.5 * xd * xd).exp() / (2.0 * std::f64::consts::PI).sqrt();
            assert!(
                (cdf as f64 - exact_cdf).abs() < 4e-7,
                "cdf({x}) = {cdf}, {exact_cdf}"
            );
            assert!(
                (pdf as f64 - exact_pdf).abs() < 1e-7,
                "pdf({x}) = {pdf}, {exact_pdf}"
            );
        }
    }

    /// erf in f64 by its Maclaurin series (|x| < 3) or continued fraction (otherwise).
    fn erf_f64(x: f64) -> f64 {
        let a = x.abs();
        let v = if a < 3.0 {
            let (mut term, mut sum, mut n) = (a, a, 0.0f64);
            while term.abs() > 1e-17 * sum.abs() {
                n += 1.0;
                term *= -a * a / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc by Lentz's continued fraction.
            let mut f = 0.0f64;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (a + f);
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f)
        };
        v.copysign(x)
    }
}
