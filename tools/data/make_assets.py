#!/usr/bin/env python3
"""Build the committed data assets of crates/supmae-data from packages fetched beforehand.

Nothing is downloaded here. Fetch the three inputs first (PyPI and Debian are the only
registries these machines reach):

    pip download --no-deps timm==1.0.31          -d /tmp/timm   # ImageNet class list
    pip download --no-deps scikit-image==0.26.0  -d /tmp/ski    # test photos (optional)
    (cd /tmp && apt-get download dataset-fashion-mnist)         # `apt-get update` first if needed

then, from the repository root:

    python3 tools/data/make_assets.py \
        --timm-wheel    /tmp/timm/timm-1.0.31-py3-none-any.whl \
        --fashion-deb   /tmp/dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb \
        --skimage-wheel /tmp/ski/scikit_image-0.26.0-*.whl

Each input is optional; only the assets whose input is given are (re)written:

  --timm-wheel    crates/supmae-data/assets/imagenet_classes.tsv (1000 lines, line i =
                  "<wnid>\\t<names>" for class index i, i.e. sorted-wnid / ImageFolder order),
                  imagenet_{a,r}_wnids.txt (the 200-class subsets of ImageNet-A / -R)
                  and crates/supmae-data/assets/NOTICE.md
  --fashion-deb   crates/supmae-data/assets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
                  (first 10 000 train and first 2 000 test items, valid IDX headers, gzip level 9,
                  mtime 0, no file name in the gzip header) and .../fashion-mnist/LICENSE
  --skimage-wheel crates/supmae-data/tests/data/photos/{astronaut,chelsea,coffee,rocket,cmyk}.jpg
                  and .../photos/NOTICE.md  (needs Pillow)

The .deb is read in pure Python (ar + tar), so dpkg-deb is not needed. The outputs are
byte-for-byte reproducible for a given zlib (gzip) / Pillow+libjpeg (photos) build.
The PIL resize references are written by tools/data/pil_reference.py (run it after this).
"""
import argparse
import gzip
import io
import os
import struct
import sys
import tarfile
import zipfile
from collections import Counter

sys.dont_write_bytecode = True

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
CRATE = os.path.join(REPO, "crates", "supmae-data")
ASSETS = os.path.join(CRATE, "assets")
FMNIST_OUT = os.path.join(ASSETS, "fashion-mnist")
PHOTOS_OUT = os.path.join(CRATE, "tests", "data", "photos")

N_TRAIN = 10_000
N_TEST = 2_000
FMNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801


