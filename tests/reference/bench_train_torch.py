"""Times one DINO training step in PyTorch eager (facebookresearch/dino's code, dino_ref.py) for
the model, batch and crops of benches/train.rs and benches/train_step.toml, for a side-by-side
ratio with the Rust engine (`dino-stream bench train benches/train_step.toml`).

    .venv/bin/python tests/reference/bench_train_torch.py [--steps 10] [--threads N] [--device cpu]

Prints the median and mean seconds per step and images/s."""
import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(__file__))
import dino_ref as ref  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=10)
ap.add_argument("--threads", type=int, default=0)
ap.add_argument("--device", default="cpu")
args = ap.parse_args()
if args.threads:
    torch.set_num_threads(args.threads)
dev = torch.device(args.device)
B, G, L, NL = 16, 96, 48, 4
DIM, DEPTH, HEADS, PATCH, K = 192, 4, 3, 16, 4096


def net(drop_path):
    vit = ref.VisionTransformer(img_size=[G], patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=HEADS, mlp_ratio=4.0,
                                qkv_bias=True, drop_path_rate=drop_path, norm_layer=lambda d: nn.LayerNorm(d, eps=1e-6))
    return ref.MultiCropWrapper(vit, ref.DINOHead(DIM, K, hidden_dim=512, bottleneck_dim=128)).to(dev)


student, teacher = net(0.1), net(0.0)
teacher.load_state_dict(student.state_dict())
for p in teacher.parameters():
    p.requires_grad = False
spe, epochs = 100, 100
lr_s = ref.cosine_scheduler(5e-4 * B / 256, 1e-6, epochs, spe, warmup_epochs=10)
wd_s = ref.cosine_scheduler(0.04, 0.4, epochs, spe)
m_s = ref.cosine_scheduler(0.996, 1, epochs, spe)
tt = np.concatenate((np.linspace(0.04, 0.07, 30 * spe), np.ones((epochs - 30) * spe) * 0.07))
loss_fn = ref.DINOLoss(K, 2 + NL, tt).to(dev)
opt = torch.optim.AdamW(ref.get_params_groups(student))
mean = torch.tensor([0.485, 0.456, 0.406], device=dev).view(3, 1, 1)
std = torch.tensor([0.229, 0.224, 0.225], device=dev).view(3, 1, 1)
g = torch.Generator().manual_seed(0)
batches = [(torch.randint(0, 256, (2 * B, G, G, 3), dtype=torch.uint8, generator=g),
            torch.randint(0, 256, (NL * B, L, L, 3), dtype=torch.uint8, generator=g)) for _ in range(4)]


def norm(u8):  # the engine also converts u8 NHWC on the device
    x = u8.to(dev).permute(0, 3, 1, 2).contiguous().float().div(255)
    return (x - mean) / std


def step(it, gl, lo):
    for i, pg in enumerate(opt.param_groups):
        pg["lr"] = lr_s[it]
        if i == 0:
            pg["weight_decay"] = wd_s[it]
    crops = list(norm(gl).chunk(2)) + list(norm(lo).chunk(NL))
    t_out = teacher(crops[:2])
    s_out = student(crops)
    loss = loss_fn(s_out, t_out, it)
    if not np.isfinite(loss.item()):
        raise SystemExit("non-finite")
    opt.zero_grad()
    loss.backward()
    ref.clip_gradients(student, 3.0)
    opt.step()
    with torch.no_grad():
        m = m_s[it]
        for q, k in zip(student.parameters(), teacher.parameters()):
            k.data.mul_(m).add_((1 - m) * q.detach().data)


for it in range(4):
    step(it, *batches[it % 4])
times = []
for it in range(4, 4 + args.steps):
    t0 = time.perf_counter()
    step(it, *batches[it % 4])
    if dev.type == "cuda":
        torch.cuda.synchronize()
    times.append(time.perf_counter() - t0)
med = float(np.median(times))
print(f"pytorch eager {torch.__version__} threads={torch.get_num_threads()} device={dev}: "
      f"median {med * 1e3:.1f} ms/step, mean {np.mean(times) * 1e3:.1f} ms/step, {B / med:.1f} images/s")
