//! Every fused kernel against the plain Burn ops it replaces, forward values and gradients,
//! on `Autodiff<Flex>` (the training path) and `Flex` (inference), on random shapes with odd
//! token counts and a single head.

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Param};
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use supmae_model::block::LN_EPS;
use supmae_model::kernels;

type Ad = Autodiff<Flex>;

fn max_abs_diff<const D: usize, B: Backend>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    let a = a.into_data().to_vec::<f32>().unwrap();
    let b = b.into_data().to_vec::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn max_abs<const D: usize, B: Backend>(a: Tensor<B, D>) -> f32 {
    a.into_data()
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .fold(0.0f32, |m, x| m.max(x.abs()))
}

/// Output and input gradient of `f` under the loss `sum(f(x) · w)`.
fn value_and_grad<const D: usize, const E: usize>(
    x: &Tensor<Ad, D>,
    w: &Tensor<Ad, E>,
    f: impl Fn(Tensor<Ad, D>) -> Tensor<Ad, E>,
) -> (Tensor<Flex, E>, Tensor<Flex, D>) {
    let x = x.clone().detach().require_grad();
    let y = f(x.clone());
    let grads = (y.clone() * w.clone()).sum().backward();
    (y.inner(), x.grad(&grads).expect("x has a gradient"))
}

fn random<B: Backend, const D: usize>(shape: [usize; D], scale: f64) -> Tensor<B, D> {
    Tensor::random(shape, Distribution::Normal(0.0, scale), &Default::default())
}

#[test]
fn fused_attention_matches_unfused_values_and_gradients() {
    <Ad as Backend>::seed(&Default::default(), 7);
    // (N, T, heads, head dim): odd token counts, one head, the main job's shapes.
    for (n, t, heads, hd) in [
        (3, 5, 1, 8),
        (2, 17, 4, 32),
        (4, 7, 3, 5),
        (1, 1, 2, 4),
        (5, 50, 2, 16),
    ] {
        let d = heads * hd;
        let qkv = random::<Ad, 3>([n, t, 3 * d], 1.0);
        let w = random::<Ad, 3>([n, t, d], 1.0);
        let (y_fused, g_fused) = value_and_grad(&qkv, &w, |x| kernels::attention(x, heads));
        let (y_ref, g_ref) = value_and_grad(&qkv, &w, |x| kernels::attention_unfused(x, heads));
        let scale_y = max_abs(y_ref.clone()).max(1.0);
        let scale_g = max_abs(g_ref.clone()).max(1.0);
        let dy = max_abs_diff(y_fused, y_ref);
        let dg = max_abs_diff(g_fused, g_ref);
        assert!(
            dy <= 1e-5 * scale_y,
            "[{n},{t},{heads}x{hd}] output differs by {dy}"
        );
        assert!(
            dg <= 1e-4 * scale_g,
            "[{n},{t},{heads}x{hd}] gradient differs by {dg}"
        );

        // Inference on the backend without autodiff.
        let plain = qkv.clone().inner();
        let dy = max_abs_diff(
            kernels::attention(plain.clone(), heads),
            kernels::attention_unfused(plain, heads),
        );
        assert!(dy <= 1e-5 * scale_y, "Flex inference differs by {dy}");
    }
}

#[test]
fn fused_attention_reads_a_strided_input() {
    // A qkv that is a non-contiguous view (a slice of a wider tensor) gives the same result.
    <Ad as Backend>::seed(&Default::default(), 8);
    let wide = random::<Flex, 3>([2, 9, 40], 1.0);
    let qkv = wide.narrow(2, 4, 24); // [2, 9, 24], rows 40 apart
    let dy = max_abs_diff(
        kernels::attention(qkv.clone(), 2),
        kernels::attention_unfused(qkv, 2),
    );
    assert!(dy <= 1e-5, "strided input differs by {dy}");
}

fn layer_norm<B: Backend>(d: usize) -> LayerNorm<B> {
    let device = Default::default();
    let mut norm = LayerNormConfig::new(d)
        .with_epsilon(LN_EPS)
        .init::<B>(&device);
    // Non-trivial affine parameters so their gradients and effect are checked.
    norm.gamma = Param::from_tensor(random::<B, 1>([d], 0.5).add_scalar(1.0));
    norm.beta = Some(Param::from_tensor(random::<B, 1>([d], 0.5)));
    norm
}

