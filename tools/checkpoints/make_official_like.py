#!/usr/bin/env python3
"""Writes ViT-B-sized checkpoints of every official flavour, with random weights and the
official key names and shapes (from tools/parity/reference.py, written from the official
code), saved the way the official scripts save them. Used by
`crates/supmae/tests/official_layouts.rs` where torch is installed.

usage: python3 tools/checkpoints/make_official_like.py OUTDIR
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "parity"))
from reference import SupMAE, VisionTransformer  # noqa: E402


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    args = argparse.Namespace(model="mae_vit_base_patch16", batch_size=256, blr=1.5e-4)

    supmae = SupMAE(decoder_depth=1, cls_hidden_mlp=3072, nb_classes=1000).state_dict()
    # The released SupMAE file names the branch `projection_head` and is a full training
    # save (optimizer state omitted here for size; `args` kept).
    released = {k.replace("cls_head.", "projection_head."): v for k, v in supmae.items()}
    torch.save({"model": released, "epoch": 399, "args": args}, out / "supmae_pretrain_vit_base.pth")

    full = SupMAE(decoder_depth=8, cls_hidden_mlp=None).state_dict()
    torch.save({"model": full}, out / "mae_pretrain_vit_base_full.pth")
    torch.save({"model": full}, out / "mae_visualize_vit_base.pth")
    encoder = {k: v for k, v in full.items() if not k.startswith("decoder_") and k != "mask_token"}
    torch.save({"model": encoder}, out / "mae_pretrain_vit_base.pth")

    ft = VisionTransformer(global_pool=True).state_dict()
    torch.save({"model": ft, "epoch": 99, "args": args}, out / "supmae_vitb_ft_100e.pth")
    torch.save({"model": ft}, out / "mae_finetuned_vit_base.pth")

    probe = VisionTransformer(global_pool=False)
    probe.head = torch.nn.Sequential(torch.nn.BatchNorm1d(768, affine=False, eps=1e-6), probe.head)
    torch.save({"model": probe.state_dict(), "epoch": 89}, out / "mae_linprobe_vit_base.pth")
    print("wrote", sorted(p.name for p in out.iterdir()))


if __name__ == "__main__":
    main()
