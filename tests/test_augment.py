"""lib.augment: the batched, on-device training augmentation draws its parameters from the same distributions as the
per-image torchvision pipeline it replaces (`augment.reference_transform`), applies torchvision's formulas to them,
and follows the torch RNG (a seeded run is reproducible)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision import transforms as v1
from torchvision.transforms.v2 import functional as F

from lib import augment, data

N = 4000  # draws per distribution
ALPHA = 1e-4  # two-sample KS and binomial tests at this level: a correct sampler fails one in ~10^4 seeds


def ks_critical(n: int, m: int, alpha: float = ALPHA) -> float:
    """Two-sample Kolmogorov-Smirnov critical distance at level `alpha` for sample sizes n and m."""
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))


def ks_distance(a, b) -> float:
    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    grid = np.concatenate([a, b])
    return float(np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b)).max())


def assert_rate(hits, p: float) -> None:
    """Binomial: the observed rate is within 4.5 standard errors (two-sided ~1e-5) of p."""
    hits = np.asarray(hits, bool)
    se = math.sqrt(p * (1 - p) / len(hits))
    assert abs(hits.mean() - p) <= 4.5 * se, (hits.mean(), p, se)


@pytest.mark.parametrize("height,width", [(32, 32), (224, 224), (30, 48)])
def test_crop_parameters_follow_torchvisions_random_resized_crop(height, width):
    """Crop area fraction, aspect ratio and position: our vectorised draws vs torchvision's RandomResizedCrop.get_params
    (the loop of 10 tries and the central fallback; 30x48 exercises the fallback and its ratio clamp)."""
    params = augment.BatchAugment(16).sample(N, height, width, torch.Generator().manual_seed(0))
    x1, y1, x2, y2 = params.boxes.double().unbind(1)
    ours = {"area": (x2 - x1) * (y2 - y1) / (height * width), "aspect": (x2 - x1) / (y2 - y1),
            "left": x1 / width, "top": y1 / height}
    torch.manual_seed(1)
    image = torch.zeros(3, height, width)
    drawn = np.array([v1.RandomResizedCrop.get_params(image, (0.8, 1.0), (3 / 4, 4 / 3)) for _ in range(N)], float)
    top, left, h, w = drawn.T
    ref = {"area": w * h / (height * width), "aspect": w / h, "left": left / width, "top": top / height}
    for key in ours:
        assert ks_distance(ours[key].numpy(), ref[key]) < ks_critical(N, N), key
    assert (x2 <= width).all() and (y2 <= height).all() and (x1 >= 0).all() and (y1 >= 0).all()
    assert (x1 == x1.round()).all() and (y2 - y1 == (y2 - y1).round()).all()  # integer boxes, as torchvision's


def test_flip_jitter_and_grayscale_follow_the_reference_rates_and_ranges():
    gen = torch.Generator().manual_seed(2)
    params = augment.BatchAugment(16).sample(N, 32, 32, gen)
    assert_rate(params.flip, 0.5)
    assert_rate(params.jitter, 0.5)
    assert_rate(params.gray, 0.1)
    assert not augment.BatchAugment(16, hflip=False).sample(N, 32, 32, gen).flip.any()  # glyphs: never flipped
    torch.manual_seed(3)
    ref = [v1.ColorJitter.get_params((0.2, 1.8), (0.2, 1.8), (0.2, 1.8), (-0.1, 0.1)) for _ in range(N)]
    for k in range(4):  # brightness, contrast, saturation, hue factors
        assert ks_distance(params.factors[:, k].numpy(), [r[k + 1] for r in ref]) < ks_critical(N, N), k
    ref_first = np.array([int(r[0][0]) for r in ref])
    for op in range(4):  # each op is first in a quarter of the images, in ours and in torchvision's randperm
        assert_rate(params.order[:, 0].numpy() == op, 0.25)
        assert_rate(ref_first == op, 0.25)
    assert (params.order.sort(dim=1).values == torch.arange(4)).all()  # permutations


def test_the_pixels_are_torchvisions_ops_with_each_images_parameters():
    """Each output image equals torchvision's functional ops applied to that image with its own parameters: the
    crops (their edge row/column aside: roi_align interpolates with the pixel just outside the crop, the v2 crop
    clamps), then flip, jitter in the image's order, grayscale and normalisation on uncropped images."""
    gen = torch.Generator().manual_seed(4)
    images = torch.randint(0, 256, (48, 3, 20, 20), dtype=torch.uint8, generator=gen)
    aug = augment.BatchAugment(20)
    params = aug.sample(len(images), 20, 20, gen)
    no_colour = augment.Params(params.boxes.clone(), *(torch.zeros_like(t) for t in (
        params.flip, params.jitter, params.order, params.factors, params.gray)))
    crops = aug.apply(images, no_colour)
    params.boxes[:] = torch.tensor([0.0, 0.0, 20.0, 20.0])
    params.jitter[:40] = True  # most images jittered, so every op lands in every slot
    out = aug.apply(images, params)
    ops = {0: F.adjust_brightness, 1: F.adjust_contrast, 2: F.adjust_saturation, 3: F.adjust_hue}
    mean, std = augment.IMAGENET_MEAN, augment.IMAGENET_STD
    for i, image in enumerate(images.float() / 255):
        x1, y1, x2, y2 = no_colour.boxes[i].int().tolist()
        crop = F.normalize(F.resized_crop(image, y1, x1, y2 - y1, x2 - x1, [20, 20], antialias=True), mean, std)
        torch.testing.assert_close(crops[i, :, 1:-1, 1:-1], crop[:, 1:-1, 1:-1], atol=2e-5, rtol=0)
        ref = F.horizontal_flip(image) if params.flip[i] else image
        if params.jitter[i]:
            for op in params.order[i].tolist():
                ref = ops[op](ref, float(params.factors[i, op]))
        if params.gray[i]:
            ref = F.rgb_to_grayscale(ref, num_output_channels=3)
        torch.testing.assert_close(out[i], F.normalize(ref, mean, std), atol=2e-5, rtol=0)


