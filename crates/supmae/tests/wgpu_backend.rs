//! The GPU code path on every commit: the wgpu backend (in CI, Mesa's software Vulkan
//! driver, lavapipe) against the PyTorch fixtures, against the CPU backend, and the three
//! learners' trajectories against PyTorch's.
//!
//! Part of `cargo test --workspace`: this crate's dev-dependency on Burn turns on its wgpu
//! backend for the test build (the library and the program keep their own features). On a
//! machine without a GPU or Vulkan driver the tests say so and pass without running, unless
//! `SUPMAE_REQUIRE_WGPU=1` (as in CI), which makes a missing adapter a failure. Tolerances
//! are 10x the CPU ones: GPU kernels sum in other orders.

use std::path::PathBuf;
use std::sync::OnceLock;

use burn::backend::{Autodiff, Wgpu};
use burn::tensor::backend::AutodiffBackend;
use supmae::burn::backend::Flex;
use supmae::{BackendJob, Embedder};

/// Whether a wgpu adapter starts here (probed once, on a throw-away tensor); panics when
/// none does and `SUPMAE_REQUIRE_WGPU=1`.
fn wgpu_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    let ok = *AVAILABLE.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let ok = std::panic::catch_unwind(|| {
            use burn::prelude::*;
            let t = Tensor::<Wgpu, 1>::from_floats([1.0, 2.0], &Default::default());
            t.sum().into_scalar() == 3.0
        })
        .unwrap_or(false);
        std::panic::set_hook(previous);
        ok
    });
    if !ok {
        assert!(
            std::env::var("SUPMAE_REQUIRE_WGPU").as_deref() != Ok("1"),
            "SUPMAE_REQUIRE_WGPU=1 but no wgpu adapter starts (install a Vulkan driver, e.g. \
             Mesa's lavapipe: apt install mesa-vulkan-drivers)"
        );
        eprintln!("no wgpu adapter on this machine: the wgpu test does not run");
    }
    ok
}

type Gpu = Autodiff<Wgpu>;
type Cpu = Autodiff<Flex>;

#[path = "../../supmae-train/tests/learners/common/trajectory.rs"]
mod trajectory;
// The program's benchmark step and fixture check (program code, not library API).
#[allow(dead_code)]
#[path = "../../supmae-cli/src/bench.rs"]
mod bench;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/parity/fixtures/tiny")
}

struct Parity;

impl BackendJob for Parity {
    type Output = Result<Vec<(String, f64, f64)>, String>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        bench::backend_parity::<B>(&fixtures(), &device)
    }
}

struct Step;

impl BackendJob for Step {
    type Output = Result<(f64, f64), String>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        bench::throughput::<B>("px32", 4, 1, &device)
    }
}

#[test]
fn wgpu_matches_the_pytorch_fixtures_gradients_included() {
    if !wgpu_available() {
        return;
    }
    let rows = Parity.run::<Gpu>(Default::default()).unwrap();
    assert_eq!(rows.len(), 5);
    for (name, diff, tol) in rows {
        eprintln!("wgpu vs PyTorch: {name}: max |diff| {diff:.2e}");
        assert!(diff <= 10.0 * tol, "{name}: {diff:e} > {:e}", 10.0 * tol);
    }
}

#[test]
fn wgpu_embeddings_equal_the_cpu_ones_and_training_steps_run() {
    if !wgpu_available() {
        return;
    }
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
    let (train, infer) = Step.run::<Gpu>(Default::default()).unwrap();
    assert!(train > 0.0 && infer > 0.0);
}

