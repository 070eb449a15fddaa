//! The epoch engine gives every learner the same run folder: `config.json`, `log.jsonl`,
//! `checkpoint.ckpt` (the last epoch) and `best.ckpt` (the best validation top-1, or the
//! last epoch without evaluation), and the same early stop.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use supmae_data::AnySource;
use supmae_data::fashion_mnist::Split;
use supmae_model::{ClsHeadConfig, MaeConfig};
use supmae_train::checkpoint::CheckpointParts;
use supmae_train::open::{Checkpoint, open};
use supmae_train::run_dir::{BEST_FILE, CHECKPOINT_FILE, CONFIG_FILE, LOG_FILE};
use supmae_train::{
    DataSpec, FinetuneConfig, Finetuner, Init, LinearProber, LinprobeConfig, PretrainConfig,
    Pretrainer,
};

use crate::common::{scratch, small_fashion};

type B = Autodiff<Flex>;

fn tiny_mae() -> MaeConfig {
    MaeConfig::new()
        .with_img_size(28)
        .with_patch_size(7)
        .with_in_chans(1)
        .with_embed_dim(16)
        .with_depth(2)
        .with_num_heads(2)
        .with_decoder_embed_dim(16)
        .with_decoder_depth(1)
        .with_decoder_num_heads(2)
        .with_cls_head(Some(
            ClsHeadConfig::new().with_num_classes(10).with_hidden(16),
        ))
}

/// The files of a run folder (the lock and temporary files aside), and the epochs done of
/// its `best.ckpt`.
fn end_of_run(dir: &Path) -> (BTreeSet<String>, usize) {
    let files = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    let best = match open(&dir.join(BEST_FILE)).unwrap().1 {
        Checkpoint::Pretrain { epochs_done, .. } => epochs_done,
        Checkpoint::Classifier(meta) => meta.epochs_done,
        Checkpoint::Foreign => panic!("best.ckpt is not ours"),
    };
    (files, best)
}

/// The epoch (1-based) the best validation top-1 was reached at, the latest on a tie.
fn best_epoch(acc1: &[Option<f64>]) -> Option<usize> {
    let mut best: Option<(f64, usize)> = None;
    for (i, a) in acc1.iter().enumerate() {
        if let Some(a) = a
            && best.is_none_or(|(b, _)| *a >= b)
        {
            best = Some((*a, i + 1));
        }
    }
    best.map(|(_, e)| e)
}

struct Runs {
    pre: PathBuf,
    ft: PathBuf,
    lp: PathBuf,
    acc1: [Vec<Option<f64>>; 3],
}

fn three_runs(name: &str, eval: bool, epochs: usize, stop: usize) -> Runs {
    let dir = scratch(&format!("{name}-data"));
    let train: AnySource = small_fashion(&dir, 48, Split::Train);
    let val: AnySource = small_fashion(&dir, 24, Split::Test);
    let spec = DataSpec::FashionMnist {
        path: Some(dir.clone()),
    };
    let device = Default::default();

    let pre = scratch(&format!("{name}-pre"));
    let cfg = PretrainConfig {
        model: tiny_mae(),
        data: spec.clone(),
        epochs,
        warmup_epochs: 0.0,
        batch_size: 8,
        eval,
        data_threads: 1,
        checkpoint_every: epochs,
        ..PretrainConfig::fashion_mnist_cpu()
    };
    let mut p =
        Pretrainer::<B>::with_sources(cfg, train.clone(), Some(val.clone()), &pre, device).unwrap();
    p.train_until(stop).unwrap();
    let pre_acc: Vec<_> = p.history().iter().map(|h| h.val_acc1_full).collect();
    drop(p);

    let ft = scratch(&format!("{name}-ft"));
    let model = tiny_mae().classifier(10, true);
    let mut cfg =
        FinetuneConfig::recipe(model, Init::Pretrained { path: pre.clone() }, spec.clone());
    cfg.epochs = epochs;
    cfg.warmup_epochs = 0.0;
    cfg.batch_size = 8;
    cfg.data_threads = 1;
    cfg.eval = eval;
    let mut f = Finetuner::<B>::new(cfg, train.clone(), Some(val.clone()), &ft, device).unwrap();
    f.train_until(stop).unwrap();
    let ft_acc: Vec<_> = f.history().iter().map(|h| h.test_acc1).collect();
    drop(f);

    let lp = scratch(&format!("{name}-lp"));
    let model = tiny_mae().classifier(10, false);
    let mut cfg = LinprobeConfig::recipe(model, Init::Pretrained { path: pre.clone() }, spec);
    cfg.epochs = epochs;
    cfg.warmup_epochs = 0.0;
    cfg.batch_size = 8;
    cfg.lr = Some(0.5);
    cfg.data_threads = 1;
    cfg.eval = eval;
    let mut l = LinearProber::<B>::new(cfg, train, Some(val), &lp, device).unwrap();
    l.train_until(stop).unwrap();
    let lp_acc: Vec<_> = l.history().iter().map(|h| h.test_acc1).collect();
    drop(l);
    Runs {
        pre,
        ft,
        lp,
        acc1: [pre_acc, ft_acc, lp_acc],
    }
}

