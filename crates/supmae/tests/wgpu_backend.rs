//! The GPU code path on every commit: the wgpu backend (in CI, Mesa's software Vulkan
//! driver, lavapipe) against the PyTorch fixtures and against the CPU backend.
//!
//! `cargo test -p supmae --features wgpu --test wgpu_backend`. Without the feature this file
//! is empty. Tolerances are 10x the CPU ones: GPU kernels sum in other orders.

#![cfg(feature = "wgpu")]

use std::path::PathBuf;

use burn::tensor::backend::AutodiffBackend;
use supmae::burn::backend::{Flex, Wgpu};
use supmae::{BackendJob, BackendKind, EmbedError, Embedder, run_on};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/parity/fixtures/tiny")
}

struct Parity;

impl BackendJob for Parity {
    type Output = Result<Vec<(String, f64, f64)>, EmbedError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        supmae::bench::backend_parity::<B>(&fixtures(), &device)
    }
}

struct Step;

impl BackendJob for Step {
    type Output = Result<(f64, f64), EmbedError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        supmae::bench::throughput::<B>("px32", 4, 1, &device)
    }
}

#[test]
fn wgpu_matches_the_pytorch_fixtures_gradients_included() {
    let rows = run_on(BackendKind::Wgpu, Parity).unwrap().unwrap();
    assert_eq!(rows.len(), 5);
    for (name, diff, tol) in rows {
        eprintln!("wgpu vs PyTorch: {name}: max |diff| {diff:.2e}");
        assert!(diff <= 10.0 * tol, "{name}: {diff:e} > {:e}", 10.0 * tol);
    }
}

#[test]
fn wgpu_embeddings_equal_the_cpu_ones_and_training_steps_run() {
    let photos = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../supmae-data/tests/data/photos");
    let paths = [photos.join("astronaut.jpg"), photos.join("chelsea.jpg")];
    let file = fixtures().join("vit_tiny_gp.pth");
    let gpu = Embedder::<Wgpu>::load(&file, &Default::default()).unwrap();
    let cpu = Embedder::<Flex>::load(&file, &Default::default()).unwrap();
    let (a, b) = (
        gpu.embed_paths(&paths).unwrap(),
        cpu.embed_paths(&paths).unwrap(),
    );
    for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
        assert!((x - y).abs() < 1e-4, "{x} vs {y}");
    }
    let (train, infer) = run_on(BackendKind::Wgpu, Step).unwrap().unwrap();
    assert!(train > 0.0 && infer > 0.0);
}