/// Deterministic values in [-1, 1) from a small LCG, so both backends get the same inputs.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Every kernel's output and input gradient on backend `B`: on `Autodiff<Flex>` these are
/// the fused CPU kernels, on `Autodiff<Wgpu>` the generic Burn ops.
fn kernel_outputs<B: AutodiffBackend>(device: &B::Device) -> Vec<(&'static str, Vec<f32>)> {
    use burn::prelude::*;
    use supmae_model::kernels;
    let tensor = |shape: [usize; 3], seed: u64| {
        let n = shape.iter().product();
        Tensor::<B, 3>::from_data(TensorData::new(values(n, seed), shape), device)
    };
    let read =
        |t: Tensor<B::InnerBackend, 3>| t.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    let mut out = Vec::new();
    // Attention: 2 samples, 7 tokens, 3 heads of 4.
    let qkv = tensor([2, 7, 36], 1).require_grad();
    let w = tensor([2, 7, 12], 2);
    let y = kernels::attention(qkv.clone(), 3);
    let grads = (y.clone() * w).sum().backward();
    out.push(("attention", read(y.inner())));
    out.push(("attention dqkv", read(qkv.grad(&grads).unwrap())));
    // LayerNorm.
    let norm = burn::nn::LayerNormConfig::new(12)
        .with_epsilon(1e-6)
        .init::<B>(device);
    let x = tensor([2, 7, 12], 3).mul_scalar(3.0).require_grad();
    let w = tensor([2, 7, 12], 4);
    let y = kernels::layer_norm(&norm, x.clone(), 1e-6);
    let grads = (y.clone() * w).sum().backward();
    out.push(("layer_norm", read(y.inner())));
    out.push(("layer_norm dx", read(x.grad(&grads).unwrap())));
    // GELU.
    let x = tensor([2, 7, 12], 5).mul_scalar(3.0).require_grad();
    let w = tensor([2, 7, 12], 6);
    let y = kernels::gelu(x.clone());
    let grads = (y.clone() * w).sum().backward();
    out.push(("gelu", read(y.inner())));
    out.push(("gelu dx", read(x.grad(&grads).unwrap())));
    // Linear with its bias (on the 14 tokens as a matrix).
    let mut layer = burn::nn::LinearConfig::new(12, 5).init::<B>(device);
    let weight = Tensor::<B, 2>::from_data(TensorData::new(values(60, 17), [12, 5]), device);
    let bias = Tensor::<B, 1>::from_data(TensorData::new(values(5, 18), [5]), device);
    layer.weight = burn::module::Param::from_tensor(weight);
    layer.bias = Some(burn::module::Param::from_tensor(bias));
    let x = tensor([1, 14, 12], 7).require_grad();
    let w = tensor([1, 14, 5], 8);
    let y = kernels::linear(&layer, x.clone().reshape([14, 12])).reshape([1, 14, 5]);
    let grads = (y.clone() * w).sum().backward();
    out.push(("linear", read(y.inner())));
    out.push(("linear dx", read(x.grad(&grads).unwrap())));
    // The token gathers around the masking: 2 images of 6 patches, 2 kept.
    let ints = |rows: [[i64; 6]; 2]| {
        let flat: Vec<i64> = rows.iter().flatten().copied().collect();
        Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [2, 6]), device)
    };
    let ids_shuffle = ints([[4, 1, 0, 5, 2, 3], [2, 5, 3, 0, 1, 4]]);
    let ids_restore = ids_shuffle.clone().argsort(1);
    let patches = tensor([2, 12, 6], 9).require_grad();
    let (pos, cls) = (tensor([1, 7, 12], 10), tensor([1, 1, 12], 11));
    let visible = kernels::visible_tokens(patches.clone(), pos, cls, ids_shuffle.narrow(1, 0, 2));
    let w = tensor([2, 3, 12], 12);
    let grads = (visible.clone() * w).sum().backward();
    out.push(("visible_tokens", read(visible.inner())));
    out.push((
        "visible_tokens dpatches",
        read(patches.grad(&grads).unwrap()),
    ));
    let embedded = tensor([2, 3, 12], 13).require_grad();
    let (mask, pos) = (tensor([1, 1, 12], 14), tensor([1, 7, 12], 15));
    let tokens = kernels::decoder_tokens(embedded.clone(), mask, pos, ids_restore);
    let w = tensor([2, 7, 12], 16);
    let grads = (tokens.clone() * w).sum().backward();
    out.push(("decoder_tokens", read(tokens.inner())));
    out.push((
        "decoder_tokens dembedded",
        read(embedded.grad(&grads).unwrap()),
    ));
    out
}

struct Kernels;

impl BackendJob for Kernels {
    type Output = Vec<(&'static str, Vec<f32>)>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        kernel_outputs::<B>(&device)
    }
}

#[test]
fn fused_cpu_kernels_equal_the_generic_ops_on_wgpu() {
    if !wgpu_available() {
        return;
    }
    let gpu = Kernels.run::<Gpu>(Default::default());
    let cpu = Kernels.run::<Cpu>(Default::default());
    for ((name, a), (_, b)) in gpu.iter().zip(&cpu) {
        assert_eq!(a.len(), b.len(), "{name}");
        let diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        let scale = b.iter().fold(1.0f32, |m, x| m.max(x.abs()));
        eprintln!(
            "wgpu (generic) vs Flex (fused): {name}: max |diff| {diff:.2e} (values up to {scale:.2})"
        );
        assert!(diff <= 1e-5 * scale, "{name}: {diff:e}");
    }
}

/// The three learner trajectories of `supmae-train/tests/learners/trajectory.rs` on wgpu, at the
/// same tolerances as on the CPU (the issue's: 1e-6 after steps 1-2, 1e-5 after 20, lr 1e-9,
/// losses 1e-5). GPU kernels reduce in other orders (tiled matmuls, tree reductions), but
/// over 20 steps the distances to PyTorch measured on lavapipe are those of the CPU backend:
/// largest relative L2 after step 1/2/5/20 of pre-training 2.1e-8 / 3.7e-8 / 9.5e-8 /
/// 1.4e-7, fine-tuning 0 / 4.5e-8 / 2.0e-7 / 6.5e-7, linear probing 2.8e-7 / 1.7e-7 /
/// 1.5e-7 / 2.7e-7. That leaves a margin of 3.6x at the tightest point (the probe's first
/// step) and 15x after 20 steps; the fixture's own float32-vs-float64 distances are of
/// the same order (its README).
#[test]
fn the_learners_follow_pytorch_step_by_step_on_wgpu() {
    if !wgpu_available() {
        return;
    }
    type B = Gpu;
    const WGPU: trajectory::Tolerances = trajectory::CPU;
    let dir = std::env::temp_dir().join(format!("supmae-wgpu-trajectory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pretrain = trajectory::pretrain::<B>(&dir, Default::default(), WGPU);
    eprintln!("wgpu pre-training, largest relative L2 per snapshot: {pretrain:?}");
    let finetune = trajectory::finetune::<B>(&dir, Default::default(), WGPU);
    eprintln!("wgpu fine-tuning, largest relative L2 per snapshot: {finetune:?}");
    let linprobe = trajectory::linprobe::<B>(&dir, Default::default(), WGPU);
    eprintln!("wgpu linear probing, largest relative L2 per snapshot: {linprobe:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
