"""Checks dino-stream's training engine against facebookresearch/dino's code (dino_ref.py) and
timm, on the cases tests/engine_reference.rs writes. Usage: dino_reference.py CASES_DIR.

fp32 on the CPU. A value passes when |rust - torch| <= ATOL + RTOL * |torch| elementwise, with
the (ATOL, RTOL) of its quantity below; for gradients ATOL is relative to the tensor's largest
|g| (gradients span orders of magnitude; summation order alone moves small entries).
Parameters after several AdamW steps get ATOL 2e-5: AdamW normalises every update, so an entry
whose gradient is mathematically zero (the key part of the qkv bias: softmax ignores a shift
common to all keys; a bias right before a BatchNorm) moves by ±lr in the sign of float noise in
both implementations. The BatchNorm-head case therefore runs with SGD, which leaves such noise
noise-sized. The ResNet-18 case builds torchvision's resnet18 with `fc = Identity` as main_dino.py
does; BatchNorm runs in train mode in both networks (DINO never calls teacher.eval()), so the
running statistics and num_batches_tracked of student and teacher are compared too.
Prints the worst error of every quantity and exits 1 if any is out of tolerance.
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torchvision
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(__file__))
import dino_ref as ref  # noqa: E402

torch.set_num_threads(1)

TOL = {
    "schedule": (1e-12, 1e-12),
    "forward": (1e-5, 1e-5),
    "loss": (1e-6, 1e-6),
    "grad": (1e-5, 1e-4),  # ATOL × max|g| of the tensor
    "params": (2e-5, 1e-4),
    "optim": (1e-5, 1e-3),  # moments hold gradients of size ~10 here
    "center": (1e-6, 1e-5),
    "monitor": (1e-5, 1e-5),
}
PRESETS = {"vit_tiny": (192, 12, 3), "vit_small": (384, 12, 6), "vit_base": (768, 12, 12)}
failures = []
report = []


def check(case, what, kind, got, want):
    got = torch.as_tensor(got).double()
    want = torch.as_tensor(want).double()
    if got.shape != want.shape:
        failures.append(f"{case}: {what}: shape {tuple(got.shape)} vs {tuple(want.shape)}")
        return
    atol, rtol = TOL[kind]
    if kind == "grad":
        atol = atol * max(want.abs().max().item(), 1e-30)
    err = (got - want).abs()
    bad = err > atol + rtol * want.abs()
    max_abs = err.max().item() if err.numel() else 0.0
    max_rel = (err / want.abs().clamp_min(1e-12)).max().item() if err.numel() else 0.0
    report.append((case, kind, what, max_abs, max_rel))
    if bad.any():
        failures.append(f"{case}: {what}: {int(bad.sum())} of {bad.numel()} out of tolerance {TOL[kind]}, max abs {max_abs:.3e}")


def build(cfg):
    m = cfg["model"]
    dim, depth, heads = PRESETS.get(m["arch"], (m["embed_dim"], m["depth"], m["heads"]))
    g = cfg["augment"]["global_size"]

    def net():
        if m["arch"].startswith("resnet"):  # main_dino.py: torchvision ResNet, classifier removed
            backbone = torchvision.models.__dict__[m["arch"]](weights=None)
            embed_dim = backbone.fc.weight.shape[1]
            backbone.fc = nn.Identity()
            head = ref.DINOHead(embed_dim, m["out_dim"], use_bn=m["head_bn"], norm_last_layer=m["norm_last_layer"],
                                nlayers=m["head_layers"], hidden_dim=m["head_hidden"], bottleneck_dim=m["head_bottleneck"])
            return ref.MultiCropWrapper(backbone, head)
        vit = ref.VisionTransformer(img_size=[g], patch_size=m["patch_size"], embed_dim=dim, depth=depth, num_heads=heads,
                                    mlp_ratio=m["mlp_ratio"], qkv_bias=True, norm_layer=lambda d: nn.LayerNorm(d, eps=1e-6))
        head = ref.DINOHead(dim, m["out_dim"], use_bn=m["head_bn"], norm_last_layer=m["norm_last_layer"], nlayers=m["head_layers"],
                            hidden_dim=m["head_hidden"], bottleneck_dim=m["head_bottleneck"])
        return ref.MultiCropWrapper(vit, head)

    return net(), net()


def sub(state, prefix):
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def images(io, s, cfg, bsz):
    a = cfg["augment"]
    t = cfg["train"]
    mean = torch.tensor(t["normalize_mean"], dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(t["normalize_std"], dtype=torch.float32).view(3, 1, 1)

    def norm(u8, n, side):
        x = u8.view(n, side, side, 3).permute(0, 3, 1, 2).contiguous().float().div(255)
        return (x - mean) / std  # torchvision Normalize: tensor.sub_(mean).div_(std)

    glob = norm(io[f"batch{s}.global"], 2 * bsz, a["global_size"]).chunk(2)
    crops = list(glob)
    if a["local_crops"] > 0:
        crops += list(norm(io[f"batch{s}.local"], a["local_crops"] * bsz, a["local_size"]).chunk(a["local_crops"]))
    return crops


def run_case(case_dir):
    case = os.path.basename(case_dir)
    cfg = json.load(open(os.path.join(case_dir, "config.json")))
    t, plan, steps = cfg["train"], cfg["plan"], cfg["steps"]
    spe, epochs = plan["steps_per_epoch"], plan["epochs"]
    bsz = t["batch_size"]
    io = load_file(os.path.join(case_dir, "io.safetensors"))
    state0 = load_file(os.path.join(case_dir, "state_0.safetensors"))
    student, teacher = build(cfg)
    student.load_state_dict(sub(state0, "student."), strict=True)
    teacher.load_state_dict(sub(state0, "teacher."), strict=True)
    for p in teacher.parameters():
        p.requires_grad = False

    # Schedules (main_dino.py), teacher temperature per step.
    total = spe * epochs
    lr_s = ref.cosine_scheduler(t["base_lr"] * bsz / 256.0, t["min_lr"], epochs, spe, warmup_epochs=t["warmup_epochs"])
    wd_s = ref.cosine_scheduler(t["weight_decay"], t["weight_decay_end"], epochs, spe)
    m_s = ref.cosine_scheduler(t["momentum_teacher"], 1, epochs, spe)
    w = int(round(t["warmup_teacher_temp_epochs"] * spe))
    tt_s = np.concatenate((np.linspace(t["warmup_teacher_temp"], t["teacher_temp"], w), np.ones(total - w) * t["teacher_temp"]))
    for name, s in [("lr", lr_s), ("wd", wd_s), ("momentum", m_s), ("teacher_temp", tt_s)]:
        check(case, f"schedule {name}", "schedule", io[f"sched.{name}"], torch.from_numpy(s))
    freeze_steps = int(round(t["freeze_last_layer_epochs"] * spe))
    ncrops = 2 + cfg["augment"]["local_crops"]
    loss_fn = ref.DINOLoss(cfg["model"]["out_dim"], ncrops, tt_s, t["student_temp"], t["center_momentum"], t["centering"])
    loss_fn.center.copy_(state0["loss.center"])

    # Step-0 forward and gradients, against the engine's pieces.
    if "fwd.loss" in io:
        crops = images(io, 0, cfg, bsz)
        check(case, "backbone (2 globals)", "forward", io["fwd.backbone_global"], student.backbone(torch.cat(crops[:2])))
        check(case, "backbone (locals, interpolated pos_embed)", "forward", io["fwd.backbone_local"], student.backbone(torch.cat(crops[2:])))
        s_out = student(crops)
        t_out = teacher(crops[:2])
        check(case, "student head output", "forward", io["fwd.student_out"], s_out)
        probe = ref.DINOLoss(cfg["model"]["out_dim"], ncrops, tt_s, t["student_temp"], t["center_momentum"], False)
        probe.center.copy_(loss_fn.center)
        loss = probe(s_out, t_out, 0)
        check(case, "loss step 0", "loss", io["fwd.loss"], loss.detach().view(1))
        loss.backward()
        for n, p in student.named_parameters():
            if p.requires_grad:
                check(case, f"grad {n}", "grad", io[f"grad.{n}"], p.grad)
        student.zero_grad(set_to_none=True)

    groups = ref.get_params_groups(student)
    kind = t["optimizer"]
    if kind == "adamw":
        opt = torch.optim.AdamW(groups, foreach=False)
    elif kind == "sgd":
        opt = torch.optim.SGD(groups, lr=0, momentum=0.9, foreach=False)
    else:
        opt = ref.LARS(groups)
    names = {p: n for n, p in student.named_parameters()}

    for it in range(steps):
        for i, pg in enumerate(opt.param_groups):
            pg["lr"] = lr_s[it]
            if i == 0:
                pg["weight_decay"] = wd_s[it]
        crops = images(io, it, cfg, bsz)
        teacher_output = teacher(crops[:2])
        student_output = student(crops)
        with torch.no_grad():  # collapse monitors: teacher distribution before the centre moves
            logits = (teacher_output - loss_fn.center) / tt_s[it]
            q, log_q = logits.softmax(-1), logits.log_softmax(-1)
            ent = -(q * log_q).sum(-1).mean()
            mean_q = q.mean(0)
            mean_ent = -(mean_q * mean_q.clamp_min(1e-30).log()).sum()
            active = (mean_q > 1.0 / (10 * q.shape[1])).float().mean()
        loss = loss_fn(student_output, teacher_output, it)
        check(case, f"loss step {it}", "loss", io["losses"][it:it + 1], loss.detach().view(1))
        kl = loss.detach() - ent
        mon = torch.stack([ent, mean_ent, kl, loss_fn.center.norm(), active])
        check(case, f"monitors step {it} (H, H(mean), KL, |c|, active)", "monitor", io[f"monitors{it}"], mon)
        opt.zero_grad()
        loss.backward()
        if t["clip_grad"]:
            ref.clip_gradients(student, t["clip_grad"])
        ref.cancel_gradients_last_layer_steps(it, student, freeze_steps)
        opt.step()
        with torch.no_grad():
            if t["teacher_update"] == "ema":
                m = m_s[it]
            elif (it + 1) % spe == 0:
                m = float(np.prod(m_s[it + 1 - spe: it + 1]))
            else:
                m = None
            if m is not None:
                for param_q, param_k in zip(student.parameters(), teacher.parameters()):
                    param_k.data.mul_(m).add_((1 - m) * param_q.detach().data)

        st = load_file(os.path.join(case_dir, f"state_{it + 1}.safetensors"))
        for n, v in student.state_dict().items():
            check(case, f"step {it + 1} student {n}", "params", st[f"student.{n}"], v)
        for n, v in teacher.state_dict().items():
            check(case, f"step {it + 1} teacher {n}", "params", st[f"teacher.{n}"], v)
        check(case, f"step {it + 1} center", "center", st["loss.center"], loss_fn.center)
        for p, n in names.items():
            if not p.requires_grad:
                continue
            s = opt.state.get(p, {})
            buf_names = {"adamw": ["exp_avg", "exp_avg_sq"], "sgd": ["momentum_buffer"], "lars": ["mu"]}[kind]
            steps_done = st[f"optim.{n}.step"].item()
            if "step" in s:
                check(case, f"step {it + 1} optim {n}.step", "optim", st[f"optim.{n}.step"], s["step"])
            for b in buf_names:
                want = s.get(b)
                if want is None:
                    want = torch.zeros_like(p)
                check(case, f"step {it + 1} optim {n}.{b}", "optim", st[f"optim.{n}.{b}"], want)
            if not s and steps_done != 0:
                failures.append(f"{case}: {n} stepped in rust but not in torch")


def main():
    root = sys.argv[1]
    for name in sorted(os.listdir(root)):
        run_case(os.path.join(root, name))
    worst = {}
    for case, kind, what, a, r in report:
        key = (case, kind)
        if key not in worst or a > worst[key][1]:
            worst[key] = (what, a, r)
    print(f"{len(report)} comparisons; worst per case and quantity (max abs, max rel):")
    for (case, kind), (what, a, r) in sorted(worst.items()):
        print(f"  {case:28s} {kind:9s} {a:.2e} {r:.2e}  ({what}; tol {TOL[kind]})")
    if failures:
        print(f"{len(failures)} FAILURES:")
        for f in failures[:60]:
            print("  " + f)
        sys.exit(1)
    print("all within tolerance")


if __name__ == "__main__":
    main()
