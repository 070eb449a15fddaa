//! What fine-tuning, linear probing and evaluation share: the soft-target loss, top-1/top-5
//! evaluation, the per-epoch log, the classifier checkpoint and its loading.

use std::path::Path;

use burn::module::Module;
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use serde::{Deserialize, Serialize};
use supmae_data::fashion_mnist;
use supmae_data::{AnySource, DataLoader, Geometry, Transform};
use supmae_model::{ModelError, VitClassifier, VitConfig};

use crate::checkpoint::CheckpointParts;
use crate::config::DataSpec;
use crate::error::{Result, TrainError};
use crate::probe::{LinearProbe, ProbeNorm};

pub(crate) type Rec = NamedMpkBytesRecorder<FullPrecisionSettings>;

/// The best model of a fine-tuning or linear-probing run (highest `test_acc1`).
pub use crate::run_dir::BEST_FILE;

/// Loss and accuracy on an evaluation split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Mean cross-entropy per image.
    pub loss: f64,
    /// Top-1 accuracy, %.
    pub acc1: f64,
    /// Top-5 accuracy, % (top-k with k = the number of classes when there are fewer than 5).
    pub acc5: f64,
    /// Images evaluated.
    pub images: usize,
}

/// Cross-entropy against soft targets, `mean_i sum_c −t_ic · log_softmax(z_i)_c` (timm's
/// `SoftTargetCrossEntropy`; with one-hot smoothed targets it is `LabelSmoothingCrossEntropy`).
///
/// # Shapes
/// - logits: `[N, C]`
/// - targets: `[N, C]`
/// - output: `[1]`
pub fn soft_target_cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let logp = burn::tensor::activation::log_softmax(logits, 1);
    (logp * targets).sum_dim(1).mean().neg()
}

/// What one micro-batch of fine-tuning or linear probing did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchReport {
    /// The global batch's loss.
    pub loss: f64,
    /// The learning rate of the iteration (of the groups with scale 1).
    pub lr: f64,
    /// Whether the optimizer stepped (the end of an accumulation window).
    pub stepped: bool,
}

/// Checks that a micro-batch given to a learner holds `N` images of `c x s x s` values.
pub(crate) fn check_batch(batch: &supmae_data::HostBatch, c: usize, s: usize) -> Result<()> {
    let n = batch.len();
    if batch.images.len() != n * c * s * s {
        return Err(TrainError::InvalidConfig {
            field: "batch",
            reason: format!(
                "{} values for {n} images of {c} x {s} x {s}",
                batch.images.len()
            ),
        });
    }
    Ok(())
}

/// Accumulates loss and top-1/top-5 hits from logits on the host.
#[derive(Debug, Default, Clone)]
pub struct Accuracy {
    loss_sum: f64,
    top1: usize,
    top5: usize,
    images: usize,
}

impl Accuracy {
    /// Adds a batch: `logits` row-major `[n, classes]`, `labels` `[n]`.
    pub fn add(&mut self, logits: &[f32], labels: &[i64], classes: usize) {
        for (row, &label) in logits.chunks_exact(classes).zip(labels) {
            let label = label as usize;
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = row
                .iter()
                .map(|&v| (v as f64 - max).exp())
                .sum::<f64>()
                .ln()
                + max;
            let target = row.get(label).copied().unwrap_or(f32::NAN);
            self.loss_sum += lse - target as f64;
            // Rank of the true class: classes with a strictly larger logit (ties favour the
            // earlier index, as `topk` does).
            let rank = row
                .iter()
                .enumerate()
                .filter(|&(c, &v)| v > target || (v == target && c < label))
                .count();
            self.top1 += usize::from(rank < 1);
            self.top5 += usize::from(rank < 5.min(classes));
            self.images += 1;
        }
    }

