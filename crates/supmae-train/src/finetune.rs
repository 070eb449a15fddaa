//! Fine-tuning (`main_finetune.py` + `engine_finetune.py`, spec §2.3 and §3): the ViT
//! classifier built from a pre-training checkpoint, layer-wise lr decay, AdamW, warmup +
//! cosine, drop path, Mixup/CutMix with label smoothing folded into soft targets,
//! RandAugment and random erasing, gradient accumulation, top-1/top-5 evaluation and the
//! best checkpoint kept.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::Recorder;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};
use supmae_data::{
    AnySource, DataLoader, HostBatch, RandAugment, RandomErasing, SampleRng, Transform,
};
use supmae_model::checkpoint::{LoadReport, StateDict, export_state_dict, param_keys};
use supmae_model::{VitClassifier, VitConfig};

use crate::checkpoint::{CheckpointParts, write_atomic};
use crate::classifier::{
    BEST_FILE, ClassifierKind, ClassifierLog, ClassifierMeta, EvalReport, Rec, RunSpec, evaluate,
    soft_target_cross_entropy, start_run,
};
use crate::config::DataSpec;
use crate::error::{Result, TrainError, io};
use crate::pretrain::{CHECKPOINT_FILE, LOG_FILE, load_pretrained};
use crate::progress::{Progress, ProgressMode};
use crate::schedule::{LrSchedule, scaled_lr};

/// The layer id of a fine-tuning parameter, as `param_groups_lrd` assigns it: `cls_token`,
/// `pos_embed` and `patch_embed.*` are layer 0, `blocks.k.*` is layer `k + 1`, everything
/// else (`fc_norm`, `norm`, `head`) is layer `num_layers = depth + 1`.
pub fn layer_id(key: &str, num_layers: usize) -> usize {
    if key == "cls_token" || key == "pos_embed" || key.starts_with("patch_embed.") {
        return 0;
    }
    if let Some(rest) = key.strip_prefix("blocks.")
        && let Some(k) = rest.split('.').next().and_then(|k| k.parse::<usize>().ok())
    {
        return k + 1;
    }
    num_layers
}

/// The learning-rate scale of every layer id: `decay^(num_layers − id)` for
/// `id = 0..=num_layers`, with `num_layers = depth + 1`.
pub fn layer_scales(decay: f64, depth: usize) -> Vec<f64> {
    let num_layers = depth + 1;
    (0..=num_layers)
        .map(|id| decay.powi((num_layers - id) as i32))
        .collect()
}

/// Whether a fine-tuning parameter is exempt from weight decay: 1-D tensors and the names
/// in `no_weight_decay()` (`pos_embed`, `cls_token`).
pub fn finetune_no_weight_decay(key: &str, rank: usize) -> bool {
    rank == 1 || key == "pos_embed" || key == "cls_token"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_ids_and_scales_match_the_spec_table_for_vit_b_at_0_65() {
        let scales = layer_scales(0.65, 12);
        assert_eq!(scales.len(), 14);
        // Spec §3.3, rounded to 5 digits: id 0, blocks.0 .. blocks.11, head.
        let table = [
            0.00370, 0.00569, 0.00875, 0.01346, 0.02071, 0.03186, 0.04902, 0.07542, 0.11603,
            0.17851, 0.27463, 0.42250, 0.65, 1.0,
        ];
        for (id, (got, want)) in scales.iter().zip(table).enumerate() {
            assert!((got - want).abs() < 5e-6, "layer {id}: {got} vs {want}");
        }
        let cases = [
            ("cls_token", 0),
            ("pos_embed", 0),
            ("patch_embed.proj.weight", 0),
            ("blocks.0.norm1.weight", 1),
            ("blocks.11.mlp.fc2.bias", 12),
            ("fc_norm.weight", 13),
            ("norm.bias", 13),
            ("head.weight", 13),
        ];
        for (key, id) in cases {
            assert_eq!(layer_id(key, 13), id, "{key}");
        }
        // The 0.75 column starts 0.02376, 0.03168 and ends 0.5625, 0.75, 1.0.
        let s = layer_scales(0.75, 12);
        assert!((s[0] - 0.02376).abs() < 5e-6 && (s[1] - 0.03168).abs() < 5e-6);
        assert_eq!(&s[11..], &[0.5625, 0.75, 1.0]);
    }

    #[test]
    fn no_weight_decay_for_1d_params_pos_embed_and_cls_token() {
        assert!(finetune_no_weight_decay("pos_embed", 3));
        assert!(finetune_no_weight_decay("cls_token", 3));
        assert!(finetune_no_weight_decay("blocks.3.norm1.weight", 1));
        assert!(finetune_no_weight_decay("head.bias", 1));
        assert!(!finetune_no_weight_decay("head.weight", 2));
        assert!(!finetune_no_weight_decay("patch_embed.proj.weight", 4));
    }
}

