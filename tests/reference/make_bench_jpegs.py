"""Writes a folder of ImageNet-sized (500x375) JPEGs from scikit-image's bundled photographs,
for side-by-side throughput measurements (bench_pil_recipe.py, `dino-stream bench pipeline`).

Usage: make_bench_jpegs.py OUT_DIR [--count N] [--size WxH [--progressive] [--cmyk]]

Each photo gives several variants (different crop windows, landscape and portrait, mirrored)
so that decode and augmentation see varied content rather than one cached picture. JPEG
quality 90 with 4:2:0 chroma subsampling, like typical ImageNet files. Deterministic.

`--size WxH` (e.g. 2000x1500, 4000x3000) writes camera-sized photos instead, landscape
only: a grid of 1000x750 tiles, each an upscaled variant of a different photo, so the detail
per pixel stays that of a ~2x upscaled photograph however large the picture (one photo
blown up 8x would be unrealistically smooth, and unrealistically cheap to decode).
`--progressive` writes progressive JPEGs, `--cmyk` Adobe CMYK ones (tests/scaled_decode.rs).
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


TILE = (1000, 750)


def photo(name: str) -> Image.Image:
    arr = getattr(skimage.data, name)()
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return Image.fromarray(arr[..., :3].astype(np.uint8)).convert("RGB")


def large(photos, i: int, size) -> Image.Image:
    """Picture `i` of `size`: a grid of TILE-sized bicubic upscales of photo windows."""
    w, h = size
    cols, rows = -(-w // TILE[0]), -(-h // TILE[1])
    out = Image.new("RGB", (cols * TILE[0], rows * TILE[1]))
    for t in range(cols * rows):
        img = photos[(i + 3 * t) % len(photos)]
        pw, ph = img.size
        cw = min(pw, ph * TILE[0] / TILE[1]) * (1.0 - 0.1 * ((i + t) % 3))
        ch = cw * TILE[1] / TILE[0]
        left = ((i * 37 + t * 11) % 11) / 10.0 * (pw - cw)
        top = ((i * 53 + t * 7) % 7) / 6.0 * (ph - ch)
        tile = img.resize(TILE, Image.BICUBIC, box=(left, top, left + cw, top + ch))
        if (i + t) % 2:
            tile = tile.transpose(Image.FLIP_LEFT_RIGHT)
        out.paste(tile, (t % cols * TILE[0], t // cols * TILE[1]))
    return out.crop((0, 0, w, h))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--count", type=int, default=8, help="variants per photo")
    ap.add_argument("--size", help="WxH: camera-sized tiled photos instead of ImageNet sizes")
    ap.add_argument("--progressive", action="store_true", help="with --size: progressive JPEGs")
    ap.add_argument("--cmyk", action="store_true", help="with --size: CMYK JPEGs")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    n = 0
    if a.size:
        size = tuple(int(v) for v in a.size.lower().split("x"))
        photos = [photo(name) for name in PHOTOS]
        for i in range(a.count * len(PHOTOS)):
            img = large(photos, i, size)
            path = a.out / f"photo_{i:03d}.jpg"
            if a.cmyk:
                img.convert("CMYK").save(path, quality=90)
            else:
                img.save(path, quality=90, subsampling=2, progressive=a.progressive)
            n += 1
        print(f"wrote {n} {size[0]}x{size[1]} JPEGs to {a.out}")
        return
    for name in PHOTOS:
        for i, v in enumerate(variants(photo(name), a.count)):
            v.save(a.out / f"{name}_{i:02d}.jpg", quality=90, subsampling=2)
            n += 1
    print(f"wrote {n} JPEGs to {a.out}")


if __name__ == "__main__":
    main()