    /// The report so far.
    pub fn report(&self) -> EvalReport {
        let n = self.images.max(1) as f64;
        EvalReport {
            loss: self.loss_sum / n,
            acc1: 100.0 * self.top1 as f64 / n,
            acc5: 100.0 * self.top5 as f64 / n,
            images: self.images,
        }
    }
}

/// Evaluates `logits_of` over every batch of `loader` (no augmentation, no masking).
pub fn evaluate<B: Backend>(
    loader: &DataLoader<AnySource>,
    device: &B::Device,
    mut logits_of: impl FnMut(Tensor<B, 4>) -> Result<Tensor<B, 2>>,
) -> Result<EvalReport> {
    let mut acc = Accuracy::default();
    for batch in loader.epoch(0) {
        let batch = batch?;
        if batch.is_empty() {
            continue;
        }
        let labels = batch.labels.clone();
        let (x, _) = batch.into_tensors::<B>(device);
        let logits = logits_of(x)?;
        let [_, classes] = logits.dims();
        let values = logits
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| TrainError::InvalidConfig {
                field: "logits",
                reason: format!("{e:?}"),
            })?;
        acc.add(&values, &labels, classes);
    }
    Ok(acc.report())
}

/// One-hot targets with label smoothing folded in (`mixup_targets` at `lam = 1`).
///
/// # Shapes
/// - output: `[N, classes]` flattened
pub fn one_hot_targets(labels: &[usize], classes: usize, smoothing: f64) -> Vec<f32> {
    let off = smoothing / classes as f64;
    let on = 1.0 - smoothing + off;
    let mut out = vec![off as f32; labels.len() * classes];
    for (row, &label) in out.chunks_mut(classes).zip(labels) {
        if let Some(v) = row.get_mut(label) {
            *v = on as f32;
        }
    }
    out
}

/// One line of a fine-tuning / linear-probing `log.jsonl`: the official log's keys
/// (`train_loss`, `test_loss`, `test_acc1`, `test_acc5`, `lr`, `epoch`, `n_parameters`) plus
/// throughput.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierLog {
    /// Epoch index (from 0).
    pub epoch: usize,
    /// Mean peak-group learning rate over the epoch.
    pub lr: f64,
    /// Mean training loss (soft-target cross-entropy).
    pub train_loss: f64,
    /// Validation loss.
    pub test_loss: Option<f64>,
    /// Validation top-1, %.
    pub test_acc1: Option<f64>,
    /// Validation top-5, %.
    pub test_acc5: Option<f64>,
    /// Trainable parameters.
    pub n_parameters: usize,
    /// Training images per second.
    pub images_per_sec: f64,
    /// Wall-clock seconds of the epoch's training.
    pub seconds: f64,
    /// Images processed so far in the run.
    pub images_seen: u64,
}

impl crate::engine::EpochRecord for ClassifierLog {
    fn images_seen(&self) -> u64 {
        self.images_seen
    }
    fn val_acc1(&self) -> Option<f64> {
        self.test_acc1
    }
}

/// Which learner wrote a classifier checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassifierKind {
    /// A fine-tuned [`VitClassifier`].
    Finetune,
    /// A frozen encoder with a BatchNorm + Linear probe ([`LinearProbe`]).
    Linprobe,
}

/// Metadata of a classifier checkpoint (`checkpoint.ckpt` / `best.ckpt`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierMeta {
    /// Format version (1).
    pub format: u32,
    /// The learner.
    pub kind: ClassifierKind,
    /// The classifier's architecture.
    pub model: VitConfig,
    /// The data it was trained on (sets the evaluation transform).
    pub data: DataSpec,
    /// Class names, in label order.
    pub classes: Vec<String>,
    /// Epochs finished.
    pub epochs_done: usize,
    /// Per-epoch logs.
    pub history: Vec<ClassifierLog>,
    /// Best validation top-1 so far.
    pub best_acc1: Option<f64>,
    /// The full recipe, as JSON.
    pub recipe: serde_json::Value,
    /// Integer buffers the model does not hold (a probe's `head.0.num_batches_tracked`).
    #[serde(default)]
    pub extras: std::collections::BTreeMap<String, i64>,
}

