#!/usr/bin/env bash
# The small-scale version of the paper's claim (docs/results.md): on full Fashion-MNIST
# (60,000 train / 10,000 test, Debian's `dataset-fashion-mnist`), SupMAE pre-trained for E
# epochs vs MAE for E and 4E epochs, each fine-tuned with one recipe, vs the same ViT trained
# from scratch with the same total compute. Same architecture (the `supmae pretrain` default:
# 28 px, patch 7, 96-wide 4-block encoder), same seeds, same fine-tuning recipe.
#
# usage: tools/experiments/small_scale.sh SEED [E] [FT_EPOCHS] [SCRATCH_EPOCHS]
# Run one seed per core (the CPU backend keeps about one core busy):
#   tools/experiments/small_scale.sh 0 & tools/experiments/small_scale.sh 1 & wait
#   python3 tools/experiments/summarize.py runs/small
set -euo pipefail
S=${1:?seed}
E=${2:-2}
FT=${3:-3}
SCRATCH=${4:-5}
BIN=${SUPMAE_BIN:-target/release/supmae}
R=${RUNS:-runs/small}
mkdir -p "$R"
[ -x "$BIN" ] || cargo build --release -p supmae

pretrain() { # name mode epochs
  local name=$1 mode=$2 ep=$3
  [ -f "$R/$name/checkpoint.ckpt" ] && return 0
  # Warmup is 10% of the run, as in the default recipe (2 of 20 epochs).
  "$BIN" pretrain --data fashion-mnist --mode "$mode" --epochs "$ep" \
    --warmup-epochs "$(python3 -c "print($ep * 0.1)")" --seed "$S" --no-eval --threads 1 \
    --out "$R/$name" > "$R/$name.out" 2>&1
}

finetune() { # name [pretrained run]
  local name=$1 from=${2:-}
  [ -f "$R/$name/best.ckpt" ] && return 0
  local args=(--data fashion-mnist --seed "$S" --threads 1 --out "$R/$name")
  if [ -n "$from" ]; then
    args+=(--checkpoint "$R/$from" --epochs "$FT" --warmup-epochs "$(python3 -c "print($FT * 0.1)")")
  else
    args+=(--epochs "$SCRATCH" --warmup-epochs "$(python3 -c "print($SCRATCH * 0.1)")")
  fi
  "$BIN" finetune "${args[@]}" > "$R/$name.out" 2>&1
}

pretrain "supmae-e$E-s$S" supmae "$E"
pretrain "mae-e$E-s$S" mae "$E"
pretrain "mae-e$((4 * E))-s$S" mae $((4 * E))
finetune "ft-supmae-e$E-s$S" "supmae-e$E-s$S"
finetune "ft-mae-e$E-s$S" "mae-e$E-s$S"
finetune "ft-mae-e$((4 * E))-s$S" "mae-e$((4 * E))-s$S"
finetune "scratch-s$S"
