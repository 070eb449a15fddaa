//! Fine-tuning, linear probing and evaluation at tiny size, from a pre-training checkpoint
//! written by the pre-training learner.

use std::collections::BTreeSet;
use std::path::PathBuf;

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module};
use supmae_data::AnySource;
use supmae_data::fashion_mnist::Split;
use supmae_model::checkpoint::export_state_dict;
use supmae_model::{ClsHeadConfig, MaeConfig, VitConfig};
use supmae_train::classifier::{BEST_FILE, evaluate};
use supmae_train::finetune::param_groups_lrd;
use supmae_train::run_dir::{CHECKPOINT_FILE, LOG_FILE};
use supmae_train::{
    Classifier, ClassifierKind, DataSpec, FinetuneConfig, Finetuner, Init, LinearProber,
    LinprobeConfig, PretrainConfig, Pretrainer, TrainError, load_classifier,
};

use crate::common::{scratch, small_fashion};

type B = Autodiff<Flex>;

fn data(name: &str) -> (PathBuf, AnySource, AnySource) {
    let dir = scratch(&format!("{name}-data"));
    let train = small_fashion(&dir, 48, Split::Train);
    let val = small_fashion(&dir, 24, Split::Test);
    (dir, train, val)
}

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

/// A one-epoch tiny pre-training run; returns its run folder.
fn pretrained(name: &str) -> (PathBuf, AnySource, AnySource, DataSpec) {
    let (dir, train, val) = data(name);
    let spec = DataSpec::FashionMnist {
        path: Some(dir.clone()),
    };
    let cfg = PretrainConfig {
        model: tiny_mae(),
        data: spec.clone(),
        epochs: 1,
        warmup_epochs: 0.0,
        batch_size: 8,
        eval: false,
        data_threads: 1,
        ..PretrainConfig::fashion_mnist_cpu()
    };
    let run = scratch(&format!("{name}-pre"));
    let mut trainer =
        Pretrainer::<B>::with_sources(cfg, train.clone(), None, &run, Default::default()).unwrap();
    trainer.run().unwrap();
    (run, train, val, spec)
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

#[test]
fn finetuning_loads_exactly_the_encoder_and_runs_the_full_recipe() {
    let (run, train, val, spec) = pretrained("ft");
    let model = tiny_mae().classifier(10, true);
    let mut cfg =
        FinetuneConfig::recipe(model, Init::Pretrained { path: run.clone() }, spec.clone());
    cfg.epochs = 2;
    cfg.warmup_epochs = 1.0;
    cfg.batch_size = 8;
    cfg.accum_iter = 2;
    cfg.data_threads = 1;
    let out = scratch("ft-run");
    let mut ft =
        Finetuner::<B>::new(cfg, train, Some(val.clone()), &out, Default::default()).unwrap();
    let report = ft.load_report().unwrap().clone();
    assert_eq!(
        report.missing,
        set(&["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"])
    );
    // Unused: the decoder, mask token, classification branch and (global pool) the norm.
    assert!(report.unused.iter().all(|k| k == "mask_token"
        || k.starts_with("decoder_")
        || k.starts_with("cls_head.")
        || k.starts_with("norm.")));
    assert!(report.unused.contains("mask_token") && report.unused.contains("norm.weight"));
    assert!(report.unused.contains("cls_head.0.weight"));
    // The encoder equals the pre-trained one (pos_embed included, now trainable).
    let (pre, _) = supmae_train::load_pretrained::<Flex>(&run, &Default::default()).unwrap();
    let pre: Vec<_> = export_state_dict(&pre);
    let ft_sd = export_state_dict(&ft.model().valid());
    for (key, _, values) in &ft_sd {
        if key.starts_with("head.") || key.starts_with("fc_norm.") {
            continue;
        }
        let (_, _, want) = pre.iter().find(|(k, _, _)| k == key).unwrap();
        assert_eq!(values, want, "{key}");
    }
    // A tiny depth-2 model: layer ids 0..=3, each with decay and no-decay groups.
    assert_eq!(ft.num_groups(), 8);
    ft.run().unwrap();
    let log = std::fs::read_to_string(out.join(LOG_FILE)).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for key in [
        "train_loss",
        "test_loss",
        "test_acc1",
        "test_acc5",
        "lr",
        "epoch",
        "n_parameters",
    ] {
        assert!(lines[1].get(key).is_some(), "{key} missing from {log}");
    }
    // The best checkpoint evaluates to the logged best accuracy.
    let best = ft
        .history()
        .iter()
        .filter_map(|h| h.test_acc1)
        .fold(f64::MIN, f64::max);
    let (clf, meta) = load_classifier::<Flex>(out.join(BEST_FILE), &Default::default()).unwrap();
    assert_eq!(meta.kind, ClassifierKind::Finetune);
    assert!(matches!(clf, Classifier::Vit(_)));
    let loader = supmae_data::DataLoader::new(
        std::sync::Arc::new(val),
        supmae_train::classifier::classifier_transforms(
            &spec,
            &meta.model,
            supmae_data::Transform::pretrain(28),
        )
        .unwrap()
        .1,
        supmae_data::LoaderConfig {
            shuffle: false,
            ..supmae_data::LoaderConfig::new(7)
        },
    )
    .unwrap();
    let report = evaluate::<Flex>(&loader, &Default::default(), |x| clf.forward(x)).unwrap();
    assert_eq!(report.images, 24);
    assert!(
        (report.acc1 - best).abs() < 1e-9,
        "{} vs {best}",
        report.acc1
    );
    assert!(out.join(CHECKPOINT_FILE).is_file());
}

#[test]
fn training_from_scratch_learns_and_a_foreign_checkpoint_is_refused() {
    let (dir, train, val) = data("scratch");
    let spec = DataSpec::FashionMnist {
        path: Some(dir.clone()),
    };
    let model = tiny_mae().classifier(10, true);
    let mut cfg = FinetuneConfig::fashion_mnist_cpu(model.clone(), Init::Scratch, spec.clone());
    cfg.epochs = 3;
    cfg.batch_size = 8;
    cfg.lr = Some(3e-3);
    cfg.data_threads = 1;
    let out = scratch("scratch-run");
    let mut ft = Finetuner::<B>::new(
        cfg.clone(),
        train.clone(),
        Some(val.clone()),
        &out,
        Default::default(),
    )
    .unwrap();
    assert!(ft.load_report().is_none());
    ft.run().unwrap();
    let h = ft.history();
    assert!(h[2].train_loss < h[0].train_loss, "{h:?}");
    // A state dict that is not a pre-training checkpoint of this shape: a clear key error.
    let foreign = out.join(CHECKPOINT_FILE);
    cfg.init = Init::Pretrained { path: foreign };
    let err = Finetuner::<B>::new(cfg, train, Some(val), scratch("bad"), Default::default())
        .err()
        .unwrap();
    assert!(
        matches!(err, TrainError::Checkpoint { .. }),
        "a fine-tuned checkpoint is not a pre-training one: {err}"
    );
}

#[test]
fn linear_probing_trains_only_the_head() {
    let (run, train, val, spec) = pretrained("lp");
    let model = tiny_mae().classifier(10, false);
    let mut cfg = LinprobeConfig::recipe(model, Init::Pretrained { path: run }, spec);
    cfg.epochs = 2;
    cfg.warmup_epochs = 0.5;
    cfg.batch_size = 8;
    cfg.lr = Some(0.5);
    cfg.data_threads = 1;
    let out = scratch("lp-run");
    let mut lp = LinearProber::<B>::new(cfg, train, Some(val), &out, Default::default()).unwrap();
    // cls-token mode keeps the pre-trained norm: only the head is missing.
    assert_eq!(
        lp.load_report().unwrap().missing,
        set(&["head.bias", "head.weight"])
    );
    let before = export_state_dict(&lp.model().encoder.valid());
    lp.run().unwrap();
    let after = export_state_dict(&lp.model().encoder.valid());
    for ((key, _, a), (_, _, b)) in before.iter().zip(&after) {
        if key.starts_with("head.") {
            assert_ne!(a, b, "{key} is trained");
        } else {
            assert_eq!(a, b, "{key} is frozen");
        }
    }
    assert!(lp.history().iter().all(|h| h.test_acc1.is_some()));
    let (clf, meta) = load_classifier::<Flex>(&out, &Default::default()).unwrap();
    assert_eq!(meta.kind, ClassifierKind::Linprobe);
    assert!(matches!(clf, Classifier::Probe(_)));
}

#[test]
fn vit_b_groups_follow_param_groups_lrd() {
    let model = VitConfig::vit_base_patch16()
        .init::<B>(&Default::default())
        .unwrap();
    let groups = param_groups_lrd(&model, 0.05, 0.65, 12);
    assert_eq!(groups.len(), 28);
    let table = [
        0.00370, 0.00569, 0.00875, 0.01346, 0.02071, 0.03186, 0.04902, 0.07542, 0.11603, 0.17851,
        0.27463, 0.42250, 0.65, 1.0,
    ];
    let mut seen = 0;
    for g in &groups {
        assert!((g.lr_scale - table[g.layer_id]).abs() < 5e-6, "{}", g.name);
        let no_decay = g.name.ends_with("no_decay");
        assert_eq!(g.weight_decay, if no_decay { 0.0 } else { 0.05 });
        for (key, _) in &g.params {
            let expected_layer = match key.as_str() {
                "cls_token" | "pos_embed" => 0,
                k if k.starts_with("patch_embed.") => 0,
                k if k.starts_with("blocks.") => {
                    k.split('.').nth(1).unwrap().parse::<usize>().unwrap() + 1
                }
                _ => 13,
            };
            assert_eq!(g.layer_id, expected_layer, "{key}");
            seen += 1;
        }
    }
    assert_eq!(
        seen, 152,
        "every ViT-B parameter tensor is in exactly one group"
    );
    let layer0_no_decay = groups
        .iter()
        .find(|g| g.name == "layer_0_no_decay")
        .unwrap();
    let keys: BTreeSet<&str> = layer0_no_decay
        .params
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(
        keys,
        ["cls_token", "patch_embed.proj.bias", "pos_embed"].into()
    );
    let _ = model.num_params();
}

/// Compares two state dicts bit for bit.
fn assert_same_parameters(
    a: &[(String, Vec<usize>, Vec<f32>)],
    b: &[(String, Vec<usize>, Vec<f32>)],
) {
    assert_eq!(a.len(), b.len());
    for ((ka, _, va), (kb, _, vb)) in a.iter().zip(b) {
        assert_eq!(ka, kb);
        assert_eq!(va, vb, "{ka} differs after resume");
    }
}

fn history_numbers(h: &[supmae_train::ClassifierLog]) -> Vec<(usize, f64, f64, Option<f64>)> {
    h.iter()
        .map(|l| (l.epoch, l.lr, l.train_loss, l.test_acc1))
        .collect()
}

#[test]
fn an_interrupted_and_resumed_finetuning_run_reaches_the_same_parameters() {
    let (run, train, val, spec) = pretrained("ft-resume");
    // Drop path and Mixup/CutMix on: every source of randomness is part of the state.
    let model = tiny_mae().classifier(10, true).with_drop_path_rate(0.2);
    let mut cfg = FinetuneConfig::recipe(model, Init::Pretrained { path: run }, spec);
    cfg.epochs = 3;
    cfg.warmup_epochs = 1.0;
    cfg.batch_size = 8;
    cfg.accum_iter = 2;
    cfg.data_threads = 1;
    cfg.rand_augment = None;
    let device = Default::default();

    let out_a = scratch("ft-resume-a");
    let mut a = Finetuner::<B>::new(
        cfg.clone(),
        train.clone(),
        Some(val.clone()),
        &out_a,
        device,
    )
    .unwrap();
    a.run().unwrap();

    let out_b = scratch("ft-resume-b");
    let mut b = Finetuner::<B>::new(cfg, train.clone(), Some(val.clone()), &out_b, device).unwrap();
    b.run_epoch().unwrap();
    drop(b); // the process "dies" after epoch 1
    let mut b = Finetuner::<B>::resume_on(&out_b, train, Some(val), device).unwrap();
    assert_eq!(b.history().len(), 1);
    b.run().unwrap();

    assert_same_parameters(
        &export_state_dict(&a.model().valid()),
        &export_state_dict(&b.model().valid()),
    );
    assert_eq!(history_numbers(a.history()), history_numbers(b.history()));
    let log = std::fs::read_to_string(out_b.join(LOG_FILE)).unwrap();
    assert_eq!(
        log.lines().count(),
        3,
        "one line per epoch, none duplicated"
    );

    // A linear-probing resume of a fine-tuning run is refused.
    drop(b);
    let err = LinearProber::<B>::resume(&out_b, device).err().unwrap();
    assert!(err.to_string().contains("fine-tuning run"), "{err}");
}

#[test]
fn an_interrupted_and_resumed_linear_probe_reaches_the_same_parameters() {
    let (run, train, val, spec) = pretrained("lp-resume");
    let model = tiny_mae().classifier(10, false);
    let mut cfg = LinprobeConfig::recipe(model, Init::Pretrained { path: run }, spec);
    cfg.epochs = 3;
    cfg.warmup_epochs = 1.0;
    cfg.batch_size = 8;
    cfg.accum_iter = 2;
    cfg.lr = Some(0.5);
    cfg.data_threads = 1;
    let device = Default::default();

    let out_a = scratch("lp-resume-a");
    let mut a = LinearProber::<B>::new(
        cfg.clone(),
        train.clone(),
        Some(val.clone()),
        &out_a,
        device,
    )
    .unwrap();
    a.run().unwrap();

    let out_b = scratch("lp-resume-b");
    let mut b =
        LinearProber::<B>::new(cfg, train.clone(), Some(val.clone()), &out_b, device).unwrap();
    b.run_epoch().unwrap();
    b.run_epoch().unwrap();
    drop(b);
    let mut b = LinearProber::<B>::resume_on(&out_b, train, Some(val), device).unwrap();
    assert_eq!(b.history().len(), 2);
    b.run().unwrap();

    assert_same_parameters(
        &export_state_dict(&a.model().valid()),
        &export_state_dict(&b.model().valid()),
    );
    assert_eq!(history_numbers(a.history()), history_numbers(b.history()));
}
