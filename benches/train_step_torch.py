#!/usr/bin/env python3
"""PyTorch side of `benches/train_step.rs`: the same configurations, batch sizes and steps
(forward + backward + AdamW for training; encoder forward without masking for inference),
eager mode, float32, `torch.set_num_threads(--threads)`. One JSON line per configuration.

    python3 benches/train_step_torch.py [CONFIG...] [--steps 5] [--threads 2]
        [--device cuda] [--batch N] [--amp]

`--amp` runs the forward under `torch.autocast(dtype=bfloat16)` (GPU), as the official
scripts' mixed precision.
"""
import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {
    "tiny16": dict(batch=32, kind="supmae", img_size=224, patch_size=16, embed_dim=192, depth=12,
                   num_heads=3, decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4,
                   cls_hidden_mlp=768, nb_classes=1000),
    "px32": dict(batch=128, kind="supmae", img_size=32, patch_size=4, embed_dim=192, depth=6,
                 num_heads=3, decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4,
                 cls_hidden_mlp=768, nb_classes=10),
    "tiny16_sup": dict(batch=32, kind="vit", img_size=224, patch_size=16, embed_dim=192, depth=12,
                       num_heads=3, num_classes=1000),
    "base16_d1b": dict(batch=8, kind="supmae", img_size=224, patch_size=16, embed_dim=768, depth=12,
                       num_heads=12, decoder_embed_dim=512, decoder_depth=1, decoder_num_heads=16,
                       cls_hidden_mlp=3072, nb_classes=1000),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("configs", nargs="*")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--amp", action="store_true")
    a = ap.parse_args()
    try:
        import torch
    except ImportError as e:
        print(f"skipped: {e}")
        return
    sys.path.insert(0, os.path.join(ROOT, "tools", "parity"))
    import reference

    torch.set_num_threads(a.threads)
    for name, cfg in CONFIGS.items():
        if a.configs and name not in a.configs:
            continue
        cfg = dict(cfg)
        n, kind = cfg.pop("batch"), cfg.pop("kind")
        n = a.batch or n
        dev = torch.device(a.device)

        def sync():
            if dev.type == "cuda":
                torch.cuda.synchronize()

        amp = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=a.amp)
        steps = min(a.steps, 3) if name == "base16_d1b" else a.steps
        torch.manual_seed(0)
        x = torch.randn(n, 3, cfg["img_size"], cfg["img_size"], device=dev)
        if kind == "supmae":
            model = reference.SupMAE(**cfg)
            y = torch.arange(n, device=dev) % cfg["nb_classes"]
        else:
            model = reference.VisionTransformer(**cfg)
            y = torch.arange(n, device=dev) % cfg["num_classes"]
        model.to(dev).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
        train = 0.0
        for step in range(steps + 2):
            sync()
            start = time.perf_counter()
            with amp:
                if kind == "supmae":
                    rec, _, _, logits = model(x, 0.75)
                    loss = reference.supmae_total_loss(rec, logits, y)
                    loss = loss[0] if isinstance(loss, tuple) else loss
                else:
                    loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sync()
            if step >= 2:
                train += time.perf_counter() - start
        model.eval()
        infer = 0.0
        with torch.no_grad(), amp:
            for step in range(steps + 1):
                sync()
                start = time.perf_counter()
                if kind == "supmae":
                    latent = model.forward_encoder(x, 0.0)[0]
                    latent[:, 1:].mean(1)
                else:
                    model.forward_features(x)
                sync()
                if step >= 1:
                    infer += time.perf_counter() - start
        print(json.dumps(dict(side="torch-" + a.device + ("-amp" if a.amp else ""), config=name, batch=n, train_img_s=round(n * steps / train, 2),
                              infer_img_s=round(n * steps / infer, 2), steps=steps)), flush=True)


if __name__ == "__main__":
    main()
