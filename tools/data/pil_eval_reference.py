#!/usr/bin/env python3
"""Photos in many layouts and torchvision's evaluation input for each, for the Rust test that
the eval pipeline equals torchvision's to the grey level
(crates/supmae-data/tests/pipeline.rs, `eval_inputs_equal_torchvisions`).

    pip install pillow torchvision numpy
    python3 tools/data/pil_eval_reference.py        # from the repository root

From the five committed photos (crates/supmae-data/tests/data/photos/*.jpg) it writes 100
images into crates/supmae-data/tests/data/eval/: crops of random aspect ratio (1:3 to 3:1)
resized to 24-120 px, saved as baseline 4:2:0 JPEG, progressive JPEG, 4:4:4 JPEG, greyscale
JPEG, CMYK JPEG (Adobe marker), RGB PNG, RGBA PNG and palette PNG. Then, for every file,
exactly what the official evaluation feeds the model before ToTensor:

    img = Image.open(path).convert('RGB')                     # ImageFolder's loader
    img = transforms.Resize(36, interpolation=BICUBIC)(img)   # int(32 / 0.875)
    img = transforms.CenterCrop(32)(img)

as uint8 HWC rows in `expected_32.u8` (file order = `index.txt`), and the same at 112 (Resize
128) for the five original photos in `expected_112.u8` (`index_112.txt`). Deterministic: a
fixed seed, and Pillow's JPEG encoder is libjpeg-turbo's. NOTICE.md records the versions.
"""
import os
import random
import sys

sys.dont_write_bytecode = True

import numpy as np
import PIL
import torchvision
from PIL import Image, features
from torchvision import transforms

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
PHOTOS = os.path.join(REPO, "crates", "supmae-data", "tests", "data", "photos")
OUT = os.path.join(REPO, "crates", "supmae-data", "tests", "data", "eval")
SOURCES = ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg", "cmyk.jpg"]
KINDS = ["jpeg420", "progressive", "jpeg444", "grey", "cmyk", "png", "rgba", "palette"]


def eval_input(path, size):
    with open(path, "rb") as f:
        img = Image.open(f).convert("RGB")
    img = transforms.Resize(int(size / 0.875), interpolation=transforms.InterpolationMode.BICUBIC)(img)
    img = transforms.CenterCrop(size)(img)
    return np.asarray(img, dtype=np.uint8)


def main():
    rng = random.Random(23)
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    photos = [Image.open(os.path.join(PHOTOS, s)).convert("RGB") for s in SOURCES]
    names = []
    for k in range(100):
        src = photos[k % len(photos)]
        w, h = src.size
        aspect = rng.uniform(-1.0986, 1.0986)  # log(1/3) .. log(3)
        cw = min(w, max(8, int(rng.uniform(0.3, 1.0) * w)))
        ch = min(h, max(8, int(cw / np.exp(aspect))))
        left, top = rng.randrange(0, w - cw + 1), rng.randrange(0, h - ch + 1)
        crop = src.crop((left, top, left + cw, top + ch))
        long_side = rng.randrange(24, 121)
        scale = long_side / max(cw, ch)
        size = (max(1, round(cw * scale)), max(1, round(ch * scale)))
        img = crop.resize(size, Image.BICUBIC)
        kind = KINDS[k % len(KINDS)]
        q = rng.randrange(60, 98)
        if kind == "jpeg420":
            name = f"{k:03d}_{kind}.jpg"; img.save(os.path.join(OUT, name), quality=q, subsampling=2)
        elif kind == "progressive":
            name = f"{k:03d}_{kind}.jpg"; img.save(os.path.join(OUT, name), quality=q, progressive=True)
        elif kind == "jpeg444":
            name = f"{k:03d}_{kind}.jpg"; img.save(os.path.join(OUT, name), quality=q, subsampling=0)
        elif kind == "grey":
            name = f"{k:03d}_{kind}.jpg"; img.convert("L").save(os.path.join(OUT, name), quality=q)
        elif kind == "cmyk":
            name = f"{k:03d}_{kind}.jpg"; img.convert("CMYK").save(os.path.join(OUT, name), quality=q)
        elif kind == "png":
            name = f"{k:03d}_{kind}.png"; img.save(os.path.join(OUT, name))
        elif kind == "rgba":
            a = Image.linear_gradient("L").resize(img.size)
            rgba = img.copy(); rgba.putalpha(a)
            name = f"{k:03d}_{kind}.png"; rgba.save(os.path.join(OUT, name))
        else:
            name = f"{k:03d}_{kind}.png"; img.quantize(64).save(os.path.join(OUT, name))
        names.append(name)
    with open(os.path.join(OUT, "index.txt"), "w") as f:
        f.write("\n".join(names) + "\n")
    np.stack([eval_input(os.path.join(OUT, n), 32) for n in names]).tofile(os.path.join(OUT, "expected_32.u8"))
    with open(os.path.join(OUT, "index_112.txt"), "w") as f:
        f.write("\n".join(SOURCES) + "\n")
    np.stack([eval_input(os.path.join(PHOTOS, n), 112) for n in SOURCES]).tofile(os.path.join(OUT, "expected_112.u8"))
    with open(os.path.join(OUT, "NOTICE.md"), "w") as f:
        f.write(
            "# Evaluation-pipeline references\n\n"
            "Written by `tools/data/pil_eval_reference.py` from the photos in `../photos/` (see the\n"
            "licences in `../photos/NOTICE.md`; these are crops and re-encodings of them) with\n"
            f"Pillow {PIL.__version__} (libjpeg-turbo {features.version_feature('libjpeg_turbo')}) and "
            f"torchvision {torchvision.__version__}.\n\n"
            "`expected_32.u8`: for each file of `index.txt`, `Resize(36, BICUBIC)` + `CenterCrop(32)` of\n"
            "`Image.open(f).convert('RGB')`, uint8 `[32, 32, 3]`. `expected_112.u8`: the same at 112\n"
            "(Resize 128) for the files of `index_112.txt` in `../photos/`.\n")
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"{len(names)} images, {total / 1024:.0f} KiB in {OUT}")


if __name__ == "__main__":
    main()
