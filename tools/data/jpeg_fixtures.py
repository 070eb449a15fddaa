#!/usr/bin/env python3
"""JPEG variants and Pillow's decode of each, for the Rust test that our JPEG decoding is
Pillow's byte for byte (crates/supmae-data/tests/jpeg_pillow.rs).

    pip install pillow                     # any Pillow whose JPEG codec is libjpeg-turbo
    apt-get install libjpeg-turbo-progs    # cjpeg and jpegtran: restart markers, arithmetic
                                           # coding, RGB and odd-sampling files
    python3 tools/data/jpeg_fixtures.py    # from the repository root

Writes crates/supmae-data/tests/data/jpeg/:
- `<name>.jpg`: the variants, cut from the committed test photos
  (crates/supmae-data/tests/data/photos), at odd sizes (not multiples of 8 or 16):
  baseline and progressive, 4:4:4 / 4:2:2 / 4:2:0 / 4:4:0 / 4:1:1, greyscale, CMYK with and
  without Adobe marker, YCCK, RGB (no colour transform), arithmetic-coded (sequential and
  progressive), restart markers (in rows and in blocks), optimised Huffman tables, quality 5
  to 100, a 1x1 image; and damaged files: flipped bytes in the entropy-coded data, stray bytes
  before a marker, trailing garbage, a missing end-of-image marker, truncations.
- `<name>.png`: what `Image.open(f).convert('RGB')` gives (8-bit RGB, lossless) when Pillow
  opens the file.
- `manifest.json`: one entry per file, `{"name", "kind", "size": [w, h], "expect":
  "pixels" | "error", "pillow_error"}`: "error" when Pillow refuses the file (it raises
  unless `ImageFile.LOAD_TRUNCATED_IMAGES` is set), and the versions that wrote it all.

Deterministic: the sources and every encoder setting are fixed; Pillow's encoder and cjpeg
are libjpeg-turbo's. The Rust test decodes each `.jpg` and requires the same bytes as the
`.png`, or an error where Pillow raised one.
"""
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True

import PIL
from PIL import Image, ImageFile, features

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
PHOTOS = os.path.join(REPO, "crates", "supmae-data", "tests", "data", "photos")
OUT = os.path.join(REPO, "crates", "supmae-data", "tests", "data", "jpeg")


def source(name, box, size):
    """A crop of a committed photo, resized to an odd size (RGB)."""
    img = Image.open(os.path.join(PHOTOS, name)).convert("RGB")
    return img.crop(box).resize(size, Image.Resampling.BICUBIC)


def pillow_jpeg(img, **options):
    buf = io.BytesIO()
    img.save(buf, "JPEG", **options)
    return buf.getvalue()


def cjpeg(img, *args):
    """cjpeg (libjpeg-turbo's command-line encoder) on a PPM/PGM of `img`."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "in.pnm")
        img.save(src, "PPM")
        return subprocess.run(["cjpeg", *args, src], check=True, capture_output=True).stdout


def jpegtran(data, *args):
    return subprocess.run(["jpegtran", *args], input=data, check=True, capture_output=True).stdout


def entropy_start(data):
    """Offset of the first byte after the first SOS segment's header."""
    i = 2
    while i + 4 <= len(data):
        assert data[i] == 0xFF
        marker = data[i + 1]
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker == 0xDA:
            return i + 2 + length
        i += 2 + length
    raise ValueError("no SOS")


def flip_entropy_bytes(data, fractions):
    """Flip bits of entropy-coded bytes (never a 0xFF or the byte after one, so no marker
    appears or disappears)."""
    out = bytearray(data)
    start, end = entropy_start(data), len(data) - 2
    for f in fractions:
        i = start + int((end - start) * f)
        while out[i] == 0xFF or out[i - 1] == 0xFF or (out[i] ^ 0x5A) == 0xFF:
            i += 1
        out[i] ^= 0x5A
    return bytes(out)