/// A trained classifier of either kind.
#[derive(Debug)]
pub enum Classifier<B: Backend> {
    /// Fine-tuned.
    Vit(VitClassifier<B>),
    /// Linear probe.
    Probe(LinearProbe<B>),
}

impl<B: Backend> Classifier<B> {
    /// Class logits in evaluation mode.
    ///
    /// # Shapes
    /// - images: `[N, C, H, W]`
    /// - output: `[N, classes]`
    pub fn forward(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        Ok(match self {
            Self::Vit(m) => m.forward(images)?,
            Self::Probe(p) => p.forward(images, false)?,
        })
    }
}

/// Writes a classifier checkpoint (`meta` + the module's record) atomically.
pub fn write_classifier<B: Backend, M: Module<B>>(
    path: &Path,
    meta: &ClassifierMeta,
    model: &M,
) -> Result<()> {
    let bad = |e: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason: e,
    };
    let parts = CheckpointParts {
        meta: serde_json::to_vec(meta).map_err(|e| bad(e.to_string()))?,
        model: Recorder::<B>::record(&Rec::new(), model.clone().into_record(), ())
            .map_err(|e| bad(e.to_string()))?,
        optim_decay: Vec::new(),
        optim_no_decay: Vec::new(),
    };
    crate::checkpoint::write_atomic(path, &parts.encode())
}

/// Reads a classifier checkpoint written by the fine-tuning or linear-probing learner.
pub fn read_classifier_checkpoint(path: &Path) -> Result<(CheckpointParts, ClassifierMeta)> {
    let parts = CheckpointParts::read(path)?;
    let meta: ClassifierMeta =
        serde_json::from_slice(&parts.meta).map_err(|e| TrainError::Checkpoint {
            path: path.to_path_buf(),
            reason: format!(
                "not a fine-tuning or linear-probing checkpoint (a pre-training checkpoint \
                 is where fine-tuning starts, not a classifier): {e}"
            ),
        })?;
    crate::checkpoint::check_format(meta.format, path)?;
    let epochs = meta
        .recipe
        .get("epochs")
        .and_then(serde_json::Value::as_u64);
    crate::checkpoint::check_counters(
        meta.epochs_done,
        epochs.map_or(usize::MAX, |e| e as usize),
        meta.history.len(),
        path,
    )?;
    if meta.classes.len() != meta.model.num_classes {
        return Err(TrainError::Checkpoint {
            path: path.to_path_buf(),
            reason: format!(
                "{} class names for a model with {} classes",
                meta.classes.len(),
                meta.model.num_classes
            ),
        });
    }
    Ok((parts, meta))
}

/// Loads a classifier checkpoint (a run folder's `best.ckpt` when given the folder).
pub fn load_classifier<B: Backend>(
    path: impl AsRef<Path>,
    device: &B::Device,
) -> Result<(Classifier<B>, ClassifierMeta)> {
    let path = path.as_ref();
    let file = crate::run_dir::used_file(path, true);
    let (parts, meta) = read_classifier_checkpoint(&file)?;
    let params = meta.model.param_count().total();
    let classifier = match meta.kind {
        ClassifierKind::Finetune => Classifier::Vit(crate::checkpoint::load_model::<B, _>(
            &file,
            parts.model,
            params,
            || meta.model.init::<B>(device),
            device,
        )?),
        ClassifierKind::Linprobe => Classifier::Probe(crate::checkpoint::load_model::<B, _>(
            &file,
            parts.model,
            params,
            || {
                Ok(LinearProbe {
                    encoder: meta.model.init::<B>(device)?,
                    bn: ProbeNorm::new(meta.model.embed_dim, device),
                })
            },
            device,
        )?),
    };
    Ok((classifier, meta))
}

