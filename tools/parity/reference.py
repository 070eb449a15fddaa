"""PyTorch reference for the SupMAE / MAE Rust port (parity fixtures only).

Written from /work/shared/docs/supmae-spec.md (sections 1, 3, 4); it reproduces the behaviour of
facebookresearch/mae `models_mae.py`, enyac-group/supmae `models_supmae.py` / `models_vit.py` and
the timm-0.3.2 layers they use, without importing timm. Module and parameter names are chosen so
that `state_dict()` keys are exactly the official checkpoint keys (spec 4.2 / 4.3).

Shape letters: N batch, C=3 channels, S image side, p patch, g=S/p grid side, L=g*g patches,
K=int(L*(1-r)) kept patches, D encoder width, Dd decoder width, H cls-head hidden, Q classes.

Every forward accepts an optional `trace` dict that receives the intermediate tensors the parity
fixtures export (names as in tools/parity/README.md).
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

LN_EPS = 1e-6


def layer_norm(dim):
    return nn.LayerNorm(dim, eps=LN_EPS)


# ---------------------------------------------------------------------------------------------
# Fixed 2-D sin-cos positional embedding (spec 1.3)
# ---------------------------------------------------------------------------------------------
def sincos_pos_embed(dim, grid, cls_token=True):
    """float64 numpy array (grid*grid [+1], dim).

    Row n = i*grid + j (i row, j column) is
    [sin(j*w), cos(j*w), sin(i*w), cos(i*w)] with w_k = 10000**(-k/(dim/4)), k < dim/4:
    the first half encodes the COLUMN index, the second half the ROW index.
    With cls_token a zero row is prepended.
    """
    assert dim % 4 == 0, "sin-cos pos embed needs dim % 4 == 0"
    q = dim // 4
    omega = np.arange(q, dtype=np.float64) / float(q)
    omega = 1.0 / 10000.0 ** omega                                  # (q,)
    n = np.arange(grid * grid)
    col = (n % grid).astype(np.float64)
    row = (n // grid).astype(np.float64)
    a = col[:, None] * omega[None, :]                               # (L, q)
    b = row[:, None] * omega[None, :]
    emb = np.concatenate([np.sin(a), np.cos(a), np.sin(b), np.cos(b)], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros((1, dim)), emb], axis=0)
    return emb


# ---------------------------------------------------------------------------------------------
# timm-0.3.2-style layers
# ---------------------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    """(N, C, S, S) -> (N, L, D); Conv2d kernel = stride = p, tokens in raster (row-major) order."""

    def __init__(self, img_size, patch_size, in_chans, embed_dim):
        super().__init__()
        self.img_size, self.patch_size = img_size, patch_size
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        assert x.shape[2] == self.img_size and x.shape[3] == self.img_size, "image size mismatch"
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention, fused qkv (features ordered (s in q/k/v, head, e)). (B,T,d)->(B,T,d)."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, T, d = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                              # (B, heads, T, hd)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, T, d))


class Mlp(nn.Module):
    """fc1 -> exact (erf) GELU -> fc2. (B,T,d)->(B,T,d)."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def drop_path(x, rate, training):
    """timm stochastic depth: per sample, out = x / keep * floor(keep + U[0,1))."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = torch.floor(keep + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device))
    return x.div(keep) * mask


class Block(nn.Module):
    """Pre-norm transformer block: x += DP(attn(norm1 x)); x += DP(mlp(norm2 x)). (B,T,d)->(B,T,d)."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, drop_path_rate=0.0):
        super().__init__()
        self.norm1 = layer_norm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = layer_norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path_rate = drop_path_rate

    def forward(self, x):
        x = x + drop_path(self.attn(self.norm1(x)), self.drop_path_rate, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path_rate, self.training)


