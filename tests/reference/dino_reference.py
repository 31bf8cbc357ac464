"""Checks dino-stream's training engine against facebookresearch/dino's code (dino_ref.py) and
torchvision, on the cases tests/engine_reference.rs writes.

Usage:
    dino_reference.py CASES_DIR                 check the engine, then check that the mutants fail
    dino_reference.py CASES_DIR --dump FILE     also save every torch-side quantity computed
    dino_reference.py --noise A B               compare two dumps (PyTorch against itself)

## Why every step starts from the engine's own state
Chaining several steps through both implementations and comparing the ends is ill-conditioned:
AdamW's first updates are close to `lr · sign(g)`, so a last-bit difference in a gradient that is
mathematically ~0 (the key bias of attention; a bias in front of BatchNorm) becomes a whole
`±lr` difference in a weight, which the next forward amplifies, and BatchNorm amplifies it again.
Which elements flip depends on the CPU's kernels (MKL, oneDNN, ATen's AVX2/AVX-512 paths), so a
tolerance that passes on one CPU fails on the next. Here each step `s` is checked on its own,
from the engine's state before it (`state_s`), and each piece of the step gets the *same inputs*
on both sides, so nothing compounds and no piece sees another piece's noise:

- forward and loss: torch runs the step's forward from `state_s` (loss, monitors, centre update,
  BatchNorm running statistics) — compared with the engine's values;
- gradients: torch's gradient of that loss, clipped by DINO's `clip_gradients` — compared with
  the gradient the engine's optimiser consumed, relative to the tensor's largest entry (a
  gradient's small entries carry only summation-order noise);
- optimiser: torch.optim (or DINO's LARS) steps from `state_s`'s moments with *the engine's*
  gradients, after DINO's last-layer cancel — compared with `state_{s+1}`. Given identical
  inputs the update is elementwise arithmetic, so this check is tight (units of `lr`);
- teacher: DINO's EMA of `state_s`'s teacher towards the engine's student of `state_{s+1}`.

## Tolerances
A value passes when |rust - torch| <= ATOL + RTOL * |torch| + COND_FACTOR * e32 elementwise,
where e32 is the reference's own float32 error on this machine: the largest distance between
torch's float32 result and a float64 run of the same piece from the same state. For gradients
ATOL is relative to the tensor's largest |g|, for parameter updates ATOL is in units of the
step's lr. Why the e32 term: how well float32 resolves a quantity depends on the kernels, not
only on the formula. ResNet gradients through BatchNorms over a few values are the case in
point: PyTorch's own float32 gradients from oneDNN's AVX2 convolution backward differ from its
AVX-512 path by up to ~2% of the tensor's largest entry (measured on an AMD EPYC with AVX-512,
`DNNL_MAX_CPU_ISA=AVX2` against the default). Engine and reference run
the same libtorch kernels, so they share that error; a fixed tolerance wide enough for it would
hide real bugs everywhere else, while e32 is ~1e-7 relative for well-conditioned quantities and
adds nothing there. `--noise` reports PyTorch against itself (other thread counts, other kernel
paths) with these tolerances; docs/ARCHITECTURE.md ("Numeric tests") has the figures.

## The checks can fail
After the engine passes, the same checks run against mutated references — a swapped loss sign,
a wrong teacher temperature, no centre update, a wrong clip threshold, a wrong teacher momentum,
a wrong optimiser momentum, a wrong Adam beta — and each must be caught (exit 1 otherwise).
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torchvision
from safetensors import safe_open
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(__file__))
import dino_ref as ref  # noqa: E402

torch.set_num_threads(int(os.environ.get("DINO_REF_THREADS", "1")))

TOL = {
    "schedule": (1e-12, 1e-12),
    "forward": (1e-5, 1e-5),
    "loss": (2e-6, 2e-6),
    "monitor": (1e-5, 1e-5),
    "grad": (1e-4, 1e-3),  # ATOL x max|g| of the tensor
    "update": (1e-4, 2e-6),  # ATOL x lr: the update itself is elementwise given the same gradient
    "optim": (1e-7, 1e-5),  # moments from identical gradients
    "ema": (1e-7, 1e-6),
    "center": (1e-6, 1e-5),
    "bn": (1e-5, 1e-4),  # BatchNorm running statistics after one forward
    "zero_grad": (None, None),  # see ZERO_GRAD_SHARE
}
# Some gradients are mathematically zero: the bias of a layer whose output feeds a BatchNorm
# (the norm removes any shift), and anything whose only effect is such a shift (the ViT's last
# LayerNorm bias in front of a BN head). Both sides hold summation noise there (measured: up to
# ~1e-4 of the model's largest gradient), which nothing can compare elementwise. These tensors
# are found by a float64 run of the same step (their gradient vanishes there), and must stay
# below ZERO_GRAD_SHARE of the model's largest gradient on both sides; the optimiser check
# still sees them, on identical inputs.
ZERO_GRAD_SHARE = 1e-3
ZERO_IN_FLOAT64 = 1e-9  # |g| / max|g| below this in float64: mathematically zero
# How far the engine may be from the reference, beyond each TOL, in units of the reference's own
# float32 error (its distance from a float64 run of the same step). Well-conditioned quantities
# have a float32 error near 1e-7 relative and this adds nothing; an ill-conditioned one (ResNet
# gradients through BatchNorms over a few values: PyTorch's float32 gradients are up to ~10% of
# the tensor's largest entry away from float64, measured) gets the room float32 needs.
COND_FACTOR = 10.0
PRESETS = {"vit_tiny": (192, 12, 3), "vit_small": (384, 12, 6), "vit_base": (768, 12, 12)}
MUTANTS = {
    # name: (case it runs on, what the mutated reference does)
    "loss_sign": ("adamw", "minimises the negated loss"),
    "teacher_temp": ("adamw", "sharpens the teacher with 1.1x the scheduled temperature"),
    "student_temp": ("sgd", "uses student temperature 0.11 instead of 0.1"),
    "no_center_update": ("adamw", "never updates the centre"),
    "clip": ("adamw", "clips gradients at 2x the threshold"),
    "teacher_momentum": ("adamw", "uses teacher momentum 0.99 instead of the schedule's"),
    "sgd_momentum": ("sgd", "uses SGD momentum 0.8 instead of 0.9"),
    "adam_beta2": ("adamw", "uses Adam beta2 0.99 instead of 0.999"),
    "no_freeze": ("adamw", "does not cancel the last layer's gradient in the first steps"),
}


class Checker:
    def __init__(self, dump=None):
        self.failures = []
        self.report = []
        self.dump = dump  # {key: torch value}, with each key's kind and scale in dump_meta
        self.dump_meta = {}

    def check(self, case, what, kind, got, want, scale=1.0, want64=None):
        """`want64`: the same quantity from a float64 run of the reference; the tolerance grows by
        COND_FACTOR times the reference's own float32 error (how well float32 resolves it)."""
        want = torch.as_tensor(want).detach()
        cond = 0.0 if want64 is None else (want.double() - torch.as_tensor(want64).double()).abs().max().item()
        if self.dump is not None:
            key = f"{case}/{what}"
            self.dump[key] = want.double().contiguous().clone()
            self.dump_meta[key] = [kind, float(scale), cond]
        got = torch.as_tensor(got).double()
        want = want.double()
        if got.shape != want.shape:
            self.failures.append(f"{case}: {what}: shape {tuple(got.shape)} vs {tuple(want.shape)}")
            return
        atol, rtol = TOL[kind]
        if kind == "grad":
            atol = atol * max(want.abs().max().item(), 1e-30)
        atol = atol * scale + COND_FACTOR * cond
        err = (got - want).abs()
        allowed = atol + rtol * want.abs()
        bad = err > allowed
        max_abs = err.max().item() if err.numel() else 0.0
        # Share of the tolerance used (an exact match within a zero tolerance uses none of it).
        ratio = torch.where(err == 0, torch.zeros_like(err), err / allowed)
        used = ratio.max().item() if err.numel() else 0.0
        self.report.append((case, kind, what, max_abs, used))
        if bad.any():
            self.failures.append(f"{case}: {what}: {int(bad.sum())} of {bad.numel()} out of tolerance "
                                 f"{TOL[kind]} + {COND_FACTOR} x {cond:.2e}, max abs {max_abs:.3e}")


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


