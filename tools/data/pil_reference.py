#!/usr/bin/env python3
"""Write the PIL bicubic resize references for the Rust resize/crop comparison tests.

Run from the repository root, after tools/data/make_assets.py has written the photos:

    pip install pillow            # the version used is recorded, see below
    python3 tools/data/pil_reference.py

Inputs / outputs, all in crates/supmae-data/tests/data/photos/:

    astronaut.jpg                    input, decoded by PIL and converted to RGB
    astronaut_pil_bicubic_224.png    img.resize((224, 224), Image.BICUBIC)   (whole image, no crop)
    astronaut_pil_bicubic_crop.png   img.crop((40, 30, 240, 200)).resize((96, 96), Image.BICUBIC)
                                     box = (left, top, right, bottom). This is exactly what
                                     torchvision's F.resized_crop(img, top=30, left=40, height=170,
                                     width=200, size=[96, 96], BICUBIC) does on a PIL image
                                     (crop, then resize; checked equal below when torchvision is
                                     installed), and so what RandomResizedCrop does.

NOT the same as img.resize((96, 96), Image.BICUBIC, box=(40, 30, 240, 200)): with `box`, PIL's
filter taps near the box edges read pixels outside the box, so that result differs from
torchvision's in the outermost output pixels (here: max 5 levels, 350 of 9216 pixels, all
within 3 px of the border; the interior is identical). `--box-png PATH`
writes that variant too, for tests of a resizer's crop-box mode (not committed).

Both PNGs are 8-bit RGB, written without compression options that change pixels; their
`Software` tEXt chunk names the Pillow and libjpeg versions. The section "## PIL references" of
photos/NOTICE.md is rewritten with the same facts.

Pillow's BICUBIC is its separable convolution resampler (a = -0.5 Keys kernel, support
scaled by the downscale factor, i.e. antialiased), computed horizontally then vertically
with 8-bit intermediate rounding and clamping, weights in fixed point (22 fractional bits).

--decoded-png PATH additionally writes PIL's decoded RGB of astronaut.jpg as a lossless PNG,
which lets a test separate JPEG-decoding differences from resize differences (not committed).
"""
import argparse
import os
import sys

sys.dont_write_bytecode = True

import PIL
from PIL import Image, PngImagePlugin, features

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
PHOTOS = os.path.join(REPO, "crates", "supmae-data", "tests", "data", "photos")

FULL_SIZE = (224, 224)
CROP_SIZE = (96, 96)
CROP_BOX = (40, 30, 240, 200)  # left, top, right, bottom


def software():
    return (f"Pillow {PIL.__version__} (libjpeg-turbo {features.version('libjpeg_turbo')}, "
            f"zlib {features.version('zlib')})")


def save_png(img, name):
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", software())
    path = os.path.join(PHOTOS, name)
    img.save(path, format="PNG", pnginfo=info, optimize=True)
    back = Image.open(path)
    assert back.mode == "RGB" and back.tobytes() == img.tobytes()
    print(f"wrote {os.path.relpath(path, REPO)} ({img.size[0]}x{img.size[1]}, {os.path.getsize(path)} bytes)")


NOTICE_SECTION = """\
## PIL references

Written by `tools/data/pil_reference.py` with **Pillow {pil}** (its bundled libjpeg-turbo {libjpeg},
zlib {zlib}), Python {py}, from PIL's own decoding of `astronaut.jpg` ({w}x{h}) converted
to RGB:

| file | what |
| --- | --- |
| `astronaut_pil_bicubic_224.png` | `img.resize((224, 224), Image.BICUBIC)`: the whole image, no crop |
| `astronaut_pil_bicubic_crop.png` | `img.crop((40, 30, 240, 200)).resize((96, 96), Image.BICUBIC)`: box is (left, top, right, bottom); exactly torchvision's `resized_crop(img, top=30, left=40, height=170, width=200, size=[96, 96], BICUBIC)` on a PIL image (crop first, so the filter never reads outside the crop) |

`img.resize((96, 96), Image.BICUBIC, box=(40, 30, 240, 200))` is *not* the same: with `box`
PIL's filter taps read pixels outside the box near its edges, and its result differs from
torchvision's by up to 5 levels in 350 of the 9216 pixels (all within 3 px of the border). The torchvision-matching crop must
therefore be cut out before resizing (or the resizer must clamp its taps to the crop).

Both are 8-bit RGB PNGs (lossless); each PNG's `Software` text chunk names the same versions.
The JPEG decode is part of what these references contain (libjpeg-turbo's "fancy" chroma
upsampling of the 4:2:0 file), so a decoder that upsamples chroma differently differs from them
by a few levels even with an identical resize.
"""


def update_notice():
    path = os.path.join(PHOTOS, "NOTICE.md")
    old = open(path, encoding="utf-8").read() if os.path.exists(path) else "# Test photos\n\n"
    marker = "## PIL references"
    head = old[:old.index(marker)] if marker in old else old.rstrip("\n") + "\n\n"
    src = Image.open(os.path.join(PHOTOS, "astronaut.jpg"))
    section = NOTICE_SECTION.format(
        pil=PIL.__version__, libjpeg=features.version("libjpeg_turbo"), zlib=features.version("zlib"),
        py=sys.version.split()[0], w=src.size[0], h=src.size[1])
    with open(path, "w", encoding="utf-8") as f:
        f.write(head + section)
    print(f"updated {os.path.relpath(path, REPO)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--box-png", help="also write img.resize((96, 96), BICUBIC, box=...) here")
    ap.add_argument("--decoded-png", help="also write PIL's decoded RGB of astronaut.jpg here")
    args = ap.parse_args()

    img = Image.open(os.path.join(PHOTOS, "astronaut.jpg")).convert("RGB")
    print(f"{software()}; astronaut.jpg {img.size[0]}x{img.size[1]} {img.mode}")
    save_png(img.resize(FULL_SIZE, Image.BICUBIC), "astronaut_pil_bicubic_224.png")
    crop = img.crop(CROP_BOX).resize(CROP_SIZE, Image.BICUBIC)
    save_png(crop, "astronaut_pil_bicubic_crop.png")
    try:
        import torchvision.transforms.functional as TF
        from torchvision.transforms import InterpolationMode
    except ImportError:
        print("torchvision not installed: resized_crop equality not checked")
    else:
        left, top, right, bottom = CROP_BOX
        tv = TF.resized_crop(img, top, left, bottom - top, right - left, [CROP_SIZE[1], CROP_SIZE[0]],
                             InterpolationMode.BICUBIC)
        assert tv.tobytes() == crop.tobytes(), "torchvision resized_crop differs from crop+resize"
        tv = TF.resize(img, [FULL_SIZE[1], FULL_SIZE[0]], InterpolationMode.BICUBIC)
        assert tv.tobytes() == img.resize(FULL_SIZE, Image.BICUBIC).tobytes()
        print("checked: equal to torchvision resized_crop / resize on the PIL image")
    if args.box_png:
        img.resize(CROP_SIZE, Image.BICUBIC, box=CROP_BOX).save(args.box_png, format="PNG")
        print(f"wrote {args.box_png}")
    if args.decoded_png:
        img.save(args.decoded_png, format="PNG")
        print(f"wrote {args.decoded_png}")
    update_notice()


if __name__ == "__main__":
    main()
