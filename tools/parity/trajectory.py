"""Three short learner trajectories (SupMAE pre-training, fine-tuning, linear probing) for the Rust
port: the same updates the official scripts make (main_pretrain + engine_pretrain, main_finetune +
engine_finetune, main_linprobe), on a tiny model, in float32 on CPU, one thread.

Run from the repo root:  python3 tools/parity/trajectory.py
Writes tools/parity/fixtures/trajectory/trajectory.safetensors and its README.md (every key, the
configs, and the measured float32-vs-float64 differences). Deterministic: fixed seeds, CPU,
1 thread, TF32 off; the random draws of Mixup/CutMix and drop path are taken from arrays drawn up
front and stored in the file.

Differences from the official runs, all on purpose: no AMP / GradScaler (plain
`loss.backward(); optimizer.step()`), no grad clipping (the official recipes do not clip either),
random tensors instead of a data loader, LARS weight decay 0.05 instead of the recipe's 0.
"""
import copy
import hashlib
import math
import os
import sys

sys.dont_write_bytecode = True  # keep tools/parity free of __pycache__

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from reference import Block, SupMAE, VisionTransformer, supmae_total_loss  # noqa: E402
from make_fixtures import perturb, setup  # noqa: E402

from safetensors.torch import save_file  # noqa: E402

OUT = os.path.join(HERE, "fixtures", "trajectory")
FILE = os.path.join(OUT, "trajectory.safetensors")

# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
ENC = dict(img_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=3, num_heads=2, mlp_ratio=4.0)
PRE_CFG = dict(ENC, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, norm_pix_loss=True,
               cls_hidden_mlp=64, nb_classes=10, global_pool=True)
