"""Pictures for the README: IR | visible | fused for a few pairs.

    python -m run_scripts.figures                       # shipped weights -> docs/examples.png
    python -m run_scripts.figures --pairs Lytro:lytro-1 Lytro:lytro-3 --strategy l1_norm --output_mode clip \
        --labels "near focus (A)" "far focus (B)" --out docs/multifocus.png \
        --weights weights/densefuse_gray_l100_daf2d5f7.pth weights/densefuse_rgb_l100_b02610f6.pth

Uses the default settings of run_infer.py (add, minmax) and keeps colour where the visible
image has it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from configs import OUTPUT_MODES, ROOT, SHIPPED_WEIGHTS, STRATEGY_NAMES, TEST_DATA
from utils.cli import DefaultsFormatter
from utils.files import atomic_write

if TYPE_CHECKING:
    import numpy as np


def montage(rows: list[list[np.ndarray]], labels: list[str], path: Path, height: int = 220) -> None:
    """A grid picture: one row per pair, columns labelled."""
    from PIL import Image, ImageDraw
    tiles = []
    for row in rows:
        scaled = []
        for im in row:
            pil = Image.fromarray(im).convert("RGB")
            w = round(pil.width * height / pil.height)
            scaled.append(pil.resize((w, height), Image.BILINEAR))
        tiles.append(scaled)
    width = max(sum(t.width for t in r) + 4 * (len(r) - 1) for r in tiles)
    canvas = Image.new("RGB", (width, 22 + len(tiles) * (height + 4)), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for label, tile in zip(labels, tiles[0], strict=True):
        draw.text((x + 4, 5), label, fill="black")
        x += tile.width + 4
    y = 22
    for r in tiles:
        x = 0
        for t in r:
            canvas.paste(t, (x, y))
            x += t.width + 4
        y += height + 4
    atomic_write(path, lambda fh: canvas.save(fh, format=Image.registered_extensions().get(path.suffix.lower(),
                                                                                        "PNG")))



def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=DefaultsFormatter)
    p.add_argument("--weights", nargs="+", default=[str(SHIPPED_WEIGHTS)],
                   help="weights to fuse with; several give one fused column each")
    p.add_argument("--pairs", nargs="+", default=["Tno:1", "Tno:7", "Tno:15", "Road:FLIR_05857"],
                   help="SET:PAIR names under data_test/")
    p.add_argument("--out", default=str(ROOT / "docs" / "examples.png"), help="PNG to write")
    p.add_argument("--strategy", choices=STRATEGY_NAMES, default="add", help="fusion strategy")
    p.add_argument("--output_mode", choices=OUTPUT_MODES, default="minmax", help="8-bit conversion")
    p.add_argument("--labels", nargs=2, default=["infrared", "visible"], metavar=("FIRST", "SECOND"),
                   help="column titles of the two sources")
    args = p.parse_args(argv)
    import numpy as np
    from PIL import Image

    from utils.checkpoint import WeightsError, load_model
    from utils.fusion import FuseSettings, fuse_images, prepare_model
    from utils.images import load_image
    from utils.pairs import find_pairs
    try:
        models = [prepare_model(load_model(w)[0]) for w in args.weights]
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = []
    for spec in args.pairs:
        set_name, name = spec.split(":", 1)
        pair = {p.name: p for p in find_pairs(TEST_DATA / set_name)[1]}[name]
        ir, vis = load_image(pair.ir), load_image(pair.vis)
        settings = FuseSettings(args.strategy, output_mode=args.output_mode)
        fused = [fuse_images(m, ir, vis, settings=settings) for m in models]
        as8 = [np.asarray(Image.open(f).convert("RGB")) for f in (pair.ir, pair.vis)]
        rows.append([*as8, *fused])
    what = f"{args.strategy}, {args.output_mode}"
    titles = [f"DenseFuse ({what})"] if len(models) == 1 else [
        f"{'RGB' if m.model_args()['channels'] == 3 else 'gray'} network ({what})" for m in models]
    montage(rows, [*args.labels, *titles], Path(args.out))
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
