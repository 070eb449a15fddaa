//! The pre-training recipe: one serialisable struct, saved as `config.json` with every run.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use supmae_model::{ClsHeadConfig, MaeConfig};

use crate::error::{Result, TrainError};

/// Where the images come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataSpec {
    /// The Fashion-MNIST subset compiled into `supmae-data` (10,000 train / 2,000 val).
    EmbeddedFashionMnist,
    /// Full Fashion-MNIST from a folder of IDX files (default: Debian's package path).
    FashionMnist {
        /// The folder; `None` = `/usr/share/datasets/fashion-mnist`.
        path: Option<PathBuf>,
    },
    /// An ImageNet-style root (`train/` + `val/`) or a plain folder of class sub-folders
    /// (trained on, without validation).
    Folder {
        /// The root.
        path: PathBuf,
    },
}

impl DataSpec {
    /// Parses the command line's `--data`: `fashion-mnist[:path]`, `embedded`, or a folder.
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            None | Some("embedded") | Some("embedded-fashion-mnist") => Self::EmbeddedFashionMnist,
            Some("fashion-mnist") => Self::FashionMnist { path: None },
            Some(v) => match v.strip_prefix("fashion-mnist:") {
                Some(path) => Self::FashionMnist {
                    path: Some(PathBuf::from(path)),
                },
                None => Self::Folder {
                    path: PathBuf::from(v),
                },
            },
        }
    }

    /// Whether the images are 28x28 greyscale Fashion-MNIST.
    pub fn is_fashion_mnist(&self) -> bool {
        !matches!(self, Self::Folder { .. })
    }
}

/// Pre-training with the official recipe's knobs (spec §2.1), plus what a run needs to be
/// resumed exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainConfig {
    /// The model (MAE when `cls_head` is `None`).
    pub model: MaeConfig,
    /// The data.
    pub data: DataSpec,
    /// Epochs of the whole run (the schedule's length).
    pub epochs: usize,
    /// Linear warmup epochs.
    pub warmup_epochs: f64,
    /// Images per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step (the official README warns that BatchNorm in the
    /// classification branch makes accumulation differ from a larger batch).
    pub accum_iter: usize,
    /// Base learning rate; `lr = blr · batch_size · accum_iter · peers / 256` unless `lr` is
    /// set.
    pub blr: f64,
    /// Absolute learning rate, overriding the `blr` rule.
    pub lr: Option<f64>,
    /// Final learning rate of the cosine.
    pub min_lr: f64,
    /// AdamW weight decay of the decayed group.
    pub weight_decay: f64,
    /// AdamW `beta1`, `beta2`.
    pub betas: (f64, f64),
    /// AdamW epsilon.
    pub eps: f64,
    /// Share of patches removed.
    pub mask_ratio: f64,
    /// Seed of the weights, the data order, the augmentations and the masks.
    pub seed: u64,
    /// Write a checkpoint every this many epochs (and always after the last).
    pub checkpoint_every: usize,
    /// Data-loading threads (0 = all cores).
    pub data_threads: usize,
    /// Evaluate the classification branch on the validation split after every epoch.
    pub eval: bool,
    /// Data-parallel peers (devices across all nodes); every peer loads `batch_size`
    /// images per micro-batch, so a step sees `batch_size · accum_iter · peers` images.
    #[serde(default = "one")]
    pub peers: usize,
    /// Weights to start from instead of the random initialisation (continued
    /// pre-training, see `pretrain::load_continued`): a fresh schedule and
    /// optimizer, not a resume.
    #[serde(default)]
    pub init: Option<PathBuf>,
}

fn one() -> usize {
    1
}

impl PretrainConfig {
    /// The official SupMAE recipe (ViT-B/16 d1b, 400 epochs, warmup 20, blr 1.5e-4, AdamW
    /// (0.9, 0.95), weight decay 0.05, mask 0.75) on `data`, per-GPU batch 256.
    pub fn supmae_recipe(data: DataSpec) -> Self {
        Self {
            model: MaeConfig::supmae_vit_base_patch16_dec512d1b(),
            data,
            epochs: 400,
            warmup_epochs: 20.0,
            batch_size: 256,
            accum_iter: 1,
            blr: 1.5e-4,
            lr: None,
            min_lr: 0.0,
            weight_decay: 0.05,
            betas: (0.9, 0.95),
            eps: 1e-8,
            mask_ratio: 0.75,
            seed: 0,
            checkpoint_every: 50,
            data_threads: 0,
            eval: true,
            peers: 1,
            init: None,
        }
    }

