"""Write a deterministic 2D RGB PNG dataset in the nnU-Net v2 raw layout, for timing 2D training of both tools.

    python benchmarks/make_rgb2d.py RAW_ROOT [--id 120] [--cases 20] [--size 400 480] [--seed 0]

Each case is one RGB PNG (`imagesTr/case_XXX_0000.png`, channels named R, G, B: nnU-Net's natural-image rule) of
about `--size` pixels (each side varies by up to 10 %), a coloured textured background with a few shapes; labels
(`labelsTr/case_XXX.png`): 1 = ellipses, 2 = rectangles. Same arguments, same bytes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image


def make_case(shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """-> (uint8 RGB image (H, W, 3), uint8 labels (H, W))."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(40, 120, 3)
    gradient = rng.uniform(-40, 40, 3)
    img = base + gradient * (xx / w)[..., None] + rng.normal(0, 12, (h, w, 3))
    lab = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(2, 5))):
        cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
        ry, rx = rng.uniform(0.05, 0.15) * h, rng.uniform(0.05, 0.15) * w
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        img[mask] = rng.uniform(150, 230, 3) + rng.normal(0, 10, (int(mask.sum()), 3))
        lab[mask] = 1
    for _ in range(int(rng.integers(1, 4))):
        y0, x0 = int(rng.uniform(0.05, 0.8) * h), int(rng.uniform(0.05, 0.8) * w)
        y1, x1 = y0 + int(rng.uniform(0.05, 0.15) * h), x0 + int(rng.uniform(0.05, 0.15) * w)
        img[y0:y1, x0:x1] = rng.uniform(0, 90, 3) + rng.normal(0, 10, (y1 - y0, x1 - x0, 3))
        lab[y0:y1, x0:x1] = 2
    return np.clip(img, 0, 255).round().astype(np.uint8), lab


def make_dataset(raw_root: Path, dataset_id: int, n_cases: int, size: tuple[int, int], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    folder = raw_root / f"Dataset{dataset_id:03d}_RGB2D"
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    for i in range(n_cases):
        shape = tuple(int(round(s * rng.uniform(0.9, 1.1))) for s in size)
        img, lab = make_case(shape, rng)
        Image.fromarray(img, "RGB").save(folder / "imagesTr" / f"case_{i:03d}_0000.png")
        Image.fromarray(lab, "L").save(folder / "labelsTr" / f"case_{i:03d}.png")
    meta = {
        "channel_names": {"0": "R", "1": "G", "2": "B"},
        "labels": {"background": 0, "ellipse": 1, "rectangle": 2},
        "numTraining": n_cases,
        "file_ending": ".png",
        "name": "RGB2D",
    }
    (folder / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw_root", type=Path)
    parser.add_argument("--id", type=int, default=120)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--size", type=int, nargs=2, default=(400, 480))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(make_dataset(args.raw_root, args.id, args.cases, tuple(args.size), args.seed))


if __name__ == "__main__":
    main()
