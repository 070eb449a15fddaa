#!/usr/bin/env python3
"""Copies a `supmae pretrain` checkpoint.ckpt without its optimizer state.

The page only reconstructs, classifies and starts training from random weights, so it needs
the metadata and the model record, not the two AdamW records (two thirds of the file). The
copy is what `supmae_train::write_pretrained` writes: the same four sections with the two
optimizer sections empty, and a fresh FNV-1a 64 checksum (layout:
crates/supmae-train/src/checkpoint.rs). It loads everywhere a pre-training checkpoint does;
only `--resume` refuses it.

usage: python3 examples/web/strip_optimizer.py runs/pretrain/checkpoint.ckpt examples/web/assets/checkpoint.ckpt
"""
import struct
import sys

MAGIC = b"SUPMAE-TRAIN-CKPT\n"


def fnv1a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def main(src: str, dst: str) -> None:
    data = open(src, "rb").read()
    if not data.startswith(MAGIC):
        sys.exit(f"{src}: not a supmae training checkpoint")
    body, (checksum,) = data[:-8], struct.unpack("<Q", data[-8:])
    if fnv1a(body) != checksum:
        sys.exit(f"{src}: checksum mismatch")
    sections, at = [], len(MAGIC)
    for _ in range(4):
        (n,) = struct.unpack("<Q", body[at:at + 8])
        sections.append(body[at + 8:at + 8 + n])
        at += 8 + n
    if at != len(body):
        sys.exit(f"{src}: trailing bytes")
    out = MAGIC
    for section in [sections[0], sections[1], b"", b""]:
        out += struct.pack("<Q", len(section)) + section
    out += struct.pack("<Q", fnv1a(out))
    open(dst, "wb").write(out)
    print(f"{dst}: {len(out)} bytes (metadata {len(sections[0])}, model {len(sections[1])}; "
          f"dropped {len(sections[2]) + len(sections[3])} bytes of optimizer state)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
