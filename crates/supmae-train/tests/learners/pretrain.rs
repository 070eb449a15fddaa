//! The pre-training learner at tiny size: schedule, weight-decay groups, resume equivalence,
//! atomic checkpoints and the NaN guard.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use supmae_data::AnySource;
use supmae_data::fashion_mnist::Split;
use supmae_model::checkpoint::{export_state_dict, param_keys};
use supmae_model::{ClsHeadConfig, MaeConfig};
use supmae_train::checkpoint::{CheckpointParts, write_atomic_with};
use supmae_train::run_dir::{CHECKPOINT_FILE, CONFIG_FILE, LOG_FILE};
use supmae_train::run_dir::{NewRun, Overwrite};
use supmae_train::{
    DataSpec, ParamGroups, PretrainConfig, Pretrainer, TrainError, warmup_cosine_lr,
};

use crate::common::{scratch, small_fashion};

type B = Autodiff<Flex>;

fn tiny_config(data_dir: &Path) -> PretrainConfig {
    let model = MaeConfig::new()
        .with_img_size(28)
        .with_patch_size(7)
        .with_in_chans(1)
        .with_embed_dim(16)
        .with_depth(1)
        .with_num_heads(2)
        .with_decoder_embed_dim(16)
        .with_decoder_depth(1)
        .with_decoder_num_heads(2)
        .with_cls_head(Some(
            ClsHeadConfig::new().with_num_classes(10).with_hidden(16),
        ));
    PretrainConfig {
        model,
        data: DataSpec::FashionMnist {
            path: Some(data_dir.to_path_buf()),
        },
        epochs: 4,
        warmup_epochs: 1.0,
        batch_size: 8,
        accum_iter: 2,
        blr: 1e-2,
        checkpoint_every: 1,
        data_threads: 2,
        seed: 3,
        ..PretrainConfig::fashion_mnist_cpu()
    }
}

fn data(name: &str) -> (PathBuf, AnySource, AnySource) {
    let dir = scratch(&format!("{name}-data"));
    let train = small_fashion(&dir, 40, Split::Train);
    let val = small_fashion(&dir, 16, Split::Test);
    (dir, train, val)
}

#[test]
fn an_interrupted_and_resumed_run_reaches_the_same_parameters() {
    let (dir, train, val) = data("resume");
    let cfg = tiny_config(&dir);
    let device = Default::default();

    let out_a = scratch("resume-a");
    let mut a = Pretrainer::<B>::with_sources(
        cfg.clone(),
        train.clone(),
        Some(val.clone()),
        &out_a,
        device,
    )
    .unwrap();
    a.run().unwrap();
    assert_eq!(a.epochs_done(), 4);

    // Same run, interrupted after 2 epochs (the process "dies"), then resumed.
    let out_b = scratch("resume-b");
    let mut b = Pretrainer::<B>::with_sources(
        cfg.clone(),
        train.clone(),
        Some(val.clone()),
        &out_b,
        device,
    )
    .unwrap();
    b.train_until(2).unwrap();
    drop(b);
    let mut b = Pretrainer::<B>::resume_on(&out_b, train, Some(val), device).unwrap();
    assert_eq!(b.epochs_done(), 2);
    b.run().unwrap();

    let (pa, pb) = (export_state_dict(a.model()), export_state_dict(b.model()));
    assert_eq!(pa.len(), pb.len());
    for ((ka, _, va), (kb, _, vb)) in pa.iter().zip(&pb) {
        assert_eq!(ka, kb);
        assert_eq!(va, vb, "{ka} differs after resume");
    }
    // The logs agree too (except wall-clock fields).
    let strip = |h: &[supmae_train::EpochLog]| -> Vec<(usize, f64, f64, f64, Option<f64>)> {
        h.iter()
            .map(|l| (l.epoch, l.lr, l.loss, l.rec_loss, l.val_acc1_full))
            .collect()
    };
    assert_eq!(strip(a.history()), strip(b.history()));
    let log = std::fs::read_to_string(out_b.join(LOG_FILE)).unwrap();
    assert_eq!(
        log.lines().count(),
        4,
        "one JSON line per epoch, none duplicated by the resume"
    );
}

