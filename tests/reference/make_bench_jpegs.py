"""Writes a folder of ImageNet-sized (500x375) JPEGs from scikit-image's bundled photographs,
for side-by-side throughput measurements (bench_pil_recipe.py, `dino-stream bench pipeline`).

Usage: make_bench_jpegs.py OUT_DIR [--count N]

Each photo gives several variants (different crop windows, landscape and portrait, mirrored)
so that decode and augmentation see varied content rather than one cached picture. JPEG
quality 90 with 4:2:0 chroma subsampling, like typical ImageNet files. Deterministic.
"""

import argparse
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "retina", "hubble_deep_field",
    "immunohistochemistry", "coins",
)
SIZES = ((500, 375), (375, 500))  # ImageNet's most common landscape and portrait sizes


def variants(img: Image.Image, n: int):
    """`n` crops of different windows, each resized to an ImageNet size."""
    w, h = img.size
    for i in range(n):
        tw, th = SIZES[i % 2]
        # Crop a window with the target aspect ratio, at a scale and offset that vary with i.
        scale = 1.0 - 0.12 * (i // 2 % 4)
        cw = min(w, int(h * tw / th)) * scale
        ch = cw * th / tw
        fx, fy = ((i * 37) % 11) / 10.0, ((i * 53) % 7) / 6.0
        left, top = fx * (w - cw), fy * (h - ch)
        out = img.resize((tw, th), Image.BICUBIC, box=(left, top, left + cw, top + ch))
        yield out.transpose(Image.FLIP_LEFT_RIGHT) if i % 3 == 2 else out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--count", type=int, default=8, help="variants per photo")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    n = 0
    for name in PHOTOS:
        arr = getattr(skimage.data, name)()
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        img = Image.fromarray(arr[..., :3].astype(np.uint8)).convert("RGB")
        for i, v in enumerate(variants(img, a.count)):
            v.save(a.out / f"{name}_{i:02d}.jpg", quality=90, subsampling=2)
            n += 1
    print(f"wrote {n} JPEGs to {a.out}")


if __name__ == "__main__":
    main()