#[test]
fn fused_layer_norm_matches_unfused_values_and_gradients() {
    <Ad as Backend>::seed(&Default::default(), 9);
    for (rows, t, d) in [(3, 5, 96), (2, 17, 128), (4, 1, 7), (1, 3, 1), (300, 5, 64)] {
        let norm = layer_norm::<Ad>(d);
        // An offset and a spread like real activations.
        let x = random::<Ad, 3>([rows, t, d], 3.0).add_scalar(1.5);
        let w = random::<Ad, 3>([rows, t, d], 1.0);
        let run = |fused: bool| {
            let x = x.clone().detach().require_grad();
            let y = if fused {
                kernels::layer_norm(&norm, x.clone(), LN_EPS)
            } else {
                kernels::layer_norm_unfused(&norm, x.clone(), LN_EPS)
            };
            let grads = (y.clone() * w.clone()).sum().backward();
            let beta = norm.beta.as_ref().expect("beta");
            (
                y.inner(),
                x.grad(&grads).expect("dx"),
                norm.gamma.val().grad(&grads).expect("dgamma"),
                beta.val().grad(&grads).expect("dbeta"),
            )
        };
        let (y1, dx1, dg1, db1) = run(true);
        let (y0, dx0, dg0, db0) = run(false);
        let tol = |r: f32| 1e-5 * r.max(1.0);
        let checks = [
            ("y", max_abs_diff(y1, y0.clone()), tol(max_abs(y0))),
            (
                "dx",
                max_abs_diff(dx1, dx0.clone()),
                10.0 * tol(max_abs(dx0)),
            ),
            (
                "dgamma",
                max_abs_diff(dg1, dg0.clone()),
                10.0 * tol(max_abs(dg0)),
            ),
            (
                "dbeta",
                max_abs_diff(db1, db0.clone()),
                10.0 * tol(max_abs(db0)),
            ),
        ];
        for (name, diff, tol) in checks {
            assert!(
                diff <= tol,
                "[{rows},{t},{d}] {name} differs by {diff} (> {tol})"
            );
        }
        let plain = layer_norm::<Flex>(d);
        let xp = x.clone().inner();
        let dy = max_abs_diff(
            kernels::layer_norm(&plain, xp.clone(), LN_EPS),
            kernels::layer_norm_unfused(&plain, xp, LN_EPS),
        );
        assert!(dy <= 1e-5 * 4.0, "Flex inference differs by {dy}");
    }
}

#[test]
fn fused_gelu_matches_unfused_values_and_gradients() {
    <Ad as Backend>::seed(&Default::default(), 10);
    for shape in [[3, 5, 7], [2, 17, 512], [1, 1, 1], [70, 13, 41]] {
        let x = random::<Ad, 3>(shape, 3.0);
        let w = random::<Ad, 3>(shape, 1.0);
        let (y1, g1) = value_and_grad(&x, &w, kernels::gelu);
        let (y0, g0) = value_and_grad(&x, &w, kernels::gelu_unfused);
        // The fused erf is A&S 7.1.26 (|error| < 1.5e-7, as PyTorch's CPU kernel), Burn's is
        // libm's: GELU = x·Φ(x) may differ by |x|·0.75e-7 plus rounding.
        let tol = 1e-7 * max_abs(x.clone().inner()) + 1e-6;
        let dy = max_abs_diff(y1, y0);
        let dg = max_abs_diff(g1, g0);
        assert!(dy <= tol, "{shape:?}: gelu differs by {dy}");
        assert!(dg <= tol, "{shape:?}: gelu gradient differs by {dg}");
    }
    // Edge values: large magnitudes, zero, and the inference path.
    let x = Tensor::<Flex, 1>::from_floats(
        [-30.0, -8.0, -1.0, 0.0, 1e-8, 1.0, 8.0, 30.0],
        &Default::default(),
    );
    let dy = max_abs_diff(kernels::gelu(x.clone()), kernels::gelu_unfused(x));
    assert!(dy <= 4e-6, "edge values differ by {dy}");
    let nan = Tensor::<Flex, 1>::from_floats([f32::NAN], &Default::default());
    let out = kernels::gelu(nan).into_data().to_vec::<f32>().unwrap();
    assert!(
        out[0].is_nan(),
        "NaN must stay NaN (the training loop stops on it)"
    );
}

