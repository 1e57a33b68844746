"""The ResNet-18 trunk every model of the study starts from, and its weight files (no training, no settings).

Weights are never downloaded: ``pretrained`` = auto | imagenet | none | source | a path. `find_pretrained` resolves
the ImageNet ones: torchvision's ``ResNet18_Weights.IMAGENET1K_V1`` file, looked up in the torch hub cache only
(``imagenet`` fails loudly without it, ``auto`` warns and starts from random init); ``source`` weights are built by `lib.pretrain`, which
also decides, for a Settings, which file a model starts from (`lib.pretrain.backbone_weights`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn

IMAGENET_WEIGHTS = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
RESNET18_FILE = IMAGENET_WEIGHTS.url.rsplit("/", 1)[-1]  # resnet18-f37072fd.pth, the name torch.hub caches it under
FEATURE_DIM = 512  # ResNet-18 pooled feature width


def hub_candidates() -> list[Path]:
    """Where the torch hub cache may hold `RESNET18_FILE`, first = torch.hub's own folder (honours TORCH_HOME)."""
    candidates = [Path(torch.hub.get_dir()) / "checkpoints" / RESNET18_FILE]
    if os.environ.get("TORCH_HOME"):
        candidates.append(Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints" / RESNET18_FILE)
    candidates.append(Path.home() / ".cache" / "torch" / "hub" / "checkpoints" / RESNET18_FILE)
    return candidates


def find_pretrained(pretrained: str) -> Path | None:
    """The ImageNet weight file to load, or None for random init. ``imagenet`` and ``auto`` look in the torch hub
    cache only (never download): ``imagenet`` raises FileNotFoundError without the file, ``auto`` warns and
    returns None."""
    if pretrained == "none":
        return None
    if pretrained not in ("auto", "imagenet"):
        path = Path(pretrained).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"pretrained={pretrained!r}: no such weight file (use auto, imagenet, none, source "
                                    "or an existing path)")
        return path
    candidates = hub_candidates()
    found = next((p for p in candidates if p.exists()), None)
    if found is None and pretrained == "imagenet":
        raise FileNotFoundError(f"pretrained=imagenet: no {RESNET18_FILE} in {candidates[0].parent}: put torchvision's "
                                f"ResNet18_Weights.IMAGENET1K_V1 file there ({IMAGENET_WEIGHTS.url}; nothing is "
                                "downloaded at run time) or set pretrained=auto or none")
    if found is None:  # one visible line, not only env.json: auto must never fall back silently
        warnings.warn(f"pretrained=auto: no {RESNET18_FILE} in {candidates[0].parent}, the backbone starts from RANDOM "
                      "init (put the torchvision ImageNet file there, or set pretrained=none to say so)", stacklevel=2)
    return found


def resnet18_features(small_stem: bool) -> nn.Module:
    """ResNet-18 with fc = Identity (512-d output); small stem = 3x3 stride-1 conv1 and no max-pool."""
    net = torchvision.models.resnet18(weights=None)
    if small_stem:
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


def trunk_of(net: nn.Module) -> nn.Sequential:
    """torchvision ResNet -> Sequential up to layer4 (sharing its modules, so ``net.state_dict()`` sees training)."""
    return nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)


def load_backbone_weights(backbone: nn.Module, path: Path, what: str = "imagenet") -> str:
    """Load a torchvision-layout ResNet-18 state dict into `backbone` (fc is skipped); a conv1 whose shape differs
    (ImageNet's 7x7 into the small stem's 3x3) stays random. Returns a note for env.json."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = backbone.state_dict()
    skipped = sorted(k for k in state if k.startswith("conv1.") and k in own and state[k].shape != own[k].shape)
    state = {k: v for k, v in state.items() if not k.startswith("fc.") and k not in skipped}
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if unexpected or set(missing) - set(skipped):
        raise RuntimeError(f"{path} does not match ResNet-18: missing {missing}, unexpected {unexpected}")
    return f"{what} ({path})" + (", conv1 random (small stem)" if skipped else "")


def initialise(backbone: nn.Module, weights: tuple[Path | None, str]) -> str:
    """Load ``weights = (file or None, what it is)`` into `backbone`; returns the env.json note ("random init"
    without a file)."""
    path, what = weights
    return load_backbone_weights(backbone, path, what) if path else "random init"
