#!/usr/bin/env python3
"""Writes the hostile/odd checkpoint fixtures in tools/parity/fixtures/bad/ (needs torch).

- `args_namespace.pth`: `{'model': sd, 'optimizer': ..., 'epoch', 'scaler', 'args':
  argparse.Namespace(...)}`, the layout `util/misc.py save_model` writes. Must load.
- `evil_global.pth`: a pickle whose `__reduce__` calls `os.system`. Must be refused without
  running anything (the command would create `/tmp/supmae-pwned`).

usage: python3 tools/parity/make_bad_fixtures.py
"""
import argparse
import os
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent / "fixtures" / "bad"


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/supmae-pwned",))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    sd = {
        "cls_token": torch.randn(1, 1, 8),
        "patch_embed.proj.weight": torch.randn(8, 3, 4, 4),
    }
    lin = torch.nn.Linear(4, 4)
    opt = torch.optim.AdamW(lin.parameters())
    lin(torch.ones(1, 4)).sum().backward()
    opt.step()
    args = argparse.Namespace(batch_size=64, model="mae_vit_base_patch16", blr=1.5e-4, lr=None)
    torch.save(
        {
            "model": sd,
            "optimizer": opt.state_dict(),
            "epoch": 3,
            "scaler": {"scale": 65536.0, "growth_factor": 2.0},
            "args": args,
        },
        OUT / "args_namespace.pth",
    )
    torch.save({"model": sd, "payload": Evil()}, OUT / "evil_global.pth")
    print("wrote", sorted(p.name for p in OUT.iterdir()))


if __name__ == "__main__":
    main()
