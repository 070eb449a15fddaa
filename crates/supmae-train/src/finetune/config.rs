//! The fine-tuning recipe and its presets.

use serde::{Deserialize, Serialize};
use supmae_data::{RandAugment, RandomErasing, Transform};
use supmae_model::VitConfig;

use super::MixupConfig;
use crate::config::DataSpec;
use crate::error::{Result, TrainError};
use crate::init::Init;
use crate::schedule::scaled_lr;

/// The fine-tuning recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneConfig {
    /// The classifier (`drop_path_rate`, pooling and head init live here).
    pub model: VitConfig,
    /// Where the weights start.
    pub init: Init,
    /// The data.
    pub data: DataSpec,
    /// Epochs.
    pub epochs: usize,
    /// Warmup epochs.
    pub warmup_epochs: f64,
    /// Images per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub accum_iter: usize,
    /// Base learning rate: `lr = blr · batch · accum / 256`.
    pub blr: f64,
    /// Absolute learning rate (overrides `blr`).
    pub lr: Option<f64>,
    /// Final learning rate of the cosine.
    pub min_lr: f64,
    /// AdamW weight decay (not on 1-D parameters, `pos_embed`, `cls_token`).
    pub weight_decay: f64,
    /// Layer-wise lr decay: `scale = decay^(depth + 1 − layer_id)`.
    pub layer_decay: f64,
    /// AdamW betas.
    pub betas: (f64, f64),
    /// AdamW epsilon.
    pub eps: f64,
    /// Mixup / CutMix / label smoothing.
    pub mixup: MixupConfig,
    /// timm RandAugment string (`None` = off).
    pub rand_augment: Option<String>,
    /// RandomErasing probability (0 = off).
    pub reprob: f64,
    /// Seed of the head, drop path, data order, augmentations and mixing.
    pub seed: u64,
    /// Data-loading threads (0 = all cores).
    pub data_threads: usize,
    /// Evaluate on the validation split after every epoch.
    pub eval: bool,
    /// Data-parallel peers of the run (1: none). Each loads `batch_size` images, so a step
    /// sees `batch_size · accum_iter · peers` and the lr scales with that.
    #[serde(default = "one")]
    pub peers: usize,
}

fn one() -> usize {
    1
}

impl FinetuneConfig {
    /// SupMAE's released recipe (FINETUNE.md) for `model`: 100 epochs, warmup 5, blr 1e-3,
    /// min lr 1e-6, weight decay 0.05, layer decay 0.65, AdamW (0.9, 0.999), Mixup 0.8 /
    /// CutMix 1.0 / smoothing 0.1, RandAugment `rand-m9-mstd0.5-inc1`, erasing 0.25, batch 32
    /// × accum 4 per device (the official run used 8 GPUs: effective batch 1024).
    pub fn recipe(model: VitConfig, init: Init, data: DataSpec) -> Self {
        Self {
            model,
            init,
            data,
            epochs: 100,
            warmup_epochs: 5.0,
            batch_size: 32,
            accum_iter: 4,
            blr: 1e-3,
            lr: None,
            min_lr: 1e-6,
            weight_decay: 0.05,
            layer_decay: 0.65,
            betas: (0.9, 0.999),
            eps: 1e-8,
            mixup: MixupConfig {
                mixup_alpha: 0.8,
                cutmix_alpha: 1.0,
                prob: 1.0,
                switch_prob: 0.5,
                smoothing: 0.1,
            },
            rand_augment: Some("rand-m9-mstd0.5-inc1".into()),
            reprob: 0.25,
            seed: 0,
            data_threads: 0,
            eval: true,
            peers: 1,
        }
    }

    /// The small CPU recipe for the Fashion-MNIST models of
    /// [`PretrainConfig::fashion_mnist_cpu`](crate::PretrainConfig::fashion_mnist_cpu):
    /// 10 epochs, batch 128, blr 4e-3 (lr 2e-3: small models want more than ViT-B's 1e-3),
    /// warmup 1, layer decay 0.75, drop path 0.1, label smoothing 0.1; Mixup/CutMix,
    /// RandAugment and erasing off (on 28 px images and few epochs they cost more accuracy
    /// than they buy).
    pub fn fashion_mnist_cpu(model: VitConfig, init: Init, data: DataSpec) -> Self {
        Self {
            epochs: 10,
            warmup_epochs: 1.0,
            batch_size: 128,
            accum_iter: 1,
            blr: 4e-3,
            layer_decay: 0.75,
            mixup: MixupConfig {
                mixup_alpha: 0.0,
                cutmix_alpha: 0.0,
                ..Self::recipe(model.clone(), init.clone(), data.clone()).mixup
            },
            rand_augment: None,
            reprob: 0.0,
            ..Self::recipe(model, init, data)
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
            weight_decay: self.weight_decay,
            warmup_epochs: self.warmup_epochs,
            min_lr: self.min_lr,
        })?;
        if self.epochs == 0 || self.batch_size == 0 || self.accum_iter == 0 {
            return bad(
                "epochs",
                "epochs, batch_size and accum_iter must be at least 1".into(),
            );
        }
        if !(self.warmup_epochs >= 0.0 && self.warmup_epochs <= self.epochs as f64) {
            return bad("warmup_epochs", "must be in [0, epochs]".into());
        }
        let lr = self.peak_lr();
        if !(lr.is_finite() && lr > 0.0 && self.min_lr >= 0.0 && self.min_lr <= lr) {
            return bad(
                "lr",
                format!(
                    "peak {lr} and min {} must satisfy 0 <= min <= peak",
                    self.min_lr
                ),
            );
        }
        if !(self.layer_decay > 0.0 && self.layer_decay <= 1.0) {
            return bad(
                "layer_decay",
                format!("({}) must be in (0, 1]", self.layer_decay),
            );
        }
        if !(self.weight_decay >= 0.0 && self.eps > 0.0) {
            return bad("weight_decay", "weight decay >= 0 and eps > 0".into());
        }
        let m = &self.mixup;
        if !(m.mixup_alpha >= 0.0
            && m.cutmix_alpha >= 0.0
            && (0.0..=1.0).contains(&m.prob)
            && (0.0..=1.0).contains(&m.switch_prob)
            && (0.0..1.0).contains(&m.smoothing))
        {
            return bad(
                "mixup",
                format!("{m:?}: alphas >= 0, probabilities in [0, 1]"),
            );
        }
        if let Some(ra) = &self.rand_augment {
            RandAugment::parse(ra, [0; 3])?;
        }
        RandomErasing::new(self.reprob).validate()?;
        Ok(())
    }

    pub(super) fn train_transform(&self) -> Transform {
        let size = self.model.img_size as u32;
        let fill = supmae_data::IMAGENET_MEAN.map(|m| (255.0 * m).round() as u8);
        Transform {
            rand_augment: self
                .rand_augment
                .as_deref()
                .and_then(|s| RandAugment::parse(s, fill).ok()),
            erasing: (self.reprob > 0.0).then(|| RandomErasing::new(self.reprob)),
            ..Transform::finetune(size)
        }
    }
}
