//! Which CPU this is and which vector instructions the CPU paths chose on it.
//!
//! Both of Flex's hot loops pick their code at run time from what the CPU reports: the GEMM
//! micro-kernels (the `gemm` crate) and the fused kernels' row loops (through `pulp`). What
//! they can pick from is fixed at build time by the `avx512` feature. Benchmarks print this
//! next to every number, because the same binary runs about 2x faster on an AVX-512 CPU.

use std::fmt;

/// The CPU and the instruction sets the fused kernels and Flex's GEMM run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuIsa {
    /// The CPU's model name (`/proc/cpuinfo` on Linux), or `unknown`.
    pub cpu: String,
    /// The fused kernels' row loops (LayerNorm, GELU, softmax, bias): `AVX-512 (x86-64-v4)`,
    /// `AVX2+FMA (x86-64-v3)` or `baseline` (the build's target features, SSE2 on x86-64).
    pub kernels: &'static str,
    /// Flex's GEMM micro-kernels: `AVX-512F`, `AVX2+FMA` or `scalar`.
    pub gemm: &'static str,
    /// Whether this build can choose AVX-512 at all (the `avx512` feature).
    pub avx512_built: bool,
}

impl fmt::Display for CpuIsa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CPU {}; kernels {}; GEMM {}{}",
            self.cpu,
            self.kernels,
            self.gemm,
            if self.avx512_built {
                ""
            } else {
                " (built without the avx512 feature)"
            }
        )
    }
}

/// What this process runs on: the CPU model and the instruction sets chosen for it.
pub fn cpu_isa() -> CpuIsa {
    CpuIsa {
        cpu: cpu_model(),
        kernels: kernels_isa(),
        gemm: gemm_isa(),
        avx512_built: cfg!(feature = "avx512"),
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(feature = "flex")]
fn kernels_isa() -> &'static str {
    super::flex::isa_name()
}

#[cfg(not(feature = "flex"))]
fn kernels_isa() -> &'static str {
    "none (built without the flex feature)"
}

/// The rule `gemm` 0.19 follows on x86-64: AVX-512F when compiled with its `x86-v4` feature
/// (which `avx512` turns on) and the CPU has it, else FMA (its AVX2 kernels), else scalar.
fn gemm_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if cfg!(feature = "avx512") && std::arch::is_x86_feature_detected!("avx512f") {
            "AVX-512F"
        } else if std::arch::is_x86_feature_detected!("fma") {
            "AVX2+FMA"
        } else {
            "scalar"
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        "the target's own (not x86-64)"
    }
}