/// What a fine-tuning or probing run is started with (see [`start_run`]).
pub(crate) struct RunSpec<'a> {
    pub model: &'a VitConfig,
    pub data: &'a DataSpec,
    pub batch_size: usize,
    pub seed: u64,
    pub threads: usize,
    pub eval: bool,
    pub train_transform: Transform,
    /// This peer's share of every batch, in a data-parallel run.
    pub shard: Option<supmae_data::Shard>,
}

/// What [`start_run`] sets up: the loaders, the class names and the run folder.
pub(crate) struct Run {
    pub train: DataLoader<AnySource>,
    pub val: Option<DataLoader<AnySource>>,
    pub classes: Vec<String>,
    pub run: crate::run_dir::RunDir,
}

/// Checks the data against the model and batch, builds the train loader (shuffled, last
/// partial batch dropped) and the evaluation loader, creates the run folder and writes the
/// recipe (`config.json`) and an empty `log.jsonl`.
pub(crate) fn start_run<R: Serialize>(
    spec: RunSpec<'_>,
    recipe: &R,
    train: AnySource,
    val: Option<AnySource>,
    target: crate::run_dir::NewRun,
) -> Result<Run> {
    let (train, val, classes) = loaders(&spec, train, val)?;
    let run = target.open()?;
    let json = serde_json::to_vec_pretty(recipe).map_err(crate::error::json("config.json"))?;
    run.write_atomic(crate::run_dir::CONFIG_FILE, &json)?;
    run.write_atomic(crate::run_dir::LOG_FILE, b"")?;
    Ok(Run {
        train,
        val,
        classes,
        run,
    })
}

/// The train loader (sharded for data-parallel peers), the evaluation loader and the class
/// names, after checking the data against the model and batch.
pub(crate) type Loaders = (
    DataLoader<AnySource>,
    Option<DataLoader<AnySource>>,
    Vec<String>,
);

/// Builds [`Loaders`] for `spec`.
pub(crate) fn loaders(
    spec: &RunSpec<'_>,
    train: AnySource,
    val: Option<AnySource>,
) -> Result<Loaders> {
    use supmae_data::{ImageSource, LoaderConfig};
    if train.classes().len() > spec.model.num_classes {
        return Err(TrainError::InvalidConfig {
            field: "model.num_classes",
            reason: format!(
                "({}) is smaller than the dataset's {} classes",
                spec.model.num_classes,
                train.classes().len()
            ),
        });
    }
    let peers = spec.shard.map_or(1, |s| s.peers);
    if train.len() < spec.batch_size * peers {
        return Err(TrainError::InvalidConfig {
            field: "batch_size",
            reason: format!(
                "({} x {peers} peer(s)) is larger than the training set ({} images)",
                spec.batch_size,
                train.len()
            ),
        });
    }
    let (train_t, eval_t) =
        classifier_transforms(spec.data, spec.model, spec.train_transform.clone())?;
    let loader_cfg = LoaderConfig {
        drop_last: true,
        seed: spec.seed,
        threads: spec.threads,
        ..LoaderConfig::new(spec.batch_size)
    };
    let classes = train.classes().to_vec();
    let train = DataLoader::new(
        std::sync::Arc::new(train),
        train_t,
        LoaderConfig {
            shard: spec.shard,
            ..loader_cfg.clone()
        },
    )?;
    // Rank 0 evaluates; the other peers go on to the next epoch.
    let main = spec.shard.is_none_or(|s| s.rank == 0);
    let val = match val {
        Some(v) if spec.eval && main => Some(DataLoader::new(
            std::sync::Arc::new(v),
            eval_t,
            LoaderConfig {
                shuffle: false,
                drop_last: false,
                ..loader_cfg
            },
        )?),
        _ => None,
    };
    Ok((train, val, classes))
}

/// What [`open_for_resume`] reads: the run folder, the checkpoint, its metadata and the
/// recipe.
pub(crate) type Resumable<C> = (crate::run_dir::RunDir, CheckpointParts, ClassifierMeta, C);

