#!/usr/bin/env python3
"""PyTorch / torchvision baseline for the data-pipeline benchmark.

Runs the official SupMAE / MAE pretraining input pipeline on a folder of JPEGs:

    PIL open + convert('RGB')
    -> RandomResizedCrop(size, scale=(0.2, 1.0), interpolation=BICUBIC)
    -> RandomHorizontalFlip() -> ToTensor() -> Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)

through torch.utils.data.DataLoader(num_workers=T, batch_size=B, shuffle=True,
persistent_workers=True), each worker with torch.set_num_threads(1). The dataset has
B * (batches + warmup) items that index the folder's files modulo their count, so a small
folder is cycled as often as needed. The first `warmup` batches (which include worker start-up)
are not timed; the remaining `batches` are, and ONE JSON line is printed:

    {"framework": "torchvision", "images_per_sec": ..., "threads": T, "batch": B, "size": S,
     "torch": "...", "torchvision": "...", "pillow": "..."}

If torch or torchvision cannot be imported it prints `skipped: <reason>` and exits 0.

    python3 benches/data_pipeline_torch.py --images DIR --threads 2 [--batch 64] [--size 224]
                                           [--batches 20] [--warmup 2]

Notes: with --warmup 0 the timing includes worker start-up. T = 0 loads in the main process (DataLoader forbids persistent_workers there, so it is
off for T = 0). Files are read fresh each time (the OS page cache keeps them after the first
pass, as it does for the Rust side). Only .jpg / .jpeg / .JPEG files directly in DIR are used.
"""
import argparse
import json
import os
import sys
import time

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)


def parse_args():
    ap = argparse.ArgumentParser(description="torchvision data-pipeline baseline")
    ap.add_argument("--images", required=True, help="folder of .jpg files")
    ap.add_argument("--threads", type=int, required=True, help="DataLoader num_workers")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batches", type=int, default=20, help="timed batches")
    ap.add_argument("--warmup", type=int, default=2, help="untimed batches first")
    args = ap.parse_args()
    if args.threads < 0 or args.batch < 1 or args.size < 1 or args.batches < 1 or args.warmup < 0:
        ap.error("threads >= 0, batch >= 1, size >= 1, batches >= 1, warmup >= 0")
    return args


def main():
    args = parse_args()
    try:
        import torch
        import torchvision
        from torch.utils.data import DataLoader, Dataset
        from torchvision import transforms
        from torchvision.transforms import InterpolationMode
        import PIL
        from PIL import Image
    except Exception as e:  # ImportError, or a broken binary (OSError, RuntimeError)
        print(f"skipped: {type(e).__name__}: {e}".replace("\n", " "))
        return 0

    exts = (".jpg", ".jpeg")
    files = sorted(os.path.join(args.images, f) for f in os.listdir(args.images)
                   if f.lower().endswith(exts) and os.path.isfile(os.path.join(args.images, f)))
    if not files:
        sys.exit(f"no .jpg files in {args.images}")

    transform = transforms.Compose([
        transforms.RandomResizedCrop(args.size, scale=(0.2, 1.0), interpolation=InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD),
    ])

    class CycledFolder(Dataset):
        def __init__(self, paths, length):
            self.paths, self.length = paths, length

        def __len__(self):
            return self.length

        def __getitem__(self, i):
            with open(self.paths[i % len(self.paths)], "rb") as f:
                img = Image.open(f)
                img = img.convert("RGB")
            return transform(img), 0

    def worker_init(_worker_id):
        torch.set_num_threads(1)

    total_batches = args.batches + args.warmup
    dataset = CycledFolder(files, args.batch * total_batches)
    loader = DataLoader(
        dataset,
        batch_size=args.batch,
        shuffle=True,
        num_workers=args.threads,
        persistent_workers=args.threads > 0,
        worker_init_fn=worker_init if args.threads > 0 else None,
        drop_last=True,
    )
    if args.threads == 0:
        torch.set_num_threads(1)

    # With warmup >= 1 the clock starts when the last warm-up batch has arrived, so worker
    # start-up is excluded; with --warmup 0 it starts before the loader is iterated.
    n_images = 0
    t0 = time.perf_counter() if args.warmup == 0 else None
    for i, (x, _) in enumerate(loader):
        assert x.shape == (args.batch, 3, args.size, args.size), tuple(x.shape)
        if i < args.warmup:
            if i == args.warmup - 1:
                t0 = time.perf_counter()
            continue
        n_images += x.shape[0]
    elapsed = time.perf_counter() - t0
    assert n_images == args.batch * args.batches, n_images

    print(json.dumps({
        "framework": "torchvision",
        "images_per_sec": round(n_images / elapsed, 2),
        "threads": args.threads,
        "batch": args.batch,
        "size": args.size,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pillow": PIL.__version__,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