#[test]
fn every_learner_ends_with_the_same_files_with_and_without_evaluation() {
    let want: BTreeSet<String> = [
        CONFIG_FILE,
        LOG_FILE,
        CHECKPOINT_FILE,
        BEST_FILE,
        "curves.png",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for eval in [false, true] {
        let runs = three_runs(if eval { "eng-eval" } else { "eng-noeval" }, eval, 3, 3);
        for (dir, acc1) in [&runs.pre, &runs.ft, &runs.lp].into_iter().zip(&runs.acc1) {
            let (files, best) = end_of_run(dir);
            assert_eq!(files, want, "{} (eval {eval})", dir.display());
            assert_eq!(acc1.len(), 3);
            if eval {
                assert!(acc1.iter().all(Option::is_some), "{}", dir.display());
                assert_eq!(Some(best), best_epoch(acc1), "{}", dir.display());
            } else {
                assert!(acc1.iter().all(Option::is_none), "{}", dir.display());
                // Without evaluation the best is the last epoch: the same metadata and model
                // record byte for byte. The optimizer records are Burn's maps keyed by
                // parameter id, serialised in hash order, so only their sizes must agree.
                assert_eq!(best, 3, "{}", dir.display());
                let best_parts = CheckpointParts::read(&dir.join(BEST_FILE)).unwrap();
                let last_parts = CheckpointParts::read(&dir.join(CHECKPOINT_FILE)).unwrap();
                assert_eq!(best_parts.meta, last_parts.meta, "{}", dir.display());
                assert_eq!(best_parts.model, last_parts.model, "{}", dir.display());
                assert_eq!(
                    (
                        best_parts.optim_decay.len(),
                        best_parts.optim_no_decay.len()
                    ),
                    (
                        last_parts.optim_decay.len(),
                        last_parts.optim_no_decay.len()
                    ),
                    "{}",
                    dir.display()
                );
            }
        }
    }
}

#[test]
fn every_learner_stopped_early_leaves_a_checkpoint_of_its_last_epoch() {
    // Pre-training checkpoints only at the end of its 3-epoch run here, so stopping after
    // epoch 1 must still leave epoch 1's checkpoint behind; no best.ckpt without evaluation
    // before the run's end.
    let runs = three_runs("eng-stop", false, 3, 1);
    for dir in [&runs.pre, &runs.ft, &runs.lp] {
        let done = match open(&dir.join(CHECKPOINT_FILE)).unwrap().1 {
            Checkpoint::Pretrain { epochs_done, .. } => epochs_done,
            Checkpoint::Classifier(meta) => meta.epochs_done,
            Checkpoint::Foreign => panic!("not ours"),
        };
        assert_eq!(done, 1, "{}", dir.display());
        assert!(!dir.join(BEST_FILE).exists(), "{}", dir.display());
    }
}
