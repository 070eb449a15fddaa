//! Classifiers from official state dicts: a fine-tuned ViT (timm's keys, the official
//! fine-tuning's checkpoints) or an official linear probe (`head.0` BatchNorm without affine
//! parameters, `head.1` Linear). The one place that builds a model from such a file:
//! evaluation, embedding and conversion all come here.

use burn::module::RunningState;
use burn::prelude::*;
use supmae_model::checkpoint::{KeyPolicy, StateDict, load_state_dict};
use supmae_model::{Flavour, VitConfig, inspect};

use crate::classifier::Classifier;
use crate::error::{Result, TrainError};
use crate::probe::{LinearProbe, ProbeNorm};

/// The classifier an official fine-tuned or linear-probe state dict holds, and its
/// configuration.
///
/// The architecture is read from the tensors' shapes ([`supmae_model::inspect()`]) unless
/// `model` gives it (its class count and pooling are still the checkpoint's: the head's rows
/// and whether `fc_norm` is there). Keys load strictly ([`KeyPolicy::default`]): a missing or
/// misshapen tensor is an error. A pre-training checkpoint or a bare encoder is refused
/// with [`TrainError::Checkpoint`]: it has no classification head.
pub fn official_classifier<B: Backend>(
    state: &StateDict,
    model: Option<&VitConfig>,
    device: &B::Device,
) -> Result<(Classifier<B>, VitConfig)> {
    let info = inspect(state)?;
    let classes = info.num_classes.unwrap_or(1000);
    let architecture = |global_pool: bool| match model {
        Some(m) => m
            .clone()
            .with_num_classes(classes)
            .with_global_pool(global_pool),
        None => info.vit_config(classes, global_pool),
    };
    match info.flavour {
        Flavour::Finetuned { global_pool } => {
            let cfg = architecture(global_pool);
            let (vit, _) = load_state_dict(cfg.init::<B>(device)?, state, &KeyPolicy::default())?;
            Ok((Classifier::Vit(vit), cfg))
        }
        Flavour::LinearProbe => {
            let cfg = architecture(false);
            let probe = linear_probe(state, &cfg, device)?;
            Ok((Classifier::Probe(probe), cfg))
        }
        _ => Err(TrainError::Checkpoint {
            path: state.path().to_path_buf(),
            reason: format!(
                "not a classifier ({}): no classification head",
                info.describe()
            ),
        }),
    }
}

/// An official linear probe as a [`LinearProbe`]: `head.1.*` is the ViT's `head`, `head.0`'s
/// running statistics the probe's BatchNorm (mean 0 and variance 1 where absent).
fn linear_probe<B: Backend>(
    state: &StateDict,
    cfg: &VitConfig,
    device: &B::Device,
) -> Result<LinearProbe<B>> {
    let mut entries = Vec::new();
    let (mut mean, mut var) = (None, None);
    for (key, shape, values) in state.entries_f32()? {
        match key.as_str() {
            "head.0.running_mean" => mean = Some(values),
            "head.0.running_var" => var = Some(values),
            "head.0.num_batches_tracked" => {}
            k => {
                let k = k
                    .strip_prefix("head.1.")
                    .map_or(k.to_string(), |rest| format!("head.{rest}"));
                entries.push((k, shape, values));
            }
        }
    }
    let renamed = StateDict::from_entries(state.path(), entries);
    let (encoder, _) = load_state_dict(cfg.init::<B>(device)?, &renamed, &KeyPolicy::default())?;
    let d = cfg.embed_dim;
    let statistic = |values: Option<Vec<f32>>, default: f32| -> Result<Tensor<B, 1>> {
        let values = values.unwrap_or_else(|| vec![default; d]);
        if values.len() != d {
            return Err(TrainError::Checkpoint {
                path: state.path().to_path_buf(),
                reason: format!(
                    "the probe's BatchNorm statistics have {} values for a width of {d}",
                    values.len()
                ),
            });
        }
        Ok(Tensor::from_data(TensorData::new(values, [d]), device))
    };
    let bn = ProbeNorm {
        running_mean: RunningState::new(statistic(mean, 0.0)?),
        running_var: RunningState::new(statistic(var, 1.0)?),
    };
    Ok(LinearProbe { encoder, bn })
}
