//! The linear-probing recipe (`main_linprobe.py`'s arguments).

use serde::{Deserialize, Serialize};
use supmae_model::VitConfig;

use crate::config::DataSpec;
use crate::error::{Result, TrainError};
use crate::init::Init;
use crate::probe::LarsConfig;
use crate::schedule::scaled_lr;

/// The linear-probing recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinprobeConfig {
    /// The encoder (cls-token mode; `head_init_std` 0.01, drop path 0).
    pub model: VitConfig,
    /// The pre-trained checkpoint (random weights only as a baseline).
    pub init: Init,
    /// The data.
    pub data: DataSpec,
    /// Epochs (recipe: 90).
    pub epochs: usize,
    /// Warmup epochs (10).
    pub warmup_epochs: f64,
    /// Images per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per step.
    pub accum_iter: usize,
    /// Base learning rate (0.1): `lr = blr · batch · accum / 256`.
    pub blr: f64,
    /// Absolute learning rate (overrides `blr`).
    pub lr: Option<f64>,
    /// Final learning rate (0).
    pub min_lr: f64,
    /// LARS settings.
    pub lars: LarsConfig,
    /// Seed of the head, the data order and the crops.
    pub seed: u64,
    /// Data-loading threads (0 = all cores).
    pub data_threads: usize,
    /// Evaluate after every epoch.
    pub eval: bool,
    /// Data-parallel peers of the run (1: none); the lr scales with
    /// `batch_size · accum_iter · peers`.
    #[serde(default = "one")]
    pub peers: usize,
}

fn one() -> usize {
    1
}

impl LinprobeConfig {
    /// The official recipe for an encoder shaped like `model` on `data`: 90 epochs, warmup
    /// 10, blr 0.1, LARS (0.9, η 0.001, no weight decay), batch 512.
    pub fn recipe(model: VitConfig, init: Init, data: DataSpec) -> Self {
        Self {
            model: model
                .with_global_pool(false)
                .with_drop_path_rate(0.0)
                .with_head_init_std(0.01),
            init,
            data,
            epochs: 90,
            warmup_epochs: 10.0,
            batch_size: 512,
            accum_iter: 1,
            blr: 0.1,
            lr: None,
            min_lr: 0.0,
            lars: LarsConfig {
                weight_decay: 0.0,
                momentum: 0.9,
                trust_coefficient: 0.001,
            },
            seed: 0,
            data_threads: 0,
            eval: true,
            peers: 1,
        }
    }

    /// The recipe shortened for the Fashion-MNIST CPU model: 10 epochs, warmup 1, batch
    /// 256, blr 4.0. That is 390 LARS steps instead of the recipe's ~14,000; LARS moves each
    /// weight matrix by about lr x 0.001 of its norm per step, so the short run needs a
    /// larger lr (docs/decisions.md).
    pub fn fashion_mnist_cpu(self) -> Self {
        Self {
            epochs: 10,
            warmup_epochs: 1.0,
            batch_size: 256,
            blr: 4.0,
            ..self
        }
    }

    /// The peak learning rate.
    pub fn peak_lr(&self) -> f64 {
        self.lr
            .unwrap_or_else(|| scaled_lr(self.blr, self.batch_size * self.accum_iter * self.peers))
    }

    /// Checks the recipe.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: String| Err(TrainError::InvalidConfig { field, reason });
        self.model.validate()?;
        crate::config::check_limits(&crate::config::RunLimits {
            epochs: self.epochs,
            batch_size: self.batch_size,
            accum_iter: self.accum_iter,
            data_threads: self.data_threads,
            weight_decay: self.lars.weight_decay,
            warmup_epochs: self.warmup_epochs,
            min_lr: self.min_lr,
        })?;
        if self.model.global_pool {
            return bad(
                "model.global_pool",
                "linear probing uses the cls token (global_pool = false)".into(),
            );
        }
        if self.epochs == 0 || self.batch_size < 2 || self.accum_iter == 0 {
            return bad(
                "epochs",
                "epochs >= 1, batch_size >= 2 (BatchNorm), accum_iter >= 1".into(),
            );
        }
        if !(self.warmup_epochs >= 0.0 && self.warmup_epochs <= self.epochs as f64) {
            return bad("warmup_epochs", "must be in [0, epochs]".into());
        }
        let lr = self.peak_lr();
        if !(lr.is_finite() && lr > 0.0 && self.min_lr >= 0.0 && self.min_lr <= lr) {
            return bad("lr", format!("peak {lr}, min {}", self.min_lr));
        }
        let l = &self.lars;
        if !(l.weight_decay >= 0.0 && (0.0..1.0).contains(&l.momentum) && l.trust_coefficient > 0.0)
        {
            return bad("lars", format!("{l:?}"));
        }
        Ok(())
    }
}
