"""ReSeND (docs/METHOD.md §2): ResNet-18 features f, relational transformer r over [label, z_i, z_j], head c.

There is no positional embedding, so swapping the two images leaves the output unchanged.
The model knows nothing of where its backbone weights come from: `build` receives them (see
`lib.pretrain.backbone_weights` and `lib.backbone`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lib.backbone import FEATURE_DIM, initialise, resnet18_features


def label_token_block(block: nn.TransformerEncoderLayer, x: Tensor) -> Tensor:
    """The pre-LN `block` applied to the sequence `x` (N, L, d), returning only the label token's output (N, d).

    Nothing after the last block reads the other tokens, so the last block needs them only as keys and values:
    the query, the attention output projection and the MLP run on one token instead of three (the same
    arithmetic as ``block(x)[:, 0]``, ~25 % fewer FLOPs of the relational module in training and evaluation;
    tests/test_model.py checks the equality, benchmarks/train_throughput.py the speed).
    """
    h = block.norm1(x)
    x0 = x[:, 0:1] + block.self_attn(h[:, 0:1], h, h, need_weights=False)[0]
    x0 = x0 + block.linear2(block.activation(block.linear1(block.norm2(x0))))
    return x0[:, 0]


class ReSeND(nn.Module):
    """f (ResNet-18) + r (pre-LN transformer on [label, z_i, z_j]) + c (mlp or fc head)."""

    def __init__(self, out_dim: int = 1, d_model: int = 768, n_heads: int = 12, n_blocks: int = 4, mlp_ratio: int = 4,
                 head: str = "mlp", head_hidden: int = 256, small_stem: bool = False):
        super().__init__()
        self.backbone = resnet18_features(small_stem)
        self.project = nn.Linear(FEATURE_DIM, d_model)
        self.label_token = nn.Parameter(torch.zeros(1, 1, d_model))  # trunc-normal .02 in init_relational
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(d_model, n_heads, mlp_ratio * d_model, dropout=0.0, activation="gelu",
                                       layer_norm_eps=1e-6, norm_first=True, batch_first=True)
            for _ in range(n_blocks)
        )
        self.norm = nn.LayerNorm(d_model, eps=1e-6)
        self.head_kind = head
        if head == "mlp":
            self.head_hidden = nn.Linear(d_model, head_hidden)
            self.head_out = nn.Linear(head_hidden, out_dim, bias=False)
        elif head == "fc":
            self.head_out = nn.Linear(d_model, out_dim)
        else:
            raise ValueError(f"head={head!r} must be mlp or fc")
        self.out_dim = out_dim
        self.init_relational()

    def init_relational(self) -> None:
        """Reference init of r and c (timm ViT ``init_weights``): every Linear and the attention qkv trunc-normal
        std .02 with zero bias, LayerNorm 1 / 0, label token trunc-normal .02. The backbone keeps its own init."""
        nn.init.trunc_normal_(self.label_token, std=0.02)
        head = [self.head_hidden, self.head_out] if self.head_kind == "mlp" else [self.head_out]
        for module in [self.project, *self.blocks, self.norm, *head]:
            for sub in module.modules():
                if isinstance(sub, nn.Linear):  # also the attention out_proj and the MLP linear1/linear2
                    nn.init.trunc_normal_(sub.weight, std=0.02)
                    if sub.bias is not None:
                        nn.init.zeros_(sub.bias)
                elif isinstance(sub, nn.MultiheadAttention):  # qkv is a Parameter pair, not a Linear
                    nn.init.trunc_normal_(sub.in_proj_weight, std=0.02)
                    nn.init.zeros_(sub.in_proj_bias)
                elif isinstance(sub, nn.LayerNorm):
                    nn.init.ones_(sub.weight)
                    nn.init.zeros_(sub.bias)

    def features(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) normalised images -> (N, 512) pooled backbone features."""
        return self.backbone(images)

    def relate(self, fa: Tensor, fb: Tensor, return_repr: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Head output (N, out_dim) for feature pairs; with ``return_repr`` also the relational representation
        (the mlp head's hidden layer before its ReLU, or the label token output v for the fc head)."""
        tokens = self.project(torch.stack([fa, fb], dim=1))  # (N, 2, d)
        x = torch.cat([self.label_token.expand(len(tokens), -1, -1).to(tokens.dtype), tokens], dim=1)
        for block in self.blocks[:-1]:
            x = block(x)
        v = self.norm(label_token_block(self.blocks[-1], x))
        if self.head_kind == "mlp":
            rep = self.head_hidden(v)
            out = self.head_out(torch.relu(rep))
        else:
            rep, out = v, self.head_out(v)
        return (out, rep) if return_repr else out

    def forward(self, img_a: Tensor, img_b: Tensor) -> Tensor:
        feats = self.features(torch.cat([img_a, img_b]))
        return self.relate(feats[: len(img_a)], feats[len(img_a):])


def build(settings, out_dim: int, weights: tuple[Path | None, str]) -> tuple[ReSeND, dict[str, Any]]:
    """The model for `settings`, its backbone initialised from ``weights = (file or None, what it is)`` (see
    `lib.pretrain.backbone_weights`), and an info dict for env.json: ``pretrained`` says what initialised it."""
    model = ReSeND(out_dim=out_dim, d_model=settings.d_model, n_heads=settings.n_heads, n_blocks=settings.n_blocks,
                   mlp_ratio=settings.mlp_ratio, head=settings.head, head_hidden=settings.head_hidden,
                   small_stem=settings.small_stem)
    source = initialise(model.backbone, weights)
    info = {
        "pretrained": source,
        "pretrained_setting": settings.pretrained,
        "parameters": sum(p.numel() for p in model.parameters()),
        "out_dim": out_dim,
    }
    return model, info