# ---------------------------------------------------------------------------------------------
# Pre-training model (spec 1): MAE, plus the SupMAE classification branch when cls_hidden_mlp
# is not None.
# ---------------------------------------------------------------------------------------------
class SupMAE(nn.Module):
    """forward(imgs (N,C,S,S), mask_ratio, noise (N,L)) -> (rec_loss (), pred (N,L,p*p*3),
    mask (N,L) float 0=keep 1=removed, logits (N,Q) or None).

    cls_hidden_mlp: None -> plain MAE (no cls_head); 0 -> cls_head = Linear(D,Q);
    H>0 -> cls_head = Sequential(Linear(D,H), BatchNorm1d(H), ReLU, Linear(H,Q)).
    """

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768, depth=12, num_heads=12,
                 decoder_embed_dim=512, decoder_depth=1, decoder_num_heads=16, mlp_ratio=4.0,
                 norm_pix_loss=True, cls_hidden_mlp=3072, nb_classes=1000, global_pool=True):
        super().__init__()
        # The official patchify hard-codes 3 channels (spec 1.9); building (and loading) a
        # 1-channel model is fine, its loss needs `patchify` with C = 1 (see below).
        self.in_chans = in_chans
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        L = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, L + 1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = layer_norm(embed_dim)

        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, L + 1, decoder_embed_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            [Block(decoder_embed_dim, decoder_num_heads, mlp_ratio) for _ in range(decoder_depth)])
        self.decoder_norm = layer_norm(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size ** 2 * in_chans)

        if cls_hidden_mlp is None:
            self.cls_head = None
        elif cls_hidden_mlp == 0:
            self.cls_head = nn.Linear(embed_dim, nb_classes)
        else:
            self.cls_head = nn.Sequential(nn.Linear(embed_dim, cls_hidden_mlp), nn.BatchNorm1d(cls_hidden_mlp),
                                          nn.ReLU(), nn.Linear(cls_hidden_mlp, nb_classes))
        self.global_pool = global_pool
        self.norm_pix_loss = norm_pix_loss
        self.initialize_weights()

    def initialize_weights(self):
        """Spec 1.11. patch_embed.proj.bias keeps the Conv2d default; BN keeps PyTorch defaults."""
        g = int(round(math.sqrt(self.patch_embed.num_patches)))
        self.pos_embed.data.copy_(torch.from_numpy(sincos_pos_embed(self.pos_embed.shape[-1], g)).float()[None])
        self.decoder_pos_embed.data.copy_(
            torch.from_numpy(sincos_pos_embed(self.decoder_pos_embed.shape[-1], g)).float()[None])
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # --- pixels <-> patches (spec 1.9): inner order (row-in-patch, col-in-patch, channel) ---
    def patchify(self, imgs):
        """(N,3,S,S) -> (N,L,p*p*3)."""
        p = self.patch_embed.patch_size
        N, _, S, _ = imgs.shape
        g = S // p
        C = imgs.shape[1]  # 3 in the official code
        x = imgs.reshape(N, C, g, p, g, p).permute(0, 2, 4, 3, 5, 1)  # n, gi, gj, pi, pj, c
        return x.reshape(N, g * g, p * p * C)

    def unpatchify(self, x):
        """(N,L,p*p*3) -> (N,3,S,S); exact inverse of patchify."""
        p = self.patch_embed.patch_size
        N, L, _ = x.shape
        g = int(round(math.sqrt(L)))
        C = self.in_chans
        x = x.reshape(N, g, g, p, p, C).permute(0, 5, 1, 3, 2, 4)   # n, c, gi, pi, gj, pj
        return x.reshape(N, C, g * p, g * p)

    @staticmethod
    def random_masking(x, mask_ratio, noise=None):
        """x (N,L,D) -> x_vis (N,K,D) [ascending-noise order], mask (N,L), ids_restore, ids_shuffle."""
        N, L, D = x.shape
        K = int(L * (1 - mask_ratio))
        if noise is None:
            noise = torch.rand(N, L, device=x.device)
        ids_shuffle = torch.argsort(noise, dim=1)        # small noise = keep
        ids_restore = torch.argsort(ids_shuffle, dim=1)  # inverse permutation
        ids_keep = ids_shuffle[:, :K]
        x_vis = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, D))
        mask = torch.ones(N, L, device=x.device)
        mask[:, :K] = 0
        mask = torch.gather(mask, 1, ids_restore)
        return x_vis, mask, ids_restore, ids_shuffle

    def forward_encoder(self, imgs, mask_ratio, noise=None, trace=None):
        """-> latent (N,1+K,D) (after final norm), mask (N,L), ids_restore (N,L)."""
        t = self.patch_embed(imgs)
        if trace is not None:
            trace["patch_tokens"] = t
        t = t + self.pos_embed[:, 1:, :]
        x, mask, ids_restore, ids_shuffle = self.random_masking(t, mask_ratio, noise)
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        if trace is not None:
            K = x.shape[1] - 1
            trace.update(ids_shuffle=ids_shuffle, ids_restore=ids_restore, ids_keep=ids_shuffle[:, :K],
                         mask=mask, encoder_input=x)
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if trace is not None:
                trace[f"block_out.{i}"] = x
        x = self.norm(x)
        if trace is not None:
            trace["latent"] = x
        return x, mask, ids_restore

    def forward_decoder(self, latent, ids_restore, trace=None):
        """latent (N,1+K,D), ids_restore (N,L) -> pred (N,L,p*p*3) (cls position dropped)."""
        y = self.decoder_embed(latent)
        N, T, Dd = y.shape
        L = ids_restore.shape[1]
        z = torch.cat([y[:, 1:], self.mask_token.expand(N, L + 1 - T, -1)], dim=1)
        z = torch.gather(z, 1, ids_restore.unsqueeze(-1).expand(-1, -1, Dd))   # unshuffle
        x = torch.cat([y[:, :1], z], dim=1) + self.decoder_pos_embed
        if trace is not None:
            trace["decoder_input"] = x
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_pred(self.decoder_norm(x))
        return x[:, 1:, :]

    def forward_loss(self, imgs, pred, mask, norm_pix=None, trace=None, suffix=""):
        """Mean over removed patches of the per-patch MSE. norm-pix uses the UNBIASED variance."""
        norm_pix = self.norm_pix_loss if norm_pix is None else norm_pix
        target = self.patchify(imgs)
        if norm_pix:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)              # unbiased (denominator P-1)
            target = (target - mean) / (var + 1e-6) ** 0.5
        per_patch = ((pred - target) ** 2).mean(dim=-1)        # (N, L)
        loss = (per_patch * mask).sum() / mask.sum()
        if trace is not None:
            trace["target" + suffix], trace["per_patch_loss" + suffix] = target, per_patch
            trace["rec_loss" + suffix] = loss
        return loss

    def forward_classification(self, latent, trace=None):
        """latent (N,1+K,D) -> logits (N,Q): mean of the visible patch tokens (cls excluded) or cls."""
        feat = latent[:, 1:, :].mean(dim=1) if self.global_pool else latent[:, 0, :]
        if trace is not None:
            trace["pooled"] = feat
        return self.cls_head(feat)

    def forward(self, imgs, mask_ratio=0.75, noise=None, trace=None):
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise, trace)
        pred = self.forward_decoder(latent, ids_restore, trace)
        logits = None if self.cls_head is None else self.forward_classification(latent, trace)
        loss = self.forward_loss(imgs, pred, mask, trace=trace)
        if trace is not None:
            trace["pred"] = pred
        return loss, pred, mask, logits


