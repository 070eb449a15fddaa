//! Training-step and inference throughput of the benchmark configurations on the CPU
//! backend (Flex), one JSON line per configuration; `benches/vs_torch.py` runs this and
//! `benches/train_step_torch.py` side by side and prints the ratios.
//!
//! ```text
//! cargo bench -p supmae-cli --bench train_step -- [CONFIG...] [--steps N]
//! ```
//!
//! CONFIG: `tiny16` (SupMAE ViT-Ti/16, 224 px, mask 0.75, decoder 128/2/4, batch 32),
//! `px32` (SupMAE, 32 px, patch 4, width 192, depth 6, decoder 128/2/4, batch 128),
//! `tiny16_sup` (supervised ViT-Ti/16, no masking, batch 32), `base16_d1b` (the paper's
//! SupMAE ViT-B/16 with the 1-block decoder, batch 8). Default: all four. The model code is
//! the program's `bench.rs` (`throughput`), which `supmae bench --backend cuda` runs on GPUs.

use supmae::burn::backend::{Autodiff, Flex};

// The program's allocator and its settings, from the program's own source.
#[path = "../crates/supmae-cli/src/alloc.rs"]
mod alloc;
#[path = "../crates/supmae-cli/src/compute.rs"]
mod compute;
// The benchmark configurations and step, from the program's source too (not library API).
#[allow(dead_code)]
#[path = "../crates/supmae-cli/src/bench.rs"]
mod bench;

fn main() {
    alloc::keep_freed_memory();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let steps: usize = args
        .iter()
        .position(|a| a == "--steps")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let device = Default::default();
    // The CPU and the instruction sets chosen on it, first, as one JSON line.
    let isa = supmae_model::kernels::cpu_isa();
    println!(
        "{}",
        serde_json::json!({"side": "burn", "cpu": isa.cpu, "kernels": isa.kernels,
            "gemm": isa.gemm, "avx512_built": isa.avx512_built})
    );
    for (name, batch, _) in bench::configs() {
        if args
            .iter()
            .any(|a| !a.starts_with("--") && a.parse::<usize>().is_err())
            && !args.iter().any(|a| a == name)
        {
            continue;
        }
        let steps = if name == "base16_d1b" {
            steps.min(3)
        } else {
            steps
        };
        // On the compute pool, as the program runs a single-peer job.
        let (train, infer) =
            compute::on_pool(|| bench::throughput::<Autodiff<Flex>>(name, batch, steps, &device))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        println!(
            "{{\"side\": \"burn\", \"config\": \"{name}\", \"batch\": {batch}, \"train_img_s\": {train:.2}, \"infer_img_s\": {infer:.2}, \"steps\": {steps}}}"
        );
    }
}
