#!/usr/bin/env python3
"""Matrix products of a ViT-B/16 SupMAE step (batch 8): Flex's matmul (`benches/gemm_shapes.rs`,
the path the model's products take) against `torch.mm` on the same shapes, layouts and
threads, alternating sides for each round; prints GFLOP/s per shape and side (best round).

    python3 benches/gemm_vs_torch.py [--rounds 2] [--threads 2] [--without-avx512]

Prints the CPU, the instruction set Flex's GEMM chose and the GEMM peak first.
`--without-avx512` adds a column for a build without the `avx512` feature (AVX2 kernels).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import machine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def torch_rows(threads):
    import torch
    torch.set_num_threads(threads)
    rows = []
    # The same list as benches/gemm_shapes.rs, read from it so the two cannot drift apart.
    src = open(os.path.join(ROOT, "benches", "gemm_shapes.rs")).read()
    for line in src.splitlines():
        line = line.strip()
        if not line.startswith('("'):
            continue
        name, m, n, k, lt, rt = [x.strip(' "') for x in line.strip("(),").split(",")]
        m, n, k = int(m), int(n), int(k)
        a = torch.randn(k, m).t() if lt == "true" else torch.randn(m, k)
        b = torch.randn(n, k).t() if rt == "true" else torch.randn(k, n)
        flops = 2.0 * m * n * k
        reps = max(3, int(2e10 / flops))
        best = float("inf")
        for _ in range(4):
            t = time.perf_counter()
            for _ in range(reps):
                c = torch.mm(a, b)
            best = min(best, (time.perf_counter() - t) / reps)
        assert c.shape == (m, n)
        rows.append({"side": "torch", "shape": name, "m": m, "n": n, "k": k,
                     "gflops": round(flops / best / 1e9, 1)})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--without-avx512", action="store_true")
    a = ap.parse_args()
    builds = [("burn", machine.cargo_executable("gemm_shapes", cwd=ROOT))]
    if a.without_avx512:
        builds.append(("noavx512", machine.cargo_executable("gemm_shapes", machine.WITHOUT_AVX512, ROOT)))
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    best, isa, burn = {}, {}, []
    for r in range(a.rounds):
        rows = []
        for side, exe in builds:
            out = subprocess.run([exe], cwd=ROOT, check=True, capture_output=True, text=True, env=env)
            for row in [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]:
                if "shape" not in row:
                    isa[side] = machine.supmae_isa(row)
                    continue
                row["side"] = side
                rows.append(row)
        burn = [row for row in rows if row["side"] == "burn"]
        for row in rows + torch_rows(a.threads):
            key = (row["shape"], row["side"])
            best[key] = max(best.get(key, 0.0), row["gflops"])
        print(f"round {r} done", file=sys.stderr, flush=True)
    machine.describe(a.threads, [(" (default build)" if s == "burn" else " (without avx512)", t)
                                 for s, t in isa.items()])
    print()
    extra = a.without_avx512
    print("| product | m x n x k | Flex matmul GFLOP/s | torch.mm GFLOP/s | ratio |"
          + (" without avx512 GFLOP/s | avx512 / without |" if extra else ""))
    print("| --- | --- | --- | --- | --- |" + (" --- | --- |" if extra else ""))
    for row in burn:
        s = row["shape"]
        f, t = best[(s, "burn")], best[(s, "torch")]
        line = f"| {s} | {row['m']} x {row['n']} x {row['k']} | {f:.1f} | {t:.1f} | {f / t:.2f}x |"
        if extra:
            n = best[(s, "noavx512")]
            line += f" {n:.1f} | {f / n:.2f}x |"
        print(line)


if __name__ == "__main__":
    main()