def supmae_total_loss(rec_loss, logits, labels, temperature=10.0, cls_loss_ratio=0.01):
    """engine_pretrain: L = L_rec + lam * CE(logits / T, labels). Returns (total, ce, cls_loss)."""
    ce = F.cross_entropy(logits / temperature, labels)
    cls_loss = ce * cls_loss_ratio
    return rec_loss + cls_loss, ce, cls_loss


# ---------------------------------------------------------------------------------------------
# Fine-tuning classifier (spec 3, models_vit.py)
# ---------------------------------------------------------------------------------------------
class VisionTransformer(nn.Module):
    """(N,C,S,S) -> logits (N,Q). global_pool=True: head(fc_norm(mean(x[:,1:]))) and NO `norm`
    module; global_pool=False: head(norm(x)[:,0]). pos_embed (1,L+1,D) is learnable."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dim=768, depth=12,
                 num_heads=12, mlp_ratio=4.0, drop_path_rate=0.0, global_pool=True):
        super().__init__()
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        rates = [r.item() for r in torch.linspace(0, drop_path_rate, depth)]
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, rates[i]) for i in range(depth)])
        self.global_pool = global_pool
        if not global_pool:
            self.norm = layer_norm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)
        if global_pool:
            self.fc_norm = layer_norm(embed_dim)   # registered after head, as upstream
        self._init_weights()

    def _init_weights(self):
        """timm base init (trunc normal 0.02, cut at +-2 absolute); the loader overwrites all but
        head/fc_norm, and main_finetune re-inits head.weight with std 2e-5."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02, a=-2.0, b=2.0)
        nn.init.trunc_normal_(self.cls_token, std=0.02, a=-2.0, b=2.0)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-2.0, b=2.0)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, imgs, trace=None):
        """-> pooled feature (N,D)."""
        x = self.patch_embed(imgs)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        if trace is not None:
            trace["features"] = x
        pooled = self.fc_norm(x[:, 1:, :].mean(dim=1)) if self.global_pool else self.norm(x)[:, 0]
        if trace is not None:
            trace["pooled"] = pooled
        return pooled

    def forward(self, imgs, trace=None):
        logits = self.head(self.forward_features(imgs, trace))
        if trace is not None:
            trace["logits"] = logits
        return logits
