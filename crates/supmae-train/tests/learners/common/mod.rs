//! Helpers shared by the learner tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use supmae_data::fashion_mnist::Split;
use supmae_data::{AnySource, FashionMnist};

/// An empty scratch folder, unique to this test binary and process.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "supmae-{}-{}-{name}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The first `n` embedded Fashion-MNIST images of `split`, written as IDX files into `dir`.
pub fn small_fashion(dir: &Path, n: usize, split: Split) -> AnySource {
    FashionMnist::embedded(split)
        .unwrap()
        .write_idx(dir, split, Some(n))
        .unwrap();
    AnySource::FashionMnist(FashionMnist::from_dir(dir, split).unwrap())
}
pub mod trajectory;

/// The collective's local server is per process and backend: one data-parallel run at a
/// time in this binary (a run's peers leave when their trainers are dropped). Shared by the
/// `distributed` and `distributed_classifiers` modules, whose tests may run on parallel
/// threads.
pub static ONE_RUN: std::sync::Mutex<()> = std::sync::Mutex::new(());