    /// The small SupMAE that learns Fashion-MNIST on a CPU in minutes: 28 px greyscale,
    /// 7 px patches (16 per image, 4 visible at mask ratio 0.75), a 96-wide, 4-block encoder
    /// (3 heads), a 128-wide, 1-block decoder (4 heads), a 256-wide classification branch,
    /// 20 epochs at `blr` 2e-3 (lr 1e-3 at batch 128) with 2 warmup epochs: the README's
    /// main job on the embedded subset (its output is there).
    pub fn fashion_mnist_cpu() -> Self {
        let model = MaeConfig::new()
            .with_img_size(28)
            .with_patch_size(7)
            .with_in_chans(1)
            .with_embed_dim(96)
            .with_depth(4)
            .with_num_heads(3)
            .with_decoder_embed_dim(128)
            .with_decoder_depth(1)
            .with_decoder_num_heads(4)
            .with_cls_head(Some(
                ClsHeadConfig::new().with_num_classes(10).with_hidden(256),
            ));
        Self {
            model,
            data: DataSpec::EmbeddedFashionMnist,
            epochs: 20,
            warmup_epochs: 2.0,
            batch_size: 128,
            blr: 2e-3,
            checkpoint_every: 5,
            ..Self::supmae_recipe(DataSpec::EmbeddedFashionMnist)
        }
    }

    /// Images per optimizer step.
    pub fn effective_batch(&self) -> usize {
        self.batch_size * self.accum_iter * self.peers
    }

    /// The peak learning rate.
    pub fn peak_lr(&self) -> f64 {
        self.lr
            .unwrap_or_else(|| crate::schedule::scaled_lr(self.blr, self.effective_batch()))
    }

    /// Checks the recipe (the model config included).
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: String| Err(TrainError::InvalidConfig { field, reason });
        self.model.validate()?;
        check_limits(&RunLimits {
            epochs: self.epochs,
            batch_size: self.batch_size,
            accum_iter: self.accum_iter,
            data_threads: self.data_threads,
            weight_decay: self.weight_decay,
            warmup_epochs: self.warmup_epochs,
            min_lr: self.min_lr,
        })?;
        if self.epochs == 0 {
            return bad("epochs", "must be at least 1".into());
        }
        if self.peers == 0 {
            return bad("peers", "must be at least 1".into());
        }
        if self.batch_size == 0 || self.accum_iter == 0 {
            return bad(
                "batch_size",
                "batch size and accum_iter must be at least 1".into(),
            );
        }
        if self.model.cls_head.is_some() && self.batch_size < 2 {
            return bad(
                "batch_size",
                "SupMAE's BatchNorm needs at least 2 images per batch".into(),
            );
        }
        if !(self.warmup_epochs >= 0.0 && self.warmup_epochs <= self.epochs as f64) {
            return bad(
                "warmup_epochs",
                format!("({}) must be in [0, epochs]", self.warmup_epochs),
            );
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
        if !(self.weight_decay >= 0.0 && self.eps > 0.0) {
            return bad("weight_decay", "weight decay >= 0 and eps > 0".into());
        }
        let (b1, b2) = self.betas;
        if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
            return bad("betas", format!("{:?} must be in [0, 1)", self.betas));
        }
        supmae_model::masking::check_mask_ratio(self.model.num_patches(), self.mask_ratio)?;
        if self.checkpoint_every == 0 {
            return bad("checkpoint_every", "must be at least 1".into());
        }
        if self.data.is_fashion_mnist() && (self.model.in_chans != 1 && self.model.in_chans != 3) {
            return bad(
                "model.in_chans",
                "Fashion-MNIST needs 1 or 3 input channels".into(),
            );
        }
        Ok(())
    }
}

/// Most epochs a recipe may ask for.
pub const MAX_EPOCHS: usize = 100_000;
/// Largest micro-batch.
pub const MAX_BATCH_SIZE: usize = 1 << 20;
/// Most micro-batches per optimizer step.
pub const MAX_ACCUM_ITER: usize = 1 << 16;
/// Most data-loading threads.
pub const MAX_DATA_THREADS: usize = 1024;

/// The fields every learner's recipe shares, for [`check_limits`].
pub(crate) struct RunLimits {
    pub epochs: usize,
    pub batch_size: usize,
    pub accum_iter: usize,
    pub data_threads: usize,
    pub weight_decay: f64,
    pub warmup_epochs: f64,
    pub min_lr: f64,
}

/// Ranges shared by every recipe, checked before anything runs: counts within their
/// ceilings (a huge `epochs` or thread count is a typo, not a plan), floats finite.
pub(crate) fn check_limits(l: &RunLimits) -> Result<()> {
    let over = |field: &'static str, value: usize, max: usize| {
        (value > max).then(|| TrainError::InvalidConfig {
            field,
            reason: format!("({value}) is over the limit of {max}"),
        })
    };
    let counts = [
        over("epochs", l.epochs, MAX_EPOCHS),
        over("batch_size", l.batch_size, MAX_BATCH_SIZE),
        over("accum_iter", l.accum_iter, MAX_ACCUM_ITER),
        over("data_threads", l.data_threads, MAX_DATA_THREADS),
    ];
    if let Some(e) = counts.into_iter().flatten().next() {
        return Err(e);
    }
    for (field, v) in [
        ("weight_decay", l.weight_decay),
        ("warmup_epochs", l.warmup_epochs),
        ("min_lr", l.min_lr),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(TrainError::InvalidConfig {
                field,
                reason: format!("({v}) must be finite and >= 0"),
            });
        }
    }
    Ok(())
}
