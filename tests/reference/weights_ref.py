"""Makes the weight files and expected outputs for tests/weights_import.rs with DINO's own model
code (dino_ref.py) and timm, all in fp32 on the CPU; nothing is downloaded.

Usage: weights_ref.py OUT_DIR. Writes:
  backbone.pth          a bare DINO ViT state dict (like dino_vits16_pretrain.pth)
  backbone.safetensors  the same tensors as safetensors
  full.pth              a DINO training checkpoint: student (DDP `module.` prefix) and teacher
                        MultiCropWrapper state dicts, optimizer, epoch, argparse args, dino_loss
  timm.pth, timm.safetensors   a timm VisionTransformer with a 5-class classifier head
  tensors.pth           odd tensors for the pickle reader: fp16, bf16, float64, int64, a
                        transposed (non-contiguous) view, two views of one storage, nesting
  expected.safetensors  inputs (u8 images, 40x48: not the native 32x32) and expected outputs:
                        DINO's get_last_selfattention, the 60%-mass masks of visualize_attention.py,
                        get_intermediate_layers(n=2), CLS features of every model, the odd tensors
"""
import argparse
import os
import sys
from functools import partial

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
import dino_ref  # noqa: E402

import timm  # noqa: E402

torch.manual_seed(0)
torch.set_num_threads(1)
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
DIM, DEPTH, HEADS, PATCH, IMG = 128, 2, 2, 8, 32  # width/64 heads, as the importer assumes


def randomize(model, scale=0.2):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight_g"):
                continue
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(scale * torch.randn_like(p))
    return model


def dino_vit():
    # As DINO's vit_tiny/small/base: qkv_bias=True, LayerNorm eps 1e-6.
    return randomize(dino_ref.VisionTransformer(
        img_size=[IMG], patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=HEADS, qkv_bias=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6))).eval()


images = torch.randint(0, 256, (2, 40, 48, 3), dtype=torch.uint8)
x = (images.permute(0, 3, 1, 2).float() / 255 - MEAN) / STD
expected = {"images": images}

# A bare backbone, as the official *_pretrain.pth files.
vit = dino_vit()
torch.save(vit.state_dict(), os.path.join(out, "backbone.pth"))
save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, os.path.join(out, "backbone.safetensors"))
with torch.no_grad():
    attn = vit.get_last_selfattention(x)
    expected["attention"] = attn
    expected["features"] = vit(x)
    for i, t in enumerate(vit.get_intermediate_layers(x, n=2)):
        expected[f"intermediate{i}"] = t
# visualize_attention.py's mask for image 0, at 60% of the mass.
nh = attn.shape[1]
a = attn[0, :, 0, 1:].reshape(nh, -1)
val, idx = torch.sort(a)
val /= torch.sum(val, dim=1, keepdim=True)
cumval = torch.cumsum(val, dim=1)
th_attn = cumval > (1 - 0.6)
idx2 = torch.argsort(idx)
for head in range(nh):
    th_attn[head] = th_attn[head][idx2[head]]
expected["mask60"] = th_attn.to(torch.uint8)
expected["cls_attention0"] = a

# A full DINO training checkpoint (main_dino.py's save_dict).
student = dino_ref.MultiCropWrapper(dino_vit(), dino_ref.DINOHead(DIM, 64, hidden_dim=32, bottleneck_dim=16))
teacher = dino_ref.MultiCropWrapper(dino_vit(), dino_ref.DINOHead(DIM, 64, hidden_dim=32, bottleneck_dim=16))
optimizer = torch.optim.AdamW(student.parameters())
student.train()
student(x).sum().backward()
optimizer.step()
student.eval()
save_dict = {
    "student": {"module." + k: v for k, v in student.state_dict().items()},
    "teacher": teacher.state_dict(),
    "optimizer": optimizer.state_dict(),
    "epoch": 3,
    "args": argparse.Namespace(arch="vit_small", patch_size=PATCH, out_dim=64, lr=0.0005),
    "dino_loss": {"center": torch.randn(1, 64)},
}
torch.save(save_dict, os.path.join(out, "full.pth"))
with torch.no_grad():
    expected["teacher_features"] = teacher.backbone(x)
    expected["student_features"] = student.backbone(x)

# timm's ViT (its own code), with a classifier head that the importer must drop.
tm = timm.models.vision_transformer.VisionTransformer(
    img_size=IMG, patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=HEADS, qkv_bias=True,
    num_classes=5, dynamic_img_size=True)
randomize(tm).eval()
torch.save(tm.state_dict(), os.path.join(out, "timm.pth"))
save_file({k: v.contiguous() for k, v in tm.state_dict().items()}, os.path.join(out, "timm.safetensors"))
with torch.no_grad():
    x32 = x[:, :, :32, :32]  # timm's interpolation differs from DINO's: compare at the native size
    expected["timm_features"] = tm.forward_head(tm.forward_features(x32), pre_logits=True)

# Odd tensors for the pickle reader.
base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 7
odd = {
    "nested": {"half": torch.randn(3, 5).half(), "bf16": torch.randn(7).bfloat16()},
    "double": torch.randn(2, 2, dtype=torch.float64),
    "long": torch.arange(5) * 1000000007,
    "transposed": base.t(),
    "view_a": base[1:3],
    "view_b": base[:, 2],
    "param": torch.nn.Parameter(torch.randn(3)),
    "scalar": torch.tensor(2.5),
    "not_a_tensor": [1, 2.0, "three"],
}
torch.save(odd, os.path.join(out, "tensors.pth"))
expected.update({
    "nested.half": odd["nested"]["half"], "nested.bf16": odd["nested"]["bf16"],
    "double": odd["double"], "long": odd["long"], "transposed": odd["transposed"].contiguous(),
    "view_a": odd["view_a"].contiguous(), "view_b": odd["view_b"].contiguous(),
    "param": odd["param"].detach(), "scalar": odd["scalar"],
})
save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(out, "expected.safetensors"))
print("wrote", sorted(os.listdir(out)))