#[test]
fn fused_ops_are_bit_for_bit_reproducible() {
    <Ad as Backend>::seed(&Default::default(), 11);
    let qkv = random::<Ad, 3>([8, 17, 3 * 64], 1.0);
    let w = random::<Ad, 3>([8, 17, 64], 1.0);
    let norm = layer_norm::<Ad>(192);
    let run = || {
        let (y, g) = value_and_grad(&qkv, &w, |x| {
            let x = kernels::layer_norm(&norm, x, LN_EPS);
            kernels::gelu(kernels::attention(x, 4))
        });
        (y.into_data(), g.into_data())
    };
    let (y1, g1) = run();
    let (y2, g2) = run();
    assert_eq!(y1, y2);
    assert_eq!(g1, g2);
}

/// A random permutation of `0..l` per row (argsort of noise), as the masking draws it.
fn permutations(n: usize, l: usize) -> Tensor<Ad, 2, Int> {
    random::<Ad, 2>([n, l], 1.0).argsort(1)
}

#[test]
fn fused_visible_tokens_match_unfused_values_and_gradients() {
    <Ad as Backend>::seed(&Default::default(), 12);
    for (n, d, l, k) in [(3, 8, 16, 4), (2, 5, 9, 9), (4, 7, 13, 1), (1, 3, 1, 1)] {
        let patches = random::<Ad, 3>([n, d, l], 1.0);
        let pos = random::<Ad, 3>([1, l + 1, d], 1.0).require_grad();
        let cls = random::<Ad, 3>([1, 1, d], 1.0).require_grad();
        let ids_keep = permutations(n, l).narrow(1, 0, k);
        let w = random::<Ad, 3>([n, 1 + k, d], 1.0);
        let run = |fused: bool| {
            let x = patches.clone().detach().require_grad();
            let f = if fused {
                kernels::visible_tokens
            } else {
                kernels::visible_tokens_unfused
            };
            let y = f(x.clone(), pos.clone(), cls.clone(), ids_keep.clone());
            let grads = (y.clone() * w.clone()).sum().backward();
            let g = |t: &Tensor<Ad, 3>| t.grad(&grads).expect("gradient");
            (y.inner(), g(&x), g(&pos), g(&cls))
        };
        let (y1, dx1, dp1, dc1) = run(true);
        let (y0, dx0, dp0, dc0) = run(false);
        for (name, a, b) in [
            ("y", y1, y0),
            ("dpatches", dx1, dx0),
            ("dpos", dp1, dp0),
            ("dcls", dc1, dc0),
        ] {
            let diff = max_abs_diff(a, b);
            assert!(diff <= 1e-5, "[{n},{d},{l},{k}] {name} differs by {diff}");
        }
    }
}

#[test]
fn fused_decoder_tokens_match_unfused_values_and_gradients() {
    <Ad as Backend>::seed(&Default::default(), 13);
    for (n, d, l, k) in [(3, 8, 16, 4), (2, 5, 9, 9), (4, 7, 13, 1), (5, 16, 17, 4)] {
        let mask = random::<Ad, 3>([1, 1, d], 1.0).require_grad();
        let pos = random::<Ad, 3>([1, l + 1, d], 1.0).require_grad();
        let ids_restore = permutations(n, l);
        let embedded = random::<Ad, 3>([n, 1 + k, d], 1.0);
        let w = random::<Ad, 3>([n, 1 + l, d], 1.0);
        let run = |fused: bool| {
            let y = embedded.clone().detach().require_grad();
            let f = if fused {
                kernels::decoder_tokens
            } else {
                kernels::decoder_tokens_unfused
            };
            let out = f(y.clone(), mask.clone(), pos.clone(), ids_restore.clone());
            let grads = (out.clone() * w.clone()).sum().backward();
            let g = |t: &Tensor<Ad, 3>| t.grad(&grads).expect("gradient");
            let dmask = if k < l {
                Some(g(&mask))
            } else {
                mask.grad(&grads)
            };
            (out.inner(), g(&y), dmask, g(&pos))
        };
        let (o1, dy1, dm1, dp1) = run(true);
        let (o0, dy0, dm0, dp0) = run(false);
        for (name, a, b) in [("out", o1, o0), ("dy", dy1, dy0), ("dpos", dp1, dp0)] {
            let diff = max_abs_diff(a, b);
            assert!(diff <= 1e-5, "[{n},{d},{l},{k}] {name} differs by {diff}");
        }
        match (dm1, dm0) {
            (Some(a), Some(b)) => {
                let diff = max_abs_diff(a, b);
                assert!(diff <= 1e-5, "[{n},{d},{l},{k}] dmask differs by {diff}");
            }
            (a, b) => assert!(
                a.is_none_or(|a| max_abs(a) == 0.0) && b.is_none_or(|b| max_abs(b) == 0.0),
                "no mask token used, so no mask gradient"
            ),
        }
    }
}

