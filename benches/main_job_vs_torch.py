#!/usr/bin/env python3
"""The README's main job against PyTorch, side by side in one run.

Runs `supmae pretrain` (the README's command: the Fashion-MNIST subset, every default,
per-epoch validation included) and `benches/pretrain_fashion_mnist_torch.py` (the same
model, recipe and data in PyTorch eager, validating every epoch) for the same number of
epochs, alternating the two sides for several rounds, and prints each run's time, each
side's best, and the speed ratio (PyTorch seconds / supmae seconds; above 1 means supmae is
faster). The headline ratio is the training loop's (each side's own clock around its epochs,
validation included); the whole-process ratio, which also counts Python's `import torch`
and each side's start-up, is printed beside it. Absolute times vary about 2x between machines of the same kind;
the ratio, measured in one run, does not.

    python3 benches/main_job_vs_torch.py [--epochs 3] [--rounds 2] [--threads 2]
        [--supmae target/release/supmae] [--without-avx512] [-- EXTRA SUPMAE FLAGS]

Builds the release binary first unless `--supmae` names one. `--without-avx512` also builds
one without the `avx512` feature (the code an AVX2-only CPU runs) and runs it as a third side
in every round. Prints the CPU, the instruction sets each side chose and the GEMM peak, then
one JSON line at the end. Exits 0 with `skipped: ...` when torch is not installed.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import machine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def loop_seconds(side, log):
    """The training loop's own time (both sides include their per-epoch validation): what
    `supmae` prints as `done in Ns`, what the PyTorch script prints as `"seconds"`."""
    if side != "torch":
        m = re.search(r"^done in ([0-9.]+)s", log, re.M)
        return float(m.group(1)) if m else None
    rows = [json.loads(l) for l in log.splitlines() if l.startswith("{")]
    return rows[-1]["seconds"] if rows else None


def timed(cmd, env=None):
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return seconds, out.stdout + out.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--supmae", default=None, help="a built supmae binary")
    ap.add_argument("--without-avx512", action="store_true",
                    help="also run a build without the avx512 feature, as a third side")
    ap.add_argument("extra", nargs="*", help="extra flags for supmae pretrain")
    a = ap.parse_args()
    try:
        import torch  # noqa: F401
    except ImportError as e:
        print(f"skipped: {e}")
        return 0
    tmp_dir = tempfile.TemporaryDirectory()
    tmp = tmp_dir.name
    binary = a.supmae
    if binary is None:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "supmae-cli"], cwd=ROOT, check=True)
        binary = shutil.copy(os.path.join(ROOT, "target", "release", "supmae"), os.path.join(tmp, "supmae"))
    binaries = [("supmae", binary)]
    if a.without_avx512:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "supmae-cli", "--no-default-features",
                        "--features", machine.WITHOUT_AVX512], cwd=ROOT, check=True)
        binaries.append(("noavx512", shutil.copy(os.path.join(ROOT, "target", "release", "supmae"),
                                                 os.path.join(tmp, "supmae-noavx512"))))
        if a.supmae is None:  # leave the default build in target/release, as it was
            subprocess.run(["cargo", "build", "--release", "-q", "-p", "supmae-cli"], cwd=ROOT, check=True)
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    best, isa = {}, {}
    for r in range(a.rounds):
        sides = [(side, [exe, "pretrain", "--epochs", str(a.epochs),
                         "--out", os.path.join(tmp, f"{side}{r}")] + a.extra) for side, exe in binaries]
        sides.append(("torch", [sys.executable, "benches/pretrain_fashion_mnist_torch.py",
                                "--epochs", str(a.epochs), "--threads", str(a.threads)]))
        for side, cmd in sides:
            seconds, log = timed(cmd, env)
            loop = loop_seconds(side, log)
            for line in log.splitlines():
                if line.startswith("backend: "):
                    isa[side] = machine.supmae_isa(line)
            last = [l for l in log.splitlines() if l.startswith("epoch ")][-1:]
            print(f"round {r} {side:8} process {seconds:7.1f} s, loop {loop or float('nan'):7.1f} s"
                  f"   {last[0] if last else ''}", flush=True)
            best[side] = min(seconds, best.get(side, float("inf")))
            best[side + "_loop"] = min(loop or float("inf"), best.get(side + "_loop", float("inf")))
    tmp_dir.cleanup()
    print()
    peak = machine.describe(a.threads, [(" (default build)" if s == "supmae" else " (without avx512)", t)
                                        for s, t in isa.items()])
    ratio = best["torch"] / best["supmae"]
    loop_ratio = best["torch_loop"] / best["supmae_loop"]
    print(f"\nbest of {a.rounds}, {a.epochs} epochs: supmae {best['supmae_loop']:.1f} s, PyTorch "
          f"{best['torch_loop']:.1f} s in the training loop (validation included): supmae runs at "
          f"{loop_ratio:.2f}x PyTorch's speed; whole processes (start-up, imports and data "
          f"loading included): {best['supmae']:.1f} s vs {best['torch']:.1f} s, {ratio:.2f}x")
    if "noavx512_loop" in best:
        print(f"without avx512: {best['noavx512_loop']:.1f} s in the loop, "
              f"{best['torch_loop'] / best['noavx512_loop']:.2f}x PyTorch; the default build is "
              f"{best['noavx512_loop'] / best['supmae_loop']:.2f}x as fast as it")
    print(json.dumps({"epochs": a.epochs, "rounds": a.rounds, "threads": a.threads,
                      "supmae_loop_s": round(best["supmae_loop"], 2),
                      "torch_loop_s": round(best["torch_loop"], 2),
                      "loop_ratio": round(loop_ratio, 3),
                      "supmae_process_s": round(best["supmae"], 2),
                      "torch_process_s": round(best["torch"], 2),
                      "process_ratio": round(ratio, 3), "torch": __import__("torch").__version__,
                      "cpu": machine.cpu_model(), "supmae_isa": isa.get("supmae"),
                      "gemm_peak_gflops": round(peak),
                      **({"noavx512_loop_s": round(best["noavx512_loop"], 2),
                          "avx512_speedup": round(best["noavx512_loop"] / best["supmae_loop"], 3)}
                         if "noavx512_loop" in best else {})}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
