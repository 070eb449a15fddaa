"""Write the tiny SupMAE parity fixtures into tools/parity/fixtures/tiny/.

Run from the repo root:  python3 tools/parity/make_fixtures.py
Deterministic: fixed seeds, CPU, float32 (plus a float64 replay), 1 thread, TF32 off.
See tools/parity/README.md for the tensor list.
"""
import copy
from collections import OrderedDict
import hashlib
import os
import sys

sys.dont_write_bytecode = True  # keep tools/parity free of __pycache__

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from reference import SupMAE, VisionTransformer, sincos_pos_embed, supmae_total_loss  # noqa: E402

try:
    from safetensors.torch import save_file
except ImportError:
    sys.exit("pip install safetensors")

OUT = os.path.join(HERE, "fixtures", "tiny")

CFG = dict(img_size=32, patch_size=8, in_chans=3, embed_dim=64, depth=2, num_heads=4, mlp_ratio=4.0,
           decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4, norm_pix_loss=True,
           cls_hidden_mlp=128, nb_classes=10, global_pool=True)
N, MASK_RATIO, T, LAM = 4, 0.75, 10.0, 0.01
L = (CFG["img_size"] // CFG["patch_size"]) ** 2
K = int(L * (1 - MASK_RATIO))


def setup():
    torch.set_num_threads(1)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(True)


def check_sincos():
    """Spec 1.3 test vector (D=8, g=2)."""
    c, s = 0.540302, 0.841471
    want = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 0],
                         [0, 0, 1, 1, 0, 0, 1, 1],
                         [s, 0.01, c, 0.99995, 0, 0, 1, 1],
                         [0, 0, 1, 1, s, 0.01, c, 0.99995],
                         [s, 0.01, c, 0.99995, s, 0.01, c, 0.99995]], dtype=torch.float64)
    got = torch.from_numpy(sincos_pos_embed(8, 2))
    assert got.shape == (5, 8) and torch.allclose(got, want, atol=1e-6, rtol=0), got


def perturb(model, gen):
    """Make every trainable tensor non-trivial: norm weights 1+0.1*randn, biases 0.05*randn,
    other weights += 0.02*randn; BN running_mean 0.1*randn, running_var 1+0.2*rand, counter 7."""
    with torch.no_grad():
        for mod_name, mod in model.named_modules():
            is_norm = isinstance(mod, (nn.LayerNorm, nn.BatchNorm1d))
            for pname, p in mod.named_parameters(recurse=False):
                if not p.requires_grad:
                    continue
                r = torch.randn(p.shape, generator=gen)
                if pname == "bias":
                    p.copy_(0.05 * r)
                elif is_norm:
                    p.copy_(1.0 + 0.1 * r)
                else:
                    p.add_(0.02 * r)
            if isinstance(mod, nn.BatchNorm1d):
                mod.running_mean.copy_(0.1 * torch.randn(mod.running_mean.shape, generator=gen))
                mod.running_var.copy_(1.0 + 0.2 * torch.rand(mod.running_var.shape, generator=gen))
                mod.num_batches_tracked.fill_(7)


def load_pretrain(path, dtype=torch.float32):
    sd = torch.load(path, map_location="cpu", weights_only=True)["model"]
    m = SupMAE(**CFG)
    m.load_state_dict(sd, strict=True)
    return m.to(dtype)


def f32(t):
    return t.detach().to(torch.float32).contiguous()


def scalar(t, dtype=torch.float32):
    return t.detach().reshape(1).to(dtype).contiguous()


