#!/usr/bin/env bash
# GPU check for a machine with an NVIDIA GPU and no Rust toolchain (docs/benchmarks.md).
#
# Build on a machine with Rust (no GPU or CUDA toolkit needed to compile):
#     cargo build --release -p supmae-cli --features cuda
# then copy the repository (with target/release/supmae) to the GPU machine and run:
#     bash scripts/gpu-check.sh [BIN] [BATCH]
#
# 1. parity: the CUDA backend's outputs and gradients vs the PyTorch fixtures, then the same
#    check on the CPU backend;
# 2. ViT-B/16 SupMAE (d1b) training-step and inference throughput and peak GPU memory at
#    BATCH images (default 128), in supmae (Burn CUDA, f32) and in PyTorch eager (fp32 and
#    AMP bf16, same model code as the parity reference);
# 3. one short table.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/supmae}
BATCH=${2:-128}
STEPS=${STEPS:-10}
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"

echo "== device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"

echo "== parity on cuda, then flex"
"$BIN" check-backend --backend cuda | tee "$OUT/parity-cuda.txt"
"$BIN" check-backend --backend flex | tee "$OUT/parity-flex.txt"

peak_mem() { # command... ; prints the command's output, then the peak MiB used
  local log="$OUT/mem.$$"
  ( while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; sleep 0.2; done ) > "$log" &
  local poller=$!
  "$@"
  kill "$poller" 2>/dev/null
  echo "peak_mib $(sort -n "$log" | tail -1)"
  rm -f "$log"
}

echo "== supmae (Burn CUDA, f32), base16_d1b, batch $BATCH"
peak_mem "$BIN" bench --backend cuda --config base16_d1b --batch-size "$BATCH" --steps "$STEPS" | tee "$OUT/burn.txt"

for mode in fp32 amp; do
  echo "== PyTorch eager ($mode), base16_d1b, batch $BATCH"
  peak_mem python3 benches/train_step_torch.py base16_d1b --device cuda --batch "$BATCH" \
    --steps "$STEPS" $( [ "$mode" = amp ] && echo --amp ) | tee "$OUT/torch-$mode.txt"
done

echo "== summary"
python3 - "$OUT" <<'PY'
import json, re, sys, pathlib
out = pathlib.Path(sys.argv[1])
rows = []
for name, f in [("supmae Burn CUDA f32", "burn.txt"), ("PyTorch eager fp32", "torch-fp32.txt"), ("PyTorch eager AMP bf16", "torch-amp.txt")]:
    text = (out / f).read_text() if (out / f).exists() else ""
    j = next((json.loads(l) for l in text.splitlines() if l.startswith("{")), None)
    m = re.search(r"peak_mib (\d+)", text)
    rows.append((name, j, m.group(1) if m else "?"))
print("| run | train img/s | infer img/s | peak MiB |")
print("| --- | --- | --- | --- |")
for name, j, mem in rows:
    if j:
        print(f"| {name} | {j['train_img_s']} | {j['infer_img_s']} | {mem} |")
    else:
        print(f"| {name} | failed | | |")
PY
