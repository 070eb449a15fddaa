//! The SupMAE classification branch (spec §1.10).

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::block::{LinearInit, linear};
use crate::config::ClsHeadConfig;
use crate::kernels;
use crate::norm::BatchNorm1d;

/// `Linear(D → hidden) → BatchNorm1d(hidden) → ReLU → Linear(hidden → classes)`.
///
/// In the official checkpoints this is `nn.Sequential`, so the keys are `cls_head.0.*`
/// (`fc1`), `cls_head.1.*` (`bn`) and `cls_head.3.*` (`fc2`); the released SupMAE weights
/// call the whole branch `projection_head`. The checkpoint loader maps both.
#[derive(Module, Debug)]
pub struct ClsHead<B: Backend> {
    /// First linear layer (`cls_head.0`).
    pub fc1: Linear<B>,
    /// BatchNorm over the hidden features (`cls_head.1`).
    pub bn: BatchNorm1d<B>,
    /// Output layer (`cls_head.3`).
    pub fc2: Linear<B>,
}

impl<B: Backend> ClsHead<B> {
    pub(crate) fn new(dim: usize, cfg: &ClsHeadConfig, device: &B::Device) -> Self {
        Self {
            fc1: linear(dim, cfg.hidden, LinearInit::Xavier, device),
            bn: BatchNorm1d::new(cfg.hidden, cfg.bn_eps, cfg.bn_momentum, device),
            fc2: linear(cfg.hidden, cfg.num_classes, LinearInit::Xavier, device),
        }
    }

    /// Logits from pooled features. `training` selects BatchNorm batch statistics (and
    /// updates the running ones) versus running statistics.
    ///
    /// # Shapes
    /// - features: `[N, D]`
    /// - output: `[N, classes]`
    pub fn forward(&self, features: Tensor<B, 2>, training: bool) -> Tensor<B, 2> {
        let h = self
            .bn
            .forward(kernels::linear(&self.fc1, features), training);
        kernels::linear(&self.fc2, relu(h))
    }
}