def variants():
    a = source("astronaut.jpg", (40, 10, 360, 330), (61, 45))
    c = source("chelsea.jpg", (0, 0, 300, 300), (97, 33))
    k = source("coffee.jpg", (100, 50, 500, 350), (33, 71))
    r = source("rocket.jpg", (0, 0, 427, 600), (50, 70))
    g = a.convert("L")
    cmyk = c.convert("CMYK")
    v = {}
    # Pillow's encoder: the layouts ImageNet photos come in.
    v["baseline_420_q75"] = ("pillow", pillow_jpeg(a, quality=75))
    v["baseline_422_q90"] = ("pillow", pillow_jpeg(a, quality=90, subsampling="4:2:2"))
    v["baseline_444_q95"] = ("pillow", pillow_jpeg(c, quality=95, subsampling="4:4:4"))
    v["baseline_420_q5"] = ("pillow", pillow_jpeg(k, quality=5))
    v["baseline_420_q30"] = ("pillow", pillow_jpeg(r, quality=30))
    v["baseline_444_q100"] = ("pillow", pillow_jpeg(k, quality=100, subsampling="4:4:4"))
    v["optimized_420_q85"] = ("pillow", pillow_jpeg(c, quality=85, optimize=True))
    v["progressive_420_q75"] = ("pillow", pillow_jpeg(a, quality=75, progressive=True))
    v["progressive_422_q95"] = ("pillow", pillow_jpeg(k, quality=95, subsampling="4:2:2", progressive=True))
    v["progressive_444_q60"] = ("pillow", pillow_jpeg(r, quality=60, subsampling="4:4:4", progressive=True))
    v["grey_q75"] = ("pillow", pillow_jpeg(g, quality=75))
    v["grey_progressive_q90"] = ("pillow", pillow_jpeg(g, quality=90, progressive=True))
    v["cmyk_adobe_q90"] = ("pillow", pillow_jpeg(cmyk, quality=90))
    v["cmyk_adobe_progressive_q80"] = ("pillow", pillow_jpeg(cmyk, quality=80, progressive=True))
    v["tiny_1x1"] = ("pillow", pillow_jpeg(a.resize((1, 1)), quality=90))
    v["wide_213x9"] = ("pillow", pillow_jpeg(c.resize((213, 9)), quality=80))
    # cjpeg and jpegtran (libjpeg-turbo): what Pillow cannot write.
    v["restart_rows_420"] = ("cjpeg", cjpeg(a, "-quality", "80", "-restart", "1"))
    v["restart_blocks_444"] = ("cjpeg", cjpeg(k, "-quality", "85", "-sample", "1x1", "-restart", "3B"))
    v["arithmetic_420"] = ("cjpeg", cjpeg(r, "-quality", "75", "-arithmetic"))
    v["arithmetic_progressive_444"] = ("cjpeg", cjpeg(c, "-quality", "90", "-sample", "1x1", "-arithmetic", "-progressive"))
    v["arithmetic_restart_grey"] = ("cjpeg", cjpeg(g, "-quality", "70", "-arithmetic", "-restart", "2"))
    v["rgb_no_transform"] = ("cjpeg", cjpeg(a, "-quality", "90", "-rgb"))
    v["sampling_440"] = ("cjpeg", cjpeg(c, "-quality", "85", "-sample", "1x2"))
    v["sampling_411"] = ("cjpeg", cjpeg(k, "-quality", "85", "-sample", "4x1"))
    v["sampling_mixed_2x2_1x2_2x1"] = ("cjpeg", cjpeg(r, "-quality", "80", "-sample", "2x2,1x2,2x1"))
    v["progressive_restart_jpegtran"] = ("jpegtran", jpegtran(v["baseline_420_q75"][1], "-progressive", "-restart", "2"))
    v["arithmetic_from_pillow_jpegtran"] = ("jpegtran", jpegtran(v["progressive_422_q95"][1], "-arithmetic"))
    # CMYK without an Adobe marker (APP14 removed) and YCCK (Adobe transform 2).
    adobe = pillow_jpeg(cmyk, quality=85)
    v["cmyk_no_adobe_marker"] = ("edited", strip_segment(adobe, 0xEE))
    v["ycck"] = ("edited", as_ycck(pillow_jpeg(cmyk, quality=90, subsampling="4:4:4")))
    # Damaged files.
    base = v["baseline_420_q75"][1]
    prog = v["progressive_420_q75"][1]
    v["corrupt_entropy_baseline"] = ("damaged", flip_entropy_bytes(base, [0.3, 0.6]))
    v["corrupt_entropy_progressive"] = ("damaged", flip_entropy_bytes(prog, [0.5]))
    sos = entropy_start(base)
    v["stray_bytes_before_marker"] = ("damaged", base[:-2] + b"\x12\x34\x56" + base[-2:])
    v["trailing_garbage"] = ("damaged", base + b"GARBAGE" * 10)
    v["missing_eoi"] = ("damaged", base[:-2])
    v["truncated_half"] = ("damaged", base[: sos + (len(base) - sos) // 2])
    v["truncated_progressive"] = ("damaged", prog[: len(prog) * 2 // 3])
    v["truncated_header"] = ("damaged", base[:sos - 10])
    return v


def strip_segment(data, marker):
    """The JPEG without its segments of one marker type (before the first scan)."""
    out, i = bytearray(data[:2]), 2
    while True:
        m, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
        if m == 0xDA:
            return bytes(out + data[i:])
        if m != marker:
            out += data[i:i + 2 + length]
        i += 2 + length


def as_ycck(data):
    """The same file with its Adobe marker's transform flag set to 2 (YCCK): no encoder here
    writes YCCK, so libjpeg then reads the CMYK planes as YCC + K and converts them, which
    exercises its YCCK-to-CMYK path; Pillow's decode of the file is the reference."""
    out = bytearray(data)
    i = 2
    while True:
        m, length = out[i + 1], int.from_bytes(out[i + 2:i + 4], "big")
        if m == 0xEE and out[i + 4:i + 9] == b"Adobe":
            out[i + 2 + 11] = 2
            return bytes(out)
        if m == 0xDA:
            raise ValueError("no Adobe marker")
        i += 2 + length


def main():
    if not features.check_feature("libjpeg_turbo"):
        sys.exit("this Pillow's JPEG codec is not libjpeg-turbo")
    for tool in ("cjpeg", "jpegtran"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install libjpeg-turbo-progs")
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    manifest = []
    for name, (kind, data) in sorted(variants().items()):
        with open(os.path.join(OUT, name + ".jpg"), "wb") as f:
            f.write(data)
        entry = {"name": name, "kind": kind}
        try:
            with Image.open(io.BytesIO(data)) as im:
                entry["mode"] = im.mode
                rgb = im.convert("RGB")
            rgb.save(os.path.join(OUT, name + ".png"), "PNG", optimize=True)
            entry.update(size=list(rgb.size), expect="pixels", pillow_error=None)
        except Exception as e:  # Pillow refuses the file: so must we
            entry.update(size=None, expect="error", pillow_error=f"{type(e).__name__}: {e}")
        manifest.append(entry)
        print(f"{name:34s} {kind:8s} {entry['expect']:6s} {entry.get('pillow_error') or ''}")
    meta = {
        "generator": "tools/data/jpeg_fixtures.py",
        "pillow": PIL.__version__,
        "libjpeg_turbo": features.version_feature("libjpeg_turbo"),
        "cjpeg": subprocess.run(["cjpeg", "-version"], capture_output=True, text=True).stderr.strip(),
        "files": manifest,
    }
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(f"{len(manifest)} files in {os.path.relpath(OUT, REPO)}")


if __name__ == "__main__":
    main()
