//! Where a classifier's weights start (random, or a pre-training checkpoint), and building
//! it from there.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde::{Deserialize, Serialize};
use supmae_model::checkpoint::{LoadReport, StateDict, export_state_dict};
use supmae_model::{VitClassifier, VitConfig};

use crate::error::{Result, TrainError};
use crate::open::{Checkpoint, open};
use crate::pretrain::load_pretrained;

/// Where a classifier's weights start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Init {
    /// Random weights (supervised training from scratch).
    Scratch,
    /// A pre-training checkpoint: a run folder or `checkpoint.ckpt` of ours, or an official
    /// PyTorch `.pth` (SupMAE, MAE).
    Pretrained {
        /// The file or run folder.
        path: PathBuf,
    },
}

/// The encoder weights of a pre-training checkpoint as an official-key state dict.
pub fn pretrained_state<B: Backend>(path: &Path, device: &B::Device) -> Result<StateDict> {
    match open(path)? {
        (file, Checkpoint::Pretrain { .. }) => {
            let (model, _) = load_pretrained::<B>(&file, device)?;
            Ok(StateDict::from_entries(&file, export_state_dict(&model)))
        }
        (file, Checkpoint::Foreign) => Ok(StateDict::from_pytorch(&file)?),
        (file, Checkpoint::Classifier(_)) => Err(TrainError::Checkpoint {
            path: file,
            reason: "a fine-tuned or probed classifier, not a pre-training checkpoint".into(),
        }),
    }
}

/// Builds a classifier with `seed` and, for [`Init::Pretrained`], loads the encoder as
/// `main_finetune.py` does (exact missing/unused key sets, `pos_embed` resampled, fresh
/// head).
pub fn init_classifier<B: Backend>(
    model: &VitConfig,
    init: &Init,
    seed: u64,
    device: &B::Device,
) -> Result<(VitClassifier<B>, Option<LoadReport>)> {
    let vit = model.init_seeded::<B>(seed, device)?;
    match init {
        Init::Scratch => Ok((vit, None)),
        Init::Pretrained { path } => {
            let state = pretrained_state::<B>(path, device)?;
            let (vit, report) = vit.load_pretrained_state(state)?;
            Ok((vit, Some(report)))
        }
    }
}