def write_bytes(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    print(f"wrote {os.path.relpath(path, REPO)} ({len(data)} bytes)")


# --------------------------------------------------------------------------------------------
# ImageNet class list (timm wheel)
# --------------------------------------------------------------------------------------------

def make_imagenet_classes(wheel):
    with zipfile.ZipFile(wheel) as z:
        synsets = z.read("timm/data/_info/imagenet_synsets.txt").decode("utf-8").split()
        lemma_lines = z.read("timm/data/_info/imagenet_synset_to_lemma.txt").decode("utf-8").splitlines()
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode("utf-8")
    version = next(l.split(":", 1)[1].strip() for l in meta.splitlines() if l.startswith("Version:"))

    lemma = {}
    for line in lemma_lines:
        if not line.strip():
            continue
        wnid, names = line.split("\t", 1)
        lemma[wnid] = names.strip()

    assert len(synsets) == 1000, len(synsets)
    assert len(set(synsets)) == 1000, "wnids not unique"
    assert synsets == sorted(synsets), "wnids not sorted"
    assert all(w.startswith("n") and len(w) == 9 and w[1:].isdigit() for w in synsets)
    missing = [w for w in synsets if w not in lemma]
    assert not missing, f"no names for {missing[:5]}"
    assert all("\t" not in lemma[w] and "\n" not in lemma[w] for w in synsets)

    rows = [f"{w}\t{lemma[w]}" for w in synsets]
    assert rows[0] == "n01440764\ttench, Tinca tinca", rows[0]
    assert rows[281].startswith("n02123045\ttabby, tabby cat"), rows[281]
    write_bytes(os.path.join(ASSETS, "imagenet_classes.tsv"), ("\n".join(rows) + "\n").encode("utf-8"))

    # The 200-class subsets of ImageNet-A and ImageNet-R: their wnids, sorted, which is the
    # datasets' folder order. timm's *_indices.txt give the same classes as ImageNet-1k
    # indices; both are checked to agree.
    with zipfile.ZipFile(wheel) as z:
        for name in ("a", "r"):
            wnids = z.read(f"timm/data/_info/imagenet_{name}_synsets.txt").decode("utf-8").split()
            indices = [int(i) for i in
                       z.read(f"timm/data/_info/imagenet_{name}_indices.txt").decode("utf-8").split()]
            assert len(wnids) == 200 and len(set(wnids)) == 200, (name, len(wnids))
            assert wnids == sorted(wnids), f"imagenet-{name} wnids not sorted"
            assert [synsets.index(w) for w in wnids] == indices, f"imagenet-{name} indices disagree"
            write_bytes(os.path.join(ASSETS, f"imagenet_{name}_wnids.txt"),
                        ("\n".join(wnids) + "\n").encode("utf-8"))
    return version


ASSETS_NOTICE = """\
# Third-party data in `crates/supmae-data/assets/`

Written by `tools/data/make_assets.py` (see its header for the exact inputs and command).

## `imagenet_classes.tsv`

- 1000 lines; line *i* (0-based) is `<wnid>\\t<comma-separated names>` for ImageNet-1k class
  index *i*. The order is the sorted order of the wnids, which is the class order of
  torchvision's `ImageFolder` on `train/<wnid>/` and of every ImageNet-1k checkpoint.
  Line 0 is `n01440764` (tench), line 281 is `n02123045` (tabby cat).
- Source: the `timm` {timm_version} wheel from PyPI (PyTorch Image Models, by Ross Wightman),
  files `timm/data/_info/imagenet_synsets.txt` (the wnids, in this order) and
  `timm/data/_info/imagenet_synset_to_lemma.txt` (wnid -> names, taken from WordNet).
- Licence: timm is Copyright 2019 Ross Wightman, licensed under the Apache License, Version 2.0
  (<https://www.apache.org/licenses/LICENSE-2.0>). The file here is a derived, reformatted
  copy of the two files above (joined on the wnid; no names changed).
- The names are WordNet lemmas. WordNet's licence asks that its notice appear on all copies
  (text as in Debian's `wordnet-base` package):

  > Permission to use, copy, modify and distribute this software and database and its
  > documentation for any purpose and without fee or royalty is hereby granted, provided that
  > you agree to comply with the following copyright notice and statements, including the
  > disclaimer, and that the same appear on ALL copies of the software, database and
  > documentation, including modifications that you make for internal use or for distribution.
  >
  > WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved.
  >
  > THIS SOFTWARE AND DATABASE IS PROVIDED "AS IS" AND PRINCETON UNIVERSITY MAKES NO
  > REPRESENTATIONS OR WARRANTIES, EXPRESS OR IMPLIED. BY WAY OF EXAMPLE, BUT NOT LIMITATION,
  > PRINCETON UNIVERSITY MAKES NO REPRESENTATIONS OR WARRANTIES OF MERCHANTABILITY OR FITNESS
  > FOR ANY PARTICULAR PURPOSE OR THAT THE USE OF THE LICENSED SOFTWARE, DATABASE OR
  > DOCUMENTATION WILL NOT INFRINGE ANY THIRD PARTY PATENTS, COPYRIGHTS, TRADEMARKS OR OTHER
  > RIGHTS.
  >
  > The name of Princeton University or Princeton may not be used in advertising or publicity
  > pertaining to distribution of the software and/or database. Title to copyright in this
  > software, database and any associated documentation shall at all times remain with
  > Princeton University and LICENSEE agrees to preserve same.

## `imagenet_a_wnids.txt`, `imagenet_r_wnids.txt`

- 200 lines each: the wnids of the ImageNet-1k classes that ImageNet-A (Hendrycks et al.,
  "Natural Adversarial Examples", 2021) and ImageNet-R (Hendrycks et al., "The Many Faces of
  Robustness", 2021) contain, sorted (the datasets' folder order). A classifier's logits are
  restricted to these classes when it is evaluated on them, as the datasets' authors do.
- Source: the same `timm` {timm_version} wheel, files `timm/data/_info/imagenet_a_synsets.txt`
  and `timm/data/_info/imagenet_r_synsets.txt` (copied unchanged); the script checks that
  they agree with timm's `imagenet_a_indices.txt` / `imagenet_r_indices.txt` (the same
  classes as ImageNet-1k indices). Licence: Apache-2.0, as above.

## `fashion-mnist/`

- `train-images-idx3-ubyte.gz` / `train-labels-idx1-ubyte.gz`: the first {n_train} items of the
  Fashion-MNIST training set; `t10k-images-idx3-ubyte.gz` / `t10k-labels-idx1-ubyte.gz`: the
  first {n_test} items of its test set. Unchanged pixels and labels, IDX headers rewritten with
  the new counts (images `00 00 08 03`, n, 28, 28; labels `00 00 08 01`, n; big-endian u32),
  gzip level 9 with mtime 0.
- Source: Debian package `dataset-fashion-mnist` (bookworm, main), which packages
  <https://github.com/zalandoresearch/fashion-mnist>.
- Licence: MIT, Copyright (c) 2017 Zalando SE. The full text is in `fashion-mnist/LICENSE`.

## Test photos (`crates/supmae-data/tests/data/photos/`)

CC0 / public-domain photographs from the scikit-image 0.26.0 wheel, downscaled; see
`crates/supmae-data/tests/data/photos/NOTICE.md` for each file's source and licence.
"""

FMNIST_LICENSE = """\
The MIT License (MIT)

Copyright (c) 2017 Zalando SE

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.

---
This directory holds a subset (the first 10 000 training and the first 2 000 test
items) of Fashion-MNIST, https://github.com/zalandoresearch/fashion-mnist,
taken from the Debian package dataset-fashion-mnist, whose debian/copyright
file gives: "Files: *  Copyright: 2017, Zalando SE  License: Expat" (the MIT
licence above).
"""


# --------------------------------------------------------------------------------------------
# Fashion-MNIST subset (Debian .deb)
# --------------------------------------------------------------------------------------------

def read_deb_members(deb_path, wanted_suffixes):
    """Return {suffix: bytes} for data.tar members whose path ends with one of the suffixes."""
    with open(deb_path, "rb") as f:
        blob = f.read()
    if blob[:8] != b"!<arch>\n":
        raise SystemExit(f"{deb_path}: not an ar archive / .deb")
    pos, data_tar = 8, None
    while pos + 60 <= len(blob):
        header = blob[pos:pos + 60]
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        body = blob[pos + 60:pos + 60 + size]
        if name.startswith("data.tar"):
            data_tar = body
        pos += 60 + size + (size & 1)
    if data_tar is None:
        raise SystemExit(f"{deb_path}: no data.tar member")
    found = {}
    with tarfile.open(fileobj=io.BytesIO(data_tar), mode="r:*") as tar:
        for member in tar:
            for suffix in wanted_suffixes:
                if member.isfile() and member.name.endswith(suffix):
                    found[suffix] = tar.extractfile(member).read()
    missing = [s for s in wanted_suffixes if s not in found]
    if missing:
        raise SystemExit(f"{deb_path}: missing {missing}")
    return found


def idx_subset(raw, magic, n_keep, item_dims):
    got_magic, n = struct.unpack(">II", raw[:8])
    assert got_magic == magic, hex(got_magic)
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * (ndim - 1), raw[8:8 + 4 * (ndim - 1)])
    assert list(dims) == list(item_dims), dims
    header_len = 8 + 4 * (ndim - 1)
    item = 1
    for d in dims:
        item *= d
    assert len(raw) == header_len + n * item, (len(raw), n)
    assert n_keep <= n
    header = struct.pack(">II", magic, n_keep) + struct.pack(">" + "I" * len(dims), *dims)
    return header + raw[header_len:header_len + n_keep * item], raw[header_len:header_len + n_keep * item]


