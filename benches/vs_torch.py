#!/usr/bin/env python3
"""Runs the training-step benchmark of supmae (Burn, `benches/train_step.rs`) and of PyTorch
(`benches/train_step_torch.py`) side by side, alternating sides for each configuration and
round, and prints per-configuration ratios and each side's share of the machine's f32 GEMM
peak (measured here with a 2048^3 torch matmul on the same threads).

    python3 benches/vs_torch.py [--rounds 2] [--steps 5] [--threads 2] [--without-avx512] [CONFIG...]

It first prints the CPU, the instruction sets each side chose on it and the GEMM peak.
`--without-avx512` also builds the bench without the `avx512` feature (the code an AVX2-only
CPU runs) and runs it as a third side in every round, so the two builds compare in one run.

FLOPs are counted analytically (2 per multiply-add, matmuls only: patch embedding, qkv,
attention scores and values, projections, MLPs, decoder, heads); a training step counts
3x the forward FLOPs (forward + two backward matmuls).
"""
import argparse
import json
import os
import subprocess
import sys

import machine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = {
    "tiny16": dict(batch=32, S=224, p=16, D=192, depth=12, Dd=128, dd=2, keep=0.25, hidden=768, Q=1000),
    "px32": dict(batch=128, S=32, p=4, D=192, depth=6, Dd=128, dd=2, keep=0.25, hidden=768, Q=10),
    "tiny16_sup": dict(batch=32, S=224, p=16, D=192, depth=12, Dd=None, dd=0, keep=1.0, hidden=None, Q=1000),
    "base16_d1b": dict(batch=8, S=224, p=16, D=768, depth=12, Dd=512, dd=1, keep=0.25, hidden=3072, Q=1000),
}


def block_flops(T, D):
    return 2 * T * D * 3 * D + 2 * 2 * T * T * D + 2 * T * D * D + 2 * 2 * T * D * 4 * D


def forward_flops(c):
    L = (c["S"] // c["p"]) ** 2
    K = int(L * c["keep"])
    f = 2 * L * c["D"] * c["p"] ** 2 * 3  # patch embedding (all patches, as the code does)
    f += c["depth"] * block_flops(K + 1, c["D"])
    if c["Dd"]:
        f += 2 * (K + 1) * c["D"] * c["Dd"]
        f += c["dd"] * block_flops(L + 1, c["Dd"])
        f += 2 * (L + 1) * c["Dd"] * c["p"] ** 2 * 3
    if c["hidden"]:
        f += 2 * c["D"] * c["hidden"] + 2 * c["hidden"] * c["Q"]
    else:
        f += 2 * c["D"] * c["Q"]
    return f


def run(cmd, env=None):
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("configs", nargs="*")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--without-avx512", action="store_true",
                    help="also run a build without the avx512 feature, as a third side")
    a = ap.parse_args()
    names = a.configs or list(CFG)
    # Build once and run that executable, so every round measures the same binary.
    builds = [("burn", machine.cargo_executable("train_step", cwd=ROOT))]
    if a.without_avx512:
        builds.append(("noavx512", machine.cargo_executable("train_step", machine.WITHOUT_AVX512, ROOT)))
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    isa = {side: machine.supmae_isa(run([exe, "--steps", "0", "none"], env)[0]) for side, exe in builds}
    best = {}
    for r in range(a.rounds):
        for name in names:
            sides = [(side, [exe, name, "--steps", str(a.steps)]) for side, exe in builds]
            sides.append(("torch", [sys.executable, "benches/train_step_torch.py", name, "--steps",
                                    str(a.steps), "--threads", str(a.threads)]))
            for side, cmd in sides:
                for row in run(cmd, env):
                    if "train_img_s" not in row:
                        continue
                    key = (name, side)
                    prev = best.get(key)
                    best[key] = {k: max(row[k], prev[k]) if prev else row[k]
                                 for k in ("train_img_s", "infer_img_s")}
                    print(f"round {r} {side:8} {name:10} train {row['train_img_s']:8.2f} img/s  "
                          f"infer {row['infer_img_s']:8.2f} img/s", flush=True)
    print()
    peak = machine.describe(a.threads, [(" (default build)" if s == "burn" else " (without avx512)", t)
                                        for s, t in isa.items()])
    print()
    print("| config | batch | supmae train img/s | PyTorch train img/s | ratio | supmae % peak | "
          "PyTorch % peak | supmae infer img/s | PyTorch infer img/s | ratio |"
          + (" without avx512: train img/s | its ratio | avx512 / without |" if a.without_avx512 else ""))
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
          + (" --- | --- | --- |" if a.without_avx512 else ""))
    for name in names:
        b, t = best.get((name, "burn")), best.get((name, "torch"))
        if not b or not t:
            continue
        gf = 3 * forward_flops(CFG[name]) / 1e9  # per image, training step
        pct = lambda ips: 100 * ips * gf / peak
        line = (f"| {name} | {CFG[name]['batch']} | {b['train_img_s']:.1f} | {t['train_img_s']:.1f} | "
                f"**{b['train_img_s'] / t['train_img_s']:.2f}x** | {pct(b['train_img_s']):.0f}% | "
                f"{pct(t['train_img_s']):.0f}% | {b['infer_img_s']:.1f} | {t['infer_img_s']:.1f} | "
                f"{b['infer_img_s'] / t['infer_img_s']:.2f}x |")
        n = best.get((name, "noavx512"))
        if n:
            line += (f" {n['train_img_s']:.1f} | {n['train_img_s'] / t['train_img_s']:.2f}x | "
                     f"{b['train_img_s'] / n['train_img_s']:.2f}x |")
        print(line)


if __name__ == "__main__":
    main()
