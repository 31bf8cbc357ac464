#!/usr/bin/env python3
"""A video made of real labelled images, for the video learning check (issue 11).

Every Fashion-MNIST training image (IDX, Debian's dataset-fashion-mnist) is shown for
`--frames-per-image` consecutive frames, drifting by a small pan and zoom (a per-image
direction drawn from `--seed`), in dataset order: a long stream whose consecutive frames are
near-duplicates of one garment, like the shots of a walking-tour video. The frames stay 28x28
(the test images' geometry; even sides, as H.264's 4:2:0 wants) and are written raw into the
ffmpeg CLI, which encodes H.264 single-threaded with bit-exact flags, so the same arguments give
the same file byte for byte (the script prints its SHA-256).

    .venv/bin/python scripts/make-fmnist-video.py --out /tmp/fmnist.mp4

The pan/zoom: frame f of F (t = f / (F - 1)) shows the image scaled by 1 + t * zoom (zoom
drawn in [-max_zoom, max_zoom]) and shifted by t * (dx, dy) pixels (each drawn in
[-max_pan, max_pan]); bilinear resampling, black outside (the images' background). Frame 0
is the image itself.
"""

import argparse
import gzip
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SIDE = 28


def read_idx_images(path: Path) -> np.ndarray:
    data = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    magic, n, h, w = np.frombuffer(data[:16], dtype=">u4")
    if magic != 2051 or (h, w) != (SIDE, SIDE) or len(data) != 16 + n * h * w:
        sys.exit(f"{path}: not an IDX file of {SIDE}x{SIDE} images (magic {magic}, {n}x{h}x{w})")
    return np.frombuffer(data[16:], dtype=np.uint8).reshape(n, h, w)


def find_images(root: Path) -> Path:
    for name in ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"):
        if (root / name).exists():
            return root / name
    sys.exit(f"{root}: no train-images-idx3-ubyte(.gz)")


def frames_of(images: torch.Tensor, fpi: int, gen: torch.Generator, args) -> torch.Tensor:
    """(n, 28, 28) uint8 -> (n * fpi, 28, 28) uint8: each image's pan/zoom frames in order."""
    n = images.shape[0]
    zoom = (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * args.max_zoom
    pan = (torch.rand(n, 2, generator=gen, dtype=torch.float64) * 2 - 1) * args.max_pan
    t = torch.arange(fpi, dtype=torch.float64) / max(fpi - 1, 1)
    scale = 1 + t[None, :] * zoom[:, None]  # (n, fpi)
    shift = t[None, :, None] * pan[:, None, :]  # (n, fpi, 2), pixels
    # affine_grid maps output coordinates (in [-1, 1]) to input ones: a zoom by s reads
    # the input at x / s, a shift by d pixels reads it at x - d (2 / 28 per pixel).
    theta = torch.zeros(n, fpi, 2, 3, dtype=torch.float64)
    theta[..., 0, 0] = 1 / scale
    theta[..., 1, 1] = 1 / scale
    theta[..., :, 2] = -shift * (2 / SIDE) / scale[..., None]
    theta = theta.reshape(n * fpi, 2, 3).float()
    src = images.float().repeat_interleave(fpi, dim=0)[:, None]
    grid = F.affine_grid(theta, [n * fpi, 1, SIDE, SIDE], align_corners=False)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[:, 0].round().clamp(0, 255).to(torch.uint8)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="the .mp4 to write")
    p.add_argument("--idx", default=Path("/usr/share/datasets/fashion-mnist"), type=Path)
    p.add_argument("--images", type=int, default=0, help="the first N images (0: all)")
    p.add_argument("--frames-per-image", type=int, default=4)
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--max-pan", type=float, default=1.5, help="pixels over an image's frames")
    p.add_argument("--max-zoom", type=float, default=0.1, help="relative, over an image's frames")
    p.add_argument("--crf", type=int, default=15)
    p.add_argument("--gop", type=int, default=50, help="keyframe interval in frames")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.frames_per_image < 1:
        sys.exit("--frames-per-image must be >= 1")

    images = read_idx_images(find_images(args.idx))
    if args.images:
        images = images[: args.images]
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(args.seed)
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "gray", "-s", f"{SIDE}x{SIDE}", "-r", str(args.fps),
        "-i", "-",
        "-c:v", "libx264", "-preset", "medium", "-crf", str(args.crf), "-g", str(args.gop),
        "-pix_fmt", "yuv420p", "-threads", "1",
        "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1",
        str(args.out),
    ]
    enc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    chunk = 2000
    for start in range(0, len(images), chunk):
        block = torch.from_numpy(images[start : start + chunk].copy())
        enc.stdin.write(frames_of(block, args.frames_per_image, gen, args).numpy().tobytes())
    enc.stdin.close()
    if enc.wait() != 0:
        sys.exit(f"ffmpeg failed (exit {enc.returncode}): {' '.join(cmd)}")
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    frames = len(images) * args.frames_per_image
    print(f"{args.out}: {len(images)} images x {args.frames_per_image} frames = {frames} frames "
          f"at {args.fps} fps ({frames / args.fps / 3600:.2f} h), sha256 {digest}")


if __name__ == "__main__":
    main()
