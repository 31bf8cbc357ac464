"""The supervised baseline of `dino-stream eval segment --supervised`: the same ViT as a DINO
pipeline's, trained on the composite set's garment labels with cross-entropy (timm's
VisionTransformer and PyTorch's own optimiser, so the baseline is independent of dino-stream's
engine). Writes a timm state dict that dino-stream imports (the classifier head is dropped).

Usage (the venv's python; sizes as in pipelines/composite.toml):
  python scripts/train-supervised-vit.py runs/composite-train runs/supervised-vit.safetensors \
      --test runs/composite-test --embed-dim 96 --depth 4 --heads 3 --patch 8 --epochs 40
then
  dino-stream eval segment runs/composite-test runs/composite \
      --supervised runs/supervised-vit.safetensors --supervised-heads 3
"""
import argparse
import csv
import os
import time

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from torchvision import transforms

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # dino-stream's default normalisation


def read_set(root):
    with open(os.path.join(root, "index.csv")) as f:
        rows = list(csv.DictReader(f))
    images = [Image.open(os.path.join(root, r["image"])).convert("RGB") for r in rows]
    labels = [int(r["label"]) for r in rows]
    return images, labels


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("train")
    ap.add_argument("out")
    ap.add_argument("--test")
    ap.add_argument("--embed-dim", type=int, default=96)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--patch", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--scale", type=float, nargs=2, default=(0.4, 1.0))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    torch.set_num_threads(a.threads)

    images, labels = read_set(a.train)
    size = images[0].width
    classes = max(labels) + 1
    train_tf = transforms.Compose([
        transforms.RandomResizedCrop(size, scale=tuple(a.scale)),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])
    eval_tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=size, patch_size=a.patch, embed_dim=a.embed_dim, depth=a.depth,
        num_heads=a.heads, qkv_bias=True, num_classes=classes, dynamic_img_size=True)
    steps_per_epoch = len(images) // a.batch
    total = steps_per_epoch * a.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr * a.batch / 256, weight_decay=a.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=a.lr * a.batch / 256, total_steps=total, pct_start=0.1, anneal_strategy="cos")
    y_all = torch.tensor(labels)
    start = time.time()
    for epoch in range(a.epochs):
        model.train()
        order = torch.randperm(len(images))
        seen, correct, loss_sum = 0, 0, 0.0
        for s in range(steps_per_epoch):
            idx = order[s * a.batch:(s + 1) * a.batch]
            x = torch.stack([train_tf(images[i]) for i in idx])
            y = y_all[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            seen += len(idx)
            correct += (logits.argmax(1) == y).sum().item()
            loss_sum += loss.item() * len(idx)
        print(f"epoch {epoch} loss {loss_sum / seen:.3f} train acc {correct / seen:.3f} "
              f"({time.time() - start:.0f} s)", flush=True)
    model.eval()
    if a.test:
        t_images, t_labels = read_set(a.test)
        with torch.no_grad():
            x = torch.stack([eval_tf(im) for im in t_images])
            pred = torch.cat([model(x[i:i + 256]).argmax(1) for i in range(0, len(x), 256)])
        acc = (pred == torch.tensor(t_labels)).float().mean().item()
        print(f"test accuracy {acc:.4f} on {len(t_labels)} images of {a.test}")
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    if a.out.endswith(".safetensors"):
        save_file(sd, a.out)
    else:
        torch.save(sd, a.out)
    print(f"wrote {a.out} after {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
