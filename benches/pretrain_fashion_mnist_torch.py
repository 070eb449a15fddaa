#!/usr/bin/env python3
"""PyTorch baseline of the README's main job: the same SupMAE, recipe and data in PyTorch.

Model (tools/parity/reference.py, adapted to 1 channel): 28 px, 7 px patches, encoder
96/4 blocks/3 heads, decoder 128/1/4, classification branch 256 -> 10, norm-pix loss,
mask 0.75, T = 10, lambda = 0.01. Recipe: AdamW (0.9, 0.95), eps 1e-8, weight decay 0.05
except 1-D parameters and biases, lr = blr * 128 / 256 with blr 2e-3, per-iteration linear
warmup (2 epochs) then half-cosine to 0 over 25 epochs, batch 128 (last partial batch
dropped), horizontal flip 0.5, normalise with Fashion-MNIST's mean/std. Data: the embedded
subset (crates/supmae-data/assets/fashion-mnist, 10,000 train / 2,000 val). After every
epoch the classification branch is evaluated in eval mode with all patches visible.

    python3 benches/pretrain_fashion_mnist_torch.py [--threads 2] [--epochs 25]

Prints one line per epoch and a final JSON line with the accuracy and wall-clock seconds.
Prints `skipped: ...` and exits 0 when torch is not installed.
"""
import argparse
import gzip
import json
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return dims, data[4 + 4 * ndim:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        print(f"skipped: {e}")
        return 0
    sys.path.insert(0, os.path.join(ROOT, "tools", "parity"))
    import reference

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    assets = os.path.join(ROOT, "crates", "supmae-data", "assets", "fashion-mnist")

    def load(prefix):
        (n, h, w), pix = read_idx(os.path.join(assets, f"{prefix}-images-idx3-ubyte.gz"))
        _, lab = read_idx(os.path.join(assets, f"{prefix}-labels-idx1-ubyte.gz"))
        x = torch.frombuffer(bytearray(pix), dtype=torch.uint8).reshape(n, 1, h, w).float() / 255
        x = (x - 0.2860) / 0.3530
        return x, torch.frombuffer(bytearray(lab), dtype=torch.uint8).long()

    xtr, ytr = load("train")
    xva, yva = load("t10k")

    class SupMAE1(reference.SupMAE):
        """The reference model with a 1-channel patch embedding and patchify."""

        def __init__(self, **kw):
            super().__init__(in_chans=3, **kw)
            p, d = kw["patch_size"], kw["embed_dim"]
            self.patch_embed.proj = torch.nn.Conv2d(1, d, p, p)
            self.decoder_pred = torch.nn.Linear(kw["decoder_embed_dim"], p * p)
            self.initialize_weights()

        def patchify(self, imgs):
            p = self.patch_embed.patch_size
            n, c, s, _ = imgs.shape
            g = s // p
            x = imgs.reshape(n, c, g, p, g, p).permute(0, 2, 4, 3, 5, 1)
            return x.reshape(n, g * g, p * p * c)

    model = SupMAE1(img_size=28, patch_size=7, embed_dim=96, depth=4, num_heads=3,
                    decoder_embed_dim=128, decoder_depth=1, decoder_num_heads=4,
                    cls_hidden_mlp=256, nb_classes=10)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    batch, blr, warmup, epochs = 128, 2e-3, 2, args.epochs
    lr = blr * batch / 256
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))
    iters = len(xtr) // batch
    start = time.time()
    acc = 0.0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xtr))
        losses = []
        for it in range(iters):
            e = epoch + it / iters
            cur = lr * e / warmup if e < warmup else lr * 0.5 * (1 + math.cos(math.pi * (e - warmup) / (epochs - warmup)))
            for g in opt.param_groups:
                g["lr"] = cur
            idx = order[it * batch:(it + 1) * batch]
            x, y = xtr[idx], ytr[idx]
            flip = torch.rand(len(x)) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            rec, _, _, logits = model(x, 0.75)
            loss, _, _ = reference.supmae_total_loss(rec, logits, y)
            if not math.isfinite(loss.item()):
                raise SystemExit(f"non-finite loss at epoch {epoch}")
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(rec.item())
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(xva), 256):
                latent, _, _ = model.forward_encoder(xva[i:i + 256], 0.0)
                correct += (model.forward_classification(latent).argmax(1) == yva[i:i + 256]).sum().item()
        acc = 100 * correct / len(xva)
        print(f"epoch {epoch + 1}/{epochs}: rec_loss {sum(losses) / len(losses):.4f}, "
              f"val top-1 {acc:.2f}% (all patches), {time.time() - start:.0f}s", flush=True)
    print(json.dumps({"framework": "pytorch", "torch": torch.__version__, "threads": args.threads,
                      "epochs": epochs, "val_acc1_full": acc, "seconds": time.time() - start}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