def schedules(t, spe, epochs):
    """main_dino.py's schedules, the teacher temperature per step (see dino_ref.py)."""
    total = spe * epochs
    lr_s = ref.cosine_scheduler(t["base_lr"] * t["batch_size"] / 256.0, t["min_lr"], epochs, spe, warmup_epochs=t["warmup_epochs"])
    wd_s = ref.cosine_scheduler(t["weight_decay"], t["weight_decay_end"], epochs, spe)
    m_s = ref.cosine_scheduler(t["momentum_teacher"], 1, epochs, spe)
    w = int(round(t["warmup_teacher_temp_epochs"] * spe))
    tt_s = np.concatenate((np.linspace(t["warmup_teacher_temp"], t["teacher_temp"], w), np.ones(total - w) * t["teacher_temp"]))
    return {"lr": lr_s, "wd": wd_s, "momentum": m_s, "teacher_temp": tt_s}


def make_optimizer(kind, groups, mutant):
    if kind == "adamw":
        betas = (0.9, 0.99) if mutant == "adam_beta2" else (0.9, 0.999)
        return torch.optim.AdamW(groups, betas=betas, foreach=False)
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=0, momentum=0.8 if mutant == "sgd_momentum" else 0.9, foreach=False)
    return ref.LARS(groups)


