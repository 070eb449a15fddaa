#!/usr/bin/env python3
"""Summarise tools/experiments/small_scale.sh runs: the Markdown tables of docs/results.md on
stdout. The picture is drawn by the program itself:
`supmae plot runs/small/ft-* runs/small/scratch-* --out docs/small_scale.png`.

usage: python3 tools/experiments/summarize.py runs/small
"""
import json
import re
import statistics
import sys
from pathlib import Path


def log(path):
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def main():
    root = Path(sys.argv[1])
    rows = []
    for ft in sorted(root.glob("ft-*-s*")) + sorted(root.glob("scratch-s*")):
        if not (ft / "log.jsonl").is_file():
            continue
        m = re.match(r"(?:ft-)?(.+)-s(\d+)$", ft.name)
        method, seed = m.group(1), int(m.group(2))
        ft_log = log(ft / "log.jsonl")
        if not ft_log:
            continue
        pre_s, pre_img, pre_ep = 0.0, 0, 0
        if method != "scratch":
            pre_log = log(root / f"{method}-s{seed}" / "log.jsonl")
            pre_s = sum(e["seconds"] for e in pre_log)
            pre_img = pre_log[-1]["images_seen"]
            pre_ep = len(pre_log)
        rows.append(
            dict(
                method=method,
                seed=seed,
                pre_epochs=pre_ep,
                pre_s=pre_s,
                pre_img=pre_img,
                ft_epochs=len(ft_log),
                ft_s=sum(e["seconds"] for e in ft_log),
                ft_img=ft_log[-1]["images_seen"],
                final=ft_log[-1]["test_acc1"],
                best=max(e["test_acc1"] for e in ft_log),
            )
        )
    print("| method | seed | pre-train epochs | pre-train s | fine-tune epochs | fine-tune s "
          "| images processed | top-1 final | top-1 best |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['method']} | {r['seed']} | {r['pre_epochs']} | {r['pre_s']:.0f} | "
              f"{r['ft_epochs']} | {r['ft_s']:.0f} | {r['pre_img'] + r['ft_img']:,} | "
              f"{r['final']:.2f} | {r['best']:.2f} |")
    print()
    print("| method | seeds | total s (mean) | top-1 final, mean ± sd |")
    print("| --- | --- | --- | --- |")
    methods = sorted({r["method"] for r in rows}, key=lambda m: [r["method"] for r in rows].index(m))
    for method in methods:
        rs = [r for r in rows if r["method"] == method]
        finals = [r["final"] for r in rs]
        sd = statistics.stdev(finals) if len(finals) > 1 else 0.0
        total = statistics.mean(r["pre_s"] + r["ft_s"] for r in rs)
        print(f"| {method} | {len(rs)} | {total:.0f} | {statistics.mean(finals):.2f} ± {sd:.2f} |")


if __name__ == "__main__":
    main()
