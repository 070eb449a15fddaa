//! The pre-norm transformer block of timm's ViT (spec §1.6), shared by encoder and decoder.

use burn::module::{Initializer, Param};
use burn::nn::{Gelu, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::Distribution;

use crate::kernels;

/// LayerNorm epsilon used everywhere in MAE (`partial(nn.LayerNorm, eps=1e-6)`).
pub const LN_EPS: f64 = 1e-6;

/// How `Linear` weights are initialised.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LinearInit {
    /// MAE pre-training: xavier-uniform on the whole weight (fused qkv included), zero bias.
    Xavier,
    /// timm `VisionTransformer`: truncated normal (std 0.02, cut at ±2 absolute, which is
    /// effectively a plain normal), zero bias.
    Normal002,
}

/// A `Linear(d_in → d_out)` with bias, initialised as `init` says.
pub(crate) fn linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    init: LinearInit,
    device: &B::Device,
) -> Linear<B> {
    let initializer = match init {
        LinearInit::Xavier => Initializer::XavierUniform { gain: 1.0 },
        LinearInit::Normal002 => Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        },
    };
    let mut layer = LinearConfig::new(d_in, d_out)
        .with_initializer(initializer)
        .init(device);
    // Burn initialises the bias with the weight's initializer; MAE and timm zero it.
    layer.bias = Some(Param::from_tensor(Tensor::zeros([d_out], device)));
    layer
}

/// A `Linear` over every token of `[N, T, d]` as one `[N·T, d] × [d, o]` product.
///
/// Burn's `Linear::forward` on a 3-D input broadcasts the weight over `N` and runs `N` small
/// products (and, backwards, `N` weight gradients that are then summed); one flat product
/// is the same arithmetic in one GEMM.
///
/// # Shapes
/// - x: `[N, T, d]`
/// - output: `[N, T, o]`
pub fn linear_tokens<B: Backend>(layer: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [n, t, d] = x.dims();
    let y = kernels::linear(layer, x.reshape([n * t, d]));
    let [_, o] = y.dims();
    y.reshape([n, t, o])
}

/// A LayerNorm with MAE's epsilon (weight 1, bias 0).
pub(crate) fn layer_norm<B: Backend>(dim: usize, device: &B::Device) -> LayerNorm<B> {
    LayerNormConfig::new(dim).with_epsilon(LN_EPS).init(device)
}

/// Multi-head self-attention with a fused `qkv` projection (timm `Attention`).
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Fused query/key/value projection `Linear(d → 3d)`; output feature
    /// `s·d + h·hd + e` is part `s` (q, k, v), head `h`, in-head index `e`.
    pub qkv: Linear<B>,
    /// Output projection `Linear(d → d)`.
    pub proj: Linear<B>,
    /// Number of heads.
    pub num_heads: usize,
}

impl<B: Backend> Attention<B> {
    /// Applies attention over all tokens (no mask).
    ///
    /// # Shapes
    /// - x: `[N, T, d]`
    /// - output: `[N, T, d]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let qkv = linear_tokens(&self.qkv, x); // [N, T, 3d]
        linear_tokens(&self.proj, kernels::attention(qkv, self.num_heads))
    }
}

/// The two-layer MLP with exact (erf) GELU (timm `Mlp`).
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `Linear(d → hidden)`.
    pub fc1: Linear<B>,
    /// Exact GELU (`nn.GELU()` default); the forward pass runs it through
    /// [`kernels::gelu`](crate::kernels::gelu()), which is this op fused on the CPU backend.
    pub act: Gelu,
    /// `Linear(hidden → d)`.
    pub fc2: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// # Shapes
    /// - x: `[N, T, d]`
    /// - output: `[N, T, d]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        linear_tokens(&self.fc2, kernels::gelu(linear_tokens(&self.fc1, x)))
    }
}

/// Pre-norm residual block: `x + DropPath(Attn(LN1(x)))`, then `x + DropPath(MLP(LN2(x)))`.
///
/// Field names mirror timm (`norm1`, `attn.qkv`, `attn.proj`, `norm2`, `mlp.fc1`,
/// `mlp.fc2`) so checkpoints map one to one.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// LayerNorm before attention.
    pub norm1: LayerNorm<B>,
    /// Self-attention.
    pub attn: Attention<B>,
    /// LayerNorm before the MLP.
    pub norm2: LayerNorm<B>,
    /// Feed-forward MLP.
    pub mlp: Mlp<B>,
    /// Stochastic-depth rate of both residual branches (0 in pre-training).
    pub drop_path: f64,
}

impl<B: Backend> Block<B> {
    pub(crate) fn new(
        dim: usize,
        heads: usize,
        mlp_hidden: usize,
        drop_path: f64,
        init: LinearInit,
        device: &B::Device,
    ) -> Self {
        Self {
            norm1: layer_norm(dim, device),
            attn: Attention {
                qkv: linear(dim, 3 * dim, init, device),
                proj: linear(dim, dim, init, device),
                num_heads: heads,
            },
            norm2: layer_norm(dim, device),
            mlp: Mlp {
                fc1: linear(dim, mlp_hidden, init, device),
                act: Gelu::new(),
                fc2: linear(mlp_hidden, dim, init, device),
            },
            drop_path,
        }
    }

    /// # Shapes
    /// - x: `[N, T, d]`
    /// - output: `[N, T, d]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let branch = self
            .attn
            .forward(kernels::layer_norm(&self.norm1, x.clone(), LN_EPS));
        let x = x + drop_path(branch, self.drop_path);
        let branch = self
            .mlp
            .forward(kernels::layer_norm(&self.norm2, x.clone(), LN_EPS));
        x + drop_path(branch, self.drop_path)
    }
}

/// Stochastic depth (timm `drop_path`): while training (on an autodiff backend), zeroes the
/// whole residual branch of a sample with probability `rate` and scales survivors by
/// `1 / (1 − rate)`. The identity otherwise. The masks come from the thread's stream when
/// one is set ([`crate::seeding::with_stream`]), else from the backend RNG.
///
/// # Shapes
/// - x: `[N, T, d]`
/// - output: `[N, T, d]`
pub fn drop_path<B: Backend>(x: Tensor<B, 3>, rate: f64) -> Tensor<B, 3> {
    if rate <= 0.0 || !B::ad_enabled(&x.device()) {
        return x;
    }
    let keep = 1.0 - rate;
    let [n, _, _] = x.dims();
    let mask = match crate::seeding::bernoulli(n, keep) {
        Some(draws) => Tensor::<B, 3>::from_data(TensorData::new(draws, [n, 1, 1]), &x.device()),
        None => Tensor::<B, 3>::random([n, 1, 1], Distribution::Bernoulli(keep), &x.device()),
    };
    x.div_scalar(keep) * mask
}
