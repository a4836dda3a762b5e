"""How far torch's bilinear resize is from the one the preparation uses (PIL bilinear, which is what
torchvision's ``Resize`` does to a PIL image, and so what the seed's data had).

Renders synthetic prints (300-400 px) and resizes each to S×S with PIL and with
``torch.nn.functional.interpolate(mode="bilinear")``, with and without ``antialias``, and prints the largest
and the mean absolute difference in 0..255 units.

    python benchmarks/resize_check.py [--images 20] [--sizes 224 64]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from autoresearch.tasks.eclip.template.eclip import synth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 64])
    args = ap.parse_args()
    for size in args.sizes:
        diffs: dict[str, list[tuple[float, float]]] = {"antialias, uint8": [], "antialias, float": [],
                                                         "no antialias, float": []}
        for i in range(args.images):
            img, _ = synth.render(0, i, clean=True)
            pil = np.asarray(img.resize((size, size), Image.BILINEAR)).astype(np.float64)
            t = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None]
            out = {"antialias, uint8": F.interpolate(t, size=(size, size), mode="bilinear", antialias=True),
                   "antialias, float": F.interpolate(t.float(), size=(size, size), mode="bilinear", antialias=True),
                   "no antialias, float": F.interpolate(t.float(), size=(size, size), mode="bilinear",
                                                        antialias=False)}
            for name, value in out.items():
                got = value.float().round().clamp(0, 255)[0].permute(1, 2, 0).double().numpy()
                d = np.abs(got - pil)
                diffs[name].append((d.max(), d.mean()))
        for name, rows in diffs.items():
            a = np.array(rows)
            print(f"{size} px, torch {name}: max |diff| {a[:, 0].max():.0f}/255, mean {a[:, 1].mean():.3f}/255")


if __name__ == "__main__":
    main()