def test_seeded_batches_are_reproducible_and_every_image_draws_its_own():
    images = torch.randint(0, 256, (1, 3, 24, 24), dtype=torch.uint8).expand(16, -1, -1, -1)
    tf = data.train_transform(16)
    torch.manual_seed(7)
    first, state = tf(images), torch.get_rng_state()
    torch.manual_seed(7)
    assert torch.equal(tf(images), first) and torch.equal(torch.get_rng_state(), state)
    assert len({tuple(img.flatten()[:64].tolist()) for img in first}) == 16  # one image 16 times: 16 augmentations
    assert torch.equal(tf(images, torch.Generator().manual_seed(1)), tf(images, torch.Generator().manual_seed(1)))
    assert tf(images[0]).shape == (3, 16, 16)  # one image (a file-backed set's workers)


def test_a_set_kept_on_the_device_gives_the_batches_of_the_host_path(monkeypatch):
    """On CUDA an in-memory training set is copied to the GPU once (one channel for a grey, expanded set) and batches
    are gathered there; stood in for here by the same tensors on the CPU: the same augmented batch, the same draws."""
    grey = data.TensorImageSet(torch.randint(0, 256, (10, 1, 12, 12), dtype=torch.uint8), np.arange(10) % 2)
    tf, idx = data.train_transform(8), np.array([4, 1, 4, 9])
    assert data.resident_images(grey, "cpu") is None  # only CUDA keeps a copy
    torch.manual_seed(0)
    host = data.augment_batch(grey, idx, tf, device="cpu")
    monkeypatch.setattr(data, "resident_images", lambda imageset, device: imageset.images[:, :1].contiguous())
    torch.manual_seed(0)
    assert torch.equal(data.augment_batch(grey, idx, tf, device="cpu"), host)


def test_constants_are_copied_to_a_device_once():
    first = augment.constant((0.5, 2.0), "cpu")
    assert augment.constant([0.5, 2.0], torch.device("cpu")) is first and first.tolist() == [0.5, 2.0]


def test_inputs_go_to_cuda_pinned_and_without_blocking(monkeypatch):
    """lib.device.to_device: a CPU tensor bound for CUDA is pinned, then copied with non_blocking=True (a pageable copy
    would make the host wait for the GPU's queue); for the CPU it is a plain .to (CUDA is faked: no GPU here)."""
    from lib.device import to_device

    calls = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append("pin") or self)
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *args, **kwargs: calls.append((args, kwargs)) or self)
    x = torch.arange(3)
    assert to_device(x, "cuda:1") is x
    assert calls == ["pin", ((torch.device("cuda", 1),), {"non_blocking": True})]
    calls.clear()
    to_device(x, "cpu")
    assert calls == [((torch.device("cpu"),), {})]
