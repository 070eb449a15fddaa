//! The three learners against PyTorch, step by step (`tools/parity/trajectory.py`).
//!
//! The reference trains the same tiny models from the same initial state on the same 40
//! micro-batches, with the same masking noise, Mixup/CutMix draws and drop-path masks, the
//! official optimizers, parameter groups and per-iteration schedule. Here the learners are
//! fed those batches and draws through their real `train_batch`, and the parameters after
//! optimizer steps 1, 2, 5 and 20 and the lr of every step are compared with the fixture's.
//!
//! Shared by `crates/supmae-train/tests/learners/trajectory.rs` (Flex) and the wgpu test of the
//! `supmae` crate (lavapipe).

#![allow(clippy::needless_range_loop)]
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use supmae_data::fashion_mnist::{FashionMnist, Split};
use supmae_data::{AnySource, HostBatch};
use supmae_model::checkpoint::{StateDict, export_state_dict};
use supmae_model::{ClsHeadConfig, MaeConfig, VitConfig};
use supmae_train::{
    DataSpec, FinetuneConfig, FinetuneDraws, Finetuner, Init, LarsConfig, LinearProber,
    LinprobeConfig, MixDraw, MixupConfig, PretrainConfig, Pretrainer,
};

/// The committed fixture.
pub fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tools/parity/fixtures/trajectory/trajectory.safetensors")
}

/// How close the learners must stay to PyTorch.
#[derive(Debug, Clone, Copy)]
pub struct Tolerances {
    /// Parameters after optimizer steps 1 and 2 (step 1 runs at lr 0: the warmup starts
    /// there), relative L2 per tensor.
    pub first: f64,
    /// Parameters after steps 5 and 20, relative L2 per tensor.
    pub last: f64,
    /// Learning rate of every step, absolute.
    pub lr: f64,
    /// Loss of every micro-batch, relative.
    pub loss: f64,
}

/// The tolerances, for the CPU backend: the fixture's own float32-vs-float64
/// differences are 1e-7 (step 1) to 6e-7 (step 20), and every compared tensor moves by
/// 1e-3 or more over the 20 steps.
pub const CPU: Tolerances = Tolerances {
    first: 1e-6,
    last: 1e-5,
    lr: 1e-9,
    loss: 1e-5,
};

const N: usize = 4;
const C: usize = 3;
const S: usize = 16;
const L: usize = 16;
const CLASSES: usize = 10;
/// Optimizer steps whose parameters the fixture holds.
const SNAPSHOTS: [usize; 4] = [1, 2, 5, 20];

/// The fixture's inputs.
pub struct Fixture {
    all: StateDict,
    images: Vec<f32>,
    labels: Vec<f32>,
    noise: Vec<f32>,
}

impl Fixture {
    /// Reads the committed fixture.
    pub fn load() -> Self {
        let all = StateDict::from_safetensors(fixture_path()).expect("trajectory fixture");
        let read = |k: &str| all.read_f32(k).expect(k).0;
        let (images, labels, noise) = (read("images"), read("labels"), read("noise"));
        assert_eq!(images.len(), 40 * N * C * S * S);
        Self {
            images,
            labels,
            noise,
            all,
        }
    }

    fn values(&self, key: &str) -> Vec<f64> {
        self.all
            .read_f32(key)
            .expect(key)
            .0
            .into_iter()
            .map(f64::from)
            .collect()
    }

    /// Values read exactly (the lr and loss arrays are float64).
    fn exact(&self, key: &str) -> Vec<f64> {
        self.all.read_f64(key).expect(key).0
    }

    /// Micro-batch `i`.
    fn batch(&self, i: usize) -> HostBatch {
        let per = N * C * S * S;
        HostBatch {
            images: self.images[i * per..(i + 1) * per].to_vec(),
            labels: self.labels[i * N..(i + 1) * N]
                .iter()
                .map(|&l| l as i64)
                .collect(),
            indices: (i * N..(i + 1) * N).collect(),
            channels: C,
            size: S,
        }
    }

    fn noise(&self, i: usize) -> Vec<f32> {
        self.noise[i * N * L..(i + 1) * N * L].to_vec()
    }

