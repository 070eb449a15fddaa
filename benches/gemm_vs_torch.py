#!/usr/bin/env python3
"""Matrix products of a ViT-B/16 SupMAE step (batch 8): Flex's matmul (`benches/gemm_shapes.rs`,
the path the model's products take) against `torch.mm` on the same shapes, layouts and
threads, alternating sides for each round; prints GFLOP/s per shape and side (best round).

    python3 benches/gemm_vs_torch.py [--rounds 2] [--threads 2]
"""
import argparse
import json
import os
import subprocess
import sys
import time

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
    a = ap.parse_args()
    built = subprocess.run(["cargo", "bench", "-p", "supmae-cli", "--bench", "gemm_shapes", "--no-run",
                            "--message-format=json"], cwd=ROOT, check=True, capture_output=True, text=True)
    exe = [json.loads(l)["executable"] for l in built.stdout.splitlines()
           if '"executable":"' in l and json.loads(l).get("target", {}).get("name") == "gemm_shapes"][-1]
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    best = {}
    for r in range(a.rounds):
        out = subprocess.run([exe], cwd=ROOT, check=True, capture_output=True, text=True, env=env)
        burn = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
        for row in burn + torch_rows(a.threads):
            key = (row["shape"], row["side"])
            best[key] = max(best.get(key, 0.0), row["gflops"])
        print(f"round {r} done", file=sys.stderr, flush=True)
    shapes = list(dict.fromkeys(s for s, _ in best))
    print("| product | m x n x k | Flex matmul GFLOP/s | torch.mm GFLOP/s | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for s in shapes:
        row = next(r for r in burn if r["shape"] == s)
        f, t = best[(s, "burn")], best[(s, "torch")]
        print(f"| {s} | {row['m']} x {row['n']} x {row['k']} | {f:.1f} | {t:.1f} | {f / t:.2f}x |")


if __name__ == "__main__":
    main()
