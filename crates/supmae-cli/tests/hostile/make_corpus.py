#!/usr/bin/env python3
"""Writes the hostile-input corpus for `tests/hostile.rs` (Python standard library only).

usage: make_corpus.py OUT_DIR FIXTURES_DIR RUN_DIR IMAGE

- FIXTURES_DIR: tools/parity/fixtures (real torch.save files to mutate).
- RUN_DIR: a finished tiny pre-training run (its checkpoint.ckpt is mutated).
- IMAGE: a small valid JPEG (cut mid-scan for one case).

Writes the files and OUT_DIR/cases.json: a list of {name, args, expect, needle}, where
`args` is a `supmae` command line, `expect` is "ok" or "error", and `needle` a piece of
text the output must contain. Every case is run by tests/hostile.rs under a timeout and
a peak-RSS check.
"""
import json
import os
import shutil
import struct
import sys
import zlib

OUT, FIX, RUN, IMAGE = (os.path.abspath(a) for a in sys.argv[1:5])
CASES = []


def case(name, args, expect, needle):
    CASES.append({"name": name, "args": [str(a) for a in args], "expect": expect, "needle": needle})


def path(name):
    return os.path.join(OUT, name)


def write(name, data):
    with open(path(name), "wb") as f:
        f.write(data)
    return path(name)


# ---------------------------------------------------------------- zip and pickle by hand


def zip_bytes(entries, zip64_size=None):
    """A stored (uncompressed) zip. entries: (name, data, crc or None, method). With
    zip64_size, the first entry's sizes are declared as that (a zip64 extra field)."""
    out, central = b"", b""
    for i, (name, data, crc, method) in enumerate(entries):
        crc = zlib.crc32(data) if crc is None else crc
        nb = name.encode()
        size = len(data)
        extra, csize, usize = b"", size, size
        if zip64_size is not None and i == 0:
            extra = struct.pack("<HHQQ", 1, 16, zip64_size, zip64_size)
            csize = usize = 0xFFFFFFFF
        off = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, method, 0, 0, crc, csize, usize,
                           len(nb), len(extra)) + nb + extra + data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, method, 0, 0, crc,
                               csize, usize, len(nb), len(extra), 0, 0, 0, 0, off) + nb + extra
    cd_off = len(out)
    return out + central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries),
                                       len(entries), len(central), cd_off, 0)


def read_zip(p):
    """(name, data) of a real torch.save zip, via the standard library."""
    import zipfile
    with zipfile.ZipFile(p) as z:
        return [(n, z.read(n)) for n in z.namelist()]


def s(text):
    b = text.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def i(n):
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if 0 <= n < 65536:
        return b"M" + struct.pack("<H", n)
    b = n.to_bytes(9, "little", signed=True).rstrip(b"\x00" if n >= 0 else b"\xff")
    if not b or (b[-1] & 0x80) != (0x80 if n < 0 else 0):
        b += b"\x00" if n >= 0 else b"\xff"
    return b"\x8a" + bytes([len(b)]) + b


def tup(items):
    return b"(" + b"".join(items) + b"t"


def tensor(key, numel, offset, shape, stride, storage="FloatStorage"):
    pid = tup([s("storage"), b"ctorch\n" + storage.encode() + b"\n", s(key), s("cpu"), i(numel)])
    return (b"ctorch._utils\n_rebuild_tensor_v2\n(" + pid + b"Q" + i(offset)
            + tup([i(n) for n in shape]) + tup([i(n) for n in stride])
            + b"\x89ccollections\nOrderedDict\n)Rt" + b"R")


def pickle_dict(items):
    """items: (key, value-opcodes)."""
    return b"\x80\x02}(" + b"".join(s(k) + v for k, v in items) + b"u."


def contiguous(shape):
    st, acc = [], 1
    for n in reversed(shape):
        st.insert(0, acc)
        acc *= n
    return st


def pth(name, items, records, **kw):
    entries = [("archive/data.pkl", pickle_dict(items), None, 0),
               ("archive/byteorder", b"little", None, 0)]
    entries += [(f"archive/data/{k}", v, None, 0) for k, v in records]
    return write(name, zip_bytes(entries, **kw))


def one_tensor_pth(name, shape, numel, stored_bytes, offset=0, stride=None):
    stride = contiguous(shape) if stride is None else stride
    return pth(name, [("patch_embed.proj.weight", tensor("0", numel, offset, shape, stride))],
               [("0", b"\0" * stored_bytes)])