    /// The entries under `prefix`, prefix removed (integer counters left out).
    fn sub(&self, prefix: &str) -> StateDict {
        let entries = self
            .all
            .keys()
            .filter_map(|k| k.strip_prefix(prefix))
            .filter(|k| !k.ends_with("num_batches_tracked"))
            .map(|k| {
                let (v, shape) = self.all.read_f32(&format!("{prefix}{k}")).expect(k);
                (k.to_string(), shape, v)
            })
            .collect::<Vec<_>>();
        assert!(!entries.is_empty(), "nothing under {prefix}");
        StateDict::from_entries(fixture_path(), entries)
    }
}

/// Directions whose true gradient is exactly zero, so that float32 rounding noise, scaled
/// up by Adam's normalisation, is all that moves them, in PyTorch as here:
/// the key third of every `qkv` bias (softmax is invariant to a shift of all logits of a
/// query) and, in pre-training, the bias of the classification branch's first Linear with
/// the running mean computed from it (a train-mode BatchNorm follows and removes it). The
/// fixture's README measures their float32-vs-float64 differences (up to 1.4e-4 absolute).
fn compared(key: &str, values: &[f64]) -> Option<Vec<f64>> {
    if key == "cls_head.0.bias" || key == "cls_head.1.running_mean" {
        return None;
    }
    if key.ends_with("attn.qkv.bias") {
        let third = values.len() / 3;
        let mut kept = values[..third].to_vec();
        kept.extend_from_slice(&values[2 * third..]);
        return Some(kept);
    }
    Some(values.to_vec())
}

/// Relative L2 distance per tensor of `ours` to the fixture's `want`; panics with the worst
/// tensors when one is above `tol`. Returns the largest distance.
fn compare(what: &str, ours: &[(String, Vec<usize>, Vec<f32>)], want: &StateDict, tol: f64) -> f64 {
    let mut worst: Vec<(f64, String)> = Vec::new();
    for key in want.keys() {
        let (w, wshape) = want.read_f32(key).expect(key);
        let Some((_, shape, got)) = ours.iter().find(|(k, _, _)| k == key) else {
            panic!("{what}: the learner has no `{key}`");
        };
        assert_eq!(shape, &wshape, "{what}: shape of `{key}`");
        let w: Vec<f64> = w.into_iter().map(f64::from).collect();
        let g: Vec<f64> = got.iter().map(|&v| f64::from(v)).collect();
        let (Some(w), Some(g)) = (compared(key, &w), compared(key, &g)) else {
            continue;
        };
        let diff = w
            .iter()
            .zip(&g)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm = w.iter().map(|a| a * a).sum::<f64>().sqrt();
        let rel = if norm > 0.0 { diff / norm } else { diff };
        assert!(rel.is_finite(), "{what}: `{key}` is not finite");
        worst.push((rel, key.to_string()));
    }
    worst.sort_by(|a, b| b.0.total_cmp(&a.0));
    let max = worst.first().map_or(0.0, |w| w.0);
    if max > tol {
        let table: Vec<String> = worst
            .iter()
            .take(8)
            .map(|(r, k)| format!("  {k}: {r:.3e}"))
            .collect();
        panic!(
            "{what}: parameters differ from PyTorch by more than {tol:e} (relative L2):\n{}",
            table.join("\n")
        );
    }
    max
}

fn check_lrs(what: &str, ours: &[f64], want: &[f64], tol: f64) {
    assert_eq!(ours.len(), want.len(), "{what}: optimizer steps");
    for (step, (a, b)) in ours.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= tol,
            "{what}: lr of step {} is {a:e}, PyTorch's {b:e}",
            step + 1
        );
    }
}

fn check_loss(what: &str, i: usize, ours: f64, want: f64, tol: f64) {
    let rel = (ours - want).abs() / want.abs().max(1e-12);
    assert!(
        rel <= tol,
        "{what}: loss of micro-batch {i} is {ours}, PyTorch's {want} ({rel:.2e} relative)"
    );
}

fn source(dir: &Path, n: usize) -> AnySource {
    FashionMnist::embedded(Split::Train)
        .unwrap()
        .write_idx(dir, Split::Train, Some(n))
        .unwrap();
    AnySource::FashionMnist(FashionMnist::from_dir(dir, Split::Train).unwrap())
}

