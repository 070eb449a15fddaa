#!/usr/bin/env python3
"""Writes checkpoints of every official flavour, with random weights and the official key
names and shapes (from tools/parity/reference.py, written from the official code), saved the
way the official scripts save them (the `model` / `epoch` / `args` dictionaries).

- At ViT-B size (the default; about 350 MB a file): `crates/supmae/tests/official_layouts.rs`'s
  ignored test, run where torch is installed (`cargo test -- --ignored`).
- `--tiny` (a 16 px ViT of width 32, under 100 kB a file): the committed fixtures in
  `tools/checkpoints/fixtures/official/`, which that test file checks in every run.

usage: python3 tools/checkpoints/make_official_like.py [--tiny] OUTDIR
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "parity"))
from reference import SupMAE, VisionTransformer  # noqa: E402


def main():
    cli = argparse.ArgumentParser()
    cli.add_argument("--tiny", action="store_true")
    cli.add_argument("out", type=Path)
    opts = cli.parse_args()
    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    args = argparse.Namespace(model="mae_vit_base_patch16", batch_size=256, blr=1.5e-4)
    if opts.tiny:
        vit = dict(img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=1)
        dec = dict(decoder_embed_dim=32, decoder_num_heads=1)
        width, classes, hidden, full_depth = 32, 10, 64, 2
    else:
        vit, dec = {}, {}
        width, classes, hidden, full_depth = 768, 1000, 3072, 8

    supmae = SupMAE(**vit, **dec, decoder_depth=1, cls_hidden_mlp=hidden, nb_classes=classes).state_dict()
    # The released SupMAE file names the branch `projection_head` and is a full training
    # save (optimizer state omitted here for size; `args` kept).
    released = {k.replace("cls_head.", "projection_head."): v for k, v in supmae.items()}
    torch.save({"model": released, "epoch": 399, "args": args}, out / "supmae_pretrain_vit_base.pth")

    full = SupMAE(**vit, **dec, decoder_depth=full_depth, cls_hidden_mlp=None).state_dict()
    torch.save({"model": full}, out / "mae_pretrain_vit_base_full.pth")
    torch.save({"model": full}, out / "mae_visualize_vit_base.pth")
    encoder = {k: v for k, v in full.items() if not k.startswith("decoder_") and k != "mask_token"}
    torch.save({"model": encoder}, out / "mae_pretrain_vit_base.pth")

    ft = VisionTransformer(**vit, num_classes=classes, global_pool=True).state_dict()
    torch.save({"model": ft, "epoch": 99, "args": args}, out / "supmae_vitb_ft_100e.pth")
    torch.save({"model": ft}, out / "mae_finetuned_vit_base.pth")

    probe = VisionTransformer(**vit, num_classes=classes, global_pool=False)
    probe.head = torch.nn.Sequential(torch.nn.BatchNorm1d(width, affine=False, eps=1e-6), probe.head)
    torch.save({"model": probe.state_dict(), "epoch": 89}, out / "mae_linprobe_vit_base.pth")
    print("wrote", sorted(p.name for p in out.iterdir()))


if __name__ == "__main__":
    main()