/// Reads a classifier run folder's checkpoint of `kind` and its recipe `C`, locking the
/// folder when this process writes it (`lock`: rank 0). The caller validates the recipe.
pub(crate) fn open_for_resume<C: serde::de::DeserializeOwned>(
    out_dir: &Path,
    lock: bool,
    kind: ClassifierKind,
) -> Result<Resumable<C>> {
    let run = if lock {
        crate::run_dir::RunDir::resume(out_dir)?
    } else {
        crate::run_dir::RunDir::unlocked(out_dir)
    };
    let path = run.file(crate::run_dir::CHECKPOINT_FILE);
    let (parts, meta) = read_classifier_checkpoint(&path)?;
    if meta.kind != kind {
        let (found, learner) = match meta.kind {
            ClassifierKind::Finetune => ("fine-tuning", "fine-tuner"),
            ClassifierKind::Linprobe => ("linear-probing", "linear prober"),
        };
        return Err(TrainError::Checkpoint {
            path,
            reason: format!("a {found} run: resume it with the {learner}"),
        });
    }
    let config: C =
        serde_json::from_value(meta.recipe.clone()).map_err(|e| TrainError::Checkpoint {
            path: path.clone(),
            reason: format!("bad recipe: {e}"),
        })?;
    Ok((run, parts, meta, config))
}

/// Train and evaluation transforms of a classifier on `data`. Fashion-MNIST is resized to
/// the model's size (no crop) with a 0.5 flip and its own mean/std; other data gets the
/// recipe's `train` transform and `Resize(size / 0.875)` + centre crop for evaluation.
pub fn classifier_transforms(
    data: &DataSpec,
    model: &VitConfig,
    train: Transform,
) -> std::result::Result<(Transform, Transform), ModelError> {
    let size = model.img_size as u32;
    let chans = model.in_chans as u8;
    let (train, eval) = if data.is_fashion_mnist() {
        let (mean, std) = (
            vec![fashion_mnist::MEAN; chans.into()],
            vec![fashion_mnist::STD; chans.into()],
        );
        let fill = (255.0 * fashion_mnist::MEAN).round() as u8;
        let train = Transform {
            size,
            geometry: Geometry::Resize,
            hflip: 0.5,
            rand_augment: train.rand_augment.map(|mut ra| {
                ra.fill = [fill; 3];
                ra
            }),
            ..train
        }
        .with_normalization(chans, mean.clone(), std.clone());
        let eval = Transform {
            geometry: Geometry::Resize,
            hflip: 0.0,
            ..Transform::pretrain(size)
        }
        .with_normalization(chans, mean, std);
        (train, eval)
    } else {
        let (mut train, mut eval) = (Transform { size, ..train }, Transform::eval(size));
        if chans == 1 {
            train = train.greyscale();
            eval = eval.greyscale();
        }
        (train, eval)
    };
    Ok((train, eval))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_and_loss_on_the_host() {
        let mut acc = Accuracy::default();
        // Row 0: true class 2 is the best; row 1: true class 0 ranks 3rd of 6.
        let logits = [
            0.0, 1.0, 3.0, 0.5, 0.1, 0.2, //
            1.0, 2.0, 3.0, 0.0, 0.0, 0.0,
        ];
        acc.add(&logits, &[2, 0], 6);
        let r = acc.report();
        assert_eq!((r.acc1, r.acc5, r.images), (50.0, 100.0, 2));
        let ce = |row: &[f64], t: usize| {
            let lse = row.iter().map(|v| v.exp()).sum::<f64>().ln();
            lse - row[t]
        };
        let want =
            (ce(&[0.0, 1.0, 3.0, 0.5, 0.1, 0.2], 2) + ce(&[1.0, 2.0, 3.0, 0.0, 0.0, 0.0], 0)) / 2.0;
        assert!((r.loss - want).abs() < 1e-6);
    }
}