NUM_CLASSES = 10
N_MICRO, BATCH = 40, 4
L = (ENC["img_size"] // ENC["patch_size"]) ** 2           # 16
MASK_RATIO, T, LAM_CLS = 0.75, 10.0, 0.01

PRE = dict(lr=1e-3, min_lr=1e-5, warmup_epochs=1, epochs=4, iters=10, accum_iter=2, wd=0.05,
           betas=(0.9, 0.95), eps=1e-8)
FT = dict(lr=1e-3, min_lr=1e-6, warmup_epochs=1, epochs=4, iters=5, accum_iter=1, wd=0.05,
          betas=(0.9, 0.999), eps=1e-8, layer_decay=0.75, drop_path=0.2,
          mixup_alpha=0.8, cutmix_alpha=1.0, mix_prob=1.0, switch_prob=0.5, smoothing=0.1)
LP = dict(lr=4.0, min_lr=0.0, warmup_epochs=1, epochs=4, iters=5, accum_iter=1, wd=0.05,
          momentum=0.9, trust_coefficient=0.001)
FT_STEPS = FT["epochs"] * FT["iters"]                     # 20
LP_STEPS = LP["epochs"] * LP["iters"]                     # 20
SNAP_STEPS = (1, 2, 5, 20)

SEED_TORCH_GLOBAL = 0      # torch.manual_seed: spec-1.11 / timm inits
SEED_GEN = 2024            # torch.Generator: perturbation, data, head inits
SEED_MIX = 7               # numpy Generator: Mixup/CutMix draws
SEED_DROP = 11             # numpy Generator: drop-path keep masks


# ---------------------------------------------------------------------------------------------
# util/lr_sched.adjust_learning_rate (written from spec 2.1)
# ---------------------------------------------------------------------------------------------
def adjust_learning_rate(optimizer, epoch, c):
    """epoch: fractional epoch. Sets every group's lr (times its lr_scale if it has one)."""
    if epoch < c["warmup_epochs"]:
        lr = c["lr"] * epoch / c["warmup_epochs"]
    else:
        lr = c["min_lr"] + (c["lr"] - c["min_lr"]) * 0.5 * (
            1.0 + math.cos(math.pi * (epoch - c["warmup_epochs"]) / (c["epochs"] - c["warmup_epochs"])))
    for g in optimizer.param_groups:
        g["lr"] = lr * g["lr_scale"] if "lr_scale" in g else lr
    return lr


# ---------------------------------------------------------------------------------------------
# Parameter groups (written from spec 2.1 and 3.3)
# ---------------------------------------------------------------------------------------------
def add_weight_decay(model, weight_decay):
    """timm-0.3.2: no decay for 1-D params and names ending '.bias'; frozen params skipped."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim == 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def vit_layer_id(name, num_layers):
    if name in ("cls_token", "pos_embed") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers


def param_groups_lrd(model, weight_decay, layer_decay, no_weight_decay=("pos_embed", "cls_token")):
    """One group per (layer id, decay flag), first-appearance order, each with lr_scale."""
    num_layers = len(model.blocks) + 1
    scales = [layer_decay ** (num_layers - i) for i in range(num_layers + 1)]
    groups, table = {}, []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim == 1 or name in no_weight_decay:
            flag, wd = "no_decay", 0.0
        else:
            flag, wd = "decay", weight_decay
        lid = vit_layer_id(name, num_layers)
        gname = f"layer_{lid}_{flag}"
        if gname not in groups:
            groups[gname] = {"params": [], "weight_decay": wd, "lr_scale": scales[lid]}
        groups[gname]["params"].append(p)
        table.append((name, lid, scales[lid], wd))
    return list(groups.values()), table


# ---------------------------------------------------------------------------------------------
# LARS (MAE util/lars.py semantics, written from the brief / spec 2.4)
# ---------------------------------------------------------------------------------------------
class LARS(torch.optim.Optimizer):
    def __init__(self, params, lr=0.0, weight_decay=0.0, momentum=0.9, trust_coefficient=0.001):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                                      trust_coefficient=trust_coefficient))

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            for p in g["params"]:
                dp = p.grad
                if dp is None:
                    continue
                if p.ndim > 1:   # not a norm gamma/beta or a bias
                    dp = dp.add(p, alpha=g["weight_decay"])
                    pn, un = torch.norm(p), torch.norm(dp)
                    one = torch.ones_like(pn)
                    q = torch.where(pn > 0.0, torch.where(un > 0.0, (g["trust_coefficient"] * pn) / un, one), one)
                    dp = dp.mul(q)
                st = self.state[p]
                if "mu" not in st:
                    st["mu"] = torch.zeros_like(p)
                mu = st["mu"]
                mu.mul_(g["momentum"]).add_(dp)
                p.add_(mu, alpha=-g["lr"])


# ---------------------------------------------------------------------------------------------
# Drop path with fixed masks: the ViT blocks are switched to this subclass (same parameters and
# state_dict keys); each drawing drop-path call takes the next (N,) mask from _DROP_MASKS.
# reference.py itself is untouched.
# ---------------------------------------------------------------------------------------------
_DROP_MASKS = None


class FixedMaskBlock(Block):
    def _drop_path(self, y):
        if self.drop_path_rate == 0.0 or not self.training:
            return y                       # timm: Identity when rate == 0, no draw
        keep = 1.0 - self.drop_path_rate
        mask = next(_DROP_MASKS).to(y.dtype).reshape((y.shape[0],) + (1,) * (y.ndim - 1))
        return y.div(keep) * mask

    def forward(self, x):
        x = x + self._drop_path(self.attn(self.norm1(x)))
        return x + self._drop_path(self.mlp(self.norm2(x)))


def use_fixed_masks(vit):
    for blk in vit.blocks:
        blk.__class__ = FixedMaskBlock
    return vit


# ---------------------------------------------------------------------------------------------
# timm Mixup/CutMix ('batch' mode, correct_lam) with given draws
# ---------------------------------------------------------------------------------------------
def cutmix_box(lam, cy, cx, S):
    cut = int(S * np.sqrt(1.0 - lam))
    yl, yh = int(np.clip(cy - cut // 2, 0, S)), int(np.clip(cy + cut // 2, 0, S))
    xl, xh = int(np.clip(cx - cut // 2, 0, S)), int(np.clip(cx + cut // 2, 0, S))
    lam_c = 1.0 - (yh - yl) * (xh - xl) / float(S * S)
    return (yl, yh, xl, xh), lam_c


def mix_batch(x, lam, use_cutmix, cy, cx):
    """In place on x (N,C,S,S). Returns the lam used for the targets (corrected for CutMix)."""
    assert x.shape[0] % 2 == 0
    if lam == 1.0:
        return 1.0
    if use_cutmix:
        (yl, yh, xl, xh), lam = cutmix_box(lam, cy, cx, x.shape[-1])
        x[:, :, yl:yh, xl:xh] = x.flip(0)[:, :, yl:yh, xl:xh]
    else:
        x_flipped = x.flip(0).mul_(1.0 - lam)
        x.mul_(lam).add_(x_flipped)
    return lam


def one_hot(y, num_classes, on, off, dtype):
    return torch.full((y.shape[0], num_classes), off, dtype=dtype).scatter_(1, y.long().view(-1, 1), on)


def mixup_target(y, num_classes, lam, smoothing, dtype):
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    y1 = one_hot(y, num_classes, on, off, dtype)
    y2 = one_hot(y.flip(0), num_classes, on, off, dtype)
    return y1 * lam + y2 * (1.0 - lam)


def soft_target_ce(logits, target):
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def snapshot(module, keys=None):
    sd = module.state_dict()
    keys = list(sd.keys()) if keys is None else keys
    return {k: sd[k].detach().clone().contiguous() for k in keys}


def vit_cfg(global_pool, drop_path_rate):
    return dict(ENC, num_classes=NUM_CLASSES, global_pool=global_pool, drop_path_rate=drop_path_rate)


# ---------------------------------------------------------------------------------------------
# 1. pre-training
# ---------------------------------------------------------------------------------------------
def run_pretrain(init_sd, data, dtype):
    model = SupMAE(**PRE_CFG)
    model.load_state_dict(init_sd, strict=True)
    model = model.to(dtype).train()
    opt = torch.optim.AdamW(add_weight_decay(model, PRE["wd"]), lr=PRE["lr"], betas=PRE["betas"],
                            eps=PRE["eps"], foreach=False)
    images, labels, noise = data["images"].to(dtype), data["labels"], data["noise"].to(dtype)
    lrs, losses, snaps, step = [], [], {}, 0
    cur_lr = None
    opt.zero_grad()
    for i in range(N_MICRO):
        epoch, it = divmod(i, PRE["iters"])
        if it % PRE["accum_iter"] == 0:
            cur_lr = adjust_learning_rate(opt, it / PRE["iters"] + epoch, PRE)
        rec, _, _, logits = model(images[i], MASK_RATIO, noise[i])
        loss, _, _ = supmae_total_loss(rec, logits, labels[i], T, LAM_CLS)
        losses.append(loss.item())
        (loss / PRE["accum_iter"]).backward()
        if (it + 1) % PRE["accum_iter"] == 0:
            assert all(g["lr"] == cur_lr for g in opt.param_groups)
            opt.step()
            opt.zero_grad()
            step += 1
            lrs.append(cur_lr)
            if step in SNAP_STEPS:
                snaps[step] = snapshot(model)
    assert step == 20
    return dict(lr=lrs, loss=losses, snaps=snaps)


# ---------------------------------------------------------------------------------------------
# 2. fine-tuning
# ---------------------------------------------------------------------------------------------
def run_finetune(init_sd, data, draws, dtype):
    global _DROP_MASKS
    model = use_fixed_masks(VisionTransformer(**vit_cfg(True, FT["drop_path"])))
    model.load_state_dict(init_sd, strict=True)
    model = model.to(dtype).train()
    groups, _ = param_groups_lrd(model, FT["wd"], FT["layer_decay"])
    opt = torch.optim.AdamW(groups, lr=FT["lr"], betas=FT["betas"], eps=FT["eps"], foreach=False)
    lrs, losses, snaps, lams_used = [], [], {}, []
    opt.zero_grad()
    for i in range(FT_STEPS):
        epoch, it = divmod(i, FT["iters"])
        if it % FT["accum_iter"] == 0:
            lr = adjust_learning_rate(opt, it / FT["iters"] + epoch, FT)
        x = data["images"][i].to(dtype).clone()
        y = data["labels"][i]
        lam = mix_batch(x, float(draws["lam"][i]), bool(draws["cutmix"][i]), int(draws["cy"][i]),
                        int(draws["cx"][i]))
        lams_used.append(lam)
        target = mixup_target(y, NUM_CLASSES, lam, FT["smoothing"], dtype)
        _DROP_MASKS = iter(draws["drop"][i])
        logits = model(x)
        assert next(_DROP_MASKS, None) is None, "drop-path masks not all used"
        _DROP_MASKS = None
        loss = soft_target_ce(logits, target)
        losses.append(loss.item())
        (loss / FT["accum_iter"]).backward()
        if (it + 1) % FT["accum_iter"] == 0:
            for g in opt.param_groups:
                assert g["lr"] == lr * g["lr_scale"]
            opt.step()
            opt.zero_grad()
            lrs.append(lr)
            if len(lrs) in SNAP_STEPS:
                snaps[len(lrs)] = snapshot(model)
    return dict(lr=lrs, loss=losses, snaps=snaps, lam_used=lams_used)


# ---------------------------------------------------------------------------------------------
# 3. linear probing
# ---------------------------------------------------------------------------------------------
LP_KEYS = ["head.1.weight", "head.1.bias", "head.0.running_mean", "head.0.running_var"]


def run_linprobe(init_sd, data, dtype):
    model = VisionTransformer(**vit_cfg(False, 0.0))
    model.load_state_dict(init_sd, strict=True)
    D = ENC["embed_dim"]
    model.head = nn.Sequential(nn.BatchNorm1d(D, affine=False, eps=1e-6), model.head)
    for p in model.parameters():
        p.requires_grad = False
    for p in model.head.parameters():
        p.requires_grad = True
    model = model.to(dtype).train()
    opt = LARS(model.head.parameters(), lr=LP["lr"], weight_decay=LP["wd"], momentum=LP["momentum"],
               trust_coefficient=LP["trust_coefficient"])
    crit = nn.CrossEntropyLoss()
    lrs, losses, snaps = [], [], {}
    opt.zero_grad()
    for i in range(LP_STEPS):
        epoch, it = divmod(i, LP["iters"])
        if it % LP["accum_iter"] == 0:
            lr = adjust_learning_rate(opt, it / LP["iters"] + epoch, LP)
        loss = crit(model(data["images"][i].to(dtype)), data["labels"][i])
        losses.append(loss.item())
        (loss / LP["accum_iter"]).backward()
        if (it + 1) % LP["accum_iter"] == 0:
            opt.step()
            opt.zero_grad()
            lrs.append(lr)
            if len(lrs) in SNAP_STEPS:
                snaps[len(lrs)] = snapshot(model, LP_KEYS)
    return dict(lr=lrs, loss=losses, snaps=snaps)


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------
def rel_metrics(a, b, check_int=True):
    """Per floating tensor of b: (||a-b||_2/||b||_2, max|a-b|/max|b|); tensors with b == 0 give the
    absolute values instead (flagged)."""
    out = {}
    for k, vb in b.items():
        if not vb.is_floating_point():
            assert not check_int or torch.equal(a[k], vb), k
            continue
        d = a[k].double() - vb.double()
        nb, mb = vb.double().norm().item(), vb.double().abs().max().item()
        dn, dm = d.norm().item(), d.abs().max().item()
        if nb == 0.0:
            out[k] = (dn, dm, True)
        else:
            out[k] = (dn / nb, dm / mb, False)
    return out


NULL_KEYS = ("cls_head.0.bias", "cls_head.1.running_mean")


def split_qkv(sd):
    """Replace every `*.attn.qkv.bias` (3d,) by its q / k / v thirds (`...qkv.bias[q]` etc.)."""
    out = {}
    for k, v in sd.items():
        if k.endswith(".attn.qkv.bias"):
            for tag, part in zip("qkv", v.chunk(3)):
                out[f"{k}[{tag}]"] = part
        else:
            out[k] = v
    return out


def is_null(k):
    """Directions with a mathematically zero gradient (see README): key biases, the bias right
    before the SupMAE head's train-mode BatchNorm, and that BN's running mean (it sees the bias)."""
    return k.endswith(".attn.qkv.bias[k]") or k in NULL_KEYS


def worst(m, exclude=()):
    items = [(k, v) for k, v in m.items() if k not in exclude and not v[2]]
    k1, v1 = max(items, key=lambda kv: kv[1][0])
    k2, v2 = max(items, key=lambda kv: kv[1][1])
    return (v1[0], k1), (v2[1], k2)


# ---------------------------------------------------------------------------------------------
def main():
    setup()
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(SEED_TORCH_GLOBAL)
    gen = torch.Generator().manual_seed(SEED_GEN)

    # ---- initial pre-training model -------------------------------------------------------
    pre = SupMAE(**PRE_CFG)
    perturb(pre, gen)
    pre_init = snapshot(pre)

    # ---- shared data ----------------------------------------------------------------------
    S = ENC["img_size"]
    images = torch.randn(N_MICRO, BATCH, 3, S, S, generator=gen)
    labels = torch.randint(0, NUM_CLASSES, (N_MICRO, BATCH), generator=gen)
    noise = torch.rand(N_MICRO, BATCH, L, generator=gen)
    assert all(len(set(row.tolist())) == L for row in noise.reshape(-1, L)), "noise has ties"
    data = dict(images=images, labels=labels, noise=noise)

    # ---- fine-tune initial state ----------------------------------------------------------
    ft_model = VisionTransformer(**vit_cfg(True, FT["drop_path"]))
    msg = ft_model.load_state_dict(pre_init, strict=False)
    assert set(msg.missing_keys) == {"head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias"}, msg
    D = ENC["embed_dim"]
    with torch.no_grad():
        ft_model.head.weight.copy_(0.02 * torch.randn(ft_model.head.weight.shape, generator=gen))
        ft_model.head.bias.copy_(0.05 * torch.randn(NUM_CLASSES, generator=gen))
        ft_model.fc_norm.weight.copy_(1.0 + 0.1 * torch.randn(D, generator=gen))
        ft_model.fc_norm.bias.copy_(0.05 * torch.randn(D, generator=gen))
    ft_init = snapshot(ft_model)
    _, lrd_table = param_groups_lrd(ft_model, FT["wd"], FT["layer_decay"])

    # ---- linprobe initial state -----------------------------------------------------------
    lp_model = VisionTransformer(**vit_cfg(False, 0.0))
    msg = lp_model.load_state_dict(pre_init, strict=False)
    assert set(msg.missing_keys) == {"head.weight", "head.bias"}, msg
    with torch.no_grad():
        nn.init.trunc_normal_(lp_model.head.weight, std=0.01, generator=gen)
        lp_model.head.bias.zero_()
    lp_init = snapshot(lp_model)

    # ---- Mixup/CutMix and drop-path draws ------------------------------------------------
    rng = np.random.default_rng(SEED_MIX)
    cutmix = np.zeros(FT_STEPS, np.int64)
    lam = np.zeros(FT_STEPS, np.float64)
    cy = np.zeros(FT_STEPS, np.int64)
    cx = np.zeros(FT_STEPS, np.int64)
    for i in range(FT_STEPS):
        cutmix[i] = int(rng.random() < FT["switch_prob"])       # mix_prob 1.0: always mix
        lam[i] = rng.beta(FT["cutmix_alpha"], FT["cutmix_alpha"]) if cutmix[i] else \
            rng.beta(FT["mixup_alpha"], FT["mixup_alpha"])
        cy[i] = rng.integers(0, S)
        cx[i] = rng.integers(0, S)
    assert 5 <= cutmix.sum() <= FT_STEPS - 5, cutmix
    rates = [r.item() for r in torch.linspace(0, FT["drop_path"], ENC["depth"])]
    keep = np.array([1.0 - rates[1], 1.0 - rates[1], 1.0 - rates[2], 1.0 - rates[2]])   # forward order
    drng = np.random.default_rng(SEED_DROP)
    drop = np.floor(keep[None, :, None] + drng.random((FT_STEPS, 4, BATCH)))
    n_zero = int((drop == 0).sum())
    assert n_zero >= 10, n_zero
    draws = dict(lam=lam, cutmix=cutmix, cy=cy, cx=cx, drop=torch.from_numpy(drop).float())

    # ---- float32 runs ---------------------------------------------------------------------
    r_pre = run_pretrain(pre_init, data, torch.float32)
    r_ft = run_finetune(ft_init, data, draws, torch.float32)
    r_lp = run_linprobe(lp_init, data, torch.float32)

    # ---- float64 replay -------------------------------------------------------------------
    r_pre64 = run_pretrain(pre_init, data, torch.float64)
    r_ft64 = run_finetune(ft_init, data, draws, torch.float64)
    r_lp64 = run_linprobe(lp_init, data, torch.float64)

    # ---- sanity ---------------------------------------------------------------------------
    for r in (r_pre, r_ft, r_lp, r_pre64, r_ft64, r_lp64):
        assert all(math.isfinite(v) for v in r["loss"]), r["loss"]
    for r, r64 in ((r_pre, r_pre64), (r_ft, r_ft64), (r_lp, r_lp64)):
        assert r["lr"] == r64["lr"]
    for c, lrs in ((PRE, r_pre["lr"]), (FT, r_ft["lr"]), (LP, r_lp["lr"])):
        per_step = c["iters"] // c["accum_iter"]
        for s, v in enumerate(lrs):   # step s (0-based) uses fractional epoch s / per_step
            e = s / per_step
            want = c["lr"] * e / c["warmup_epochs"] if e < c["warmup_epochs"] else c["min_lr"] + (
                c["lr"] - c["min_lr"]) * 0.5 * (1 + math.cos(math.pi * (e - c["warmup_epochs"])
                                                         / (c["epochs"] - c["warmup_epochs"])))
            assert abs(v - want) <= 1e-15 * max(1.0, c["lr"]), (s, v, want)
    assert r_ft["lam_used"] == r_ft64["lam_used"]

    # ---- assemble the file ----------------------------------------------------------------
    ex = {"images": images, "labels": labels, "noise": noise}
    for prefix, init, r in (("pretrain", pre_init, r_pre), ("finetune", ft_init, r_ft),
                            ("linprobe", lp_init, r_lp)):
        for k, v in init.items():
            ex[f"{prefix}.init.{k}"] = v
        for s in SNAP_STEPS:
            for k, v in r["snaps"][s].items():
                ex[f"{prefix}.step{s}.{k}"] = v
        ex[f"{prefix}.lr"] = torch.tensor(r["lr"], dtype=torch.float64)
        ex[f"{prefix}.loss"] = torch.tensor(r["loss"], dtype=torch.float64)
    ex["finetune.lam"] = torch.from_numpy(lam)
    ex["finetune.cutmix"] = torch.from_numpy(cutmix)
    ex["finetune.cy"] = torch.from_numpy(cy)
    ex["finetune.cx"] = torch.from_numpy(cx)
    ex["finetune.drop"] = draws["drop"]
    for k, v in ex.items():
        assert v.dtype in (torch.float32, torch.float64, torch.int64), (k, v.dtype)
    save_file({k: v.detach().contiguous() for k, v in ex.items()}, FILE)

    # ---- f32 vs f64, and movement -------------------------------------------------------
    table = {}
    for name, init, r, r64 in (("pretrain", pre_init, r_pre, r_pre64), ("finetune", ft_init, r_ft, r_ft64),
                               ("linprobe", {k: v for k, v in lp_init.items()}, r_lp, r_lp64)):
        rows, rows_split, nulls = {}, {}, {}
        for s in SNAP_STEPS:
            rows[s] = rel_metrics(r["snaps"][s], r64["snaps"][s])
            a, b = split_qkv(r["snaps"][s]), split_qkv(r64["snaps"][s])
            ms = rel_metrics(a, b)
            rows_split[s] = {k: v for k, v in ms.items() if not is_null(k)}
            nulls[s] = {k: ((a[k].double() - b[k]).abs().max().item(), b[k].abs().max().item())
                        for k in b if is_null(k)}
        loss_rel = max(abs(a - b) / abs(b) for a, b in zip(r["loss"], r64["loss"]))
        if name == "linprobe":
            init_cmp = {"head.1.weight": lp_init["head.weight"], "head.1.bias": lp_init["head.bias"],
                        "head.0.running_mean": torch.zeros(D), "head.0.running_var": torch.ones(D)}
        else:
            init_cmp = init
        move = rel_metrics(split_qkv(init_cmp),
                           split_qkv({k: v for k, v in r["snaps"][20].items() if k in init_cmp}), False)
        # movement: (||p20 - p0|| / ||p20||, ...) per tensor; drop tensors that cannot move and the
        # zero-gradient directions
        move = {k: v for k, v in move.items() if v[0] > 0.0 and not is_null(k)}
        table[name] = dict(rows=rows, rows_split=rows_split, nulls=nulls, loss_rel=loss_rel, move=move)

    info = dict(n_cutmix=int(cutmix.sum()), n_mixup=int(FT_STEPS - cutmix.sum()), n_zero=n_zero,
                rates=rates, keep=keep.tolist(), lrd_table=lrd_table,
                keys=dict(pretrain=list(pre_init), finetune=list(ft_init), linprobe=list(lp_init)),
                r_pre=r_pre, r_ft=r_ft, r_lp=r_lp, n_tensors=len(ex), draws=draws)
    write_readme(table, info)
    print_summary(table, info)


# ---------------------------------------------------------------------------------------------
def fmt_table(table):
    lines = ["| learner | step | max rel L2 (tensor) | max rel max-abs (tensor) |",
             "| --- | --- | --- | --- |"]
    for name, t in table.items():
        for s, m in t["rows"].items():
            (a, ka), (b, kb) = worst(m)
            lines.append(f"| {name} | {s} | {a:.2e} (`{ka}`) | {b:.2e} (`{kb}`) |")
    return "\n".join(lines)


def fmt_excl(table):
    lines = ["| learner | step | max rel L2 (tensor) | max rel max-abs (tensor) |", "| --- | --- | --- | --- |"]
    for name, t in table.items():
        for s, m in t["rows_split"].items():
            (a, ka), (b, kb) = worst(m)
            lines.append(f"| {name} | {s} | {a:.2e} (`{ka}`) | {b:.2e} (`{kb}`) |")
    return "\n".join(lines)


def fmt_nulls(table):
    lines = ["| learner | step | max abs diff over key biases (tensor) | max abs diff `cls_head.0.bias` "
             "| max abs diff `cls_head.1.running_mean` |", "| --- | --- | --- | --- | --- |"]
    for name, t in table.items():
        for s, m in t["nulls"].items():
            kb = [(v[0], k) for k, v in m.items() if k.endswith("[k]")]
            kbs = "%.1e (`%s`)" % max(kb) if kb else "- (no attention trained)"
            c = "%.1e (max abs value %.1e)" % m["cls_head.0.bias"] if "cls_head.0.bias" in m else "-"
            d = "%.1e (max abs value %.1e)" % m["cls_head.1.running_mean"] if "cls_head.1.running_mean" in m else "-"
            lines.append(f"| {name} | {s} | {kbs} | {c} | {d} |")
    return "\n".join(lines)


def fmt_move(table):
    lines = ["| learner | min rel L2 (tensor) | median rel L2 | max rel L2 (tensor) | min rel max-abs (tensor) |",
             "| --- | --- | --- | --- | --- |"]
    for name, t in table.items():
        m = t["move"]
        l2 = sorted((v[0], k) for k, v in m.items() if not v[2])
        ma = sorted((v[1], k) for k, v in m.items() if not v[2])
        med = l2[len(l2) // 2][0]
        lines.append(f"| {name} | {l2[0][0]:.2e} (`{l2[0][1]}`) | {med:.2e} | {l2[-1][0]:.2e} (`{l2[-1][1]}`) "
                     f"| {ma[0][0]:.2e} (`{ma[0][1]}`) |")
    return "\n".join(lines)


def fmt_zero(table):
    out = []
    for name, t in table.items():
        for s, m in t["rows"].items():
            for k, v in m.items():
                if v[2]:
                    out.append(f"{name} step {s} `{k}` (reference all zero; abs L2 diff {v[0]:.1e})")
    return out


def print_summary(table, info):
    with open(FILE, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    print(f"wrote {info['n_tensors']} tensors to {FILE}: {os.path.getsize(FILE)} B sha256 {digest}")
    print(f"CutMix {info['n_cutmix']} / Mixup {info['n_mixup']} steps; drop-path zeros {info['n_zero']} of 320")
    for tag, r in (("pretrain", info["r_pre"]), ("finetune", info["r_ft"]), ("linprobe", info["r_lp"])):
        print(f"{tag}: lr " + " ".join(f"{v:.3e}" for v in r["lr"]))
        print(f"{tag}: loss " + " ".join(f"{v:.4f}" for v in r["loss"]))
    print(fmt_table(table))
    print(fmt_excl(table))
    print(fmt_nulls(table))
    print(fmt_move(table))
    for t in table:
        print(f"{t}: max relative loss diff f32 vs f64 {table[t]['loss_rel']:.2e}")
    for z in fmt_zero(table):
        print("zero-reference:", z)


def write_readme(table, info):
    keys = info["keys"]
    lrd = "\n".join(f"| `{n}` | {lid} | {sc:.6f} | {wd} |" for n, lid, sc, wd in info["lrd_table"])
    d = info["draws"]
    mix_rows = "\n".join(
        f"| {i} | {'CutMix' if d['cutmix'][i] else 'Mixup'} | {d['lam'][i]:.6f} | {info['r_ft']['lam_used'][i]:.6f} "
        f"| {d['cy'][i]} | {d['cx'][i]} |" for i in range(FT_STEPS))
    zero_lines = "\n".join(f"* {z}" for z in fmt_zero(table)) or "* none"
    loss_rel = ", ".join(f"{t} {table[t]['loss_rel']:.1e}" for t in table)
    sum_pre, sum_ft = sum(info["r_pre"]["lr"]), sum(info["r_ft"]["lr"])

    def fmt_lr(r):
        return ", ".join(f"{v:.6g}" for v in r["lr"])

    text = f"""# Learner trajectories (pre-training, fine-tuning, linear probing)

Generated by `python3 tools/parity/trajectory.py` (from the repo root; ~15 s on one CPU thread)
with the PyTorch reference `tools/parity/reference.py`. CPU, `torch.set_num_threads(1)`, TF32 off,
deterministic algorithms, fixed seeds (torch global {SEED_TORCH_GLOBAL}, torch Generator {SEED_GEN},
numpy Generators {SEED_MIX} (Mixup/CutMix) and {SEED_DROP} (drop path)): re-running reproduces
`trajectory.safetensors` byte for byte with the same torch build and CPU (generated with torch
{torch.__version__}, numpy {np.__version__}; another torch version or CPU may change the last bits, as
it does for `fixtures/tiny`). Random weights, not official ones.

Each trajectory follows the official training loop (main_pretrain + engine_pretrain, main_finetune +
engine_finetune, main_linprobe) in float32, except: no AMP / GradScaler (plain
`loss.backward(); optimizer.step()`), no grad clipping (none in the recipes either), tensors instead
of a data loader, and LARS weight decay 0.05 (recipe: 0) so the LARS exclusions are exercised.
PyTorch `AdamW` is the single-tensor implementation (`foreach=False`, the CPU default).

## Configs

Shared tiny encoder: img 16, patch 4 (g=4, L=16), in_chans 3, D=32, depth 3, heads 2, mlp_ratio 4,
10 classes, batch 4, 40 micro-batches of data (`images[i]`, `labels[i]`, `noise[i]`).

**Pre-training** (`SupMAE`): decoder 16 wide / depth 1 / heads 2, SupMAE head
`Linear(32,64) → BatchNorm1d(64) → ReLU → Linear(64,10)` on the mean of the visible latent tokens,
norm_pix_loss, mask ratio 0.75 (K=4), T=10, λ=0.01. Initial weights: spec 1.11 init
(`torch.manual_seed({SEED_TORCH_GLOBAL})`), then `make_fixtures.perturb` (LN/BN weights `1+0.1·randn`,
biases `0.05·randn`, other trainable weights `+= 0.02·randn`, BN `running_mean 0.1·randn`,
`running_var 1+0.2·rand`, `num_batches_tracked 7`; frozen sin-cos pos embeds exact).
Optimizer AdamW(betas (0.9, 0.95), eps 1e-8), timm-0.3.2 `add_weight_decay` groups: wd 0 for
`ndim == 1` or names ending `.bias`, wd 0.05 for all others (incl. `cls_token`, `mask_token`, 4-D
conv weight); `pos_embed`/`decoder_pos_embed` are frozen and not in the optimizer (they stay exact).
Schedule: peak 1e-3, min 1e-5, warmup 1 epoch, 4 epochs × 10 micro-batches, accum_iter 2: at
micro-batch i (epoch = i//10, it = i%10) `if it % 2 == 0: lr = sched(it/10 + epoch)`; loss/2 backward;
`if (it+1) % 2 == 0: step(); zero_grad()`. 40 micro-batches → 20 optimizer steps; optimizer step s
(1-based) uses fractional epoch (s−1)/5. Model in `train()` mode throughout (BN batch statistics,
running stats updated by every micro-batch forward: 40 updates, `num_batches_tracked` 7 → 47).

**Fine-tuning** (`VisionTransformer(global_pool=True, drop_path_rate=0.2)`): encoder from
`pretrain.init` (`strict=False`; missing exactly `head.*`, `fc_norm.*`; `norm.*`, `mask_token`,
`decoder_*`, `cls_head.*` ignored), then `head.weight = 0.02·randn`, `head.bias = 0.05·randn`,
`fc_norm.weight = 1+0.1·randn`, `fc_norm.bias = 0.05·randn`. The loaded `pos_embed` (sin-cos) is
trainable here. AdamW(betas (0.9, 0.999), eps 1e-8) over `param_groups_lrd` (layer_decay 0.75,
num_layers = 4, scale = 0.75^(4−id); wd 0 for ndim 1 and `pos_embed`, `cls_token`; else 0.05),
group lr = lr · lr_scale. Schedule: peak 1e-3, min 1e-6, warmup 1, 4 epochs × 5, accum 1 (step s uses
epoch (s−1)/5). Loss `SoftTargetCrossEntropy` = mean over the batch of `sum(−t · log_softmax(z))`.

Layer ids / scales / weight decay:

| param | layer id | lr_scale | wd |
| --- | --- | --- | --- |
{lrd}

Mixup/CutMix (timm `Mixup`, mode 'batch', correct_lam, mixup α 0.8, cutmix α 1.0, prob 1.0, switch
0.5, smoothing 0.1) with the draws stored in the file. Per step i: `x = images[i].clone()`;
Mixup: `x_f = x.flip(0).mul_(1−lam); x.mul_(lam).add_(x_f)` (lam a Python double, the products in
the tensor dtype); CutMix: `cut = int(16·sqrt(1−lam))`, `yl = clip(cy − cut//2, 0, 16)`,
`yh = clip(cy + cut//2, 0, 16)` (same for x), `x[:,:,yl:yh,xl:xh] = x.flip(0)[:,:,yl:yh,xl:xh]`,
`lam ← 1 − (yh−yl)(xh−xl)/256`. Targets: `off = 0.01`, `on = 0.91`,
`t = onehot(y)·lam + onehot(y.flip(0))·(1−lam)` (one-hots in the tensor dtype).

| step i | mode | lam (drawn, `finetune.lam`) | lam used for targets | cy | cx |
| --- | --- | --- | --- | --- | --- |
{mix_rows}

CutMix {info['n_cutmix']} steps, Mixup {info['n_mixup']} steps.

Drop path: rates `torch.linspace(0, 0.2, 3)` → `.item()` = {info['rates']} (float32 values as
doubles), block 0 (rate 0) draws nothing; keep = 1 − rate = {info['keep']} (doubles) for the calls
(block 1 attn, block 1 mlp, block 2 attn, block 2 mlp). Branch output = `y.div(keep) * mask`
(keep a Python double, the division in the tensor dtype), mask[sample] from `finetune.drop`.
Masks were drawn as `floor(keep + U)`, U uniform from numpy Generator({SEED_DROP}); there are
{info['n_zero']} zeros out of 320 entries.

**Linear probing** (`VisionTransformer(global_pool=False, drop_path_rate=0)`, features = `norm(x)[:,0]`):
encoder from `pretrain.init` (`strict=False`, missing exactly `head.*`; includes the pretrained `norm.*`),
`head.weight = trunc_normal(std 0.01, cut ±2)`, `head.bias = 0`; saved as `linprobe.init.*`. Then
`model.head = Sequential(BatchNorm1d(32, affine=False, eps=1e-6), head)` (so the keys become `head.0.*`
(buffers only) and `head.1.weight/bias`), everything else frozen, `train()` mode throughout (BN uses
batch statistics, momentum 0.1, unbiased running var). Loss: `CrossEntropyLoss()` (mean).
LARS(momentum 0.9, trust 0.001, wd 0.05): for `ndim > 1`: `dp = g + wd·p`,
`q = (0.001·‖p‖)/‖dp‖` if both norms > 0 else 1, `dp = dp·q`; for `ndim ≤ 1` `dp = g`;
`mu = 0.9·mu + dp` (mu starts at 0), `p −= lr·mu`. Schedule: peak 4.0, min 0, warmup 1, 4 epochs × 5,
accum 1.

Scalar arithmetic as PyTorch does it (CPU): a Python-float scalar in a float32 tensor op is first
rounded to float32 (`y.div(keep)` divides by `f32(keep)` = 0.89999998 / 0.80000001, not by the
double; `x.mul_(lam)`, `x.flip(0).mul_(1−lam)`, `onehot·lam` likewise). `torch.optim.AdamW`
(single-tensor path, `decoupled_weight_decay`): `p.mul_(1 − lr·wd)`; `m.lerp_(g, 1−β1)`;
`v.mul_(β2).addcmul_(g, g, value=1−β2)`; `step_size = lr / (1 − β1^t)` and
`bc2_sqrt = (1 − β2^t)^0.5` in double; `denom = (v.sqrt() / bc2_sqrt).add_(eps)`;
`p.addcdiv_(m, denom, value=−step_size)`. The group lr for fine-tuning is the double
`lr · lr_scale`.

Note: the warmup starts at lr 0, so **optimizer step 1 of every learner uses lr = 0**: the
parameters at `step1` equal `init` (AdamW: `p·(1−0) − 0·…`; LARS: `p − 0·mu`), but the optimizer
state (Adam moments, LARS momentum) and the BN running stats have advanced. Step 5 and step 20 are
the real parameter checks.

## Keys in `trajectory.safetensors` ({info['n_tensors']} tensors)

Float tensors are float32 unless stated; integer tensors int64.

| key | shape / dtype | meaning |
| --- | --- | --- |
| `images` | [40,4,3,16,16] | `torch.randn`, already "normalised" images; micro-batch i is `images[i]` |
| `labels` | [40,4] i64 | classes in 0..10 |
| `noise` | [40,4,16] | `torch.rand` masking noise for pre-training micro-batch i (no ties within a row) |
| `pretrain.init.<key>` | | full SupMAE state dict before training |
| `pretrain.step{{1,2,5,20}}.<key>` | | full state dict after optimizer step 1 / 2 / 5 / 20 |
| `pretrain.lr` | [20] f64 | lr of each optimizer step (all groups) |
| `pretrain.loss` | [40] f64 | total loss `rec + 0.01·CE(logits/10)` of each micro-batch (before the /accum_iter) |
| `finetune.init.<key>` | | fine-tune ViT state dict before training |
| `finetune.step{{1,2,5,20}}.<key>` | | after step 1 / 2 / 5 / 20 |
| `finetune.lr` | [20] f64 | scale-1 lr of each step (group lr = this · lr_scale) |
| `finetune.loss` | [20] f64 | soft-target CE of each step |
| `finetune.lam` | [20] f64 | Beta draw of each step (before the CutMix correction) |
| `finetune.cutmix` | [20] i64 | 1 = CutMix, 0 = Mixup |
| `finetune.cy`, `finetune.cx` | [20] i64 | CutMix box centre (row, column) in [0,16); only used on CutMix steps |
| `finetune.drop` | [20,4,4] | drop-path masks: [step, call (b1 attn, b1 mlp, b2 attn, b2 mlp), sample] |
| `linprobe.init.<key>` | | plain ViT (cls-token) state dict, before the BN head wrap |
| `linprobe.step{{1,2,5,20}}.head.1.weight` | [10,32] | linear head weight after step s |
| `linprobe.step{{1,2,5,20}}.head.1.bias` | [10] | |
| `linprobe.step{{1,2,5,20}}.head.0.running_mean`, `.head.0.running_var` | [32] | BN (affine=False) running stats after step s |
| `linprobe.lr`, `linprobe.loss` | [20] f64 | lr and CE loss of each step |

`num_batches_tracked` is an int64 0-d tensor (shape `[]`).

State-dict keys, in order (shapes follow the torch layouts, e.g. `patch_embed.proj.weight` [32,3,4,4],
`blocks.k.attn.qkv.weight` [96,32]):

* pre-training ({len(keys['pretrain'])}): {', '.join('`' + k + '`' for k in keys['pretrain'])}
* fine-tuning ({len(keys['finetune'])}): {', '.join('`' + k + '`' for k in keys['finetune'])}
* linear probing init ({len(keys['linprobe'])}): {', '.join('`' + k + '`' for k in keys['linprobe'])}

Learning rates per step:

* pretrain: {fmt_lr(info['r_pre'])}
* finetune: {fmt_lr(info['r_ft'])}
* linprobe: {fmt_lr(info['r_lp'])}

## Measured torch float32 vs float64

The same three trajectories replayed in float64 (`model.double()`, inputs cast, same draws, same
lr). Per learner and snapshot, the maximum over the floating tensors of
`‖p32 − p64‖₂ / ‖p64‖₂` and of `max|p32 − p64| / max|p64|` (tensor attaining it in brackets):

{fmt_table(table)}

Tensors whose float64 value is exactly zero (not in the maxima above):
{zero_lines}

**What dominates: directions with a mathematically zero gradient.** Two kinds of parameters have
an exactly zero true gradient: (1) the key third of every `attn.qkv.bias` (`qkv.bias[D:2D]`): a key
bias adds `q·b_k`, the same for every key of a query, which the softmax cancels; (2) in pre-training
`cls_head.0.bias`, a bias right before a train-mode BatchNorm (the batch mean removes it). Their
float32 gradients are pure rounding noise (~1e-10 and below), and Adam's `m̂/(sqrt(v̂)+eps)` turns
that noise into steps of ~lr·|g|/(|g|+eps) (eps = 1e-8), i.e. a few percent of lr per step, at most
~lr (sum of the step lrs: pretrain {sum_pre:.2e}, finetune {sum_ft:.2e} before lr_scale); in float64
the noise is ~1e-19 and they barely move.
So their trajectories are not reproducible across implementations (the Rust port's rounding noise
is different noise) and must be compared with an ABSOLUTE tolerance of the order of the table
below, or skipped; `cls_head.1.running_mean` inherits the `cls_head.0.bias` noise through the batch
mean. Everything else is at the float32 rounding floor.

With every `qkv.bias` split into its q / k / v thirds (`...qkv.bias[q]`, `[k]`, `[v]`) and the
zero-gradient directions (`[k]` thirds, `cls_head.0.bias`, `cls_head.1.running_mean`) left out:

{fmt_excl(table)}

The zero-gradient directions, max |p32 − p64| (absolute; their max |p64| in brackets):

{fmt_nulls(table)}

Max relative difference of the per-step losses: {loss_rel}.

How far the parameters move (f32, step 20 vs init, per tensor (q/k/v bias thirds split, the
zero-gradient directions and tensors that cannot move excluded), `‖p20 − p0‖₂ / ‖p20‖₂` and
`max|p20 − p0| / max|p20|`):

{fmt_move(table)}

So, leaving the zero-gradient directions aside, the float32 rounding floor is ~1e-7 relative per
tensor at steps 1, 5 and 20, while every tensor moves by 1e-3 or more relative over the 20 steps: a
per-tensor relative tolerance of ~1e-5 is meaningful (about 100× the floor, 100× below the smallest
movement).
"""
    with open(os.path.join(OUT, "README.md"), "w") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