def load_optimizer_state(opt, kind, student, state):
    """The engine's optimiser state (`optim.NAME.*`, torch's names) into a torch optimiser."""
    for n, p in student.named_parameters():
        if not p.requires_grad:
            continue
        done = state[f"optim.{n}.step"].item()
        if kind == "lars":  # DINO's LARS keeps `mu` from its first step on, zeros before.
            opt.state[p] = {"mu": state[f"optim.{n}.mu"].clone()}
        elif done > 0:
            if kind == "adamw":
                opt.state[p] = {"step": torch.tensor(float(done)), "exp_avg": state[f"optim.{n}.exp_avg"].clone(),
                                "exp_avg_sq": state[f"optim.{n}.exp_avg_sq"].clone()}
            else:
                opt.state[p] = {"momentum_buffer": state[f"optim.{n}.momentum_buffer"].clone()}


def nets_from(cfg, state, dtype):
    student, teacher = build(cfg)
    student.load_state_dict(sub(state, "student."), strict=True)
    teacher.load_state_dict(sub(state, "teacher."), strict=True)
    for p in teacher.parameters():
        p.requires_grad = False
    return student.to(dtype), teacher.to(dtype)


def zero_gradients(grads64):
    """Names of the tensors whose gradient vanishes in the float64 run."""
    top = max(g.abs().max().item() for g in grads64.values())
    return {n for n, g in grads64.items() if g.abs().max().item() <= ZERO_IN_FLOAT64 * top}


def check_grads(chk, case, label, grads, grads64, engine_grad):
    zero = zero_gradients(grads64)
    bound = ZERO_GRAD_SHARE * max(g.abs().max().item() for g in grads.values())
    for n, g in grads.items():
        if n in zero:
            worst = max(g.abs().max().item(), engine_grad(n).abs().max().item())
            chk.report.append((case, "zero_grad", f"{label} {n}", worst, worst / bound))
            if worst > bound:
                chk.failures.append(f"{case}: {label} {n}: a zero gradient reached {worst:.3e} (bound {bound:.3e})")
        else:
            chk.check(case, f"{label} {n}", "grad", engine_grad(n), g, want64=grads64[n])