/// Soft targets of a mixed batch, as timm's `mixup_target`: label smoothing folded in
/// (`off = smoothing / C`, `on = 1 − smoothing + off`), then `lam · y + (1 − lam) · y_flip`
/// where `y_flip` pairs sample `i` with sample `N − 1 − i` (the batch flipped).
///
/// # Shapes
/// - labels: `[N]`
/// - output: `[N, classes]` flattened, row-major
pub fn mixup_targets(labels: &[usize], classes: usize, lam: f64, smoothing: f64) -> Vec<f32> {
    let n = labels.len();
    let off = smoothing / classes as f64;
    let on = 1.0 - smoothing + off;
    let mut out = vec![0f32; n * classes];
    for (i, row) in out.chunks_mut(classes).enumerate() {
        let (a, b) = (labels[i], labels[n - 1 - i]);
        for (c, v) in row.iter_mut().enumerate() {
            let ya = if c == a { on } else { off };
            let yb = if c == b { on } else { off };
            *v = (lam * ya + (1.0 - lam) * yb) as f32;
        }
    }
    out
}

/// A CutMix box and the corrected `lam`, as timm's `rand_bbox` + `correct_lam`: a box of
/// side `int(side · sqrt(1 − lam))` centred at `(cy, cx)` (drawn uniformly in the image by the
/// caller), clipped to the image; `lam` becomes `1 − box area / image area`.
/// Returns `(top, bottom, left, right, lam)`.
pub fn cutmix_box(
    height: usize,
    width: usize,
    lam: f64,
    cy: usize,
    cx: usize,
) -> (usize, usize, usize, usize, f64) {
    let ratio = (1.0 - lam).sqrt();
    let (ch, cw) = (
        (height as f64 * ratio) as i64,
        (width as f64 * ratio) as i64,
    );
    let clip = |v: i64, max: usize| v.clamp(0, max as i64) as usize;
    let (cy, cx) = (cy as i64, cx as i64);
    let (top, bottom) = (clip(cy - ch / 2, height), clip(cy + ch / 2, height));
    let (left, right) = (clip(cx - cw / 2, width), clip(cx + cw / 2, width));
    let area = ((bottom - top) * (right - left)) as f64;
    (
        top,
        bottom,
        left,
        right,
        1.0 - area / (height * width) as f64,
    )
}

#[cfg(test)]
mod mix_tests {
    use super::*;

