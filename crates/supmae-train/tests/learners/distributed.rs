//! Data-parallel pre-training on burn-collective with two peers in one process (two
//! threads, the multi-device path): the peers end with identical parameters, equal to one
//! process training on the combined batch. The multi-process (MPI) version of this test is
//! `crates/supmae-cli/tests/mpi.rs`.

#![cfg(feature = "distributed")]

use std::path::Path;

use burn::backend::{Autodiff, Flex};
use supmae_data::AnySource;
use supmae_data::fashion_mnist::Split;
use supmae_model::checkpoint::export_state_dict;
use supmae_model::{ClsHeadConfig, MaeConfig};
use supmae_train::run_dir::LOG_FILE;
use supmae_train::{DataSpec, DistributedConfig, Peer, PretrainConfig, Pretrainer, TrainError};

use crate::common::{ONE_RUN, scratch, small_fashion};

type B = Autodiff<Flex>;

fn config(dir: &Path, supmae: bool, batch: usize, accum: usize, peers: usize) -> PretrainConfig {
    let model = MaeConfig::new()
        .with_img_size(28)
        .with_patch_size(7)
        .with_in_chans(1)
        .with_embed_dim(16)
        .with_depth(2)
        .with_num_heads(2)
        .with_decoder_embed_dim(16)
        .with_decoder_depth(1)
        .with_decoder_num_heads(2)
        .with_cls_head(supmae.then(|| ClsHeadConfig::new().with_num_classes(10).with_hidden(16)));
    PretrainConfig {
        model,
        data: DataSpec::FashionMnist {
            path: Some(dir.to_path_buf()),
        },
        epochs: 2,
        warmup_epochs: 1.0,
        batch_size: batch,
        accum_iter: accum,
        blr: 2e-2,
        checkpoint_every: 1,
        data_threads: 1,
        seed: 5,
        peers,
        ..PretrainConfig::fashion_mnist_cpu()
    }
}

