"""Throughput of DINO's official augmentation recipe (PIL + torchvision) on one core.

Usage: bench_pil_recipe.py JPEG_DIR [--seconds S] [--local-crops N] [--workers W]

`DataAugmentationDINO`, `GaussianBlur` and `Solarization` below are copied from the DINO
repository (facebookresearch/dino, main_dino.py and utils.py) so the figure is the recipe
the paper trains with: RandomResizedCrop (PIL bicubic), flip, ColorJitter(0.4, 0.4, 0.2, 0.1)
p 0.8, RandomGrayscale 0.2, PIL GaussianBlur (p 1 / 0.1 / 0.5), Solarization 0.2 on global
view 2, ToTensor + Normalize, 2x224 + 8x96 crops. Loading is DINO's `pil_loader`
(open + convert("RGB")), as torchvision's ImageFolder does it in each dataloader worker.

Prints images/s for decode alone, augment alone (on pre-decoded images) and decode + augment
(the per-sample cost of a DINO dataloader worker), all with one thread, so the figures
compare per core with `dino-stream bench pipeline F.toml --set augment.workers=1` (one worker
decoding its own images) and with its "decode+augment on one core, serially" line.
With `--workers W` (W > 1) it also runs decode + augment in W processes at once, as a
DataLoader with W workers does, for the figure that compares with the whole pipeline using
every core (the tensors are not sent back to a main process, which flatters PIL).
"""

import argparse
import io
import multiprocessing
import os
import random
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from PIL import Image, ImageFilter, ImageOps  # noqa: E402
from torchvision import transforms  # noqa: E402


class GaussianBlur(object):
    """DINO utils.GaussianBlur: PIL's blur with radius uniform in [0.1, 2] with probability p."""

    def __init__(self, p=0.5, radius_min=0.1, radius_max=2.0):
        self.prob = p
        self.radius_min = radius_min
        self.radius_max = radius_max

    def __call__(self, img):
        do_it = random.random() <= self.prob
        if not do_it:
            return img
        return img.filter(
            ImageFilter.GaussianBlur(radius=random.uniform(self.radius_min, self.radius_max))
        )


class Solarization(object):
    """DINO utils.Solarization."""

    def __init__(self, p):
        self.p = p

    def __call__(self, img):
        if random.random() < self.p:
            return ImageOps.solarize(img)
        return img


class DataAugmentationDINO(object):
    """DINO main_dino.DataAugmentationDINO, unchanged."""

    def __init__(self, global_crops_scale, local_crops_scale, local_crops_number):
        flip_and_color_jitter = transforms.Compose([
            transforms.RandomHorizontalFlip(p=0.5),
            transforms.RandomApply(
                [transforms.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)],
                p=0.8,
            ),
            transforms.RandomGrayscale(p=0.2),
        ])
        normalize = transforms.Compose([
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ])
        self.global_transfo1 = transforms.Compose([
            transforms.RandomResizedCrop(224, scale=global_crops_scale, interpolation=Image.BICUBIC),
            flip_and_color_jitter,
            GaussianBlur(1.0),
            normalize,
        ])
        self.global_transfo2 = transforms.Compose([
            transforms.RandomResizedCrop(224, scale=global_crops_scale, interpolation=Image.BICUBIC),
            flip_and_color_jitter,
            GaussianBlur(0.1),
            Solarization(0.2),
            normalize,
        ])
        self.local_crops_number = local_crops_number
        self.local_transfo = transforms.Compose([
            transforms.RandomResizedCrop(96, scale=local_crops_scale, interpolation=Image.BICUBIC),
            flip_and_color_jitter,
            GaussianBlur(p=0.5),
            normalize,
        ])

    def __call__(self, image):
        crops = [self.global_transfo1(image), self.global_transfo2(image)]
        for _ in range(self.local_crops_number):
            crops.append(self.local_transfo(image))
        return crops


def pil_loader(data: bytes):
    """torchvision.datasets.folder.pil_loader, from bytes already read (the Rust bench also
    decodes files that sit in the page cache)."""
    img = Image.open(io.BytesIO(data))
    return img.convert("RGB")


def rate(fn, items, seconds, cpu=None):
    """Calls fn on items round-robin for `seconds` after a short warm-up; returns items/s.
    With `cpu` (a list), also appends items per second of this thread's CPU time, the figure
    that stays comparable when other processes share the core (the Rust bench prints it too)."""
    for x in items[:4]:
        fn(x)
    n, t0, c0 = 0, time.perf_counter(), time.thread_time()
    while time.perf_counter() - t0 < seconds:
        fn(items[n % len(items)])
        n += 1
    if cpu is not None:
        cpu.append(n / max(time.thread_time() - c0, 1e-9))
    return n / (time.perf_counter() - t0)


def worker_rate(aug, blobs, seconds, seed, out):
    """One DataLoader-like worker process: decode + augment for `seconds`; puts items/s."""
    random.seed(seed)
    torch.manual_seed(seed)
    out.put(rate(lambda b: aug(pil_loader(b)), blobs, seconds))


def parallel_rate(aug, blobs, seconds, workers):
    """Summed decode + augment images/s of `workers` processes running at the same time."""
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=worker_rate, args=(aug, blobs, seconds, i, out))
             for i in range(workers)]
    for p in procs:
        p.start()
    rates = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(rates)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--local-crops", type=int, default=8)
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(1)
    random.seed(0)
    torch.manual_seed(0)
    paths = sorted(p for p in a.dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    assert paths, f"no JPEGs in {a.dir}"
    blobs = [p.read_bytes() for p in paths]
    load = pil_loader
    aug = DataAugmentationDINO((0.4, 1.0), (0.05, 0.4), a.local_crops)
    images = [load(b) for b in blobs]
    w, h = images[0].size
    print(f"{len(paths)} JPEGs ({w}x{h} first), torch {torch.__version__}, 1 thread, "
          f"2x224 + {a.local_crops}x96 crops")
    dec = rate(load, blobs, a.seconds / 3)
    print(f"PIL decode-only: {dec:.1f} images/s")
    augr = rate(aug, images, a.seconds / 3)
    print(f"PIL recipe augment-only: {augr:.1f} images/s")
    cpu = []
    full = rate(lambda b: aug(load(b)), blobs, a.seconds / 3, cpu)
    print(f"PIL recipe decode+augment: {full:.1f} images/s per core")
    print(f"  per CPU-second of its thread: {cpu[0]:.1f} images/s")
    if a.workers > 1:
        par = parallel_rate(aug, blobs, a.seconds / 3, a.workers)
        print(f"PIL recipe decode+augment in {a.workers} worker processes: {par:.1f} images/s "
              f"({par / a.workers:.1f} per worker)")


if __name__ == "__main__":
    main()