def probe_pieces(student, teacher, crops, center, temp, ncrops, out_dim, student_temp):
    """The step-0 pieces the engine wrote, in the nets' dtype: backbone features, head output,
    loss (centre fixed), and the loss's gradients before clipping."""
    dtype = next(student.parameters()).dtype
    crops = [c.to(dtype) for c in crops]
    out = {"fwd.backbone_global": student.backbone(torch.cat(crops[:2])).detach(),
           "fwd.backbone_local": student.backbone(torch.cat(crops[2:])).detach()}
    s_out = student(crops)
    t_out = teacher(crops[:2])
    probe = ref.DINOLoss(out_dim, ncrops, [temp], student_temp, 0.9, False).to(dtype)
    probe.center.copy_(center)
    loss = probe(s_out, t_out, 0)
    out["fwd.student_out"] = s_out.detach()
    out["fwd.loss"] = loss.detach().view(1)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in student.named_parameters() if p.requires_grad}
    return out, grads


def step_pieces(student, teacher, crops, loss_fn, it, temp, clip, negate):
    """One step's forward and backward from the loaded state, in the nets' dtype: loss,
    monitors, centre after its update, clipped gradients, BatchNorm buffers."""
    dtype = next(student.parameters()).dtype
    crops = [c.to(dtype) for c in crops]
    teacher_output = teacher(crops[:2])
    student_output = student(crops)
    with torch.no_grad():  # collapse monitors: teacher distribution before the centre moves
        logits = (teacher_output - loss_fn.center) / temp
        q, log_q = logits.softmax(-1), logits.log_softmax(-1)
        ent = -(q * log_q).sum(-1).mean()
        mean_q = q.mean(0)
        mean_ent = -(mean_q * mean_q.clamp_min(1e-30).log()).sum()
        active = (mean_q > 1.0 / (10 * q.shape[1])).to(dtype).mean()
    loss = loss_fn(student_output, teacher_output, it)
    if negate:
        loss = -loss
    kl = loss.detach() - ent
    out = {"loss": loss.detach().view(1), "monitors": torch.stack([ent, mean_ent, kl, loss_fn.center.norm(), active]),
           "center": loss_fn.center.clone()}
    loss.backward()
    if clip:
        ref.clip_gradients(student, clip)
    grads = {n: p.grad.clone() for n, p in student.named_parameters() if p.requires_grad}
    for prefix, net in (("student.", student), ("teacher.", teacher)):
        for n, b in net.named_buffers():
            out[prefix + n] = b.clone()
    return out, grads