def main():
    setup()
    check_sincos()
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)

    # ---------------- pre-training model, weights -------------------------------------------
    model = SupMAE(**CFG)           # spec 1.11 init (uses the global RNG, seeded above)
    perturb(model, gen)
    ckpt_path = os.path.join(OUT, "supmae_tiny.pth")
    torch.save({"model": model.state_dict(), "epoch": 3}, ckpt_path)
    # Bare state dict (no wrapper), with the classification branch named `projection_head`
    # as in the released SupMAE pre-training checkpoint (enyac-group/supmae#4).
    plain = OrderedDict(
        (k.replace("cls_head.", "projection_head.", 1), v) for k, v in model.state_dict().items()
    )
    torch.save(plain, os.path.join(OUT, "supmae_tiny_plain.pth"))
    sd0 = copy.deepcopy(model.state_dict())

    # ---------------- inputs --------------------------------------------------------------
    images = torch.randn(N, 3, CFG["img_size"], CFG["img_size"], generator=gen)
    labels = torch.randint(0, CFG["nb_classes"], (N,), generator=gen)
    assert len(set(labels.tolist())) > 1
    noise = torch.rand(N, L, generator=gen)
    assert all(len(set(row.tolist())) == L for row in noise), "noise has ties"

    ex = {"images": images, "labels": labels, "noise": noise}

    # ---------------- f32 train-mode forward + backward -------------------------------------
    model.train()
    tr = {}
    rec, pred, mask, logits = model(images, MASK_RATIO, noise, trace=tr)
    loss, ce, cls_loss = supmae_total_loss(rec, logits, labels, T, LAM)
    loss.backward()
    assert model.pos_embed.grad is None and model.decoder_pos_embed.grad is None
    assert not model.pos_embed.requires_grad and not model.decoder_pos_embed.requires_grad
    with torch.no_grad():
        tr_pix = {}
        model.forward_loss(images, pred, mask, norm_pix=False, trace=tr_pix, suffix="_pix")

    for k in ["ids_shuffle", "ids_restore", "ids_keep"]:
        ex[k] = tr[k].contiguous()
    for k in ["mask", "patch_tokens", "encoder_input", "block_out.0", "block_out.1", "latent",
              "decoder_input", "pred", "target", "per_patch_loss", "pooled"]:
        ex[k] = f32(tr[k])
    ex["rec_loss"] = scalar(rec)
    ex["target_pix"] = f32(tr_pix["target_pix"])
    ex["per_patch_loss_pix"] = f32(tr_pix["per_patch_loss_pix"])
    ex["rec_loss_pix"] = scalar(tr_pix["rec_loss_pix"])
    ex["logits_train"] = f32(logits)
    bn = model.cls_head[1]
    ex["bn_running_mean_after"] = f32(bn.running_mean)
    ex["bn_running_var_after"] = f32(bn.running_var)
    ex["ce"], ex["cls_loss"], ex["loss"] = scalar(ce), scalar(cls_loss), scalar(loss)
    n_grads = 0
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
            ex["grad." + name] = f32(p.grad)
            n_grads += 1

    # ---------------- invariants (spec 7) ----------------------------------------------------
    assert ex["ids_keep"].shape == (N, K) and K == 4
    assert torch.equal(ex["mask"].sum(1), torch.full((N,), float(L - K)))
    assert torch.equal(torch.gather(ex["mask"], 1, ex["ids_keep"]), torch.zeros(N, K))
    assert torch.equal(model.unpatchify(model.patchify(images)), images)
    with torch.no_grad():
        y = model.decoder_embed(tr["latent"])[:, 1:]
        dec_keep = torch.gather(ex["decoder_input"][:, 1:], 1, ex["ids_keep"].unsqueeze(-1).expand(-1, -1, 32))
        pos_keep = model.decoder_pos_embed[0, 1:][ex["ids_keep"]]
        assert torch.allclose(dec_keep, y + pos_keep, atol=1e-6)
        h = model.cls_head[0](tr["pooled"])
        rm0, rv0 = sd0["cls_head.1.running_mean"], sd0["cls_head.1.running_var"]
        assert torch.allclose(bn.running_mean, 0.9 * rm0 + 0.1 * h.mean(0), atol=1e-6)
        assert torch.allclose(bn.running_var, 0.9 * rv0 + 0.1 * h.var(0, unbiased=True), atol=1e-5)
        assert int(bn.num_batches_tracked) == 8

    # ---------------- eval-mode logits from the saved (original) running stats --------------
    m_eval = load_pretrain(ckpt_path).eval()
    with torch.no_grad():
        tr_e = {}
        _, _, _, logits_eval = m_eval(images, MASK_RATIO, noise, trace=tr_e)
    assert torch.equal(tr_e["latent"], tr["latent"])
    ex["logits_eval"] = f32(logits_eval)

    # ---------------- float64 replay ---------------------------------------------------------
    m64 = load_pretrain(ckpt_path, torch.float64).train()
    with torch.no_grad():
        tr64 = {}
        rec64, pred64, _, logits64 = m64(images.double(), MASK_RATIO, noise.double(), trace=tr64)
        loss64, _, _ = supmae_total_loss(rec64, logits64, labels, T, LAM)
    assert torch.equal(tr64["ids_shuffle"], tr["ids_shuffle"])
    ex["latent_f64"] = tr64["latent"].contiguous()
    ex["pred_f64"] = pred64.contiguous()
    ex["logits_train_f64"] = logits64.contiguous()
    ex["loss_f64"] = scalar(loss64, torch.float64)
    errs = {
        "latent": (tr["latent"].double() - tr64["latent"]).abs().max().item(),
        "pred": (pred.double() - pred64).abs().max().item(),
        "logits_train": (logits.double() - logits64).abs().max().item(),
        "loss_rel": abs(loss.item() - loss64.item()) / abs(loss64.item()),
    }

    # ---------------- fine-tune classifiers --------------------------------------------------
    ft_cfg = dict(img_size=32, patch_size=8, in_chans=3, num_classes=10, embed_dim=64, depth=2, num_heads=4,
                  mlp_ratio=4.0, drop_path_rate=0.0)
    sd_pre = torch.load(ckpt_path, map_location="cpu", weights_only=True)["model"]
    for gp, tag, fname in [(True, "gp", "vit_tiny_gp.pth"), (False, "cls", "vit_tiny_cls.pth")]:
        vit = VisionTransformer(global_pool=gp, **ft_cfg)
        msg = vit.load_state_dict(sd_pre, strict=False)
        want_missing = {"head.weight", "head.bias"} | ({"fc_norm.weight", "fc_norm.bias"} if gp else set())
        assert set(msg.missing_keys) == want_missing, msg.missing_keys
        with torch.no_grad():
            vit.head.weight.copy_(0.02 * torch.randn(vit.head.weight.shape, generator=gen))
            vit.head.bias.copy_(0.05 * torch.randn(vit.head.bias.shape, generator=gen))
            if gp:   # fresh fc_norm, perturbed; (cls variant keeps the perturbed `norm` from the checkpoint)
                vit.fc_norm.weight.copy_(1.0 + 0.1 * torch.randn(64, generator=gen))
                vit.fc_norm.bias.copy_(0.05 * torch.randn(64, generator=gen))
        torch.save({"model": vit.state_dict()}, os.path.join(OUT, fname))
        vit.eval()
        with torch.no_grad():
            tf = {}
            vit(images, trace=tf)
        if gp:
            ex["ft_gp_features"] = f32(tf["features"])
        else:
            assert torch.equal(tf["features"], ex["ft_gp_features"])
        ex[f"ft_{tag}_pooled"] = f32(tf["pooled"])
        ex[f"ft_{tag}_logits"] = f32(tf["logits"])

    # ---------------- write --------------------------------------------------------------------
    for k, v in ex.items():
        assert v.dtype in (torch.float32, torch.int64) or (k.endswith("_f64") and v.dtype == torch.float64), k
    save_file({k: v.contiguous() for k, v in ex.items()}, os.path.join(OUT, "expected.safetensors"))
    write_readme(errs, n_grads, len(ex))

    print(f"wrote {len(ex)} tensors ({n_grads} grads) to {OUT}")
    print("torch f32 vs f64: max|latent| %.3e  max|pred| %.3e  max|logits_train| %.3e  loss rel %.3e"
          % (errs["latent"], errs["pred"], errs["logits_train"], errs["loss_rel"]))
    print("rec_loss %.6f  ce %.6f  loss %.6f" % (rec.item(), ce.item(), loss.item()))
    for f in sorted(os.listdir(OUT)):
        path = os.path.join(OUT, f)
        with open(path, "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()[:16]
        print(f"  {f:28s} {os.path.getsize(path):9d} B  sha256:{digest}")


def write_readme(errs, n_grads, n_tensors):
    cfg = ", ".join(f"{k}={v}" for k, v in CFG.items())
    text = f"""# Tiny SupMAE parity fixtures

Generated by `python3 tools/parity/make_fixtures.py` (run from the repo root) with the PyTorch
reference in `tools/parity/reference.py`; CPU, 1 thread, TF32 off, fixed seeds (deterministic:
re-running reproduces these files byte for byte). Weights are random (spec 1.11 init, then
perturbed), not official weights.

Config: {cfg}; batch N={N}, mask_ratio={MASK_RATIO} (L={L}, K={K}), temperature T={T},
cls_loss_ratio lam={LAM}. Fine-tune ViT: same encoder dims, 10 classes, drop_path 0, eval mode.

| file | content |
| --- | --- |
| `supmae_tiny.pth` | `{{'model': state_dict, 'epoch': 3}}` of the SupMAE pre-training model (official key names), saved before any forward |
| `supmae_tiny_plain.pth` | the same state dict, saved bare (no wrapper dict), with `cls_head.*` renamed `projection_head.*` as in the released SupMAE checkpoint |
| `vit_tiny_gp.pth` | `{{'model': sd}}` fine-tune ViT, global_pool=True (`fc_norm.*`, no `norm.*`) |
| `vit_tiny_cls.pth` | `{{'model': sd}}` fine-tune ViT, global_pool=False (`norm.*` from the pre-training ckpt) |
| `expected.safetensors` | {n_tensors} tensors: inputs, intermediates, losses, {n_grads} `grad.<key>` tensors, f64 replay, fine-tune outputs (see tools/parity/README.md) |

Measured torch float32 vs float64 (same weights and noise, train mode):

| quantity | value |
| --- | --- |
| max abs latent | {errs['latent']:.3e} |
| max abs pred | {errs['pred']:.3e} |
| max abs logits_train | {errs['logits_train']:.3e} |
| relative loss | {errs['loss_rel']:.3e} |
"""
    with open(os.path.join(OUT, "README.md"), "w") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