#[test]
fn token_ops_fall_back_on_indices_they_cannot_fuse() {
    // Repeated indices in ids_restore are not a permutation: the generic path handles them.
    let dev = Default::default();
    let y = random::<Flex, 3>([1, 3, 4], 1.0);
    let mask = random::<Flex, 3>([1, 1, 4], 1.0);
    let pos = random::<Flex, 3>([1, 4, 4], 1.0);
    let ids = Tensor::<Flex, 2, Int>::from_ints([[0, 0, 2]], &dev);
    let a = kernels::decoder_tokens(y.clone(), mask.clone(), pos.clone(), ids.clone());
    let b = kernels::decoder_tokens_unfused(y, mask, pos, ids);
    assert_eq!(max_abs_diff(a, b), 0.0);
}

#[test]
fn fused_linear_matches_unfused_values_and_gradients() {
    use burn::nn::LinearConfig;
    <Ad as Backend>::seed(&Default::default(), 14);
    for (m, d_in, d_out) in [(5, 3, 7), (640, 96, 288), (1, 1, 1), (33, 17, 2)] {
        let layer = LinearConfig::new(d_in, d_out).init::<Ad>(&Default::default());
        let x = random::<Ad, 2>([m, d_in], 1.0);
        let w = random::<Ad, 2>([m, d_out], 1.0);
        let run = |fused: bool| {
            let x = x.clone().detach().require_grad();
            let y = if fused {
                kernels::linear(&layer, x.clone())
            } else {
                layer.forward(x.clone())
            };
            let grads = (y.clone() * w.clone()).sum().backward();
            let bias = layer.bias.as_ref().expect("bias");
            (
                y.inner(),
                x.grad(&grads).expect("dx"),
                layer.weight.val().grad(&grads).expect("dW"),
                bias.val().grad(&grads).expect("db"),
            )
        };
        let (y1, dx1, dw1, db1) = run(true);
        let (y0, dx0, dw0, db0) = run(false);
        let tol = |t: &Tensor<Flex, 2>| 1e-5 * max_abs(t.clone()).max(1.0);
        let (ty, tx, tw) = (tol(&y0), tol(&dx0), tol(&dw0));
        let tb = 1e-5 * max_abs(db0.clone()).max(1.0);
        assert!(max_abs_diff(y1, y0) <= ty, "[{m},{d_in},{d_out}] y");
        assert!(max_abs_diff(dx1, dx0) <= tx, "[{m},{d_in},{d_out}] dx");
        assert!(max_abs_diff(dw1, dw0) <= tw, "[{m},{d_in},{d_out}] dW");
        assert!(max_abs_diff(db1, db0) <= tb, "[{m},{d_in},{d_out}] db");
    }
}

