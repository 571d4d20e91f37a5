"""Vision Transformers (Dosovitskiy et al. 2021) laid out like timm's ``vit_small_patch*_224``.

Parameters: ``patch_embed.proj`` (Conv2d, kernel = stride = patch), ``cls_token`` (1, 1, D),
``pos_embed`` (1, 1 + N, D), ``blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``,
``norm``, ``head``. Pre-norm blocks, LayerNorm eps 1e-6, exact (erf) GELU, qkv with bias, the class
token read after the final norm -- so the penultimate vector (the input of ``head``) is the normed
CLS token, D-dimensional (384 for ViT-S).

Inputs whose side is not the native one (224) get their patch-position embeddings resized
bicubically on the fly (the class-token position is kept), so layers can be listed and features
read at small sizes too; at 224 px nothing is resized.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Attention", "Block", "Mlp", "PatchEmbed", "VisionTransformer", "trunc_normal_init"]


class PatchEmbed(nn.Module):
    """(b, 3, H, W) -> (b, (H/p)(W/p), D) by a stride-p convolution ``proj``."""

    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(3, dim, patch, patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` Linear (q, k, v stacked) and ``proj``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, T, D) -> (b, T, D)."""
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class Mlp(nn.Module):
    """``fc1`` -> GELU -> ``fc2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_ratio * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, T, D) -> (b, T, D)."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """(b, 3, H, W) normalised images -> (b, num_classes) logits from the class token.

    Args:
        patch: patch side in pixels (16 or 32 for ViT-S).
        dim, depth, heads: width, number of blocks, attention heads (ViT-S: 384, 12, 6).
        img_size: native input side; fixes the number of position embeddings.
        num_classes: outputs of ``head``.
    """

    def __init__(self, patch: int = 16, dim: int = 384, depth: int = 12, heads: int = 6,
                 img_size: int = 224, num_classes: int = 1000) -> None:
        super().__init__()
        self.grid = img_size // patch
        self.patch_embed = PatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid**2, dim))
        self.blocks = nn.Sequential(*(Block(dim, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def _positions(self, rows: int, cols: int) -> torch.Tensor:
        """(1, 1 + rows*cols, D) position embeddings, resized bicubically off the native grid."""
        if (rows, cols) == (self.grid, self.grid):
            return self.pos_embed
        cls_pos, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        dim = grid.shape[-1]
        grid = grid.reshape(1, self.grid, self.grid, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", align_corners=False,
                             antialias=rows < self.grid or cols < self.grid)
        return torch.cat([cls_pos, grid.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, 3, H, W) with H, W multiples of the patch -> (b, num_classes)."""
        patch = self.patch_embed.patch
        rows, cols = x.shape[-2] // patch, x.shape[-1] // patch
        tokens = self.patch_embed(x)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self._positions(rows, cols)
        tokens = self.norm(self.blocks(tokens))
        return self.head(tokens[:, 0])


def _trunc_normal_(tensor: torch.Tensor, std: float = 0.02, cut: float = 2.0) -> torch.Tensor:
    """Fill ``tensor`` in place with N(0, std^2) truncated to +-cut*std, by inverting the CDF.

    u ~ Uniform(Phi(-cut), Phi(cut)) and x = std * Phi^{-1}(u) = std * sqrt(2) * erfinv(2u - 1);
    one pass, unlike rejection sampling (which is slow on tens of millions of entries).
    """
    edge = math.erf(cut / math.sqrt(2.0))  # 2 * Phi(cut) - 1
    with torch.no_grad():
        tensor.uniform_(-edge, edge).erfinv_().mul_(std * math.sqrt(2.0))
        return tensor.clamp_(-cut * std, cut * std)


def trunc_normal_init(model: VisionTransformer) -> VisionTransformer:
    """Seeded-twin init in place: truncated normal (std 0.02, cut at +-2 std) for every Linear,
    the patch projection, the class token and the position embeddings; zero biases; unit-scale,
    zero-shift LayerNorms. Call inside :func:`drprobe.sources.builtin.seeded_init`.
    """
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            _trunc_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for token in (model.cls_token, model.pos_embed):
        _trunc_normal_(token)
    return model
