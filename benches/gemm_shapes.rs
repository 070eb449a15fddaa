//! Matrix products of a ViT-B/16 SupMAE training step (batch 8, 1-block decoder) through
//! Flex's `matmul`, the path every product of the model takes on the CPU (output allocated
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

/// (name, m, n, k, lhs stored transposed, rhs stored transposed). The encoder sees 8 x 50
/// tokens (400 rows), the decoder 8 x 197 (1,576 rows); `dX = dY·Wᵀ`, `dW = Xᵀ·dY`.
const SHAPES: [(&str, usize, usize, usize, bool, bool); 10] = [
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
