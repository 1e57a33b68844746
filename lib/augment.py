"""The training augmentation of docs/METHOD.md §3, applied to a whole uint8 batch at once on its device.

`BatchAugment` draws every image's own parameters on the CPU from the run's torch RNG (or a `torch.Generator`), in
one vectorised call per batch, then applies them to the batch where it lies (GPU or CPU) with batched tensor ops:
RandomResizedCrop(scale .8-1, ratio 3/4-4/3) as `torchvision.ops.roi_align` boxes resized to the output side,
horizontal flip p=.5 (none for sets that are not mirror invariant), ColorJitter(.8, .8, .8, .1) p=.5 (its four
ops in a random order per image), RandomGrayscale p=.1, ImageNet normalisation. The parameters follow exactly the
distributions of the torchvision v2 pipeline it replaces (`reference_transform`, kept as the specification the
tests and benchmarks/train_throughput.py compare with); the pixel formulas are torchvision's, with per-image
factors. Because the draws happen on the CPU, a seeded run draws the same parameters on any device, and the
checkpoint's torch RNG state makes resume bit-identical.

Differences from the per-image pipeline, none in distribution: the whole chain runs in float32 (the v2 pipeline
rounds to uint8 after the resize and after each jitter op), and a crop's edge pixels interpolate with the pixel
just outside the crop (roi_align samples the image, not the cropped copy).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from lib.device import to_device

VERSION = "batched-1"  # in the cache keys of what trains on augmented images (feature banks, pretrained backbones)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale
CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries 10 boxes, then falls back to a centre crop
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)  # ColorJitter's ops, in torchvision's fn_idx numbering
CPU_CHUNK_PIXELS = 4 * 224 * 224  # output pixels per CPU chunk: 4 images at 224 px, 196 at 32 px


@dataclass
class Params:
    """Per-image parameters of one batch (CPU tensors): crop `boxes` (B,4) float (x1, y1, x2, y2) in pixels, `flip`
    (B,) bool, `jitter` (B,) bool (ColorJitter applied), `order` (B,4) long (a permutation of the four jitter ops),
    `factors` (B,4) float (brightness, contrast, saturation, hue), `gray` (B,) bool."""

    boxes: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    order: torch.Tensor
    factors: torch.Tensor
    gray: torch.Tensor

    def rows(self, lo: int, hi: int) -> "Params":
        return Params(*(t[lo:hi] for t in (self.boxes, self.flip, self.jitter, self.order, self.factors, self.gray)))


class BatchAugment:
    """Callable: uint8 (B,3,H,W) (or one (3,H,W) image) on any device -> float32 (B,3,S,S) normalised, each image
    with its own random parameters (`sample`, then `apply`). ``crops = True``: a file-backed set hands it the decoded
    original (`datasets.imagesets.crops_itself`)."""

    crops = True

    def __init__(self, size: int, hflip: bool = True, scale=(0.8, 1.0), ratio=(3 / 4, 4 / 3),
                 jitter=(0.8, 0.8, 0.8, 0.1), jitter_p: float = 0.5, gray_p: float = 0.1):
        self.size, self.hflip = int(size), bool(hflip)
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        b, c, s, h = jitter
        self.ranges = ((max(0.0, 1 - b), 1 + b), (max(0.0, 1 - c), 1 + c), (max(0.0, 1 - s), 1 + s), (-h, h))
        self.jitter_p, self.gray_p = float(jitter_p), float(gray_p)

    def __repr__(self) -> str:
        return (f"BatchAugment(size={self.size}, hflip={self.hflip}, scale={self.scale}, jitter_p={self.jitter_p}, "
                f"gray_p={self.gray_p})")

    # ------------------------------------------------------------------ parameters (CPU, vectorised)
    def sample(self, n: int, height: int, width: int, generator: torch.Generator | None = None) -> Params:
        """`n` images' parameters for (height, width) inputs, drawn from `generator` (None: the global torch RNG)."""
        def rand(*shape):
            return torch.rand(*shape, generator=generator, dtype=torch.float64)

        area = height * width
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        target = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * rand(n, CROP_ATTEMPTS))
        aspect = torch.exp(log_lo + (log_hi - log_lo) * rand(n, CROP_ATTEMPTS))
        w = torch.round(torch.sqrt(target * aspect))  # round half to even, as Python's round in torchvision
        h = torch.round(torch.sqrt(target / aspect))
        ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = ok.to(torch.int8).argmax(dim=1, keepdim=True)  # the first box that fits, as torchvision's loop
        w, h, found = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0], ok.any(dim=1)
        # no box fitted in 10 tries: torchvision's fallback, the central crop of the clamped aspect ratio
        in_ratio = width / height
        fw, fh = float(width), float(height)
        if in_ratio < self.ratio[0]:
            fh = float(round(fw / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            fw = float(round(fh * self.ratio[1]))
        w, h = torch.where(found, w, fw), torch.where(found, h, fh)
        u_top, u_left = rand(n), rand(n)  # torch.randint(0, height - h + 1) per image
        top = torch.where(found, torch.floor(u_top * (height - h + 1)), torch.floor((height - h) / 2))
        left = torch.where(found, torch.floor(u_left * (width - w + 1)), torch.floor((width - w) / 2))
        boxes = torch.stack([left, top, left + w, top + h], dim=1).float()
        flip = (rand(n) < 0.5) & self.hflip
        jitter = rand(n) < self.jitter_p
        order = torch.argsort(rand(n, 4), dim=1)  # a uniform random permutation per image (torch.randperm(4))
        lo = torch.tensor([r[0] for r in self.ranges], dtype=torch.float64)
        hi = torch.tensor([r[1] for r in self.ranges], dtype=torch.float64)
        factors = (lo + (hi - lo) * rand(n, 4)).float()
        gray = rand(n) < self.gray_p
        return Params(boxes, flip, jitter, order, factors, gray)

    # ------------------------------------------------------------------ pixels (the images' device, batched)
    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        """uint8 (B,3,H,W) `images` with `params` -> float32 (B,3,S,S) normalised, on the images' device. On the CPU
        the batch goes through in chunks of about CPU_CHUNK_PIXELS output pixels: each chunk's passes stay in the
        cache (one pass over a whole 224 px batch per op is memory-bound and slower than the per-image pipeline)."""
        if images.device.type != "cpu":
            return self._apply(images, params)
        step = max(1, CPU_CHUNK_PIXELS // (self.size * self.size))
        out = torch.empty(len(images), 3, self.size, self.size)
        for lo in range(0, len(images), step):
            out[lo:lo + step] = self._apply(images[lo:lo + step], params.rows(lo, lo + step))
        return out

    def _apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        from torchvision.ops import roi_align

        device, n = images.device, len(images)
        x = images.float().div_(255)
        rois = to_device(torch.cat([torch.arange(n, dtype=torch.float32)[:, None], params.boxes], dim=1), device)
        # aligned=True: output pixel p samples the box at x1 + (p + .5) * w / S - .5, torchvision's bilinear resize
        x = roi_align(x, rois, output_size=self.size, spatial_scale=1.0, sampling_ratio=0, aligned=True)
        flipped = to_device(torch.nonzero(params.flip & self.hflip)[:, 0], device)  # the subsets are known on the CPU
        if len(flipped):
            x[flipped] = x[flipped].flip(-1)
        if params.jitter.any():
            x = self._jitter(x, params)
        gray = to_device(torch.nonzero(params.gray)[:, 0], device)
        if len(gray):
            x[gray] = grayscale(x[gray]).expand(-1, 3, -1, -1)
        mean, std = constant(IMAGENET_MEAN, device), constant(IMAGENET_STD, device)
        return x.sub_(mean[:, None, None]).div_(std[:, None, None])

    def _jitter(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """ColorJitter on the images with ``params.jitter``: in slot k each applies its op ``order[:, k]`` (the
        subsets are known on the CPU: no device synchronisation)."""
        device = x.device
        for slot in range(4):
            for op in range(4):
                chosen = torch.nonzero(params.jitter & (params.order[:, slot] == op))[:, 0]
                if len(chosen) == 0:
                    continue
                factor = to_device(params.factors[chosen, op], device)[:, None, None, None]
                chosen = to_device(chosen, device)
                x[chosen] = JITTER_OPS[op](x[chosen], factor)
        return x

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        single = images.ndim == 3
        batch = images[None] if single else images
        out = self.apply(batch, self.sample(len(batch), batch.shape[-2], batch.shape[-1], generator))
        return out[0] if single else out


@functools.lru_cache(maxsize=None)
def _constant(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    return to_device(torch.tensor(values), device)


def constant(values: tuple[float, ...], device) -> torch.Tensor:
    """float32 `values` on `device`, copied there once (`torch.tensor(..., device=cuda)` at every batch would wait
    for the GPU each time)."""
    return _constant(tuple(values), torch.device(device))


# ---------------------------------------------------------------- torchvision's colour formulas, one factor per image
def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B,1,H,W) luma of float RGB (B,3,H,W), torchvision's weights."""
    r, g, b = x.unbind(dim=-3)
    return (r * GRAY_WEIGHTS[0] + g * GRAY_WEIGHTS[1] + b * GRAY_WEIGHTS[2]).unsqueeze(-3)


def _blend(a: torch.Tensor, b: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    return (a * ratio + b * (1.0 - ratio)).clamp_(0.0, 1.0)


def brightness(x, factor):
    return (x * factor).clamp_(0.0, 1.0)


def contrast(x, factor):
    return _blend(x, grayscale(x).mean(dim=(-3, -2, -1), keepdim=True), factor)


def saturation(x, factor):
    return _blend(x, grayscale(x), factor)


def hue(x, factor):
    """torchvision's adjust_hue (RGB -> HSV, Pillow's formulas; hue + shift mod 1; HSV -> RGB) with a (B,1,1,1) shift
    in [-0.5, 0.5]. The same numbers as torchvision's `_rgb_to_hsv` / `_hsv_to_rgb` (private, so not called), in
    fewer passes over the pixels: the hue by `torch.where` over the channel holding the maximum, the way back by the
    closed form v - v s clamp(min(k, 4 - k), 0, 1), k = (n + 6 h) mod 6, n = 5, 3, 1 for R, G, B."""
    r, g, b = x.unbind(dim=-3)
    minc, maxc = torch.aminmax(x, dim=-3)
    equal = maxc == minc
    delta = maxc - minc
    s = delta / torch.where(equal, 1.0, maxc)
    red, green = maxc == r, maxc == g
    numerator = torch.where(red, g - b, torch.where(green, b - r, r - g))
    offset = torch.where(red, 0.0, torch.where(green, 2.0, 4.0))
    h = numerator.div_(torch.where(equal, 1.0, delta)).add_(offset)
    h = (h.div_(6.0).add_(1.0).fmod_(1.0) + factor[:, 0]).remainder_(1.0)  # (B,H,W)
    k = (constant((5.0, 3.0, 1.0), x.device)[:, None, None] + 6.0 * h[:, None]).remainder_(6.0)
    chroma = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return chroma.mul_(-(maxc * s)[:, None]).add_(maxc[:, None])


JITTER_OPS = {BRIGHTNESS: brightness, CONTRAST: contrast, SATURATION: saturation, HUE: hue}


def reference_transform(image_size: int, hflip: bool = True, scale: tuple[float, float] = (0.8, 1.0),
                        jitter: float = 0.8, jitter_p: float = 0.5, grayscale: float = 0.1):
    """The per-image torchvision v2 pipeline `BatchAugment` replaces (uint8 (3,H,W) -> float32 normalised): the
    specification its tests and benchmarks/train_throughput.py compare with; training does not use it. The other
    arguments give the same pipeline with another recipe's values (CIDER's: `baselines.reweightood.cider_transform`):
    RandomResizedCrop `scale`, ColorJitter(jitter, jitter, jitter, 0.1) with p `jitter_p`, grayscale p `grayscale`."""
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomResizedCrop(image_size, scale=scale, antialias=True),
        *([v2.RandomHorizontalFlip(0.5)] if hflip else []),
        v2.RandomApply([v2.ColorJitter(jitter, jitter, jitter, 0.1)], p=jitter_p),
        v2.RandomGrayscale(grayscale),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
