"""What every PyTorch-comparison bench prints first: the CPU, the instruction sets each side
runs on, and the machine's f32 GEMM peak. Speed on a CPU depends on its vector units (an
AVX-512 CPU runs both sides about 2x faster than an AVX2 one), so a ratio means little
without them. Imported by the `*_vs_torch.py` scripts; standard library and torch only.
"""
import json
import os
import subprocess
import time


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def cpu_flags():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def gemm_peak(threads):
    """The best of five 2048^3 `torch.matmul`s on `threads` threads, in GFLOP/s."""
    import torch
    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * 2048 ** 3 / (time.perf_counter() - t) / 1e9)
    return best


def supmae_isa(line):
    """The ISA row a supmae bench prints first (a JSON object with `cpu`, `kernels`, `gemm`),
    or the `backend: flex (...)` line of a `supmae` command, as one string."""
    if isinstance(line, dict):
        built = "" if line.get("avx512_built", True) else " (built without avx512)"
        return f"kernels {line['kernels']}; GEMM {line['gemm']}{built}"
    prefix = "backend: flex ("
    return line[len(prefix):-1] if line.startswith(prefix) and line.endswith(")") else line


def describe(threads, supmae=None, peak=None):
    """Prints the machine block; returns the GEMM peak it measured (or was given)."""
    import torch
    flags = cpu_flags()
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "older than AVX2"
    if "amx_tile" in flags:
        isa += " + AMX"
    peak = gemm_peak(threads) if peak is None else peak
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores here; best vector set {isa})")
    if supmae:
        for label, text in supmae:
            print(f"supmae{label}: {text}")
    print(f"PyTorch {torch.__version__}: CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"f32 GEMM peak (torch 2048^3 matmul, {threads} threads): {peak:.0f} GFLOP/s", flush=True)
    return peak


def cargo_executable(target, features=None, cwd=None):
    """Builds the `supmae-cli` bench `target` (default features, or exactly `features`) and
    returns its executable."""
    cmd = ["cargo", "bench", "-p", "supmae-cli", "--bench", target, "--no-run", "--message-format=json"]
    if features is not None:
        cmd += ["--no-default-features", "--features", features]
    built = subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)
    return [json.loads(l)["executable"] for l in built.stdout.splitlines()
            if '"executable":"' in l and json.loads(l).get("target", {}).get("name") == target][-1]


# The build without AVX-512 (everything else as the default build): what an AVX2-only CPU
# runs, built on any machine to compare the two code paths in one run.
WITHOUT_AVX512 = "flex,distributed"
