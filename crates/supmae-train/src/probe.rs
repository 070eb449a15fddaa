//! The linear probe's model and optimizer: an affine-free BatchNorm and the frozen
//! encoder's head (`LinearProbe`), and LARS (`util/lars.py`).

use burn::module::{Module, RunningState};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use supmae_model::VitClassifier;

use crate::error::Result;

/// `BatchNorm1d(D, affine=False, eps=1e-6)` with PyTorch's running statistics (momentum
/// 0.1, unbiased running variance).
#[derive(Module, Debug)]
pub struct ProbeNorm<B: Backend> {
    /// Running mean, `[D]`.
    pub running_mean: RunningState<Tensor<B, 1>>,
    /// Running (unbiased) variance, `[D]`.
    pub running_var: RunningState<Tensor<B, 1>>,
}

/// The probe's BatchNorm epsilon.
pub const PROBE_BN_EPS: f64 = 1e-6;

impl<B: Backend> ProbeNorm<B> {
    /// Fresh statistics (mean 0, variance 1).
    pub fn new(features: usize, device: &B::Device) -> Self {
        Self {
            running_mean: RunningState::new(Tensor::zeros([features], device)),
            running_var: RunningState::new(Tensor::ones([features], device)),
        }
    }

    /// Normalises with batch statistics (`training`, updating the running ones) or the
    /// running statistics.
    ///
    /// # Shapes
    /// - x: `[N, D]` (N ≥ 2 when training)
    /// - output: `[N, D]`
    pub fn forward(&self, x: Tensor<B, 2>, training: bool) -> Tensor<B, 2> {
        match self.forward_with(x, training, 1, Ok) {
            Ok(y) => y,
            Err(_) => unreachable!("the identity reduction cannot fail"),
        }
    }

    /// [`forward`](Self::forward) with each batch statistic averaged over the `peers` of a
    /// data-parallel run by `mean` (every peer has an equal batch): the statistics of the
    /// global batch, so the peers' steps equal one process's on the combined batch
    /// (synchronised BatchNorm). The probe's encoder is frozen, so the statistics need no
    /// gradient through the other peers.
    ///
    /// # Shapes
    /// - x: `[N, D]` on each peer
    /// - output: `[N, D]`
    pub fn forward_with(
        &self,
        x: Tensor<B, 2>,
        training: bool,
        peers: usize,
        mean: impl Fn(Tensor<B, 1>) -> Result<Tensor<B, 1>>,
    ) -> Result<Tensor<B, 2>> {
        let [n, c] = x.dims();
        let (mu, var) = if training {
            let mu = mean(x.clone().mean_dim(0).reshape([c]))?.reshape([1, c]);
            let var = (x.clone() - mu.clone()).powi_scalar(2).mean_dim(0);
            let var = mean(var.reshape([c]))?.reshape([1, c]);
            let total = (n * peers) as f64;
            let unbiased = var
                .clone()
                .detach()
                .mul_scalar(total / (total - 1.0).max(1.0));
            let m = 0.1;
            self.running_mean.update(
                self.running_mean.value_sync().mul_scalar(1.0 - m)
                    + mu.clone().detach().reshape([c]).mul_scalar(m),
            );
            self.running_var.update(
                self.running_var.value_sync().mul_scalar(1.0 - m)
                    + unbiased.reshape([c]).mul_scalar(m),
            );
            // Commit now, so a module visitor reads these statistics (see
            // `supmae_model::BatchNorm1d`).
            let _ = (
                self.running_mean.value_sync(),
                self.running_var.value_sync(),
            );
            (mu, var)
        } else {
            (
                self.running_mean.value_sync().reshape([1, c]),
                self.running_var.value_sync().reshape([1, c]),
            )
        };
        Ok((x - mu) / var.add_scalar(PROBE_BN_EPS).sqrt())
    }
}

/// A linear probe: the frozen encoder (cls-token mode, its `head` is the probe's Linear)
/// and the affine-free BatchNorm in front of the head.
#[derive(Module, Debug)]
pub struct LinearProbe<B: Backend> {
    /// The encoder; only `encoder.head` is trained.
    pub encoder: VitClassifier<B>,
    /// BatchNorm without affine parameters.
    pub bn: ProbeNorm<B>,
}

impl<B: Backend> LinearProbe<B> {
    /// The probe's logits from frozen features.
    ///
    /// # Shapes
    /// - features: `[N, D]`
    /// - output: `[N, classes]`
    pub fn head(&self, features: Tensor<B, 2>, training: bool) -> Tensor<B, 2> {
        self.encoder
            .head
            .forward(self.bn.forward(features, training))
    }

    /// Class logits of images.
    ///
    /// # Shapes
    /// - images: `[N, C, H, W]`
    /// - output: `[N, classes]`
    pub fn forward(&self, images: Tensor<B, 4>, training: bool) -> Result<Tensor<B, 2>> {
        let features = self.encoder.embed(images)?;
        Ok(self.head(features, training))
    }
}