def make_fashion_mnist(deb):
    base = "usr/share/datasets/fashion-mnist/"
    names = [f"{s}-{k}-ubyte.gz" for s in ("train", "t10k") for k in ("images-idx3", "labels-idx1")]
    members = read_deb_members(deb, [base + n for n in names])
    counts = {}
    for split, n_keep in (("train", N_TRAIN), ("t10k", N_TEST)):
        images = gzip.decompress(members[f"{base}{split}-images-idx3-ubyte.gz"])
        labels = gzip.decompress(members[f"{base}{split}-labels-idx1-ubyte.gz"])
        img_out, _ = idx_subset(images, IDX_IMAGES_MAGIC, n_keep, (28, 28))
        lab_out, lab_body = idx_subset(labels, IDX_LABELS_MAGIC, n_keep, ())
        assert max(lab_body) <= 9
        counts[split] = Counter(lab_body)
        for kind, payload in (("images-idx3", img_out), ("labels-idx1", lab_out)):
            gz = gzip.compress(payload, compresslevel=9, mtime=0)
            assert gzip.decompress(gz) == payload
            write_bytes(os.path.join(FMNIST_OUT, f"{split}-{kind}-ubyte.gz"), gz)
    write_bytes(os.path.join(FMNIST_OUT, "LICENSE"), FMNIST_LICENSE.encode("utf-8"))
    for split, c in counts.items():
        print(f"fashion-mnist {split}: " + ", ".join(f"{k} {FMNIST_CLASSES[k]}={c[k]}" for k in range(10)))
    return counts