#[test]
fn fused_patch_conv_matches_conv2d_values_and_gradients() {
    use burn::nn::conv::Conv2dConfig;
    <Ad as Backend>::seed(&Default::default(), 15);
    // (N, C, H, W, p, D): the main job's 28 px / 7 px greyscale, px32's RGB, a non-square
    // image, a single-pixel patch and a single image.
    for (n, c, h, w, p, d) in [
        (3, 1, 28, 28, 7, 96),
        (2, 3, 32, 32, 4, 19),
        (2, 3, 8, 12, 4, 5),
        (1, 2, 3, 3, 1, 4),
        (1, 3, 16, 16, 16, 8),
    ] {
        let conv = Conv2dConfig::new([c, d], [p, p])
            .with_stride([p, p])
            .init::<Ad>(&Default::default());
        let x = random::<Ad, 4>([n, c, h, w], 1.0);
        let wt = random::<Ad, 4>([n, d, h / p, w / p], 1.0);
        let run = |fused: bool| {
            let x = x.clone().detach().require_grad();
            let y = if fused {
                kernels::patch_conv(&conv, x.clone())
            } else {
                conv.forward(x.clone())
            };
            let grads = (y.clone() * wt.clone()).sum().backward();
            let bias = conv.bias.as_ref().expect("bias");
            (
                y.inner(),
                x.grad(&grads).expect("dx"),
                conv.weight.val().grad(&grads).expect("dW"),
                bias.val().grad(&grads).expect("db"),
            )
        };
        let (y1, dx1, dw1, db1) = run(true);
        let (y0, dx0, dw0, db0) = run(false);
        let tol4 = |t: &Tensor<Flex, 4>| 1e-5 * max_abs(t.clone()).max(1.0);
        let (ty, tx, tw) = (tol4(&y0), tol4(&dx0), tol4(&dw0));
        let tb = 1e-5 * max_abs(db0.clone()).max(1.0);
        let case = format!("[{n},{c},{h},{w}] p {p} d {d}");
        assert!(max_abs_diff(y1, y0) <= ty, "{case}: y");
        assert!(max_abs_diff(dx1, dx0) <= tx, "{case}: dx");
        assert!(max_abs_diff(dw1, dw0) <= tw, "{case}: dW");
        assert!(max_abs_diff(db1, db0) <= tb, "{case}: db");
        // Inference (plain Flex) gives the training path's values.
        let plain = kernels::patch_conv(&conv.valid(), x.clone().inner());
        assert!(
            max_abs_diff(plain, conv.valid().forward(x.clone().inner())) <= ty,
            "{case}: inference"
        );
    }
}

#[test]
fn patch_conv_falls_back_on_convolutions_it_cannot_fuse() {
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    <Ad as Backend>::seed(&Default::default(), 16);
    let x = random::<Flex, 4>([2, 3, 10, 10], 1.0);
    // Overlapping (stride < kernel), padded, and not dividing the image: each must equal
    // Conv2d exactly, since it is Conv2d.
    for conv in [
        Conv2dConfig::new([3, 4], [4, 4]).with_stride([2, 2]),
        Conv2dConfig::new([3, 4], [5, 5])
            .with_stride([5, 5])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)),
        Conv2dConfig::new([3, 4], [4, 4]).with_stride([4, 4]),
    ] {
        let conv = conv.init::<Flex>(&Default::default());
        let fused = kernels::patch_conv(&conv, x.clone());
        let plain = conv.forward(x.clone());
        assert_eq!(fused.dims(), plain.dims());
        assert_eq!(max_abs_diff(fused, plain), 0.0);
    }
}

/// What pulp's x86-64-v4 level needs (AVX-512 F, BW, CD, DQ, VL).
#[cfg(target_arch = "x86_64")]
fn has_v4() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512cd")
        && std::arch::is_x86_feature_detected!("avx512dq")
        && std::arch::is_x86_feature_detected!("avx512vl")
}

/// The row loops run on the instruction set the CI step asked for (`SUPMAE_SIMD`), so the
/// steps that run these tests with `avx2` and `baseline` really test those paths.
#[test]
fn the_kernels_run_on_the_instruction_set_asked_for() {
    let isa = kernels::cpu_isa();
    let asked = std::env::var("SUPMAE_SIMD").unwrap_or_default();
    #[cfg(target_arch = "x86_64")]
    let expected = match asked.as_str() {
        "baseline" => "baseline",
        _ if asked == "avx2" || !isa.avx512_built || !has_v4() => {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                "AVX2+FMA (x86-64-v3)"
            } else {
                "baseline"
            }
        }
        _ => "AVX-512 (x86-64-v4)",
    };
    #[cfg(not(target_arch = "x86_64"))]
    let expected = "baseline";
    assert_eq!(isa.kernels, expected, "SUPMAE_SIMD={asked:?}: {isa}");
}