/// Runs `job` on `peers` threads of this process, each one joined peer; returns the
/// trainers.
fn on_peers(peers: usize, job: impl Fn(Peer<Flex>) -> Pretrainer<B> + Sync) -> Vec<Pretrainer<B>> {
    let dist = DistributedConfig::local(peers);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..peers)
            .map(|i| {
                let (dist, job) = (&dist, &job);
                s.spawn(move || job(Peer::join(dist, i, &Default::default()).unwrap()))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Runs `cfg` to the end on `cfg.peers` peers.
fn run_peers(
    cfg: &PretrainConfig,
    train: &AnySource,
    val: &AnySource,
    out: &Path,
) -> Vec<Pretrainer<B>> {
    on_peers(cfg.peers, |peer| {
        let mut t = Pretrainer::<B>::with_sources_on_peer(
            cfg.clone(),
            train.clone(),
            Some(val.clone()),
            out,
            Default::default(),
            peer,
        )
        .unwrap();
        t.run().unwrap();
        t
    })
}

fn max_diff(a: &Pretrainer<B>, b: &Pretrainer<B>) -> f32 {
    let (pa, pb) = (export_state_dict(a.model()), export_state_dict(b.model()));
    assert_eq!(pa.len(), pb.len());
    let mut worst = 0f32;
    for ((ka, _, va), (kb, _, vb)) in pa.iter().zip(&pb) {
        assert_eq!(ka, kb);
        for (x, y) in va.iter().zip(vb) {
            worst = worst.max((x - y).abs());
        }
    }
    worst
}

fn max_diff_except_key_bias(a: &Pretrainer<B>, b: &Pretrainer<B>) -> f32 {
    let (pa, pb) = (export_state_dict(a.model()), export_state_dict(b.model()));
    let mut worst = 0f32;
    for ((ka, _, va), (_, _, vb)) in pa.iter().zip(&pb) {
        let d = va.len() / 3;
        for (i, (x, y)) in va.iter().zip(vb).enumerate() {
            if ka.ends_with("attn.qkv.bias") && (d..2 * d).contains(&i) {
                continue;
            }
            worst = worst.max((x - y).abs());
        }
    }
    worst
}

#[test]
fn two_peers_equal_one_process_on_the_combined_batch() {
    let _one = ONE_RUN.lock().unwrap_or_else(|p| p.into_inner());
    let dir = scratch("mae-data");
    let train = small_fashion(&dir, 48, Split::Train);
    let val = small_fashion(&dir, 16, Split::Test);

    // One process, batch 16: 3 steps per epoch.
    let single_out = scratch("mae-single");
    let mut single = Pretrainer::<B>::with_sources(
        config(&dir, false, 16, 1, 1),
        train.clone(),
        Some(val.clone()),
        &single_out,
        Default::default(),
    )
    .unwrap();
    single.run().unwrap();

    // Two peers of batch 8: the same global batches, the same learning rates.
    let out = scratch("mae-peers");
    let peers = run_peers(&config(&dir, false, 8, 1, 2), &train, &val, &out);
    assert_eq!(peers[0].rank(), 0);
    assert_eq!(peers[1].rank(), 1);
    assert_eq!(peers[0].step_lrs(), single.step_lrs());
    assert_eq!(peers[0].step_lrs().len(), 6);

    // Identical on both peers, bit for bit.
    assert_eq!(
        peers[0].parameter_fingerprint(),
        peers[1].parameter_fingerprint()
    );
    assert_eq!(max_diff(&peers[0], &peers[1]), 0.0);
    // Equal to the single process up to the order of floating-point sums (measured: at
    // most 1.2e-7). The weights move by 1e-3 per step here, so a wrong data split, mask or
    // averaging would show as differences of that size. One exception: the key third of
    // every qkv bias has an exactly zero gradient (softmax ignores a constant added to all
    // scores), so its "gradient" is rounding noise, which AdamW scales up to ±lr steps in
    // either run; those 16 values per block are left out.
    let d = max_diff_except_key_bias(&peers[0], &single);
    assert!(d < 1e-6, "data-parallel vs single process: max |diff| {d}");
    let moved = {
        let init = Pretrainer::<B>::with_sources(
            config(&dir, false, 16, 1, 1),
            train.clone(),
            None,
            scratch("mae-init"),
            Default::default(),
        )
        .unwrap();
        max_diff(&init, &single)
    };
    assert!(moved > 1e-3, "training moved the weights by only {moved}");
    // The logged losses are the global batch's.
    for (p, s) in peers[0].history().iter().zip(single.history()) {
        assert!((p.loss - s.loss).abs() < 1e-5, "{} vs {}", p.loss, s.loss);
        assert_eq!(p.images_seen, s.images_seen);
    }
    // Only rank 0 wrote the run folder: one log line per epoch, not two.
    let log = std::fs::read_to_string(out.join(LOG_FILE)).unwrap();
    assert_eq!(log.lines().count(), 2);
}

#[test]
fn supmae_peers_with_accumulation_stay_identical_and_resume() {
    let _one = ONE_RUN.lock().unwrap_or_else(|p| p.into_inner());
    let dir = scratch("sup-data");
    let train = small_fashion(&dir, 40, Split::Train);
    let val = small_fashion(&dir, 16, Split::Test);
    let out = scratch("sup-peers");
    let cfg = config(&dir, true, 4, 2, 2);
    let peers = run_peers(&cfg, &train, &val, &out);
    // BatchNorm statistics are per peer (plain BN under DDP, as in the official code), so
    // the running statistics differ, but the trainable parameters do not.
    assert_eq!(
        peers[0].parameter_fingerprint(),
        peers[1].parameter_fingerprint()
    );
    assert!(peers[0].history()[1].val_acc1_full.is_some());
    assert!(
        peers[1].history()[1].val_acc1_full.is_none(),
        "rank 0 evaluates"
    );

    // A one-process resume of a two-peer run is refused, clearly.
    let err =
        Pretrainer::<B>::resume_on(&out, train.clone(), Some(val.clone()), Default::default())
            .err()
            .unwrap();
    assert!(
        matches!(err, TrainError::InvalidConfig { field: "peers", .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("2 data-parallel peer(s) but 1"),
        "{err}"
    );

    // The same run stopped after epoch 1 and resumed by both peers from rank 0's
    // checkpoint ends with the same parameters as the uninterrupted one. (One run at a time
    // per process: the first run's peers leave first.)
    let want = peers[0].parameter_fingerprint();
    drop(peers);
    let out_b = scratch("sup-peers-resumed");
    let stopped = on_peers(2, |peer| {
        let mut t = Pretrainer::<B>::with_sources_on_peer(
            cfg.clone(),
            train.clone(),
            Some(val.clone()),
            &out_b,
            Default::default(),
            peer,
        )
        .unwrap();
        t.train_until(1).unwrap();
        t
    });
    drop(stopped);
    let resumed = on_peers(2, |peer| {
        let mut t = Pretrainer::<B>::resume_on_peer(
            &out_b,
            train.clone(),
            Some(val.clone()),
            Default::default(),
            peer,
        )
        .unwrap();
        assert_eq!(t.epochs_done(), 1);
        t.run().unwrap();
        t
    });
    assert_eq!(resumed[0].parameter_fingerprint(), want);
    assert_eq!(resumed[1].parameter_fingerprint(), want);
}

#[test]
fn bad_distributed_settings_are_clear_errors() {
    let err = DistributedConfig::local(0)
        .validate()
        .unwrap_err()
        .to_string();
    assert!(err.contains("devices"), "{err}");
    let eight = DistributedConfig::local(8);
    assert!(eight.validate().is_ok());
    assert_eq!(eight.peers(), 8);
    assert_eq!(eight.processes(), 1);
    assert_eq!(eight.rank(3), 3);
    let _one = ONE_RUN.lock().unwrap_or_else(|e| e.into_inner());
    let err = Peer::<Flex>::join(&DistributedConfig::local(2), 2, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("out of range"), "{err}");
}

/// A NaN in one peer's gradients stops every peer at the same step, naming that peer.
#[test]
fn a_non_finite_gradient_on_one_peer_stops_every_peer_naming_it() {
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::GradientsParams;
    use burn::prelude::*;

    let _one = ONE_RUN.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    let model: Linear<B> = LinearConfig::new(3, 2).init(&device);
    let dist = DistributedConfig::local(2);
    let outcomes: Vec<(Result<(), TrainError>, Vec<usize>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let (dist, model) = (&dist, model.clone());
                s.spawn(move || {
                    let peer = Peer::<Flex>::join(dist, i, &Default::default()).unwrap();
                    // The loss-style check first: rank 1's own value is NaN.
                    let own = if i == 1 { f32::NAN } else { 1.0 };
                    let values = Tensor::<Flex, 1>::from_floats([own, 2.0], &Default::default());
                    let (_, ranks) = peer.all_reduce_mean_checked(values).unwrap();
                    // Then gradients: rank 0's weight gradient holds an infinity.
                    let mut grads = GradientsParams::new();
                    let w = if i == 0 { f32::INFINITY } else { 0.5 };
                    grads.register::<Flex, 2>(
                        model.weight.id,
                        Tensor::from_floats(
                            [[w, 0.0], [0.0, 0.0], [0.0, 1.0]],
                            &Default::default(),
                        ),
                    );
                    if let Some(bias) = &model.bias {
                        grads.register::<Flex, 1>(
                            bias.id,
                            Tensor::from_floats([1.0, 2.0], &Default::default()),
                        );
                    }
                    let outcome = peer.all_reduce_grads(&model, grads).map(|_| ());
                    peer.finish().unwrap();
                    (outcome, ranks)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (outcome, loss_ranks) in outcomes {
        assert_eq!(loss_ranks, vec![1]);
        match outcome {
            Err(TrainError::NonFiniteOnPeers { what, ranks, peers }) => {
                assert_eq!((what, ranks, peers), ("a gradient", vec![0], 2));
            }
            other => panic!("expected NonFiniteOnPeers, got {other:?}"),
        }
    }
}
