//! Multi-process training through MPI: `mpirun -np 2 supmae pretrain|finetune|linprobe ...`
//! on one machine. Two ranks of batch B/2 train like one process of batch B (parameters
//! within 1e-6), hold bit-identical parameters, and only rank 0 writes the run folder; a
//! two-rank run stopped and resumed reaches the uninterrupted run's bits; `--devices 2`
//! inside each rank (the hierarchical reduction) gives the same model; and a rank killed
//! mid-run ends the whole run with a non-zero status.
//!
//! Needs Open MPI's `mpirun` (Debian: openmpi-bin), as the `mpi` feature does.

#![cfg(all(feature = "mpi", feature = "flex"))]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use supmae::burn::backend::Flex;
use supmae::burn::module::{Module, ModuleVisitor, Param};
use supmae::burn::prelude::*;

mod common;
use common::{fingerprint, scratch, strings};

/// The two ranks' tiny MAE and its 48 + 16 images, in `dir`; returns the model's path.
fn setup(dir: &Path) -> PathBuf {
    common::fashion(dir, 48, 16);
    common::tiny_model(dir, 2, false)
}

/// `mpirun -np N supmae ARGS`: oversubscribed (2 cores), unbound, allowed as root (CI
/// containers), without the single-copy shared-memory path that containers forbid.
fn mpirun(np: usize, args: &[String]) -> Command {
    let mut c = Command::new("mpirun");
    c.args([
        "-np",
        &np.to_string(),
        "--oversubscribe",
        "--bind-to",
        "none",
    ])
    .arg(env!("CARGO_BIN_EXE_supmae"))
    .args(args)
    .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
    .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
    .env("OMPI_MCA_rmaps_base_oversubscribe", "1");
    c
}

fn single(args: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_supmae"));
    c.args(args);
    c
}

/// Runs to the end (at most 10 minutes); panics with the output unless it succeeded.
fn run_ok(mut command: Command, what: &str) -> String {
    let out: Output = command.output().expect("start (is mpirun installed?)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

/// A module's float parameters, in visiting order.
struct Flat(Vec<Vec<f32>>);

impl<B: Backend> ModuleVisitor<B> for Flat {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0
            .push(param.val().into_data().to_vec::<f32>().unwrap());
    }
}

fn params<M: Module<Flex>>(m: &M) -> Vec<Vec<f32>> {
    let mut flat = Flat(Vec::new());
    m.visit(&mut flat);
    flat.0
}

fn pretrained(run: &Path) -> Vec<Vec<f32>> {
    let (model, _) = supmae_train::load_pretrained::<Flex>(run, &Default::default()).unwrap();
    params(&model)
}

fn classifier(run: &Path) -> Vec<Vec<f32>> {
    let file = run.join("checkpoint.ckpt");
    match supmae_train::load_classifier::<Flex>(&file, &Default::default())
        .unwrap()
        .0
    {
        supmae_train::Classifier::Vit(m) => params(&m),
        supmae_train::Classifier::Probe(p) => params(&p),
    }
}

/// Largest |a - b| over every parameter, skipping the key third of qkv biases: its gradient
/// is exactly zero, so AdamW scales its rounding noise up to ±lr in either run.
fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    let mut worst = 0f32;
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.len(), y.len());
        for (u, v) in x.iter().zip(y) {
            worst = worst.max((u - v).abs());
        }
    }
    worst
}

fn max_diff_except_zero_grad_biases(a: &[Vec<f32>], b: &[Vec<f32>], width: usize) -> f32 {
    let mut worst = 0f32;
    for (x, y) in a.iter().zip(b) {
        let qkv_bias = x.len() == 3 * width;
        for (i, (u, v)) in x.iter().zip(y).enumerate() {
            if qkv_bias && (width..2 * width).contains(&i) {
                continue;
            }
            worst = worst.max((u - v).abs());
        }
    }
    worst
}

