//! Continued pre-training: a new run whose weights start from a released or earlier
//! checkpoint (a fresh schedule and optimizer, not a resume).

use std::collections::BTreeSet;
use std::path::Path;

use burn::prelude::*;
use supmae_model::SupMae;

use supmae_model::LoadReport;
use supmae_model::checkpoint::{
    KeyPattern, KeyPolicy, StateDict, export_state_dict, load_state_dict, param_keys,
};

use super::files::load_pretrained;
use crate::error::{Result, TrainError};
use crate::open::{Checkpoint, open};

/// Loads the weights of `path` into `model` to continue pre-training from them.
///
/// `path` is one of our pre-training checkpoints (a run folder or `.ckpt`) or an official MAE
/// / SupMAE `.pth` or `.safetensors`, full or encoder-only (`mae_pretrain_vit_base.pth`).
/// The key sets are checked exactly: every encoder key must be in the file; the decoder
/// (`decoder_*`, `mask_token`) and the classification branch (`cls_head.*`) may each be
/// absent only as a whole, and then keep their fresh initialisation (the report lists them
/// as missing); a file's classification branch is ignored by an MAE model, and one for
/// another number of classes is replaced by a fresh one. Any other tensor of another shape
/// is an error.
pub fn load_continued<B: Backend>(
    model: SupMae<B>,
    path: &Path,
    device: &B::Device,
) -> Result<(SupMae<B>, LoadReport)> {
    let state = match open(path)? {
        (file, Checkpoint::Pretrain { .. }) => {
            let (pre, _) = load_pretrained::<B>(&file, device)?;
            StateDict::from_entries(&file, export_state_dict(&pre))
        }
        (file, Checkpoint::Classifier(_)) => {
            return Err(TrainError::Checkpoint {
                path: file,
                reason: "a fine-tuned or probed classifier, not a pre-training checkpoint: \
                         continued pre-training needs an MAE / SupMAE checkpoint"
                    .into(),
            });
        }
        (file, Checkpoint::Foreign) => StateDict::from_file(&file)?,
    };
    let decoder = |k: &str| k.starts_with("decoder_") || k == "mask_token";
    let branch = |k: &str| k.starts_with("cls_head.");
    let mut policy = KeyPolicy {
        may_be_missing: vec![
            KeyPattern::Prefix("decoder_".into()),
            KeyPattern::Exact("mask_token".into()),
            KeyPattern::Prefix("cls_head.".into()),
        ],
        may_be_unused: vec![KeyPattern::Suffix(".num_batches_tracked".into())],
    };
    if model.cls_head.is_none() {
        policy.may_be_unused.extend([
            KeyPattern::Prefix("cls_head.".into()),
            KeyPattern::Prefix("projection_head.".into()),
        ]);
    }
    let params = param_keys(&model);
    // A branch for another number of classes (the official 1000-class SupMAE on a dataset
    // of your own) cannot be used: the branch starts fresh instead.
    let mut state = state;
    let other_classes = params
        .iter()
        .filter(|k| k.key.starts_with("cls_head."))
        .any(|k| {
            let alias = k.key.replacen("cls_head.", "projection_head.", 1);
            // Burn keeps Linear weights transposed; the file has PyTorch's layout.
            let want: Vec<usize> = if k.transposed {
                k.shape.iter().rev().copied().collect()
            } else {
                k.shape.clone()
            };
            state
                .shape(&k.key)
                .or_else(|| state.shape(&alias))
                .is_some_and(|shape| shape != want)
        });
    if other_classes {
        state.retain(|k| !k.starts_with("cls_head.") && !k.starts_with("projection_head."));
    }
    let keys: Vec<String> = params.into_iter().map(|k| k.key).collect();
    let (model, report) = load_state_dict(model, &state, &policy)?;
    for (part, in_part) in [
        ("the decoder", &decoder as &dyn Fn(&str) -> bool),
        ("the classification branch", &branch),
    ] {
        let all: BTreeSet<&str> = keys
            .iter()
            .map(String::as_str)
            .filter(|k| in_part(k))
            .collect();
        let missing: BTreeSet<&str> = report
            .missing
            .iter()
            .map(String::as_str)
            .filter(|k| in_part(k))
            .collect();
        if !missing.is_empty() && missing != all {
            return Err(TrainError::Checkpoint {
                path: path.to_path_buf(),
                reason: format!(
                    "has only part of {part}: missing {}",
                    missing.into_iter().collect::<Vec<_>>().join(", ")
                ),
            });
        }
    }
    Ok((model, report))
}