fn scratch(dir: &Path, name: &str) -> PathBuf {
    let d = dir.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tiny_vit(global_pool: bool, drop_path: f64) -> VitConfig {
    VitConfig::new()
        .with_img_size(S)
        .with_patch_size(4)
        .with_in_chans(C)
        .with_embed_dim(32)
        .with_depth(3)
        .with_num_heads(2)
        .with_num_classes(CLASSES)
        .with_global_pool(global_pool)
        .with_drop_path_rate(drop_path)
}

/// The largest distance to PyTorch at each snapshot, for the report.
pub type Distances = Vec<(usize, f64)>;

/// Pre-training: AdamW (0.9, 0.95), weight decay 0.05 except 1-D tensors and biases, lr
/// 1e-3 → 1e-5 with a 1-epoch warmup over 4 epochs of 10 micro-batches, accumulation 2.
pub fn pretrain<B: AutodiffBackend>(dir: &Path, device: B::Device, tol: Tolerances) -> Distances {
    let fx = Fixture::load();
    let data = scratch(dir, "pretrain-data");
    let model = MaeConfig::new()
        .with_img_size(S)
        .with_patch_size(4)
        .with_in_chans(C)
        .with_embed_dim(32)
        .with_depth(3)
        .with_num_heads(2)
        .with_decoder_embed_dim(16)
        .with_decoder_depth(1)
        .with_decoder_num_heads(2)
        .with_cls_head(Some(
            ClsHeadConfig::new()
                .with_num_classes(CLASSES)
                .with_hidden(64),
        ));
    let spec = DataSpec::FashionMnist {
        path: Some(data.clone()),
    };
    let config = PretrainConfig {
        model,
        epochs: 4,
        warmup_epochs: 1.0,
        batch_size: N,
        accum_iter: 2,
        lr: Some(1e-3),
        min_lr: 1e-5,
        data_threads: 1,
        eval: false,
        checkpoint_every: 100,
        ..PretrainConfig::supmae_recipe(spec)
    };
    let mut learner = Pretrainer::<B>::with_sources(
        config,
        source(&data, 40),
        None,
        scratch(dir, "pretrain-run"),
        device,
    )
    .unwrap();
    learner.load_state_dict(&fx.sub("pretrain.init.")).unwrap();
    let want_loss = fx.exact("pretrain.loss");
    let mut distances = Vec::new();
    let mut steps = 0;
    for i in 0..40 {
        let out = learner
            .train_batch(i / 10, i % 10, fx.batch(i), Some(fx.noise(i)))
            .unwrap();
        check_loss("pre-training", i, out.loss, want_loss[i], tol.loss);
        if out.stepped {
            steps += 1;
            if SNAPSHOTS.contains(&steps) {
                let t = if steps <= 2 { tol.first } else { tol.last };
                let what = format!("pre-training, step {steps}");
                let ours = export_state_dict(learner.model());
                distances.push((
                    steps,
                    compare(&what, &ours, &fx.sub(&format!("pretrain.step{steps}.")), t),
                ));
            }
        }
    }
    check_lrs(
        "pre-training",
        learner.step_lrs(),
        &fx.exact("pretrain.lr"),
        tol.lr,
    );
    distances
}

/// Fine-tuning: layer-wise lr decay 0.75 over AdamW (0.9, 0.999) groups, weight decay
/// 0.05, lr 1e-3 → 1e-6 with a 1-epoch warmup over 4 epochs of 5 batches, drop path 0.2
/// and Mixup/CutMix with label smoothing 0.1, the draws PyTorch's.
pub fn finetune<B: AutodiffBackend>(dir: &Path, device: B::Device, tol: Tolerances) -> Distances {
    let fx = Fixture::load();
    let data = scratch(dir, "finetune-data");
    let spec = DataSpec::FashionMnist {
        path: Some(data.clone()),
    };
    let config = FinetuneConfig {
        epochs: 4,
        warmup_epochs: 1.0,
        batch_size: N,
        accum_iter: 1,
        lr: Some(1e-3),
        min_lr: 1e-6,
        weight_decay: 0.05,
        layer_decay: 0.75,
        betas: (0.9, 0.999),
        eps: 1e-8,
        mixup: MixupConfig {
            mixup_alpha: 0.8,
            cutmix_alpha: 1.0,
            prob: 1.0,
            switch_prob: 0.5,
            smoothing: 0.1,
        },
        rand_augment: None,
        reprob: 0.0,
        data_threads: 1,
        eval: false,
        ..FinetuneConfig::recipe(tiny_vit(true, 0.2), Init::Scratch, spec)
    };
    let mut learner = Finetuner::<B>::new(
        config,
        source(&data, 20),
        None,
        scratch(dir, "finetune-run"),
        device,
    )
    .unwrap();
    learner.load_state_dict(&fx.sub("finetune.init.")).unwrap();
    let (lam, cutmix) = (fx.exact("finetune.lam"), fx.values("finetune.cutmix"));
    let (cy, cx) = (fx.values("finetune.cy"), fx.values("finetune.cx"));
    let drop = fx.all.read_f32("finetune.drop").unwrap().0;
    let per_step = drop.len() / 20;
    let want_loss = fx.exact("finetune.loss");
    let (mut lrs, mut distances) = (Vec::new(), Vec::new());
    for i in 0..20 {
        let draws = FinetuneDraws {
            mix: Some(MixDraw {
                lam: lam[i],
                cutmix_center: (cutmix[i] == 1.0).then_some((cy[i] as usize, cx[i] as usize)),
            }),
            drop_path: Some(drop[i * per_step..(i + 1) * per_step].to_vec()),
        };
        let out = learner
            .train_batch(i / 5, i % 5, fx.batch(i), draws)
            .unwrap();
        check_loss("fine-tuning", i, out.loss, want_loss[i], tol.loss);
        assert!(out.stepped);
        lrs.push(out.lr);
        let step = i + 1;
        if SNAPSHOTS.contains(&step) {
            let t = if step <= 2 { tol.first } else { tol.last };
            let what = format!("fine-tuning, step {step}");
            let ours = export_state_dict(learner.model());
            distances.push((
                step,
                compare(&what, &ours, &fx.sub(&format!("finetune.step{step}.")), t),
            ));
        }
    }
    check_lrs("fine-tuning", &lrs, &fx.exact("finetune.lr"), tol.lr);
    distances
}

/// Linear probing: LARS (momentum 0.9, trust 0.001, weight decay 0.05 on the weight only)
/// on an affine-free BatchNorm + Linear over the frozen cls token, lr 4.0 → 0 with a
/// 1-epoch warmup over 4 epochs of 5 batches.
pub fn linprobe<B: AutodiffBackend>(dir: &Path, device: B::Device, tol: Tolerances) -> Distances {
    let fx = Fixture::load();
    let data = scratch(dir, "linprobe-data");
    let spec = DataSpec::FashionMnist {
        path: Some(data.clone()),
    };
    let config = LinprobeConfig {
        epochs: 4,
        warmup_epochs: 1.0,
        batch_size: N,
        accum_iter: 1,
        lr: Some(4.0),
        min_lr: 0.0,
        lars: LarsConfig {
            weight_decay: 0.05,
            momentum: 0.9,
            trust_coefficient: 0.001,
        },
        data_threads: 1,
        eval: false,
        ..LinprobeConfig::recipe(tiny_vit(false, 0.0), Init::Scratch, spec)
    };
    let mut learner = LinearProber::<B>::new(
        config,
        source(&data, 20),
        None,
        scratch(dir, "linprobe-run"),
        device,
    )
    .unwrap();
    learner.load_state_dict(&fx.sub("linprobe.init.")).unwrap();
    let want_loss = fx.exact("linprobe.loss");
    let (mut lrs, mut distances) = (Vec::new(), Vec::new());
    for i in 0..20 {
        let out = learner.train_batch(i / 5, i % 5, fx.batch(i)).unwrap();
        check_loss("linear probing", i, out.loss, want_loss[i], tol.loss);
        assert!(out.stepped);
        lrs.push(out.lr);
        let step = i + 1;
        if SNAPSHOTS.contains(&step) {
            let t = if step <= 2 { tol.first } else { tol.last };
            let probe = learner.model();
            let head = export_state_dict(&probe.encoder);
            let get = |k: &str| head.iter().find(|(key, _, _)| key == k).unwrap().clone();
            let (_, ws, w) = get("head.weight");
            let (_, bs, b) = get("head.bias");
            let stat = |t: burn::tensor::Tensor<B, 1>| {
                t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
            };
            let mean = stat(probe.bn.running_mean.value_sync());
            let var = stat(probe.bn.running_var.value_sync());
            let ours = vec![
                ("head.1.weight".to_string(), ws, w),
                ("head.1.bias".to_string(), bs, b),
                ("head.0.running_mean".to_string(), vec![mean.len()], mean),
                ("head.0.running_var".to_string(), vec![var.len()], var),
            ];
            let what = format!("linear probing, step {step}");
            distances.push((
                step,
                compare(&what, &ours, &fx.sub(&format!("linprobe.step{step}.")), t),
            ));
        }
    }
    check_lrs("linear probing", &lrs, &fx.exact("linprobe.lr"), tol.lr);
    distances
}