def run_case(case_dir, chk, mutant=None):
    case = os.path.basename(case_dir)
    cfg = json.load(open(os.path.join(case_dir, "config.json")))
    t, plan, steps = cfg["train"], cfg["plan"], cfg["steps"]
    spe, epochs = plan["steps_per_epoch"], plan["epochs"]
    bsz = t["batch_size"]
    io = load_file(os.path.join(case_dir, "io.safetensors"))
    states = [load_file(os.path.join(case_dir, f"state_{s}.safetensors")) for s in range(steps + 1)]
    student, teacher = build(cfg)
    for p in teacher.parameters():
        p.requires_grad = False
    kind = t["optimizer"]
    sched = schedules(t, spe, epochs)
    if mutant is None:
        for name, s in sched.items():
            chk.check(case, f"schedule {name}", "schedule", io[f"sched.{name}"], torch.from_numpy(s))
    tt_s = sched["teacher_temp"] * (1.1 if mutant == "teacher_temp" else 1.0)
    student_temp = 0.11 if mutant == "student_temp" else t["student_temp"]
    freeze_steps = -1 if mutant == "no_freeze" else int(round(t["freeze_last_layer_epochs"] * spe))
    clip = t["clip_grad"] * (2.0 if mutant == "clip" else 1.0)
    ncrops = 2 + cfg["augment"]["local_crops"]
    centering = t["centering"] and mutant != "no_center_update"

    out_dim = cfg["model"]["out_dim"]

    def loss_for(dtype, center):
        fn = ref.DINOLoss(out_dim, ncrops, tt_s, student_temp, t["center_momentum"], centering).to(dtype)
        fn.center.copy_(center)
        return fn

    # Step-0 forward pieces and pre-clip gradients, against the engine's (float32 and float64).
    if "fwd.loss" in io and mutant is None:
        crops = images(io, 0, cfg, bsz)
        pieces = {}
        for dtype in (torch.float32, torch.float64):
            s_net, t_net = nets_from(cfg, states[0], dtype)
            pieces[dtype] = probe_pieces(s_net, t_net, crops, states[0]["loss.center"], tt_s[0], ncrops, out_dim, student_temp)
        (p32, g32), (p64, g64) = pieces[torch.float32], pieces[torch.float64]
        for key, what, quantity in (("fwd.backbone_global", "backbone (2 globals)", "forward"),
                                ("fwd.backbone_local", "backbone (locals, interpolated pos_embed)", "forward"),
                                ("fwd.student_out", "student head output", "forward"), ("fwd.loss", "loss step 0", "loss")):
            chk.check(case, what, quantity, io[key], p32[key], want64=p64[key])
        check_grads(chk, case, "grad", g32, g64, lambda n: io[f"grad.{n}"])

    for it in range(steps):
        before, after = states[it], states[it + 1]
        student.load_state_dict(sub(before, "student."), strict=True)
        teacher.load_state_dict(sub(before, "teacher."), strict=True)
        student.zero_grad(set_to_none=True)  # the previous step's optimiser input
        lr = sched["lr"][it]

        # Forward from the engine's state, in float32 and (for the tolerances) float64: loss,
        # monitors, centre, clipped gradients, BatchNorm statistics.
        crops = images(io, it, cfg, bsz)
        negate = mutant == "loss_sign"
        q32, g32 = step_pieces(student, teacher, crops, loss_for(torch.float32, before["loss.center"]), it, tt_s[it], clip, negate)
        s64, t64 = nets_from(cfg, before, torch.float64)
        q64, g64 = step_pieces(s64, t64, crops, loss_for(torch.float64, before["loss.center"]), it, tt_s[it], clip, negate)
        chk.check(case, f"loss step {it}", "loss", io["losses"][it:it + 1], q32["loss"], want64=q64["loss"])
        chk.check(case, f"monitors step {it} (H, H(mean), KL, |c|, active)", "monitor", io[f"monitors{it}"], q32["monitors"],
                  want64=q64["monitors"])
        chk.check(case, f"step {it + 1} center", "center", after["loss.center"], q32["center"], want64=q64["center"])
        check_grads(chk, case, f"step {it} clipped grad", g32, g64, lambda n: io[f"grad{it}.{n}"])
        for key in q32:
            if key.startswith(("student.", "teacher.")):
                chk.check(case, f"step {it + 1} {key}", "bn", after[key], q32[key], want64=q64[key])

        # Optimiser from the engine's moments with the engine's gradients.
        groups = ref.get_params_groups(student)
        opt = make_optimizer(kind, groups, mutant)
        load_optimizer_state(opt, kind, student, before)
        for i, pg in enumerate(opt.param_groups):
            pg["lr"] = lr
            if i == 0:
                pg["weight_decay"] = sched["wd"][it]
        for n, p in student.named_parameters():
            if p.requires_grad:
                p.grad = io[f"grad{it}.{n}"].clone()
        ref.cancel_gradients_last_layer_steps(it, student, freeze_steps)
        opt.step()
        for n, p in student.named_parameters():
            chk.check(case, f"step {it + 1} student {n}", "update", after[f"student.{n}"], p.detach(), scale=lr)
            for b, v in opt.state.get(p, {}).items():
                if b == "step":
                    chk.check(case, f"step {it + 1} optim {n}.step", "optim", after[f"optim.{n}.step"], v)
                else:
                    chk.check(case, f"step {it + 1} optim {n}.{b}", "optim", after[f"optim.{n}.{b}"], v)
            if p.requires_grad and not opt.state.get(p) and after[f"optim.{n}.step"].item() != 0:
                chk.failures.append(f"{case}: {n} stepped in rust but not in torch")

        # Teacher: DINO's EMA towards the engine's updated student.
        with torch.no_grad():
            if mutant == "teacher_momentum":
                m = 0.99
            elif t["teacher_update"] == "ema":
                m = sched["momentum"][it]
            elif (it + 1) % spe == 0:
                m = float(np.prod(sched["momentum"][it + 1 - spe: it + 1]))
            else:
                m = None
            if m is not None:
                for (n, param_k) in teacher.named_parameters():
                    param_k.data.mul_(m).add_((1 - m) * after[f"student.{n}"])
        for n, p in teacher.named_parameters():
            chk.check(case, f"step {it + 1} teacher {n}", "ema", after[f"teacher.{n}"], p.detach())