#[test]
fn two_ranks_train_like_one_process_for_every_learner_and_resume_exactly() {
    let dir = scratch("learners");
    let model = setup(&dir);
    let data = format!("fashion-mnist:{}", dir.display());
    let pretrain = |batch: &str, out: &Path, extra: &[&str]| -> Vec<String> {
        let mut a = strings(&[
            "pretrain",
            "--data",
            &data,
            "--model",
            model.to_str().unwrap(),
            "--mode",
            "mae",
            "--epochs",
            "2",
            "--warmup-epochs",
            "1",
            "--blr",
            "0.02",
            "--seed",
            "5",
            "--threads",
            "1",
            "--batch-size",
            batch,
            "--out",
            out.to_str().unwrap(),
        ]);
        a.extend(strings(extra));
        a
    };

    // Pre-training: two ranks of 8 images vs one process of 16.
    let dp = dir.join("pretrain-2ranks");
    let text = run_ok(mpirun(2, &pretrain("8", &dp, &[])), "mpirun -np 2 pretrain");
    let f0 = fingerprint(&text, 0);
    assert_eq!(f0, fingerprint(&text, 1), "the ranks' parameters differ");
    assert!(text.contains("x 2 peers"), "{text}");
    assert!(dp.join("checkpoint.ckpt").is_file());
    let one = dir.join("pretrain-1");
    run_ok(single(&pretrain("16", &one, &[])), "single pretrain");
    let (a, b) = (pretrained(&dp), pretrained(&one));
    let d = max_diff_except_zero_grad_biases(&a, &b, 16);
    assert!(
        d < 1e-6,
        "pretrain, two ranks vs one process: max |diff| {d}"
    );

    // Stopped after epoch 1 and resumed by both ranks: the uninterrupted run's bits.
    let stopped = dir.join("pretrain-resumed");
    let text = run_ok(
        mpirun(2, &pretrain("8", &stopped, &["--stop-after", "1"])),
        "mpirun pretrain --stop-after 1",
    );
    assert!(text.contains("stopped after epoch 1 of 2"), "{text}");
    let resume = strings(&["pretrain", "--resume", "--out", stopped.to_str().unwrap()]);
    let text = run_ok(mpirun(2, &resume), "mpirun pretrain --resume");
    assert_eq!(fingerprint(&text, 0), f0, "the resumed run differs");
    assert_eq!(fingerprint(&text, 1), f0);
    let log = std::fs::read_to_string(stopped.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 2, "{log}");

    // Two ranks of two devices each (hierarchical reduction), 4 images per device.
    let hier = dir.join("pretrain-2x2");
    let text = run_ok(
        mpirun(2, &pretrain("4", &hier, &["--devices", "2"])),
        "mpirun -np 2 pretrain --devices 2",
    );
    assert!(text.contains("x 4 peers"), "{text}");
    let fp: Vec<String> = (0..4).map(|r| fingerprint(&text, r)).collect();
    assert!(fp.iter().all(|f| *f == fp[0]), "{fp:?}");
    let d = max_diff_except_zero_grad_biases(&pretrained(&hier), &b, 16);
    assert!(
        d < 1e-6,
        "pretrain, 2 ranks x 2 devices vs one process: max |diff| {d}"
    );

    // Fine-tuning from that checkpoint (no per-batch randomness: no drop path, Mixup or
    // CutMix on Fashion-MNIST).
    let finetune = |batch: &str, out: &Path| -> Vec<String> {
        strings(&[
            "finetune",
            "--checkpoint",
            one.to_str().unwrap(),
            "--data",
            &data,
            "--epochs",
            "2",
            "--warmup-epochs",
            "1",
            "--batch-size",
            batch,
            "--accum-iter",
            "1",
            "--blr",
            "0.02",
            "--drop-path",
            "0",
            "--seed",
            "7",
            "--threads",
            "1",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let (ft2, ft1) = (dir.join("finetune-2ranks"), dir.join("finetune-1"));
    run_ok(mpirun(2, &finetune("8", &ft2)), "mpirun -np 2 finetune");
    run_ok(single(&finetune("16", &ft1)), "single finetune");
    let d = max_diff_except_zero_grad_biases(&classifier(&ft2), &classifier(&ft1), 16);
    assert!(
        d < 1e-6,
        "finetune, two ranks vs one process: max |diff| {d}"
    );

    // Linear probing (its BatchNorm sees the global batch's statistics).
    let linprobe = |batch: &str, out: &Path| -> Vec<String> {
        strings(&[
            "linprobe",
            "--checkpoint",
            one.to_str().unwrap(),
            "--data",
            &data,
            "--epochs",
            "2",
            "--warmup-epochs",
            "1",
            "--batch-size",
            batch,
            "--lr",
            "0.5",
            "--seed",
            "3",
            "--threads",
            "1",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let (lp2, lp1) = (dir.join("linprobe-2ranks"), dir.join("linprobe-1"));
    run_ok(mpirun(2, &linprobe("8", &lp2)), "mpirun -np 2 linprobe");
    run_ok(single(&linprobe("16", &lp1)), "single linprobe");
    let d = max_diff(&classifier(&lp2), &classifier(&lp1));
    assert!(
        d < 1e-6,
        "linprobe, two ranks vs one process: max |diff| {d}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The ranks `mpirun` started: (pid, rank) of each child process.
fn ranks_of(launcher: u32) -> Vec<(u32, usize)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The parent pid is the second field after the command's closing parenthesis.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent != Some(launcher) {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let rank = env
            .split(|&b| b == 0)
            .filter_map(|kv| std::str::from_utf8(kv).ok())
            .find_map(|kv| kv.strip_prefix("OMPI_COMM_WORLD_RANK="))
            .and_then(|r| r.parse().ok());
        if let Some(rank) = rank {
            found.push((pid, rank));
        }
    }
    found
}

/// Kills the launcher and its children when dropped (a failed assertion must not leave
/// processes behind).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        for (pid, _) in ranks_of(self.0.id()) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_rank_killed_mid_run_ends_the_run_with_an_error() {
    let dir = scratch("kill");
    let model = setup(&dir);
    let out = dir.join("run");
    let args = strings(&[
        "pretrain",
        "--data",
        &format!("fashion-mnist:{}", dir.display()),
        "--model",
        model.to_str().unwrap(),
        "--epochs",
        "100000",
        "--batch-size",
        "8",
        "--threads",
        "1",
        "--no-eval",
        "--checkpoint-every",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    let mut launcher = Guard(
        mpirun(2, &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mpirun"),
    );
    // Wait until the ranks are training (rank 0 has logged an epoch).
    let start = Instant::now();
    let log = out.join("log.jsonl");
    while std::fs::read_to_string(&log).map_or(0, |l| l.lines().count()) < 2 {
        assert!(
            launcher.0.try_wait().unwrap().is_none(),
            "the run ended before it was killed"
        );
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the run never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ranks = ranks_of(launcher.0.id());
    let victim = ranks
        .iter()
        .find(|(_, r)| *r == 1)
        .unwrap_or_else(|| panic!("no rank 1 among {ranks:?}"))
        .0;
    let survivor = ranks.iter().find(|(_, r)| *r == 0).unwrap().0;
    let killed = Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    // mpirun notices, ends rank 0 and exits non-zero, within a bounded time.
    let killed_at = Instant::now();
    let status = loop {
        if let Some(status) = launcher.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(60),
            "the run kept going 60 s after a rank was killed"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let waited = killed_at.elapsed();
    assert!(!status.success(), "mpirun exited 0 after a rank was killed");
    // Rank 0 is gone too (or a zombie waiting for a reaper: dead either way).
    let gone = || {
        std::fs::read_to_string(format!("/proc/{survivor}/stat")).map_or(true, |stat| {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next());
            matches!(state, Some("Z" | "X"))
        })
    };
    let since = Instant::now();
    while !gone() {
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "rank 0 (pid {survivor}) outlived the run"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut text = String::new();
    if let Some(mut e) = launcher.0.stderr.take() {
        e.read_to_string(&mut text).unwrap();
    }
    eprintln!("ended {waited:?} after the kill:\n{text}");
    // The last checkpoint is intact and loads.
    pretrained(&out);
    let _ = std::fs::remove_dir_all(&dir);
}
