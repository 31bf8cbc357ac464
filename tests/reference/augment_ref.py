"""Reference outputs for tests/augment_reference.rs, computed with torchvision.

Usage:
    augment_ref.py images OUT_DIR          write skimage's astronaut/chelsea/coffee as PNG
    augment_ref.py run CASES_JSON OUT_DIR  compute every case, write OUT_DIR/<name>.png
    augment_ref.py cmyk OUT_FILE           regenerate the CMYK JPEG fixture of src/decode/tests.rs

Geometry goes through the PIL path (DINO feeds PIL images to RandomResizedCrop, which calls
PIL's antialiased bicubic resize); photometric ops use torchvision.transforms.functional's
uint8 tensor kernels, whose arithmetic the Rust ops reproduce.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode

IMAGES = ("astronaut", "chelsea", "coffee")


def write_images(out: Path) -> None:
    import skimage.data

    out.mkdir(parents=True, exist_ok=True)
    for name in IMAGES:
        Image.fromarray(getattr(skimage.data, name)()).save(out / f"{name}.png")


def to_tensor(img: Image.Image) -> torch.Tensor:
    return F.pil_to_tensor(img.convert("RGB"))  # uint8, C x H x W


def save(t: torch.Tensor, path: Path) -> None:
    assert t.dtype == torch.uint8, t.dtype
    Image.fromarray(t.permute(1, 2, 0).contiguous().numpy()).save(path)


def blur(t: torch.Tensor, sigma: float) -> torch.Tensor:
    k = 2 * math.ceil(3 * sigma) + 1
    return F.gaussian_blur(t, [k, k], [sigma, sigma])


def jitter(t: torch.Tensor, p: dict) -> torch.Tensor:
    for op in p["order"]:
        f = p.get(op)
        if f is None:
            continue
        t = {
            "brightness": F.adjust_brightness,
            "contrast": F.adjust_contrast,
            "saturation": F.adjust_saturation,
            "hue": F.adjust_hue,
        }[op](t, f)
    return t


def crop_resize(img: Image.Image, c: dict) -> Image.Image:
    return F.resized_crop(
        img, c["top"], c["left"], c["height"], c["width"], [c["size"], c["size"]],
        InterpolationMode.BICUBIC,
    )


def run_case(img: Image.Image, case: dict) -> torch.Tensor:
    op = case["op"]
    if op == "resized_crop":
        out = to_tensor(crop_resize(img, case))
        return F.hflip(out) if case.get("flip") else out
    if op == "eval":
        size = case["size"]
        out = F.center_crop(F.resize(img, int(size / 0.875), InterpolationMode.BICUBIC), size)
        return to_tensor(out)
    if op == "view":
        # A whole DINO view from logged parameters, in DataAugmentationDINO's order.
        t = to_tensor(crop_resize(img, case))
        if case["flip"]:
            t = F.hflip(t)
        if case.get("jitter"):
            t = jitter(t, case["jitter"])
        if case["grayscale"]:
            t = F.rgb_to_grayscale(t, num_output_channels=3)
        if case.get("blur_sigma") is not None:
            t = blur(t, case["blur_sigma"])
        if case["solarize"]:
            t = F.solarize(t, 128)
        return t
    t = to_tensor(img)
    if op == "brightness":
        return F.adjust_brightness(t, case["factor"])
    if op == "contrast":
        return F.adjust_contrast(t, case["factor"])
    if op == "saturation":
        return F.adjust_saturation(t, case["factor"])
    if op == "hue":
        return F.adjust_hue(t, case["factor"])
    if op == "jitter":
        return jitter(t, case)
    if op == "grayscale":
        return F.rgb_to_grayscale(t, num_output_channels=3)
    if op == "solarize":
        return F.solarize(t, case["threshold"])
    if op == "blur":
        return blur(t, case["sigma"])
    raise ValueError(f"unknown op {op!r}")


def cmyk_fixture(path: Path) -> None:
    """An 8x8 solid RGB (200, 40, 40) saved by PIL as an Adobe (inverted) CMYK JPEG."""
    Image.new("RGB", (8, 8), (200, 40, 40)).convert("CMYK").save(path, quality=95)


def main() -> None:
    if sys.argv[1] == "cmyk":
        cmyk_fixture(Path(sys.argv[2]))
        return
    if sys.argv[1] == "images":
        write_images(Path(sys.argv[2]))
        return
    assert sys.argv[1] == "run", sys.argv
    cases = json.loads(Path(sys.argv[2]).read_text())
    out = Path(sys.argv[3])
    torch.set_num_threads(1)
    for case in cases:
        img = Image.open(out / f"{case['image']}.png")
        save(run_case(img, case).contiguous(), out / f"{case['name']}.png")


if __name__ == "__main__":
    main()
