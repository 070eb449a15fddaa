//! Learners for SupMAE and MAE.
//!
//! [`Pretrainer`] runs the official pre-training recipe (spec §2.1): AdamW (0.9, 0.95) with
//! weight decay 0.05 on all but 1-D parameters and biases, `lr = blr · batch / 256`,
//! per-iteration linear warmup then half-cycle cosine, gradient accumulation, mask ratio
//! 0.75, norm-pix loss and `λ · CE(logits / T)`. A run folder holds `config.json`, a
//! `log.jsonl` with the official log's keys, and a `checkpoint.ckpt` replaced atomically,
//! from which [`Pretrainer::resume`] continues to the same parameters an uninterrupted run
//! reaches.
//!
//! [`Finetuner`] fine-tunes a [`supmae_model::VitClassifier`] from a pre-training checkpoint
//! (ours or an official `.pth`) with the official recipe (spec §2.3: layer-wise lr decay,
//! Mixup/CutMix, RandAugment, erasing, drop path); [`LinearProber`] trains a BatchNorm +
//! Linear probe on the frozen cls token with LARS (spec §2.4); [`load_classifier`] and
//! [`classifier::evaluate`] give top-1/top-5.

#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod checkpoint;
pub mod classifier;
pub mod config;
pub mod curves;
#[cfg(feature = "distributed")]
pub mod distributed;
pub mod engine;
pub mod error;
pub mod finetune;
pub mod init;
pub mod linprobe;
pub mod official;
pub mod open;
pub mod peers;
pub mod pretrain;
pub mod probe;
pub mod progress;
pub mod robustness;
pub mod run_dir;
pub mod schedule;

pub use classifier::{
    BatchReport, Classifier, ClassifierKind, ClassifierLog, ClassifierMeta, EvalReport,
    load_classifier,
};
pub use config::{DataSpec, PretrainConfig};
#[cfg(feature = "mpi")]
pub use distributed::MpiWorld;
#[cfg(feature = "distributed")]
pub use distributed::{DistributedConfig, Peer};
pub use error::{Result, TrainError};
pub use finetune::{FinetuneConfig, FinetuneDraws, Finetuner, MixDraw, MixupConfig};
pub use init::Init;
pub use linprobe::{LarsConfig, LinearProbe, LinearProber, LinprobeConfig};
pub use official::official_classifier;
pub use pretrain::{
    EpochLog, PretrainBatch, Pretrainer, load_data, load_pretrained, load_pretrained_bytes,
    transforms,
};
pub use progress::ProgressMode;
pub use run_dir::{Overwrite, RunDir};
pub use schedule::{LrSchedule, ParamGroups, scaled_lr, warmup_cosine_lr};