# --------------------------------------------------------------------------------------------
# Test photos (scikit-image wheel)
# --------------------------------------------------------------------------------------------

PHOTOS = [
    # name, file in the wheel, source / licence note (from skimage/data/_fetchers.py docstrings)
    ("astronaut", "skimage/data/astronaut.png",
     "Eileen Collins, NASA Great Images database (https://flic.kr/p/r9qvLn)",
     "Public domain (NASA): \"No known copyright restrictions, released into the public domain.\""),
    ("chelsea", "skimage/data/chelsea.png",
     "Chelsea the cat, photograph by Stefan van der Walt",
     "CC0: \"No copyright restrictions. CC0 by the photographer (Stefan van der Walt).\""),
    ("coffee", "skimage/data/coffee.png",
     "Coffee cup, photograph by Rachel Michetti, courtesy of Pikolo Espresso Bar",
     "CC0: \"No copyright restrictions. CC0 by the photographer (Rachel Michetti).\""),
    ("rocket", "skimage/data/rocket.jpg",
     "Launch of DSCOVR on Falcon 9, SpaceX Photos "
     "(https://www.flickr.com/photos/spacexphotos/16511594820/)",
     "Public domain: \"captured by SpaceX and released in the public domain\"."),
]
LONG_SIDE = 320
JPEG_QUALITY = 90


