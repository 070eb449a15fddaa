//! `supmae convert`: between our checkpoints and the official format.
//!
//! - To `.safetensors`: the official key names and PyTorch layouts (Linear weights
//!   `[out, in]`, BatchNorm `num_batches_tracked` as int64), loadable with
//!   `load_state_dict(strict=True)` in the official code (`tools/checkpoints/verify.py`).
//! - To `.ckpt`: our self-checking native format, from an official pre-training (SupMAE,
//!   MAE full), fine-tuned or linear-probe file. Converted checkpoints hold no optimizer
//!   state: they fine-tune, probe, evaluate, embed and reconstruct, but do not resume.

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use supmae_model::checkpoint::{StateDict, export_state_dict};
use supmae_model::{Flavour, inspect};
use supmae_train::classifier::{ClassifierMeta, write_classifier};
use supmae_train::open::{Checkpoint, open};
use supmae_train::pretrain::{pretrained_extras, write_pretrained};
use supmae_train::{
    Classifier, ClassifierKind, DataSpec, PretrainConfig, load_classifier, load_pretrained,
    official_classifier,
};

use crate::embed::EmbedError;

/// The official-key state dict of any checkpoint we can read, and what it is.
pub(crate) fn official_state<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<(StateDict, String), EmbedError> {
    let (file, what) = open(path)?;
    let path = file.as_path();
    if let Checkpoint::Foreign = what {
        let state = StateDict::from_file(path)?;
        let what = inspect(&state)?.describe();
        return Ok((state, what));
    }
    if let Checkpoint::Classifier(_) = what {
        let (clf, meta) = load_classifier::<B>(path, device)?;
        let mut state = match clf {
            Classifier::Vit(vit) => StateDict::from_entries(path, export_state_dict(&vit)),
            Classifier::Probe(probe) => {
                let mut entries = Vec::new();
                for (key, shape, values) in export_state_dict(&probe) {
                    let key = match key.as_str() {
                        "bn.running_mean" => "head.0.running_mean".to_string(),
                        "bn.running_var" => "head.0.running_var".to_string(),
                        k => {
                            let k = k.strip_prefix("encoder.").unwrap_or(k);
                            match k.strip_prefix("head.") {
                                Some(rest) => format!("head.1.{rest}"),
                                None => k.to_string(),
                            }
                        }
                    };
                    entries.push((key, shape, values));
                }
                let mut state = StateDict::from_entries(path, entries);
                if !meta.extras.contains_key("head.0.num_batches_tracked") {
                    state.insert_i64("head.0.num_batches_tracked", vec![0], vec![]);
                }
                state
            }
        };
        for (key, value) in &meta.extras {
            state.insert_i64(key, vec![*value], vec![]);
        }
        let what = format!(
            "our {} checkpoint ({} epochs)",
            match meta.kind {
                ClassifierKind::Finetune => "fine-tuned",
                ClassifierKind::Linprobe => "linear-probe",
            },
            meta.epochs_done
        );
        return Ok((state, what));
    }
    let (model, config) = load_pretrained::<B>(path, device)?;
    let mut state = StateDict::from_entries(path, export_state_dict(&model));
    for (key, value) in pretrained_extras(path)? {
        state.insert_i64(&key, vec![value], vec![]);
    }
    let what = format!(
        "our {} pre-training checkpoint",
        if config.model.cls_head.is_some() {
            "SupMAE"
        } else {
            "MAE"
        }
    );
    Ok((state, what))
}

/// The integer counters of a state dict (`*.num_batches_tracked`).
fn counters(state: &StateDict) -> Result<BTreeMap<String, i64>, EmbedError> {
    let mut out = BTreeMap::new();
    for key in state.keys().filter(|k| k.ends_with("num_batches_tracked")) {
        let (v, _) = state.read_f32(key)?;
        // The released SupMAE file's `projection_head` is our (and the code's) `cls_head`.
        let key = key.replace("projection_head.", "cls_head.");
        out.insert(key, v.first().copied().unwrap_or(0.0) as i64);
    }
    Ok(out)
}

/// Converts `input` to `output` (`.safetensors` or `.ckpt`); returns a description of what
/// was converted.
pub fn convert<B: Backend>(
    input: &Path,
    output: &Path,
    device: &B::Device,
) -> Result<String, EmbedError> {
    let ext = output
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "safetensors" => {
            let (state, what) = official_state::<B>(input, device)?;
            state.write_safetensors(output)?;
            Ok(format!(
                "{what} -> {} tensors, official key names",
                state.len()
            ))
        }
        "ckpt" => {
            if input.is_dir() || open(input)?.1.is_ours() {
                return Err(EmbedError::Unsupported(format!(
                    "{} is already a native checkpoint",
                    input.display()
                )));
            }
            let state = StateDict::from_file(input)?;
            let info = inspect(&state)?;
            let extras = counters(&state)?;
            let source = input.display().to_string();
            let data = DataSpec::Folder { path: ".".into() };
            match &info.flavour {
                Flavour::SupMaePretrain { .. } | Flavour::MaeFull => {
                    let cfg = info.mae_config().ok_or_else(|| {
                        EmbedError::Unsupported("no decoder configuration".into())
                    })?;
                    let (model, _) = cfg.init::<B>(device)?.load_state_dict(&state)?;
                    let config = PretrainConfig {
                        model: cfg,
                        ..PretrainConfig::supmae_recipe(data)
                    };
                    write_pretrained(output, &model, config, extras, &source)?;
                }
                Flavour::Finetuned { .. } | Flavour::LinearProbe => {
                    let classes = info.num_classes.unwrap_or(1000);
                    let (kind, model_cfg) = if info.flavour == Flavour::LinearProbe {
                        (ClassifierKind::Linprobe, info.vit_config(classes, false))
                    } else {
                        (ClassifierKind::Finetune, info.vit_config(classes, true))
                    };
                    let meta = ClassifierMeta {
                        format: 1,
                        kind,
                        model: model_cfg.clone(),
                        data,
                        classes: if classes == supmae_data::IMAGENET_1K.len() {
                            (0..classes)
                                .map(|i| {
                                    supmae_data::imagenet_class_name(i)
                                        .unwrap_or("?")
                                        .to_string()
                                })
                                .collect()
                        } else {
                            (0..classes).map(|i| format!("class {i}")).collect()
                        },
                        epochs_done: 0,
                        history: Vec::new(),
                        best_acc1: None,
                        recipe: serde_json::json!({ "converted_from": source }),
                        extras,
                    };
                    match official_classifier::<B>(&state, Some(&model_cfg), device)?.0 {
                        Classifier::Probe(probe) => {
                            write_classifier::<B, _>(output, &meta, &probe)?
                        }
                        Classifier::Vit(vit) => write_classifier::<B, _>(output, &meta, &vit)?,
                    }
                }
                Flavour::MaeEncoder => {
                    return Err(EmbedError::Unsupported(format!(
                        "{}: {}; our native pre-training format needs the decoder. Use the \
                         file directly with finetune / linprobe / embedding, or convert it \
                         to .safetensors",
                        input.display(),
                        info.describe()
                    )));
                }
            }
            Ok(format!("{} -> native checkpoint", info.describe()))
        }
        _ => Err(EmbedError::Unsupported(format!(
            "{}: the output's extension must be .safetensors (official keys) or .ckpt (native)",
            output.display()
        ))),
    }
}
