//! BatchNorm1d with PyTorch's exact semantics.

use burn::module::{Param, RunningState};
use burn::prelude::*;

/// `nn.BatchNorm1d(C)` as PyTorch defines it, for `[N, C]` inputs.
///
/// Burn's own `BatchNorm` updates the running variance with the *biased* batch variance;
/// PyTorch uses the *unbiased* one, so checkpoints and eval-mode outputs would drift. This
/// module follows PyTorch: normalise with the biased batch variance in training, update
/// `running_var ← (1 − m)·running_var + m·var_unbiased`. Field names are the checkpoint's
/// (`weight`, `bias`, `running_mean`, `running_var`).
#[derive(Module, Debug)]
pub struct BatchNorm1d<B: Backend> {
    /// Scale (`gamma`), initialised to 1.
    pub weight: Param<Tensor<B, 1>>,
    /// Shift (`beta`), initialised to 0.
    pub bias: Param<Tensor<B, 1>>,
    /// Running mean, initialised to 0.
    pub running_mean: RunningState<Tensor<B, 1>>,
    /// Running (unbiased) variance, initialised to 1.
    pub running_var: RunningState<Tensor<B, 1>>,
    /// Added to the variance before the square root.
    pub eps: f64,
    /// Weight of the new batch statistic in the running averages.
    pub momentum: f64,
}

impl<B: Backend> BatchNorm1d<B> {
    pub(crate) fn new(features: usize, eps: f64, momentum: f64, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([features], device)),
            bias: Param::from_tensor(Tensor::zeros([features], device)),
            running_mean: RunningState::new(Tensor::zeros([features], device)),
            running_var: RunningState::new(Tensor::ones([features], device)),
            eps,
            momentum,
        }
    }

    /// Normalises with batch statistics (`training`, which also updates the running
    /// statistics) or with the running statistics. Training needs at least 2 samples, as in
    /// PyTorch; callers check that.
    ///
    /// # Shapes
    /// - x: `[N, C]`
    /// - output: `[N, C]`
    pub fn forward(&self, x: Tensor<B, 2>, training: bool) -> Tensor<B, 2> {
        let [n, c] = x.dims();
        let (mean, var) = if training {
            let mean = x.clone().mean_dim(0); // [1, C]
            let centered = x.clone() - mean.clone();
            let var = centered.powi_scalar(2).mean_dim(0); // [1, C], biased
            let m = self.momentum;
            let unbiased = var.clone().detach().mul_scalar(n as f64 / (n as f64 - 1.0));
            let new_mean = self.running_mean.value_sync().mul_scalar(1.0 - m)
                + mean.clone().detach().reshape([c]).mul_scalar(m);
            let new_var = self.running_var.value_sync().mul_scalar(1.0 - m)
                + unbiased.reshape([c]).mul_scalar(m);
            self.running_mean.update(new_mean);
            self.running_var.update(new_var);
            // Commit the update now: Burn's `RunningState` otherwise keeps it pending per
            // thread, and a module visitor (the state-dict export) would read the statistics
            // of one update ago.
            let _ = (
                self.running_mean.value_sync(),
                self.running_var.value_sync(),
            );
            (mean, var)
        } else {
            (
                self.running_mean.value_sync().reshape([1, c]),
                self.running_var.value_sync().reshape([1, c]),
            )
        };
        let x = (x - mean) / var.add_scalar(self.eps).sqrt();
        x * self.weight.val().reshape([1, c]) + self.bias.val().reshape([1, c])
    }

    /// The running mean, with any pending update applied.
    ///
    /// # Shapes
    /// - output: `[C]`
    pub fn running_mean(&self) -> Tensor<B, 1> {
        self.running_mean.value_sync()
    }

    /// The running (unbiased) variance, with any pending update applied.
    ///
    /// # Shapes
    /// - output: `[C]`
    pub fn running_var(&self) -> Tensor<B, 1> {
        self.running_var.value_sync()
    }
}