    #[test]
    fn mixup_soft_targets_fold_in_label_smoothing() {
        // Recipe values: smoothing 0.1 over 1000 classes gives off 1e-4, on 0.9001.
        let t = mixup_targets(&[3, 7], 1000, 1.0, 0.1);
        assert!((t[3] - 0.9001).abs() < 1e-7 && (t[4] - 1e-4).abs() < 1e-9);
        // lam 0.7: sample 0 is 0.7 of class 3 and 0.3 of class 7 (its flipped partner).
        let t = mixup_targets(&[3, 7], 10, 0.7, 0.0);
        assert!((t[3] - 0.7).abs() < 1e-7 && (t[7] - 0.3).abs() < 1e-7);
        assert!((t[10 + 7] - 0.7).abs() < 1e-7 && (t[10 + 3] - 0.3).abs() < 1e-7);
        for row in t.chunks(10) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn cutmix_lam_is_corrected_to_the_clipped_box() {
        // lam 0.75 on 224 px: side int(224 * 0.5) = 112; centred, the box is exact.
        let (t, b, l, r, lam) = cutmix_box(224, 224, 0.75, 112, 112);
        assert_eq!((t, b, l, r), (56, 168, 56, 168));
        assert!((lam - 0.75).abs() < 1e-12);
        // In a corner the box is clipped to a quarter and lam grows accordingly.
        let (t, b, l, r, lam) = cutmix_box(224, 224, 0.75, 0, 0);
        assert_eq!((t, b, l, r), (0, 56, 0, 56));
        assert!((lam - (1.0 - 56.0 * 56.0 / (224.0 * 224.0))).abs() < 1e-12);
    }
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

/// timm's `Mixup` (batch mode) settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MixupConfig {
    /// Mixup's Beta α (0.8; 0 = off).
    pub mixup_alpha: f64,
    /// CutMix's Beta α (1.0; 0 = off).
    pub cutmix_alpha: f64,
    /// Probability of mixing a batch at all (1.0).
    pub prob: f64,
    /// Probability of CutMix rather than Mixup when both are on (0.5).
    pub switch_prob: f64,
    /// Label smoothing folded into the targets (0.1).
    pub smoothing: f64,
}

impl MixupConfig {
    /// Whether batches are mixed.
    pub fn active(&self) -> bool {
        self.mixup_alpha > 0.0 || self.cutmix_alpha > 0.0
    }
}

/// Mixes a batch in place as timm's `Mixup._mix_batch` (pairs `i` with `N − 1 − i`) and
/// returns the soft targets and the (corrected) `lam`.
///
/// # Shapes
/// - images: `[N, C, H, W]` flattened; labels: `[N]`; output targets `[N, classes]`
pub fn mix_batch(
    images: &mut [f32],
    labels: &[usize],
    (c, h, w): (usize, usize, usize),
    classes: usize,
    cfg: &MixupConfig,
    rng: &mut SampleRng,
) -> (Vec<f32>, f64) {
    let n = labels.len();
    let mut lam = 1.0;
    let mut use_cutmix = false;
    if cfg.active() && rng.uniform() < cfg.prob {
        if cfg.mixup_alpha > 0.0 && cfg.cutmix_alpha > 0.0 {
            use_cutmix = rng.uniform() < cfg.switch_prob;
            let alpha = if use_cutmix {
                cfg.cutmix_alpha
            } else {
                cfg.mixup_alpha
            };
            lam = rng.beta(alpha, alpha);
        } else if cfg.mixup_alpha > 0.0 {
            lam = rng.beta(cfg.mixup_alpha, cfg.mixup_alpha);
        } else {
            use_cutmix = true;
            lam = rng.beta(cfg.cutmix_alpha, cfg.cutmix_alpha);
        }
    }
    let per = c * h * w;
    if lam != 1.0 && n > 0 {
        let original = images[..n * per].to_vec();
        if use_cutmix {
            let cy = rng.int_range(0, h as u64) as usize;
            let cx = rng.int_range(0, w as u64) as usize;
            let (top, bottom, left, right, corrected) = cutmix_box(h, w, lam, cy, cx);
            lam = corrected;
            for i in 0..n {
                let j = n - 1 - i;
                for ch in 0..c {
                    for y in top..bottom {
                        let row = |k: usize| k * per + ch * h * w + y * w;
                        images[row(i) + left..row(i) + right]
                            .copy_from_slice(&original[row(j) + left..row(j) + right]);
                    }
                }
            }
        } else {
            let (a, b) = (lam as f32, (1.0 - lam) as f32);
            for i in 0..n {
                let j = n - 1 - i;
                for k in 0..per {
                    images[i * per + k] = original[i * per + k] * a + original[j * per + k] * b;
                }
            }
        }
    }
    (mixup_targets(labels, classes, lam, cfg.smoothing), lam)
}

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

/// Whether `path` is (or holds) one of our training checkpoints.
pub fn is_native_checkpoint(path: &Path) -> bool {
    let file = if path.is_dir() {
        path.join(CHECKPOINT_FILE)
    } else {
        path.to_path_buf()
    };
    let mut magic = [0u8; 18];
    std::fs::File::open(&file)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && magic.as_slice() == crate::checkpoint::MAGIC
}

/// The encoder weights of a pre-training checkpoint as an official-key state dict.
pub fn pretrained_state<B: Backend>(path: &Path, device: &B::Device) -> Result<StateDict> {
    if is_native_checkpoint(path) {
        let (model, _) = load_pretrained::<B>(path, device)?;
        Ok(StateDict::from_entries(path, export_state_dict(&model)))
    } else {
        Ok(StateDict::from_pytorch(path)?)
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

pub(crate) fn append_jsonl<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io(path))?;
    let line = serde_json::to_string(value).unwrap_or_default();
    writeln!(file, "{line}").map_err(io(path))
}

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
            .unwrap_or_else(|| scaled_lr(self.blr, self.batch_size * self.accum_iter))
    }

    /// Checks the recipe.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: String| Err(TrainError::InvalidConfig { field, reason });
        self.model.validate()?;
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

    fn train_transform(&self) -> Transform {
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

/// One parameter group of `param_groups_lrd`.
#[derive(Debug, Clone, PartialEq)]
pub struct LrdGroup {
    /// `layer_{id}_{decay|no_decay}`, as the official code names it.
    pub name: String,
    /// The layer id.
    pub layer_id: usize,
    /// `decay^(num_layers − layer_id)`.
    pub lr_scale: f64,
    /// The group's weight decay (0 for the no-decay set).
    pub weight_decay: f64,
    /// Its parameters: official key and Burn id.
    pub params: Vec<(String, ParamId)>,
}

/// The parameter groups of `util/lr_decay.py` (`param_groups_lrd`) for a classifier of
/// `depth` blocks: one group per (layer id, decay flag), ordered by first appearance.
pub fn param_groups_lrd<B: Backend, M: Module<B>>(
    model: &M,
    weight_decay: f64,
    layer_decay: f64,
    depth: usize,
) -> Vec<LrdGroup> {
    let scales = layer_scales(layer_decay, depth);
    let num_layers = depth + 1;
    let mut index: HashMap<(usize, bool), usize> = HashMap::new();
    let mut groups: Vec<LrdGroup> = Vec::new();
    for p in param_keys(model) {
        if !p.trainable {
            continue;
        }
        let id = layer_id(&p.key, num_layers);
        let no_decay = finetune_no_weight_decay(&p.key, p.shape.len());
        let g = *index.entry((id, no_decay)).or_insert_with(|| {
            groups.push(LrdGroup {
                name: format!("layer_{id}_{}", if no_decay { "no_decay" } else { "decay" }),
                layer_id: id,
                lr_scale: scales[id.min(scales.len() - 1)],
                weight_decay: if no_decay { 0.0 } else { weight_decay },
                params: Vec::new(),
            });
            groups.len() - 1
        });
        groups[g].params.push((p.key, p.id));
    }
    groups
}

type Opt<B> = OptimizerAdaptor<AdamW, VitClassifier<B>, B>;

/// One optimizer group: a layer id and a decay flag.
struct Group<B: AutodiffBackend> {
    scale: f64,
    opt: Opt<B>,
}

/// Fine-tunes a [`VitClassifier`]; writes `config.json`, `log.jsonl`, `checkpoint.ckpt`
/// (every epoch, atomically) and `best.ckpt` (highest `test_acc1`).
pub struct Finetuner<B: AutodiffBackend> {
    config: FinetuneConfig,
    model: Option<VitClassifier<B>>,
    groups: Vec<Group<B>>,
    group_of: HashMap<ParamId, usize>,
    train: DataLoader<AnySource>,
    val: Option<DataLoader<AnySource>>,
    classes: Vec<String>,
    run: crate::run_dir::RunDir,
    device: B::Device,
    history: Vec<ClassifierLog>,
    best_acc1: Option<f64>,
    load_report: Option<LoadReport>,
    progress: ProgressMode,
}

impl<B: AutodiffBackend> Finetuner<B> {
    /// Starts a run on explicit datasets.
    pub fn new(
        config: FinetuneConfig,
        train: AnySource,
        val: Option<AnySource>,
        out_dir: impl Into<crate::run_dir::NewRun>,
        device: B::Device,
    ) -> Result<Self> {
        config.validate()?;
        let run = start_run(
            RunSpec {
                model: &config.model,
                data: &config.data,
                batch_size: config.batch_size,
                seed: config.seed,
                threads: config.data_threads,
                eval: config.eval,
                train_transform: config.train_transform(),
            },
            &config,
            train,
            val,
            out_dir.into(),
        )?;
        let (model, load_report) =
            init_classifier::<B>(&config.model, &config.init, config.seed, &device)?;
        let lrd = param_groups_lrd(
            &model,
            config.weight_decay,
            config.layer_decay,
            config.model.depth,
        );
        let mut groups = Vec::new();
        let mut group_of = HashMap::new();
        for (g, group) in lrd.iter().enumerate() {
            groups.push(Group {
                scale: group.lr_scale,
                opt: AdamWConfig::new()
                    .with_beta_1(config.betas.0 as f32)
                    .with_beta_2(config.betas.1 as f32)
                    .with_epsilon(config.eps as f32)
                    .with_weight_decay(group.weight_decay as f32)
                    .init::<B, VitClassifier<B>>(),
            });
            for (_, id) in &group.params {
                group_of.insert(*id, g);
            }
        }
        Ok(Self {
            config,
            model: Some(model),
            groups,
            group_of,
            train: run.train,
            val: run.val,
            classes: run.classes,
            run: run.run,
            device,
            history: Vec::new(),
            best_acc1: None,
            load_report,
            progress: ProgressMode::Quiet,
        })
    }

    /// Shows progress on stderr.
    pub fn with_progress(mut self, mode: ProgressMode) -> Self {
        self.progress = mode;
        self
    }

    /// What loading the pre-trained checkpoint applied, left missing and ignored.
    pub fn load_report(&self) -> Option<&LoadReport> {
        self.load_report.as_ref()
    }

    /// The recipe.
    pub fn config(&self) -> &FinetuneConfig {
        &self.config
    }

    /// The classifier.
    pub fn model(&self) -> &VitClassifier<B> {
        self.model
            .as_ref()
            .unwrap_or_else(|| unreachable!("the model is only taken during a step"))
    }

    /// Per-epoch logs.
    pub fn history(&self) -> &[ClassifierLog] {
        &self.history
    }

    /// The run folder.
    pub fn out_dir(&self) -> &Path {
        self.run.path()
    }

    /// Number of optimizer groups (layer id × decay flag).
    pub fn num_groups(&self) -> usize {
        self.groups.len()
    }

    /// The schedule of the run.
    pub fn schedule(&self) -> LrSchedule {
        LrSchedule {
            lr: self.config.peak_lr(),
            min_lr: self.config.min_lr,
            warmup_epochs: self.config.warmup_epochs,
            epochs: self.config.epochs as f64,
            iters_per_epoch: self.train.num_batches(),
            accum_iter: self.config.accum_iter,
        }
    }

    /// Trains every epoch, evaluating and checkpointing after each.
    pub fn run(&mut self) -> Result<()> {
        while self.history.len() < self.config.epochs {
            self.run_epoch()?;
        }
        Ok(())
    }

    /// Trains, evaluates and checkpoints one epoch; returns its log.
    pub fn run_epoch(&mut self) -> Result<ClassifierLog> {
        let epoch = self.history.len();
        let schedule = self.schedule();
        let accum = self.config.accum_iter;
        let classes = self.config.model.num_classes;
        let c = self.config.model.in_chans;
        let s = self.config.model.img_size;
        let mut progress = Progress::new(
            self.progress,
            epoch,
            self.config.epochs,
            self.train.num_batches(),
        );
        let start = Instant::now();
        let (mut sum_loss, mut sum_lr, mut images, mut done) = (0.0, 0.0, 0usize, 0usize);
        let mut accumulator = GradientsAccumulator::<VitClassifier<B>>::new();
        for (it, batch) in self.train.epoch(epoch as u64).enumerate() {
            let mut batch: HostBatch = batch?;
            let n = batch.len();
            let lr = schedule.lr_at(epoch, it);
            let labels: Vec<usize> = batch.labels.iter().map(|&l| l as usize).collect();
            let mut rng =
                SampleRng::for_sample(self.config.seed ^ 0x6d69_7875, epoch as u64, it as u64);
            let (targets, _) = mix_batch(
                &mut batch.images,
                &labels,
                (c, s, s),
                classes,
                &self.config.mixup,
                &mut rng,
            );
            let (x, _) = batch.into_tensors::<B>(&self.device);
            let targets =
                Tensor::<B, 2>::from_data(TensorData::new(targets, [n, classes]), &self.device);
            let model = self
                .model
                .take()
                .unwrap_or_else(|| unreachable!("model present"));
            let logits = match model.forward(x) {
                Ok(l) => l,
                Err(e) => {
                    self.model = Some(model);
                    return Err(e.into());
                }
            };
            let loss = soft_target_cross_entropy(logits, targets);
            let value = loss.clone().into_scalar().elem::<f64>();
            if !value.is_finite() {
                self.model = Some(model);
                return Err(TrainError::NonFiniteLoss {
                    epoch,
                    iteration: it,
                    value,
                    checkpoint: self.run.file(CHECKPOINT_FILE).display().to_string(),
                });
            }
            let scaled = if accum > 1 {
                loss.div_scalar(accum as f64)
            } else {
                loss
            };
            let grads = GradientsParams::from_grads(scaled.backward(), &model);
            let model = if accum > 1 {
                accumulator.accumulate(&model, grads);
                if (it + 1) % accum == 0 {
                    let grads = accumulator.grads();
                    self.step(model, grads, lr)
                } else {
                    model
                }
            } else {
                self.step(model, grads, lr)
            };
            self.model = Some(model);
            sum_loss += value;
            sum_lr += lr;
            images += n;
            done += 1;
            progress.update(done, images, sum_loss / done as f64);
        }
        progress.finish();
        let seconds = start.elapsed().as_secs_f64();
        let report = self.evaluate()?;
        let d = done.max(1) as f64;
        let log = ClassifierLog {
            epoch,
            lr: sum_lr / d,
            train_loss: sum_loss / d,
            test_loss: report.map(|r| r.loss),
            test_acc1: report.map(|r| r.acc1),
            test_acc5: report.map(|r| r.acc5),
            n_parameters: self.model().num_params(),
            images_per_sec: images as f64 / seconds.max(1e-9),
            seconds,
            images_seen: self.history.last().map_or(0, |h| h.images_seen) + images as u64,
        };
        append_jsonl(&self.run.file(LOG_FILE), &log)?;
        self.history.push(log.clone());
        let is_best = log
            .test_acc1
            .is_some_and(|a| self.best_acc1.is_none_or(|b| a >= b));
        if is_best {
            self.best_acc1 = log.test_acc1;
        }
        self.save(CHECKPOINT_FILE)?;
        if is_best || (log.test_acc1.is_none() && self.history.len() == self.config.epochs) {
            self.save(BEST_FILE)?;
        }
        Ok(log)
    }

    /// One AdamW step per group with `lr · scale`.
    fn step(
        &mut self,
        model: VitClassifier<B>,
        mut grads: GradientsParams,
        lr: f64,
    ) -> VitClassifier<B> {
        let mut split: Vec<GradientsParams> = (0..self.groups.len())
            .map(|_| GradientsParams::new())
            .collect();
        model.visit(&mut SplitGrads::<B> {
            from: &mut grads,
            to: &mut split,
            group_of: &self.group_of,
            _b: std::marker::PhantomData,
        });
        let mut model = model;
        for (group, grads) in self.groups.iter_mut().zip(split) {
            if grads.is_empty() {
                continue;
            }
            model = group.opt.step(lr * group.scale, model, grads);
        }
        model
    }

    /// Loss and top-1/top-5 on the validation split.
    pub fn evaluate(&self) -> Result<Option<EvalReport>> {
        let Some(val) = &self.val else {
            return Ok(None);
        };
        let model = self.model().valid();
        let report = evaluate::<B::InnerBackend>(val, &self.device, |x| Ok(model.forward(x)?))?;
        Ok(Some(report))
    }

    fn save(&self, file: &str) -> Result<PathBuf> {
        let path = self.run.file(file);
        let meta = ClassifierMeta {
            format: 1,
            kind: ClassifierKind::Finetune,
            model: self.config.model.clone(),
            data: self.config.data.clone(),
            classes: self.classes.clone(),
            epochs_done: self.history.len(),
            history: self.history.clone(),
            best_acc1: self.best_acc1,
            recipe: serde_json::to_value(&self.config).unwrap_or_default(),
            extras: Default::default(),
        };
        let bad = |e: String| TrainError::Checkpoint {
            path: path.clone(),
            reason: e,
        };
        let parts = CheckpointParts {
            meta: serde_json::to_vec(&meta).map_err(|e| bad(e.to_string()))?,
            model: Recorder::<B>::record(&Rec::new(), self.model().clone().into_record(), ())
                .map_err(|e| bad(e.to_string()))?,
            optim_decay: Vec::new(),
            optim_no_decay: Vec::new(),
        };
        write_atomic(&path, &parts.encode())?;
        Ok(path)
    }
}

/// Moves each gradient into its parameter's group.
struct SplitGrads<'a, B: AutodiffBackend> {
    from: &'a mut GradientsParams,
    to: &'a mut [GradientsParams],
    group_of: &'a HashMap<ParamId, usize>,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SplitGrads<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(&g) = self.group_of.get(&param.id)
            && let Some(grad) = self.from.remove::<B::InnerBackend, D>(param.id)
        {
            self.to[g].register::<B::InnerBackend, D>(param.id, grad);
        }
    }
}