def summary(chk, title):
    worst = {}
    for case, kind, what, a, used in chk.report:
        key = (case, kind)
        if key not in worst or used > worst[key][2]:
            worst[key] = (what, a, used)
    print(f"{title}: {len(chk.report)} comparisons; worst per case and quantity (max abs, share of tolerance used):")
    for (case, kind), (what, a, used) in sorted(worst.items()):
        print(f"  {case:28s} {kind:9s} {a:.2e} {used:8.4f}  ({what}; tol {TOL[kind]})")


def noise(a_path, b_path):
    """PyTorch against itself: every torch-side quantity of two `--dump` runs (other threads or
    kernel paths), judged with the engine's tolerances; prints the share of each one used."""
    with safe_open(a_path, "pt") as fa, safe_open(b_path, "pt") as fb:
        meta = json.loads(fa.metadata()["kinds"])
        chk = Checker()
        for key, (kind, scale, cond) in sorted(meta.items()):
            case, what = key.split("/", 1)
            want = fa.get_tensor(key)
            chk.check(case, what, kind, fb.get_tensor(key), want, scale=scale, want64=want + cond)
    summary(chk, f"noise floor, {os.path.basename(a_path)} vs {os.path.basename(b_path)}")


def main():
    if sys.argv[1] == "--noise":
        noise(sys.argv[2], sys.argv[3])
        return
    root = sys.argv[1]
    cases = sorted(os.listdir(root))
    chk = Checker(dump={} if "--dump" in sys.argv else None)
    for name in cases:
        run_case(os.path.join(root, name), chk)
    if chk.dump is not None:
        save_file(chk.dump, sys.argv[sys.argv.index("--dump") + 1], metadata={"kinds": json.dumps(chk.dump_meta)})
    summary(chk, "engine vs PyTorch")
    if chk.failures:
        print(f"{len(chk.failures)} FAILURES:")
        for f in chk.failures[:60]:
            print("  " + f)
        sys.exit(1)
    print("all within tolerance")

    escaped = []
    for mutant, (case, what) in MUTANTS.items():
        mchk = Checker()
        run_case(os.path.join(root, case), mchk, mutant=mutant)
        print(f"mutant {mutant:18s} ({what}) on {case}: {len(mchk.failures)} comparisons out of tolerance"
              + (f", first: {mchk.failures[0]}" if mchk.failures else ""))
        if not mchk.failures:
            escaped.append(mutant)
    if escaped:
        print(f"the checks cannot see these mutants: {escaped}")
        sys.exit(1)
    print("every mutant caught")


if __name__ == "__main__":
    main()
