//! Matrix products of a ViT-B/16 SupMAE training step (batch 8, 1-block decoder), of the
//! `px32` step (batch 128) and of the README's main job (batch 128) through Flex's `matmul`, the path every product of the model takes on the CPU (output allocated
//! per call, transposed operands as strided views). One JSON line per shape with GFLOP/s;
//! `benches/gemm_vs_torch.py` runs this and `torch.mm` on the same shapes side by side.
//!
//! ```text
//! cargo bench -p supmae-cli --bench gemm_shapes
//! ```

use std::time::Instant;

use supmae::burn::backend::Flex;
use supmae::burn::tensor::{Distribution, Tensor};

// The program's allocator and its settings, from the program's own source.
#[path = "../crates/supmae-cli/src/alloc.rs"]
mod alloc;

/// (name, m, n, k, lhs stored transposed, rhs stored transposed). ViT-B's encoder sees 8 x 50
/// tokens (400 rows), its decoder 8 x 197 (1,576 rows); px32's encoder 128 x 17 (2,176 rows,
/// width 192), its decoder 128 x 65 (8,320 rows, width 128); the main job's encoder 128 x 5
/// (640 rows, width 96), its decoder 128 x 17 (width 128). `dX = dY·Wᵀ`, `dW = Xᵀ·dY`.
const SHAPES: [(&str, usize, usize, usize, bool, bool); 17] = [
    ("qkv", 400, 2304, 768, false, false),
    ("proj", 400, 768, 768, false, false),
    ("fc1", 400, 3072, 768, false, false),
    ("fc2", 400, 768, 3072, false, false),
    ("qkv dX", 400, 768, 2304, false, true),
    ("fc1 dX", 400, 768, 3072, false, true),
    ("qkv dW", 768, 2304, 400, true, false),
    ("fc1 dW", 768, 3072, 400, true, false),
    ("fc2 dW", 3072, 768, 400, true, false),
    ("decoder fc1", 1576, 2048, 512, false, false),
    ("px32 qkv", 2176, 576, 192, false, false),
    ("px32 fc2", 2176, 192, 768, false, false),
    ("px32 fc1 dW", 192, 768, 2176, true, false),
    ("px32 decoder fc1", 8320, 512, 128, false, false),
    ("px32 decoder fc2 dX", 8320, 512, 128, false, true),
    ("main qkv", 640, 288, 96, false, false),
    ("main decoder fc1", 2176, 512, 128, false, false),
];

fn operand(rows: usize, cols: usize, transposed: bool) -> Tensor<Flex, 2> {
    let device = Default::default();
    let dist = Distribution::Normal(0.0, 1.0);
    if transposed {
        Tensor::random([cols, rows], dist, &device).transpose()
    } else {
        Tensor::random([rows, cols], dist, &device)
    }
}

fn main() {
    alloc::keep_freed_memory();
    let isa = supmae_model::kernels::cpu_isa();
    println!(
        "{}",
        serde_json::json!({"side": "burn", "cpu": isa.cpu, "kernels": isa.kernels,
            "gemm": isa.gemm, "avx512_built": isa.avx512_built})
    );
    for (name, m, n, k, lhs_t, rhs_t) in SHAPES {
        let (a, b) = (operand(m, k, lhs_t), operand(k, n, rhs_t));
        let flops = 2.0 * (m * n * k) as f64;
        let reps = ((2e10 / flops) as usize).max(3);
        let mut best = f64::MAX;
        for _ in 0..4 {
            let start = Instant::now();
            for _ in 0..reps {
                // Flex computes eagerly: the product is done when `matmul` returns.
                let c = a.clone().matmul(b.clone());
                assert_eq!(c.dims(), [m, n]);
            }
            best = best.min(start.elapsed().as_secs_f64() / reps as f64);
        }
        println!(
            "{{\"side\": \"burn\", \"shape\": \"{name}\", \"m\": {m}, \"n\": {n}, \"k\": {k}, \"gflops\": {:.1}}}",
            flops / best / 1e9
        );
    }
}