#[cfg(test)]
mod batch_mix_tests {
    use super::*;

    #[test]
    fn mixed_batches_follow_timm() {
        let (c, h, w) = (1, 8, 8);
        let images: Vec<f32> = (0..4 * 64).map(|i| (i / 64) as f32).collect();
        let labels = [0usize, 1, 2, 3];
        let mut saw = (false, false);
        for seed in 0..40 {
            let mut x = images.clone();
            let cfg = MixupConfig {
                mixup_alpha: 0.8,
                cutmix_alpha: 1.0,
                prob: 1.0,
                switch_prob: 0.5,
                smoothing: 0.1,
            };
            let (t, lam) = mix_batch(
                &mut x,
                &labels,
                (c, h, w),
                4,
                &cfg,
                &mut SampleRng::new(seed),
            );
            // Image 0 mixes with image 3: every pixel is lam·0 + (1 − lam)·3 (Mixup) or
            // exactly 0 / 3 (CutMix, with lam the share of 0-pixels).
            let img0 = &x[..64];
            let threes = img0.iter().filter(|&&v| v == 3.0).count();
            if img0.iter().all(|&v| v == 0.0 || v == 3.0) {
                saw.0 = true;
                assert!((lam - (1.0 - threes as f64 / 64.0)).abs() < 1e-12, "{lam}");
            } else {
                saw.1 = true;
                assert!(
                    img0.iter()
                        .all(|&v| (v - 3.0 * (1.0 - lam as f32)).abs() < 1e-5)
                );
            }
            let off = 0.1 / 4.0;
            let want0 = lam * (1.0 - 0.1 + off) + (1.0 - lam) * off;
            assert!((t[0] as f64 - want0).abs() < 1e-6);
            assert!((t.iter().take(4).sum::<f32>() - 1.0).abs() < 1e-6);
        }
        assert!(saw.0 && saw.1, "both CutMix and Mixup are drawn");
        // Off: the batch is untouched and targets are smoothed one-hots.
        let off = MixupConfig {
            mixup_alpha: 0.0,
            cutmix_alpha: 0.0,
            prob: 1.0,
            switch_prob: 0.5,
            smoothing: 0.1,
        };
        let mut x = images.clone();
        let (t, lam) = mix_batch(&mut x, &labels, (c, h, w), 4, &off, &mut SampleRng::new(0));
        assert_eq!((x, lam), (images, 1.0));
        assert_eq!(t, one_hot_targets(&labels, 4, 0.1));
    }
}