#[test]
fn the_learner_follows_the_schedule_at_every_step() {
    let (dir, train, val) = data("schedule");
    let cfg = tiny_config(&dir);
    let mut t = Pretrainer::<B>::with_sources(
        cfg.clone(),
        train,
        Some(val),
        scratch("schedule-out"),
        Default::default(),
    )
    .unwrap();
    t.run().unwrap();
    // 40 images / batch 8 = 5 micro-batches per epoch, accumulation 2: steps after
    // micro-batches 1 and 3 (the fifth's window is incomplete and dropped, as upstream).
    let iters = 5.0;
    let lr = cfg.blr * 16.0 / 256.0;
    let mut want = Vec::new();
    for epoch in 0..4 {
        for start in [0.0, 2.0] {
            want.push(warmup_cosine_lr(
                lr,
                cfg.min_lr,
                epoch as f64 + start / iters,
                1.0,
                4.0,
            ));
        }
    }
    assert_eq!(t.step_lrs(), want.as_slice());
    // The logged lr is the mean over the epoch's micro-batches (windows at 0, 2 and 4).
    let h = &t.history()[1];
    let mean = [0.0, 0.0, 2.0, 2.0, 4.0]
        .iter()
        .map(|s| warmup_cosine_lr(lr, 0.0, 1.0 + s / iters, 1.0, 4.0))
        .sum::<f64>()
        / 5.0;
    assert!((h.lr - mean).abs() < 1e-15, "{} vs {mean}", h.lr);
}

#[test]
fn weight_decay_groups_are_exactly_the_1d_params_and_biases() {
    let model = MaeConfig::supmae_vit_tiny_patch16_dec128d2b()
        .with_depth(2)
        .init::<B>(&Default::default())
        .unwrap();
    let groups = ParamGroups::of(&model);
    let no_decay: BTreeSet<String> = groups.no_decay.iter().map(|(k, _)| k.clone()).collect();
    let decay: BTreeSet<String> = groups.decay.iter().map(|(k, _)| k.clone()).collect();
    let keys = param_keys(&model);
    for k in &keys {
        let one_d_or_bias = k.shape.len() == 1 || k.key.ends_with(".bias");
        match (k.trainable, one_d_or_bias) {
            (false, _) => assert!(
                !decay.contains(&k.key) && !no_decay.contains(&k.key),
                "{}",
                k.key
            ),
            (true, true) => assert!(no_decay.contains(&k.key), "{} should not decay", k.key),
            (true, false) => assert!(decay.contains(&k.key), "{} should decay", k.key),
        }
    }
    for key in [
        "cls_token",
        "mask_token",
        "blocks.0.attn.qkv.weight",
        "cls_head.0.weight",
    ] {
        assert!(decay.contains(key), "{key}");
    }
    for key in [
        "blocks.0.norm1.weight",
        "patch_embed.proj.bias",
        "cls_head.1.weight",
        "norm.bias",
    ] {
        assert!(no_decay.contains(key), "{key}");
    }
    for key in ["pos_embed", "decoder_pos_embed", "cls_head.1.running_mean"] {
        assert!(
            !decay.contains(key) && !no_decay.contains(key),
            "{key} is not trained"
        );
    }
    assert_eq!(
        decay.len() + no_decay.len(),
        keys.iter().filter(|k| k.trainable).count()
    );
}

