#!/usr/bin/env python3
"""Write the font the training curves are drawn with: crates/supmae-train/assets/.

`supmae plot` and the learners' `curves.png` draw text with plotters' ab_glyph renderer,
which needs a TrueType font in memory (no system fonts are looked up). This script cuts
DejaVu Sans down to printable ASCII plus a few signs, which keeps it small enough to embed.

Inputs (nothing is downloaded): Debian's `fonts-dejavu-core` package (the font and its
copyright file) and fontTools from PyPI:

    apt-get install fonts-dejavu-core
    pip download --no-deps fonttools==4.68.0 -d /tmp/ft
    pip install --target /tmp/ftlib /tmp/ft/fonttools-*.whl
    PYTHONPATH=/tmp/ftlib python3 tools/data/make_font.py

Outputs: crates/supmae-train/assets/DejaVuSans-subset.ttf and .../assets/NOTICE.md.
"""
import os
import sys

from fontTools import subset

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OUT = os.path.join(REPO, "crates", "supmae-train", "assets")
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
COPYRIGHT = "/usr/share/doc/fonts-dejavu-core/copyright"

# Printable ASCII, the middle dot, the minus sign and the arrows used in labels.
CODEPOINTS = list(range(0x20, 0x7F)) + [0xB7, 0x2212, 0x2191, 0x2193]


def main():
    os.makedirs(OUT, exist_ok=True)
    out = os.path.join(OUT, "DejaVuSans-subset.ttf")
    options = subset.Options()
    options.hinting = False
    options.desubroutinize = True
    options.layout_features = ["kern"]
    options.name_IDs = ["*"]
    options.notdef_outline = True
    font = subset.load_font(FONT, options)
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=CODEPOINTS)
    subsetter.subset(font)
    # A fixed timestamp keeps the output reproducible.
    font["head"].modified = font["head"].created
    subset.save_font(font, out, options)
    print(f"wrote {os.path.relpath(out, REPO)} ({os.path.getsize(out)} bytes)")

    with open(COPYRIGHT, encoding="utf-8") as f:
        copyright_text = f.read()
    notice = f"""# Third-party data in `crates/supmae-train/assets/`

Written by `tools/data/make_font.py` (see its header for the exact inputs and command).

## `DejaVuSans-subset.ttf`

- DejaVu Sans 2.37 (Debian `fonts-dejavu-core`), cut down with fontTools to printable ASCII
  and U+00B7, U+2212, U+2191, U+2193, without hinting. The training curves (`supmae plot`,
  `curves.png`) draw their text with it, so no system font is needed.
- Licence: the Bitstream Vera licence (DejaVu changes are in the public domain); the font
  keeps its name (DejaVu Sans), which contains neither "Bitstream" nor "Vera", as the
  licence asks of modified fonts. Debian's copyright file, in full:

```
{copyright_text.rstrip()}
```
"""
    with open(os.path.join(OUT, "NOTICE.md"), "w", encoding="utf-8") as f:
        f.write(notice)
    print("wrote crates/supmae-train/assets/NOTICE.md")


if __name__ == "__main__":
    sys.dont_write_bytecode = True
    main()
