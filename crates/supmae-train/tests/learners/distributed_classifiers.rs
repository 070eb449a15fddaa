//! Data-parallel fine-tuning and linear probing on burn-collective with two peers in one
//! process (two threads): the peers end with identical parameters, equal to one process
//! training on the combined batch, and a two-peer run resumes exactly.

#![cfg(feature = "distributed")]

use std::path::Path;

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use supmae_data::AnySource;
use supmae_data::fashion_mnist::Split;
use supmae_model::VitConfig;
use supmae_model::checkpoint::export_state_dict;
use supmae_train::run_dir::LOG_FILE;
use supmae_train::{
    DataSpec, DistributedConfig, FinetuneConfig, Finetuner, Init, LinearProber, LinprobeConfig,
    Peer,
};

use crate::common::{ONE_RUN, scratch, small_fashion};

type B = Autodiff<Flex>;
type State = Vec<(String, Vec<usize>, Vec<f32>)>;

fn tiny_vit(global_pool: bool) -> VitConfig {
    VitConfig::new()
        .with_img_size(28)
        .with_patch_size(7)
        .with_in_chans(1)
        .with_embed_dim(16)
        .with_depth(2)
        .with_num_heads(2)
        .with_num_classes(10)
        .with_global_pool(global_pool)
}

fn spec(dir: &Path) -> DataSpec {
    DataSpec::FashionMnist {
        path: Some(dir.to_path_buf()),
    }
}

/// A fine-tuning recipe without per-batch randomness (Mixup/CutMix, drop path), so that
/// two peers of batch `b / 2` and one process of batch `b` take the same steps.
fn finetune_config(dir: &Path, batch: usize, peers: usize) -> FinetuneConfig {
    let mut c = FinetuneConfig::fashion_mnist_cpu(
        tiny_vit(true).with_drop_path_rate(0.0),
        Init::Scratch,
        spec(dir),
    );
    c.epochs = 2;
    c.warmup_epochs = 1.0;
    c.batch_size = batch;
    c.accum_iter = 1;
    c.blr = 2e-2;
    c.data_threads = 1;
    c.seed = 7;
    c.peers = peers;
    c
}

fn linprobe_config(dir: &Path, batch: usize, accum: usize, peers: usize) -> LinprobeConfig {
    let mut c = LinprobeConfig::recipe(tiny_vit(false), Init::Scratch, spec(dir));
    c.epochs = 2;
    c.warmup_epochs = 1.0;
    c.batch_size = batch;
    c.accum_iter = accum;
    c.lr = Some(0.5);
    c.data_threads = 1;
    c.seed = 3;
    c.peers = peers;
    c
}