def make_photos(wheel):
    import PIL
    from PIL import Image, features

    rows = []
    with zipfile.ZipFile(wheel) as z:
        for name, member, source, licence in PHOTOS:
            img = Image.open(io.BytesIO(z.read(member)))
            img.load()
            src_size = img.size
            img = img.convert("RGB")
            w, h = img.size
            scale = LONG_SIDE / max(w, h)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            img = img.resize(size, Image.LANCZOS)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=JPEG_QUALITY)
            write_bytes(os.path.join(PHOTOS_OUT, f"{name}.jpg"), buf.getvalue())
            rows.append((f"{name}.jpg", f"{size[0]}x{size[1]} RGB", f"`{member}` ({src_size[0]}x{src_size[1]}): {source}", licence))
            if name == "chelsea":
                cmyk = img.convert("CMYK")
                buf = io.BytesIO()
                cmyk.save(buf, format="JPEG", quality=JPEG_QUALITY)
                data = buf.getvalue()
                check = Image.open(io.BytesIO(data))
                assert check.mode == "CMYK", check.mode
                write_bytes(os.path.join(PHOTOS_OUT, "cmyk.jpg"), data)
                rows.append(("cmyk.jpg", f"{size[0]}x{size[1]} CMYK (4-component JPEG, Adobe APP14)",
                             "`chelsea.jpg` above before JPEG encoding, converted with PIL "
                             "`img.convert('CMYK')` (C=255-R, M=255-G, Y=255-B, K=0)",
                             rows[-1][3]))

    total = sum(os.path.getsize(os.path.join(PHOTOS_OUT, r[0])) for r in rows)
    assert total < 200 * 1024, total
    table = "\n".join(f"| `{f}` | {d} | {s} | {l} |" for f, d, s, l in rows)
    notice = PHOTOS_NOTICE.format(
        table=table, pil=PIL.__version__, libjpeg=features.version("libjpeg_turbo") or "unknown",
        q=JPEG_QUALITY, long=LONG_SIDE)
    notice_path = os.path.join(PHOTOS_OUT, "NOTICE.md")
    marker = "## PIL references"
    if os.path.exists(notice_path):  # keep the section that pil_reference.py wrote
        old = open(notice_path, encoding="utf-8").read()
        if marker in old:
            notice = notice[:notice.index(marker)] + old[old.index(marker):]
    write_bytes(notice_path, notice.encode("utf-8"))


PHOTOS_NOTICE = """\
# Test photos

Colour photographs shipped inside the scikit-image 0.26.0 wheel (`skimage/data/`), all CC0 or
public domain according to the docstrings of `skimage/data/_fetchers.py` in that wheel.
Written by `tools/data/make_assets.py --skimage-wheel ...` with Pillow {pil} (libjpeg-turbo
{libjpeg}): converted to RGB, downscaled so the longer side is {long} px with
`Image.LANCZOS`, and saved as baseline JPEG, quality {q}, Pillow's default 4:2:0 chroma
subsampling.

| file | size / mode | source | licence |
| --- | --- | --- | --- |
{table}

Neither CC0 nor the public domain requires attribution; the sources are named as a courtesy.
NASA and SpaceX are named only as sources: no endorsement is implied.

## PIL references

Written by `tools/data/pil_reference.py`, which replaces this section.
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timm-wheel", help="timm-1.0.31-py3-none-any.whl")
    ap.add_argument("--fashion-deb", help="dataset-fashion-mnist_*.deb")
    ap.add_argument("--skimage-wheel", help="scikit_image-0.26.0-*.whl")
    args = ap.parse_args()
    if not (args.timm_wheel or args.fashion_deb or args.skimage_wheel):
        ap.error("give at least one of --timm-wheel, --fashion-deb, --skimage-wheel")
    timm_version = "1.0.31"
    if args.timm_wheel:
        timm_version = make_imagenet_classes(args.timm_wheel)
    if args.fashion_deb:
        make_fashion_mnist(args.fashion_deb)
    if args.timm_wheel or args.fashion_deb:
        write_bytes(os.path.join(ASSETS, "NOTICE.md"),
                    ASSETS_NOTICE.format(timm_version=timm_version, n_train=f"{N_TRAIN:,}".replace(",", " "),
                                         n_test=f"{N_TEST:,}".replace(",", " ")).encode("utf-8"))
    if args.skimage_wheel:
        make_photos(args.skimage_wheel)


if __name__ == "__main__":
    main()