def convert(name, p, needle, expect="error"):
    case(name, ["convert", "--checkpoint", p, "--out", path(name + ".out.safetensors")], expect,
         needle)


def inspect(name, p, needle, expect="error"):
    case(name, ["inspect", p], expect, needle)


def main():
    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    tiny = os.path.join(FIX, "tiny", "supmae_tiny.pth")
    real = read_zip(tiny)

    # --- torch.save files -----------------------------------------------------------
    convert("pth_valid_control", tiny, "", expect="ok")
    pkl = [n for n, _ in real if n.endswith("data.pkl")][0]
    prefix = pkl[: -len("data.pkl")]

    def rezip(name, change):
        entries = [(n, d, None, 0) for n, d in real]
        return write(name, zip_bytes(change(entries)))

    def flip(entries):
        out = []
        for n, d, crc, m in entries:
            if n == prefix + "data/0":
                crc = zlib.crc32(d)
                d = bytes([d[0] ^ 0xFF]) + d[1:]
            out.append((n, d, crc, m))
        return out

    convert("pth_bad_crc", rezip("bad_crc.pth", flip), "CRC-32 mismatch")
    inspect("pth_missing_storage",
            rezip("missing.pth", lambda e: [x for x in e if x[0] != prefix + "data/1"]),
            "is missing")
    inspect("pth_short_storage",
            rezip("short.pth", lambda e: [(n, d[: len(d) // 2] if n == prefix + "data/1" else d,
                                           None, 0) for n, d, _, _ in e]),
            "holds")
    inspect("pth_negative_offset", one_tensor_pth("negoff.pth", [2, 2], 4, 16, offset=-4),
            "negative storage offset")
    inspect("pth_negative_stride",
            one_tensor_pth("negstride.pth", [2, 2], 4, 16, stride=[-2, 1]), "negative stride")
    inspect("pth_negative_dim", one_tensor_pth("negdim.pth", [-2, 2], 4, 16),
            "negative dimension")
    inspect("pth_declares_2pow40_elements",
            one_tensor_pth("huge.pth", [1 << 20, 1 << 20], 1 << 40, 16),
            "declares 1099511627776 elements")
    inspect("pth_shape_beyond_storage", one_tensor_pth("beyond.pth", [1 << 20, 1 << 20], 4, 16),
            "which declares 4")
    inspect("pth_65536_wide_vit", one_tensor_pth("wide.pth", [65536, 3, 16, 16],
                                                 65536 * 3 * 16 * 16, 64), "holds 64 bytes")
    inspect("pth_overflowing_shape", one_tensor_pth("overflow.pth", [1 << 62, 1 << 62], 4, 16),
            "overflowing")
    entries = [("archive/data.pkl", pickle_dict([("a", tensor("0", 4, 0, [4], [1]))]), None, 0),
               ("archive/data/0", b"\0" * 16, None, 0)]
    inspect("zip64_declares_2pow40_bytes", write("zip64.pth", zip_bytes(entries, zip64_size=1 << 40)),
            "past the end")
    entries = [("archive/data.pkl", pickle_dict([("a", tensor("0", 4, 0, [4], [1]))]), None, 0),
               ("archive/data/0", b"\0" * 16, None, 8)]
    inspect("zip_deflated_record", write("deflated.pth", zip_bytes(entries)), "compressed")
    raw = open(tiny, "rb").read()
    inspect("zip_truncated", write("truncated.pth", raw[: len(raw) // 2]), "not a zip-format")
    inspect("zip_empty_file", write("empty.pth", b""), "cannot")
    inspect("legacy_raw_pickle", write("legacy.pth", b"\x80\x02}q\x00."), "not a zip-format")

    def raw_pickle(name, body):
        return write(name, zip_bytes([("archive/data.pkl", body, None, 0)]))

    inspect("pickle_os_system", os.path.join(FIX, "bad", "evil_global.pth"), "posix.system")
    inspect("pickle_builtins_eval", raw_pickle("eval.pth", b"\x80\x02cbuiltins\neval\n"
                                                + s("1") + b"\x85R."), "builtins.eval")
    inspect("pickle_stack_global_exec", raw_pickle(
        "exec.pth", b"\x80\x04" + s("builtins") + s("exec") + b"\x93" + s("1") + b"\x85R."),
        "builtins.exec")
    inspect("pickle_unknown_opcode", raw_pickle("opcode.pth", b"\x80\x02\xff."),
            "unsupported pickle opcode")
    inspect("pickle_truncated", raw_pickle("cut.pkl.pth", b"\x80\x02X\xff\xff\x00\x00ab"),
            "ends inside")
    inspect("pickle_unknown_memo", raw_pickle("memo.pth", b"\x80\x02h\x07."), "unknown memo")
    inspect("pickle_stack_underflow", raw_pickle("underflow.pth", b"\x80\x02R."), "underflow")
    inspect("pickle_big_endian", write("bigendian.pth", zip_bytes([
        ("archive/data.pkl", pickle_dict([("a", tensor("0", 1, 0, [1], [1]))]), None, 0),
        ("archive/byteorder", b"big", None, 0), ("archive/data/0", b"\0" * 4, None, 0)])),
        "big-endian")
    # Billion laughs: 10 levels of dicts holding the previous level 10 times (10^10 paths).
    body = b"\x80\x02" + pickle_dict([("w", tensor("0", 1, 0, [1], [1]))])[2:-1] + b"q\x00"
    for level in range(1, 11):
        body += b"}(" + b"".join(s(f"k{j}") + b"h" + bytes([level - 1]) for j in range(10))
        body += b"uq" + bytes([level])
    laughs = write("laughs.pth", zip_bytes([("archive/data.pkl", body + b".", None, 0),
                                            ("archive/data/0", b"\0" * 4, None, 0)]))
    inspect("pickle_billion_laughs_dicts", laughs, "more than")
    body = b"\x80\x02]q\x00" + s("x" * 1000) + b"a"
    for level in range(1, 11):
        body += b"](" + (b"h" + bytes([level - 1])) * 10 + b"eq" + bytes([level])
    inspect("pickle_billion_laughs_lists", raw_pickle("laughs_list.pth", body + b"."),
            "no tensors")
    inspect("pickle_stack_flood", raw_pickle("stack.pth", b"\x80\x02" + b"N" * 5_000_000 + b"."),
            "stack or memo grows")
    # MEMOIZE (protocol 4) adds a memo entry per byte.
    inspect("pickle_memo_flood",
            raw_pickle("memo_flood.pth", b"\x80\x04N" + b"\x94" * 4_300_000 + b"."),
            "stack or memo grows")
    inspect("pickle_over_16_mib", raw_pickle("big.pth", b"\x80\x02" + b"N0" * (9 << 20) + b"N."),
            "over the 16777216-byte limit")
    deep = b"\x80\x02" + b"]" * 1_000_000 + b"a" * 999_999 + b"."
    inspect("pickle_nested_lists_1m", raw_pickle("deep_lists.pth", deep), "no tensors")
    deep = b"\x80\x02" + (b"}" + s("k")) * 1_000_000 + b"}" + b"s" * 1_000_000 + b"."
    inspect("pickle_nested_dicts_1m", raw_pickle("deep_dicts.pth", deep), "nested deeper")

    # --- safetensors ----------------------------------------------------------------
    def safetensors(name, tensors, header_len=None):
        header, data = {}, b""
        for key, shape in tensors:
            n = 4
            for d in shape:
                n *= d
            header[key] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + n]}
            data += b"\0" * n
        h = json.dumps(header).encode()
        h += b" " * (-len(h) % 8)
        return write(name, struct.pack("<Q", len(h) if header_len is None else header_len) + h + data)

    base = [("patch_embed.proj.weight", [8, 3, 4, 4]), ("blocks.0.attn.qkv.weight", [24, 8]),
            ("pos_embed", [1, 5, 8])]
    inspect("safetensors_0d_fc1", safetensors("fc1_0d.safetensors",
                                              base + [("blocks.0.mlp.fc1.weight", [])]),
            "blocks.0.mlp.fc1.weight")
    inspect("safetensors_1d_cls_head", safetensors(
        "cls_1d.safetensors", base + [("blocks.0.mlp.fc1.weight", [32, 8]), ("cls_head.3.weight", [10])]),
        "cls_head.3.weight")
    inspect("safetensors_huge_header", safetensors("hdr.safetensors", base, header_len=1 << 60),
            "not a safetensors file")
    inspect("safetensors_not_json", write("notjson.safetensors", struct.pack("<Q", 8) + b"{nope!!}"),
            "not a safetensors file")
    good = open(safetensors("cut.safetensors", base), "rb").read()
    inspect("safetensors_truncated", write("cut.safetensors", good[:-10]), "not a safetensors file")

    # --- our .ckpt --------------------------------------------------------------------
    ckpt = open(os.path.join(RUN, "checkpoint.ckpt"), "rb").read()
    magic = b"SUPMAE-TRAIN-CKPT\n"

    def sections(b):
        out, at = [], len(magic)
        for _ in range(4):
            (n,) = struct.unpack("<Q", b[at: at + 8])
            out.append(b[at + 8: at + 8 + n])
            at += 8 + n
        return out

    def fnv(b):
        h = 0xCBF29CE484222325
        for x in b:
            h = ((h ^ x) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
        return h

    def encode(secs):
        body = magic + b"".join(struct.pack("<Q", len(x)) + x for x in secs)
        return body + struct.pack("<Q", fnv(body))

    def mutated(name, change):
        secs = sections(ckpt)
        meta = json.loads(secs[0])
        change(meta)
        secs[0] = json.dumps(meta).encode()
        return write(name, encode(secs))

    image = os.path.join(OUT, "ok.png")

    def reconstruct(name, ck, needle, expect="error", extra=()):
        case(name, ["reconstruct", "--checkpoint", ck, "--image", image, "--out",
                    path(name + ".png"), *extra], expect, needle)

    reconstruct("ckpt_valid_control", os.path.join(RUN, "checkpoint.ckpt"), "", expect="ok")
    reconstruct("ckpt_format_99", mutated("f99.ckpt", lambda m: m.update(format=99)),
                "format 99")
    reconstruct("ckpt_unknown_field", mutated("unknown.ckpt", lambda m: m.update(surprise=1)),
                "unknown field")
    reconstruct("ckpt_epochs_done_999", mutated("e999.ckpt", lambda m: m.update(epochs_done=999)),
                "inconsistent counters")
    inspect("ckpt_epochs_done_999_inspect", path("e999.ckpt"), "inconsistent counters")
    reconstruct("ckpt_embed_dim_contradicts", mutated(
        "embed.ckpt", lambda m: m["config"]["model"].update(embed_dim=32)), "model record")
    reconstruct("ckpt_depth_contradicts", mutated(
        "depth.ckpt", lambda m: m["config"]["model"].update(depth=1)), "model record")
    reconstruct("ckpt_huge_model", mutated(
        "hugemodel.ckpt", lambda m: m["config"]["model"].update(embed_dim=32768, depth=1024)),
        "over the limit")
    reconstruct("ckpt_torn", write("torn.ckpt", ckpt[: len(ckpt) * 2 // 3]), "checksum")
    flipped = bytearray(ckpt)
    flipped[len(ckpt) // 2] ^= 0x10
    reconstruct("ckpt_bit_flipped", write("flipped.ckpt", bytes(flipped)), "checksum")
    inspect("ckpt_meta_length_huge",
            write("metalen.ckpt", magic + struct.pack("<Q", 1 << 62) + ckpt[len(magic) + 8:]),
            "truncated or corrupted metadata")

    # --- images ---------------------------------------------------------------------
    def png(name, width, height, rows=None):
        raw = rows if rows is not None else b"".join(b"\0" + b"\x80" * (3 * width) for _ in range(height))

        def chunk(t, d):
            return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
        ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        return write(name, b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))

    png("ok.png", 28, 28)
    ck = os.path.join(RUN, "checkpoint.ckpt")
    tall = png("tall.png", 1, 2_000_000)
    # An official-style file: evaluation resize (shorter side, then centre crop).
    case("image_1x2000000_png", ["reconstruct", "--checkpoint", tiny, "--image", tall, "--out",
                                 path("tall.out.png")], "error", "extreme aspect ratio")
    case("image_declares_100k_by_100k", ["reconstruct", "--checkpoint", ck, "--image",
                                         png("bomb.png", 100_000, 100_000, rows=b""), "--out",
                                         path("bomb.out.png")], "error", "above the cap")
    def png16_rgba(name, width, height):
        # Streamed: 800 MB of zero samples compress to under 1 MB.
        z = zlib.compressobj(9)
        row = b"\0" * (1 + 8 * width)
        idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()

        def chunk(t, d):
            return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
        ihdr = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
        return write(name, b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    # 100 megapixels (inside the pixel cap) of 16-bit RGBA: 800 MB decoded.
    case("image_10000x10000_rgba16_png", ["reconstruct", "--checkpoint", ck, "--image",
                                          png16_rgba("rgba16.png", 10_000, 10_000), "--out",
                                          path("rgba16.out.png")], "error", "above the cap of 384 MB")
    case("reconstruct_scale_100000", ["reconstruct", "--checkpoint", ck, "--image", image,
                                      "--scale", "100000", "--out", path("scale.png")],
         "error", "--scale")
    jpeg = open(IMAGE, "rb").read()
    sos = jpeg.find(b"\xff\xda")
    cut = write("cut.jpg", jpeg[: sos + (len(jpeg) - sos) // 2])
    case("jpeg_cut_mid_scan_reconstruct", ["reconstruct", "--checkpoint", ck, "--image", cut,
                                           "--out", path("cut.out.png")], "error", "truncated JPEG")
    fifo = path("fifo.png")
    os.mkfifo(fifo)
    case("reconstruct_fifo", ["reconstruct", "--checkpoint", ck, "--image", fifo, "--out",
                              path("fifo.out.png")], "error", "not a regular file")
    os.symlink("/dev/zero", path("zero.png"))
    case("reconstruct_dev_zero", ["reconstruct", "--checkpoint", ck, "--image", path("zero.png"),
                                  "--out", path("zero.out.png")], "error", "not a regular file")
    os.mkdir(path("dir.png"))
    case("reconstruct_directory", ["reconstruct", "--checkpoint", ck, "--image", path("dir.png"),
                                   "--out", path("dir.out.png")], "error", "not a regular file")
    ds = path("dataset")
    for cls in ["a", "b"]:
        os.makedirs(os.path.join(ds, cls))
        shutil.copy(image, os.path.join(ds, cls, "1.png"))
    os.mkfifo(os.path.join(ds, "a", "fifo.png"))
    os.symlink("/dev/zero", os.path.join(ds, "a", "zero.png"))
    os.mkdir(os.path.join(ds, "b", "folder.png"))
    shutil.copy(cut, os.path.join(ds, "b", "cut.jpg"))
    case("data_check_fifo_devzero_dir_cut", ["data", "check", ds], "error", "fifo.png")
    case("data_check_reports_dev_zero", ["data", "check", ds], "error", "zero.png")
    case("data_check_reports_cut_jpeg", ["data", "check", ds], "error", "cut.jpg")
    bad = path("badnames")
    for cls in ["a", "b"]:
        os.makedirs(os.path.join(bad, cls))
        shutil.copy(image, os.path.join(bad, cls, "1.png"))
    os.makedirs(os.path.join(os.fsencode(bad), b"\xff\xfe"))
    shutil.copy(image, os.path.join(os.fsencode(bad), b"\xff\xfe", b"1.png"))
    case("class_folder_not_utf8", ["data", "check", bad], "error", "not valid UTF-8")
    model_fifo = path("model.json")
    os.mkfifo(model_fifo)
    case("model_json_fifo", ["pretrain", "--model", model_fifo, "--out", path("r")], "error",
         "not a regular file")

    # --- flags ----------------------------------------------------------------------
    out = path("flags-run")
    case("flag_weight_decay_inf", ["pretrain", "--weight-decay", "inf", "--out", out], "error",
         "not a finite number")
    case("flag_epochs_u64_max", ["pretrain", "--epochs", "18446744073709551615", "--out", out],
         "error", "over the limit of 100000")
    case("flag_threads_100000", ["pretrain", "--threads", "100000", "--out", out], "error",
         "over the limit of 1024")
    case("flag_max_params_refuses_preset", ["pretrain", "--max-params", "1000", "--out", out],
         "error", "over the limit of 1000")
    # The harness replaces @NON-UTF-8@ by the bytes ff fe.
    case("arg_not_utf8", ["pretrain", "--data", "@NON-UTF-8@", "--out", out], "error",
         "invalid UTF-8")
    case("path_arg_not_utf8", ["inspect", "@NON-UTF-8@"], "error", "No such file")

    with open(path("cases.json"), "w") as f:
        json.dump(CASES, f, indent=1)
    print(len(CASES), "cases")


if __name__ == "__main__":
    main()
