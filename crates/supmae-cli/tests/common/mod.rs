//! What the program's test binaries share: scratch folders, running `supmae`, a tiny
//! Fashion-MNIST dataset and model, and reading a run's printed fingerprint.
//!
//! Each binary uses part of it (`mod common;`), so unused items are allowed here.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use supmae_data::FashionMnist;
use supmae_data::fashion_mnist::Split;

/// A fresh, empty folder for one test: `<tmp>/supmae-<test binary>-<pid>-<name>`.
pub fn scratch(name: &str) -> PathBuf {
    let binary = env!("CARGO_CRATE_NAME");
    let dir = std::env::temp_dir().join(format!("supmae-{binary}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The program under test.
pub fn program() -> Command {
    Command::new(env!("CARGO_BIN_EXE_supmae"))
}

/// Runs `supmae args` to the end.
pub fn supmae(args: &[&str]) -> Output {
    program().args(args).output().expect("run supmae")
}

/// Runs `supmae args` (owned strings) to the end.
pub fn run_args(args: &[String]) -> Output {
    program().args(args).output().expect("run supmae")
}

/// Lossy UTF-8 of a process's output.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Owned copies of string literals.
pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Writes the first `train` training and `test` test images of the embedded Fashion-MNIST
/// to `dir` in IDX format (the layout `--data fashion-mnist:DIR` reads).
pub fn fashion(dir: &Path, train: usize, test: usize) {
    FashionMnist::embedded(Split::Train)
        .unwrap()
        .write_idx(dir, Split::Train, Some(train))
        .unwrap();
    FashionMnist::embedded(Split::Test)
        .unwrap()
        .write_idx(dir, Split::Test, Some(test))
        .unwrap();
}

/// A tiny SupMAE (28 px, patch 7, width 16, `depth` blocks) as `--model` JSON, with the
/// classification branch when `supervised`.
pub fn tiny_model_json(depth: usize, supervised: bool) -> String {
    let head = if supervised {
        r#"{"num_classes": 10, "hidden": 16, "temperature": 10.0,
            "loss_ratio": 0.01, "bn_eps": 1e-5, "bn_momentum": 0.1}"#
    } else {
        "null"
    };
    format!(
        r#"{{"img_size": 28, "patch_size": 7, "in_chans": 1, "embed_dim": 16, "depth": {depth},
            "num_heads": 2, "decoder_embed_dim": 16, "decoder_depth": 1, "decoder_num_heads": 2,
            "mlp_ratio": 4.0, "norm_pix_loss": true, "global_pool": true, "cls_head": {head}}}"#
    )
}

/// Writes [`tiny_model_json`] to `dir/tiny.json` and returns its path.
pub fn tiny_model(dir: &Path, depth: usize, supervised: bool) -> PathBuf {
    let path = dir.join("tiny.json");
    std::fs::write(&path, tiny_model_json(depth, supervised)).unwrap();
    path
}

/// The parameter fingerprint rank `rank` printed (`--fingerprint`).
pub fn fingerprint(output: &str, rank: usize) -> String {
    let tag = format!("rank {rank}: parameter fingerprint ");
    output
        .lines()
        .find_map(|l| l.strip_prefix(&tag))
        .unwrap_or_else(|| panic!("no fingerprint of rank {rank} in:\n{output}"))
        .trim()
        .to_string()
}

/// Starts `supmae args` with piped output.
pub fn spawn(args: &[String]) -> Child {
    program()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start supmae")
}

/// Kills the child when dropped (a failed assertion must not leave processes behind).
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for the child to exit (at most `limit`), returning (success, stdout + stderr).
pub fn finish(guard: &mut Guard, limit: Duration) -> (bool, String) {
    let start = Instant::now();
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > limit {
            let _ = guard.0.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut text = String::new();
    if let Some(mut out) = guard.0.stdout.take() {
        out.read_to_string(&mut text).unwrap();
    }
    if let Some(mut err) = guard.0.stderr.take() {
        err.read_to_string(&mut text).unwrap();
    }
    (status.is_some_and(|s| s.success()), text)
}
