"""Loads backbones exported by dino-stream into timm (ViT) or torchvision (ResNet) (strict=True, pretrained=False: nothing is
downloaded) and compares timm's features with the engine's on the same u8 images; then runs the
loader `dino-stream export` printed (load.py) and compares its model's features the same way.
Usage: export_check.py CASES_DIR. Tolerance: |Δ| <= 1e-4 + 1e-4·|f| (fp32; timm uses fused
attention, the engine SDPA, so summation orders differ)."""
import json
import os
import sys

import timm
import torch
import torchvision
from safetensors.torch import load_file
from torchvision.models.resnet import BasicBlock

torch.set_num_threads(1)
PRESETS = {"vit_tiny": (192, 12, 3), "vit_small": (384, 12, 6), "vit_base": (768, 12, 12)}
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
failed = False
for name in sorted(os.listdir(sys.argv[1])):
    d = os.path.join(sys.argv[1], name)
    cfg = json.load(open(os.path.join(d, "config.json")))
    m, g = cfg["model"], cfg["augment"]["global_size"]
    if m["arch"] == "resnet_small":  # built here independently of the printed loader below
        model = torchvision.models.resnet.ResNet(BasicBlock, [1, 1, 1, 1])
        w, n = m["resnet_width"], m["resnet_blocks"]
        model.inplanes = w
        model.conv1 = torch.nn.Conv2d(3, w, 3, 1, 1, bias=False)
        model.bn1 = torch.nn.BatchNorm2d(w)
        model.maxpool = torch.nn.Identity()
        model.layer1 = model._make_layer(BasicBlock, w, n)
        model.layer2 = model._make_layer(BasicBlock, 2 * w, n, stride=2)
        model.layer3 = model._make_layer(BasicBlock, 4 * w, n, stride=2)
        model.layer4 = model.fc = torch.nn.Identity()
        model.avgpool = torch.nn.AdaptiveAvgPool2d(m["resnet_pool_grid"])
    elif m["arch"].startswith("resnet"):
        model = torchvision.models.__dict__[m["arch"]](weights=None)
        model.fc = torch.nn.Identity()  # DINO removes the classifier
    elif m["arch"] in PRESETS and name.startswith("vit_"):
        model = timm.create_model(name, pretrained=False, num_classes=0)
    else:
        dim, depth, heads = PRESETS.get(m["arch"], (m["embed_dim"], m["depth"], m["heads"]))
        model = timm.models.vision_transformer.VisionTransformer(
            img_size=g, patch_size=m["patch_size"], embed_dim=dim, depth=depth, num_heads=heads,
            mlp_ratio=m["mlp_ratio"], qkv_bias=True, num_classes=0)
    sd = load_file(os.path.join(d, "backbone.safetensors"))
    model.load_state_dict(sd, strict=True)
    model.eval()
    io = load_file(os.path.join(d, "io.safetensors"))
    x = io["images"].permute(0, 3, 1, 2).contiguous().float().div(255)
    x = (x - MEAN) / STD
    with torch.no_grad():
        f = model(x)
    err = (f - io["features"]).abs()
    ok = bool((err <= 1e-4 + 1e-4 * f.abs()).all())
    # The Python that `dino-stream export` prints for this backbone, run as a user would.
    scope = {}
    exec(open(os.path.join(d, "load.py")).read(), scope)
    scope["model"].eval()
    with torch.no_grad():
        printed = (scope["model"](x) - io["features"]).abs()
    ok_printed = bool((printed <= 1e-4 + 1e-4 * f.abs()).all())
    print(f"{name}: {len(sd)} tensors loaded strict, features {tuple(f.shape)}, max abs diff {err.max().item():.2e} {'ok' if ok else 'FAIL'}; "
          f"printed loader max abs diff {printed.max().item():.2e} {'ok' if ok_printed else 'FAIL'}")
    failed |= not (ok and ok_printed)
sys.exit(1 if failed else 0)
