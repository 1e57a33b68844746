"""lib.model: shapes, order invariance, representations, pretrained-weight lookup (never downloads)."""

import pytest
import torch
import torchvision

from lib import config, model


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    settings = config.resolve("smoke", d_model=16, n_heads=2, head_hidden=8, pretrained="none")
    net, info = model.build(settings, out_dim=2)
    return net.eval(), info


def test_shapes_and_info(tiny):
    net, info = tiny
    images = torch.randn(3, 3, 16, 16)
    feats = net.features(images)
    assert feats.shape == (3, 512)
    out, rep = net.relate(feats, feats.flip(0), return_repr=True)
    assert out.shape == (3, 2) and rep.shape == (3, 8)
    assert info["pretrained"] == "random init" and info["parameters"] > 11_000_000


def test_swapping_the_images_does_not_change_the_output(tiny):
    net, _ = tiny
    a, b = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        ab, ba = net(a, b), net(b, a)
        fa, fb = net.features(a), net.features(b)
        _, rep_ab = net.relate(fa, fb, return_repr=True)
        _, rep_ba = net.relate(fb, fa, return_repr=True)
    assert torch.allclose(ab, ba, atol=1e-5) and torch.allclose(rep_ab, rep_ba, atol=1e-5)
    assert not torch.allclose(ab[0], ab[1])  # different pairs give different outputs (the test can fail)


def test_mlp_representation_is_pre_relu_and_fc_head_gives_v():
    torch.manual_seed(0)
    net = model.ReSeND(out_dim=1, d_model=16, n_heads=2, n_blocks=1, head="mlp", head_hidden=8, small_stem=True)
    fa, fb = torch.randn(5, 512), torch.randn(5, 512)
    out, rep = net.relate(fa, fb, return_repr=True)
    assert (rep < 0).any()  # before the ReLU
    assert torch.allclose(out, net.head_out(torch.relu(rep)))
    fc = model.ReSeND(out_dim=1, d_model=16, n_heads=2, n_blocks=1, head="fc", small_stem=True)
    out, rep = fc.relate(fa, fb, return_repr=True)
    assert rep.shape == (5, 16) and torch.allclose(out, fc.head_out(rep))


def test_small_stem_keeps_resolution():
    big = model.resnet18_features(small_stem=False)
    small = model.resnet18_features(small_stem=True)
    assert big.conv1.kernel_size == (7, 7) and small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, torch.nn.Identity)


def test_pretrained_lookup_and_loading(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torchhome"))
    monkeypatch.setattr(model.Path, "home", lambda: tmp_path / "home")
    assert model.find_pretrained("auto") is None and model.find_pretrained("none") is None
    with pytest.raises(FileNotFoundError, match="no such weight file"):
        model.find_pretrained(str(tmp_path / "missing.pth"))
    # a stand-in weight file with torchvision's key layout (random values: nothing is downloaded)
    weights = tmp_path / "torchhome" / "hub" / "checkpoints" / model.RESNET18_FILE
    weights.parent.mkdir(parents=True)
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), weights)
    assert model.find_pretrained("auto") == weights
    settings = config.resolve("smoke", d_model=16, n_heads=2, small_stem=False, pretrained="auto")
    net, info = model.build(settings, out_dim=1)
    assert info["pretrained"].startswith("imagenet")
    assert torch.equal(net.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert torch.equal(net.backbone.conv1.weight, reference.conv1.weight)
    small, info = model.build(config.resolve("smoke", d_model=16, n_heads=2, pretrained=str(weights)), out_dim=1)
    assert "small stem" in info["pretrained"]
    assert torch.equal(small.backbone.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)