/// Runs `job` on `peers` threads of this process, each one joined peer.
fn on_peers<T: Send>(peers: usize, job: impl Fn(Peer<Flex>) -> T + Sync) -> Vec<T> {
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

/// The largest difference between two state dicts, leaving out the key third of every qkv
/// bias: its gradient is exactly zero (softmax ignores a constant added to all scores), so
/// it holds rounding noise that AdamW scales up to ±lr steps in either run.
fn max_diff(a: &State, b: &State) -> f32 {
    assert_eq!(a.len(), b.len());
    let mut worst = 0f32;
    for ((ka, _, va), (kb, _, vb)) in a.iter().zip(b) {
        assert_eq!(ka, kb);
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

fn data(name: &str) -> (std::path::PathBuf, AnySource, AnySource) {
    let dir = scratch(&format!("{name}-data"));
    let train = small_fashion(&dir, 48, Split::Train);
    let val = small_fashion(&dir, 16, Split::Test);
    (dir, train, val)
}

#[test]
fn two_finetuning_peers_equal_one_process_and_resume_exactly() {
    let _one = ONE_RUN.lock().unwrap_or_else(|p| p.into_inner());
    let (dir, train, val) = data("ft-dp");
    let device = Default::default();

    // One process, batch 16.
    let mut single = Finetuner::<B>::new(
        finetune_config(&dir, 16, 1),
        train.clone(),
        Some(val.clone()),
        scratch("ft-dp-single"),
        device,
    )
    .unwrap();
    let init = export_state_dict(&single.model().valid());
    single.run().unwrap();
    let want = export_state_dict(&single.model().valid());

    // Two peers of batch 8.
    let out = scratch("ft-dp-peers");
    let cfg = finetune_config(&dir, 8, 2);
    let peers = on_peers(2, |peer| {
        let mut t = Finetuner::<B>::new_on_peer(
            cfg.clone(),
            train.clone(),
            Some(val.clone()),
            &out,
            device,
            peer,
        )
        .unwrap();
        t.run().unwrap();
        (
            t.rank(),
            export_state_dict(&t.model().valid()),
            t.history().to_vec(),
        )
    });
    assert_eq!((peers[0].0, peers[1].0), (0, 1));
    assert_eq!(
        peers[0].1, peers[1].1,
        "both peers hold the same parameters"
    );
    let d = max_diff(&peers[0].1, &want);
    assert!(d < 1e-6, "two peers vs one process: max |diff| {d}");
    let moved = max_diff(&init, &want);
    assert!(moved > 1e-3, "training moved the weights by only {moved}");
    for (p, s) in peers[0].2.iter().zip(single.history()) {
        assert_eq!(p.lr, s.lr);
        assert!((p.train_loss - s.train_loss).abs() < 1e-5);
        assert_eq!(p.images_seen, s.images_seen);
    }
    assert!(peers[0].2[1].test_acc1.is_some() && peers[1].2[1].test_acc1.is_none());
    let log = std::fs::read_to_string(out.join(LOG_FILE)).unwrap();
    assert_eq!(log.lines().count(), 2, "only rank 0 writes the run folder");

    // Stopped after epoch 1 and resumed by both peers: the uninterrupted parameters.
    let out_b = scratch("ft-dp-resumed");
    drop(on_peers(2, |peer| {
        let mut t = Finetuner::<B>::new_on_peer(
            cfg.clone(),
            train.clone(),
            Some(val.clone()),
            &out_b,
            device,
            peer,
        )
        .unwrap();
        t.run_epoch().unwrap();
    }));
    let resumed = on_peers(2, |peer| {
        let mut t =
            Finetuner::<B>::resume_on_peer(&out_b, train.clone(), Some(val.clone()), device, peer)
                .unwrap();
        assert_eq!(t.history().len(), 1);
        t.run().unwrap();
        export_state_dict(&t.model().valid())
    });
    assert_eq!(resumed[0], peers[0].1);
    assert_eq!(resumed[1], peers[0].1);

    // A one-process resume of a two-peer run is refused, by name.
    let err = Finetuner::<B>::resume_on(&out_b, train, Some(val), device)
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("2 data-parallel peer(s) but 1"),
        "{err}"
    );
}

#[test]
fn two_probing_peers_share_batch_statistics_and_equal_one_process() {
    let _one = ONE_RUN.lock().unwrap_or_else(|p| p.into_inner());
    let (dir, train, val) = data("lp-dp");
    let device = Default::default();

    let mut single = LinearProber::<B>::new(
        linprobe_config(&dir, 16, 1, 1),
        train.clone(),
        Some(val.clone()),
        scratch("lp-dp-single"),
        device,
    )
    .unwrap();
    single.run().unwrap();
    let want = export_state_dict(&single.model().valid());

    let out = scratch("lp-dp-peers");
    let cfg = linprobe_config(&dir, 8, 1, 2);
    let peers = on_peers(2, |peer| {
        let mut t = LinearProber::<B>::new_on_peer(
            cfg.clone(),
            train.clone(),
            Some(val.clone()),
            &out,
            device,
            peer,
        )
        .unwrap();
        t.run().unwrap();
        export_state_dict(&t.model().valid())
    });
    // The BatchNorm running statistics are the global batch's on both peers.
    assert_eq!(peers[0], peers[1]);
    let d = max_diff(&peers[0], &want);
    assert!(d < 1e-5, "two peers vs one process: max |diff| {d}");
    let head = |s: &State| -> Vec<f32> {
        s.iter()
            .filter(|(k, _, _)| k.starts_with("encoder.head."))
            .flat_map(|(_, _, v)| v.clone())
            .collect()
    };
    let untrained = LinearProber::<B>::new(
        linprobe_config(&dir, 16, 1, 1),
        train,
        None,
        scratch("lp-dp-init"),
        device,
    )
    .unwrap();
    let moved = head(&want)
        .iter()
        .zip(head(&export_state_dict(&untrained.model().valid())))
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(moved > 1e-3, "the head moved by only {moved}");
}