#[test]
fn a_crash_in_the_middle_of_a_checkpoint_write_keeps_the_previous_one() {
    let (dir, train, val) = data("atomic");
    let out = scratch("atomic-out");
    let cfg = tiny_config(&dir);
    let mut t = Pretrainer::<B>::with_sources(
        cfg,
        train.clone(),
        Some(val.clone()),
        &out,
        Default::default(),
    )
    .unwrap();
    t.train_until(1).unwrap();
    let path = out.join(CHECKPOINT_FILE);
    let before = std::fs::read(&path).unwrap();

    // The next checkpoint's write dies half-way.
    t.train_until(2).unwrap_err_or_ok();
    let newer = std::fs::read(&path).unwrap();
    let crash = write_atomic_with(&path, &before, |file, bytes| {
        file.write_all(&bytes[..bytes.len() / 2])?;
        Err(std::io::Error::other("simulated power loss"))
    });
    assert!(crash.is_err());
    assert_eq!(
        std::fs::read(&path).unwrap(),
        newer,
        "the last good checkpoint is untouched"
    );
    // The failed write left no temporary file behind.
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // While the run is alive its folder is locked; once it is gone, the checkpoint still
    // loads and resumes.
    let busy =
        Pretrainer::<B>::resume_on(&out, train.clone(), Some(val.clone()), Default::default())
            .err()
            .unwrap();
    assert!(matches!(busy, TrainError::RunFolderBusy { .. }), "{busy}");
    drop(t);
    CheckpointParts::read(&path).unwrap();
    let resumed =
        Pretrainer::<B>::resume_on(&out, train.clone(), Some(val.clone()), Default::default())
            .unwrap();
    assert_eq!(resumed.epochs_done(), 2);

    drop(resumed);
    // A torn file (as a non-atomic writer would leave) is a clear error, not a panic.
    std::fs::write(&path, &newer[..newer.len() - 100]).unwrap();
    let err = Pretrainer::<B>::resume_on(&out, train, Some(val), Default::default())
        .err()
        .unwrap();
    assert!(matches!(err, TrainError::Checkpoint { .. }), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
}

trait OkOrErr {
    fn unwrap_err_or_ok(self);
}
impl<T, E: std::fmt::Debug> OkOrErr for Result<T, E> {
    fn unwrap_err_or_ok(self) {
        self.map(|_| ()).unwrap();
    }
}

#[test]
fn a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint() {
    let (dir, train, val) = data("nan");
    let out = scratch("nan-out");
    let mut t = Pretrainer::<B>::with_sources(
        tiny_config(&dir),
        train,
        Some(val),
        &out,
        Default::default(),
    )
    .unwrap();
    t.train_until(1).unwrap();
    let good = std::fs::read(out.join(CHECKPOINT_FILE)).unwrap();

    let mut poisoned = t.model().clone();
    poisoned.cls_token = poisoned.cls_token.map(|p| p.mul_scalar(f64::NAN));
    t.set_model(poisoned);
    let err = t.train_until(2).unwrap_err();
    match &err {
        TrainError::NonFiniteLoss {
            epoch,
            iteration,
            value,
            ..
        } => {
            assert_eq!((*epoch, *iteration), (1, 0));
            assert!(value.is_nan());
        }
        other => panic!("expected NonFiniteLoss, got {other}"),
    }
    assert!(err.to_string().contains(CHECKPOINT_FILE), "{err}");
    assert_eq!(t.epochs_done(), 1);
    assert_eq!(std::fs::read(out.join(CHECKPOINT_FILE)).unwrap(), good);
}

#[test]
fn the_run_folder_has_the_config_and_a_json_lines_log() {
    let (dir, train, val) = data("logs");
    let out = scratch("logs-out");
    let cfg = PretrainConfig {
        epochs: 2,
        ..tiny_config(&dir)
    };
    let mut t =
        Pretrainer::<B>::with_sources(cfg.clone(), train, Some(val), &out, Default::default())
            .unwrap();
    let saved: PretrainConfig =
        serde_json::from_str(&std::fs::read_to_string(out.join(CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(saved, cfg);
    t.run().unwrap();
    let log = std::fs::read_to_string(out.join(LOG_FILE)).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["epoch"], i);
        for key in [
            "lr",
            "loss",
            "rec_loss",
            "cls_loss",
            "images_per_sec",
            "val_acc1_full",
            "val_acc1_masked",
        ] {
            assert!(line[key].is_number(), "{key} missing in {line}");
        }
        let total = line["loss"].as_f64().unwrap();
        let parts = line["rec_loss"].as_f64().unwrap() + line["cls_loss"].as_f64().unwrap();
        assert!((total - parts).abs() < 1e-5, "loss = rec_loss + cls_loss");
    }
}

#[test]
fn bad_recipes_are_typed_errors() {
    let (dir, train, val) = data("bad");
    let base = tiny_config(&dir);
    for (cfg, field) in [
        (
            PretrainConfig {
                epochs: 0,
                ..base.clone()
            },
            "epochs",
        ),
        (
            PretrainConfig {
                batch_size: 1,
                ..base.clone()
            },
            "batch_size",
        ),
        (
            PretrainConfig {
                mask_ratio: 1.0,
                ..base.clone()
            },
            "mask_ratio",
        ),
        (
            PretrainConfig {
                warmup_epochs: 9.0,
                ..base.clone()
            },
            "warmup_epochs",
        ),
        (
            PretrainConfig {
                batch_size: 64,
                ..base.clone()
            },
            "batch_size",
        ),
    ] {
        let err = Pretrainer::<B>::with_sources(
            cfg,
            train.clone(),
            Some(val.clone()),
            scratch("bad-out"),
            Default::default(),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
}

#[test]
fn a_finished_run_is_never_clobbered_and_can_be_extended() {
    let (dir, train, val) = data("clobber");
    let out = scratch("clobber-out");
    let cfg = PretrainConfig {
        epochs: 2,
        ..tiny_config(&dir)
    };
    let mut t =
        Pretrainer::<B>::with_sources(cfg.clone(), train.clone(), None, &out, Default::default())
            .unwrap();
    t.run().unwrap();
    drop(t);
    let files = |names: &[&str]| -> Vec<Vec<u8>> {
        names
            .iter()
            .map(|n| std::fs::read(out.join(n)).unwrap())
            .collect()
    };
    let kept = [CHECKPOINT_FILE, LOG_FILE, CONFIG_FILE];
    let before = files(&kept);

    // A new run in the folder is refused and touches nothing.
    let other = PretrainConfig {
        seed: 99,
        ..cfg.clone()
    };
    let err =
        Pretrainer::<B>::with_sources(other.clone(), train.clone(), None, &out, Default::default())
            .err()
            .unwrap();
    assert!(matches!(err, TrainError::RunFolderInUse { .. }), "{err}");
    assert!(err.to_string().contains("already holds a run"), "{err}");
    assert_eq!(files(&kept), before, "the finished run is untouched");

    // Resuming a finished run extends it when asked.
    let mut r =
        Pretrainer::<B>::resume_on(&out, train.clone(), Some(val), Default::default()).unwrap();
    assert!(
        r.set_epochs(1).is_err(),
        "cannot shorten below the epochs done"
    );
    r.set_epochs(3).unwrap();
    r.run().unwrap();
    assert_eq!(r.epochs_done(), 3);
    let saved: PretrainConfig =
        serde_json::from_slice(&std::fs::read(out.join(CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(saved.epochs, 3);
    drop(r);

    // Overwriting is explicit, and then the old run's files are gone before the new starts.
    let t = Pretrainer::<B>::with_sources(
        other,
        train,
        None,
        NewRun::new(&out).overwrite(Overwrite::Yes),
        Default::default(),
    )
    .unwrap();
    assert!(!out.join(CHECKPOINT_FILE).exists());
    assert_eq!(std::fs::read(out.join(LOG_FILE)).unwrap(), b"");
    assert_eq!(t.config().seed, 99);
}

#[test]
fn continued_pretraining_starts_from_released_weights_with_exact_key_checks() {
    use supmae_model::checkpoint::StateDict;
    let (dir, train, _val) = data("init");
    let source_cfg = PretrainConfig {
        epochs: 1,
        ..tiny_config(&dir)
    };
    // A finished SupMAE run and a finished MAE run to start from.
    let sup = scratch("init-sup");
    Pretrainer::<B>::with_sources(
        source_cfg.clone(),
        train.clone(),
        None,
        &sup,
        Default::default(),
    )
    .unwrap()
    .run()
    .unwrap();
    let mae = scratch("init-mae");
    let mae_cfg = PretrainConfig {
        model: source_cfg.model.clone().with_cls_head(None),
        ..source_cfg.clone()
    };
    Pretrainer::<B>::with_sources(mae_cfg, train.clone(), None, &mae, Default::default())
        .unwrap()
        .run()
        .unwrap();
    let source = export_state_dict(
        &supmae_train::load_pretrained::<B>(&sup, &Default::default())
            .unwrap()
            .0,
    );
    let start = |init: &Path, name: &str| {
        let cfg = PretrainConfig {
            init: Some(init.to_path_buf()),
            seed: 11,
            ..source_cfg.clone()
        };
        Pretrainer::<B>::with_sources(cfg, train.clone(), None, scratch(name), Default::default())
    };
    let keys_with = |prefixes: &[&str]| -> BTreeSet<String> {
        source
            .iter()
            .map(|(k, _, _)| k.clone())
            .filter(|k| prefixes.iter().any(|p| k.starts_with(p)))
            .collect()
    };

    // Ours, same flavour: every tensor applied, the weights are the source's.
    let t = start(&sup, "init-from-sup").unwrap();
    assert!(t.init_report().unwrap().missing.is_empty());
    assert_eq!(export_state_dict(t.model()), source);
    assert_eq!(t.epochs_done(), 0, "a fresh schedule, not a resume");
    drop(t);

    // An MAE file starts a SupMAE run with a fresh branch, and says so.
    let t = start(&mae, "init-from-mae").unwrap();
    assert_eq!(t.init_report().unwrap().missing, keys_with(&["cls_head."]));
    drop(t);

    // A branch for another number of classes starts fresh (the rest is loaded).
    let cfg = PretrainConfig {
        init: Some(sup.clone()),
        model: source_cfg.model.clone().with_cls_head(Some(
            ClsHeadConfig::new().with_num_classes(12).with_hidden(16),
        )),
        ..source_cfg.clone()
    };
    let t = Pretrainer::<B>::with_sources(
        cfg,
        train.clone(),
        None,
        scratch("init-12"),
        Default::default(),
    )
    .unwrap();
    assert_eq!(t.init_report().unwrap().missing, keys_with(&["cls_head."]));
    drop(t);

    // An encoder-only official-layout file (as mae_pretrain_vit_base.pth): fresh decoder.
    let full = || StateDict::from_entries(&sup, source.clone());
    let mut encoder_only = full();
    encoder_only.retain(|k| {
        !(k.starts_with("decoder_") || k == "mask_token" || k.starts_with("cls_head."))
    });
    let file = dir.join("encoder_only.safetensors");
    encoder_only.write_safetensors(&file).unwrap();
    let t = start(&file, "init-from-encoder").unwrap();
    assert_eq!(
        t.init_report().unwrap().missing,
        keys_with(&["decoder_", "mask_token", "cls_head."])
    );
    drop(t);

    // Part of the decoder is not a released layout: refused, by name.
    let mut partial = full();
    partial.retain(|k| k != "decoder_pred.weight");
    let file = dir.join("partial.safetensors");
    partial.write_safetensors(&file).unwrap();
    let err = start(&file, "init-from-partial").err().unwrap();
    assert!(
        err.to_string().contains("only part of the decoder"),
        "{err}"
    );
    assert!(err.to_string().contains("decoder_pred.weight"), "{err}");

    // A missing encoder tensor is refused too.
    let mut no_block = full();
    no_block.retain(|k| k != "blocks.0.attn.qkv.weight");
    let file = dir.join("no_block.safetensors");
    no_block.write_safetensors(&file).unwrap();
    let err = start(&file, "init-from-broken").err().unwrap();
    assert!(
        err.to_string().contains("blocks.0.attn.qkv.weight"),
        "{err}"
    );
}