/// LARS hyper-parameters (`util/lars.py`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LarsConfig {
    /// Weight decay of tensors with more than one dimension (the recipe: 0).
    pub weight_decay: f64,
    /// Momentum (0.9).
    pub momentum: f64,
    /// Trust coefficient η (0.001).
    pub trust_coefficient: f64,
}

/// One LARS update of a parameter, exactly `util/lars.py`: for tensors with more than one
/// dimension, `g ← g + wd·p`, then `g ← g · q` with `q = η‖p‖/‖g‖` (1 when either norm is
/// 0); for 1-D tensors neither; then `μ ← momentum·μ + g` (μ starts at 0) and `p ← p − lr·μ`.
/// Returns `(p, μ)`.
pub fn lars_update<B: Backend, const D: usize>(
    param: Tensor<B, D>,
    grad: Tensor<B, D>,
    momentum_buf: Option<Tensor<B, D>>,
    lr: f64,
    cfg: &LarsConfig,
) -> (Tensor<B, D>, Tensor<B, D>) {
    let grad = if D > 1 {
        let g = grad + param.clone().mul_scalar(cfg.weight_decay);
        let norm = |t: Tensor<B, D>| -> f64 {
            t.powi_scalar(2)
                .sum()
                .into_data()
                .convert::<f64>()
                .to_vec::<f64>()
                .ok()
                .and_then(|v| v.first().copied())
                .unwrap_or(0.0)
                .sqrt()
        };
        let (p_norm, g_norm) = (norm(param.clone()), norm(g.clone()));
        let q = if p_norm > 0.0 && g_norm > 0.0 {
            cfg.trust_coefficient * p_norm / g_norm
        } else {
            1.0
        };
        g.mul_scalar(q)
    } else {
        grad
    };
    let mu = match momentum_buf {
        Some(mu) => mu.mul_scalar(cfg.momentum) + grad,
        None => grad,
    };
    (param - mu.clone().mul_scalar(lr), mu)
}

impl<B: Backend> supmae_model::checkpoint::BlockCounts<B> for LinearProbe<B> {
    fn block_counts(&self, record: &Self::Record) -> Vec<(&'static str, usize, usize)> {
        self.encoder.block_counts(&record.encoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn lars_step_equals_its_formula() {
        let dev = Default::default();
        let p = [[1.0f32, -2.0], [0.5, 3.0]];
        let g = [[0.1f32, 0.2], [-0.3, 0.4]];
        let cfg = LarsConfig {
            weight_decay: 0.05,
            momentum: 0.9,
            trust_coefficient: 0.001,
        };
        let t = |v: [[f32; 2]; 2]| Tensor::<Flex, 2>::from_data(v, &dev);
        let (p1, mu1) = lars_update(t(p), t(g), None, 0.5, &cfg);
        let (p2, _) = lars_update(p1.clone(), t(g), Some(mu1.clone()), 0.5, &cfg);
        // By hand in f64.
        let flat = |v: [[f32; 2]; 2]| v.iter().flatten().map(|&x| x as f64).collect::<Vec<_>>();
        let step = |p: &[f64], mu: Option<&[f64]>| {
            let d: Vec<f64> = p.iter().zip(flat(g)).map(|(p, g)| g + 0.05 * p).collect();
            let pn = p.iter().map(|x| x * x).sum::<f64>().sqrt();
            let dn = d.iter().map(|x| x * x).sum::<f64>().sqrt();
            let q = 0.001 * pn / dn;
            let mu: Vec<f64> = d
                .iter()
                .enumerate()
                .map(|(i, d)| mu.map_or(0.0, |m| 0.9 * m[i]) + d * q)
                .collect();
            let p: Vec<f64> = p.iter().zip(&mu).map(|(p, m)| p - 0.5 * m).collect();
            (p, mu)
        };
        let (want1, want_mu1) = step(&flat(p), None);
        let (want2, _) = step(&want1, Some(&want_mu1));
        let got = |t: Tensor<Flex, 2>| t.into_data().to_vec::<f32>().unwrap();
        for (a, b) in got(p1).iter().zip(&want1).chain(got(p2).iter().zip(&want2)) {
            assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
        }
        // 1-D: no weight decay and no trust scaling, plain momentum.
        let b = Tensor::<Flex, 1>::from_data([1.0f32, 2.0], &dev);
        let gb = Tensor::<Flex, 1>::from_data([0.5f32, -1.0], &dev);
        let (b1, _) = lars_update(b, gb, None, 0.1, &cfg);
        let b1 = b1.into_data().to_vec::<f32>().unwrap();
        assert!(
            (b1[0] - 0.95).abs() < 1e-6 && (b1[1] - 2.1).abs() < 1e-6,
            "{b1:?}"
        );
        // A zero parameter leaves the gradient unscaled (q = 1).
        let z = Tensor::<Flex, 2>::zeros([2, 2], &dev);
        let (z1, _) = lars_update(z, t(g), None, 1.0, &cfg);
        let z1 = z1.into_data().to_vec::<f32>().unwrap();
        assert!((z1[0] + 0.1).abs() < 1e-7 && (z1[3] + 0.4).abs() < 1e-7);
    }
}
