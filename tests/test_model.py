"""lib.model: shapes, order invariance, representations, pretrained-weight lookup (never downloads)."""

import pytest
import torch
import torchvision

from lib import backbone, config, model, pretrain


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    settings = config.resolve("smoke", d_model=16, n_heads=2, head_hidden=8, pretrained="none")
    net, info = model.build(settings, 2, pretrain.backbone_weights(settings))
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


def test_the_last_block_on_the_label_token_alone_equals_the_full_block():
    """relate runs its last block for the label token only (lib.model.label_token_block): the output, the
    representation and the gradients must equal those of the full nn.TransformerEncoderLayer stack, in train and
    eval mode (eval mode takes PyTorch's fused fast path for the full block)."""
    torch.manual_seed(0)
    net = model.ReSeND(out_dim=1, d_model=32, n_heads=4, n_blocks=2, head_hidden=16, small_stem=True)
    with torch.no_grad():  # give the label token and biases non-trivial values
        for p in net.parameters():
            if p.requires_grad and p.dim() < 2:
                p.add_(0.1 * torch.randn_like(p))
    fa, fb = torch.randn(7, 512), torch.randn(7, 512)

    def full_stack():
        tokens = net.project(torch.stack([fa, fb], dim=1))
        x = torch.cat([net.label_token.expand(len(tokens), -1, -1), tokens], dim=1)
        for block in net.blocks:
            x = block(x)
        rep = net.head_hidden(net.norm(x[:, 0]))
        return net.head_out(torch.relu(rep)), rep

    for mode in ("train", "eval"):
        getattr(net, mode)()
        with torch.no_grad():
            out, rep = net.relate(fa, fb, return_repr=True)
            ref_out, ref_rep = full_stack()
        assert torch.allclose(out, ref_out, atol=1e-6) and torch.allclose(rep, ref_rep, atol=1e-6), mode
    net.train()
    grads = []
    for fn in (lambda: net.relate(fa, fb), lambda: full_stack()[0]):
        net.zero_grad()
        fn().square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]))
    assert grads[0].abs().max() > 0 and torch.allclose(grads[0], grads[1], atol=1e-6)


def _relational_weights(net):
    """(name, weight, bias) of every Linear of r and c, and the attention qkv Parameter pair."""
    found = []
    for name, sub in [("project", net.project), ("head_hidden", net.head_hidden), ("head_out", net.head_out)]:
        found.append((name, sub.weight, sub.bias))
    for i, block in enumerate(net.blocks):
        found.append((f"blocks.{i}.qkv", block.self_attn.in_proj_weight, block.self_attn.in_proj_bias))
        for name in ("self_attn.out_proj", "linear1", "linear2"):
            sub = block.get_submodule(name)
            found.append((f"blocks.{i}.{name}", sub.weight, sub.bias))
    return found


def _head_output_std(reference_init: bool, monkeypatch) -> float:
    """Std of the head output on unit-scale random features, reference init or PyTorch's defaults."""
    with monkeypatch.context() as patch:
        if not reference_init:
            patch.setattr(model.ReSeND, "init_relational", lambda self: None)
        torch.manual_seed(0)
        net = model.ReSeND(out_dim=1, d_model=64, n_heads=4, n_blocks=2, head_hidden=32, small_stem=True)
    torch.manual_seed(1)
    with torch.no_grad():
        return net.relate(torch.randn(256, 512), torch.randn(256, 512)).std().item()


def test_relational_module_and_head_get_the_timm_vit_init(monkeypatch):
    torch.manual_seed(0)
    net = model.ReSeND(out_dim=1, d_model=64, n_heads=4, n_blocks=2, head_hidden=32, small_stem=True)
    weights = _relational_weights(net)
    assert len(weights) == 3 + 2 * 4  # project, head_hidden, head_out + (qkv, out_proj, linear1, linear2) per block
    for name, weight, bias in weights:
        # the sample std of n normal draws has a relative spread of 1/sqrt(2n): allow 5 of them (+1% slack)
        assert abs(weight.std().item() - 0.02) <= 0.02 * (5 / (2 * weight.numel()) ** 0.5 + 0.01), name
        assert weight.abs().max().item() < 0.02 * 6, name  # trunc-normal: nothing in the far tails
        assert bias is None or torch.count_nonzero(bias) == 0, name
    assert net.head_out.bias is None  # ICIAP head: last layer has no bias
    assert abs(net.label_token.std().item() - 0.02) <= 0.02 * (5 / (2 * 64) ** 0.5 + 0.01)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 2 * 2 + 1  # norm1, norm2 per block + final norm
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)
    # the backbone keeps torchvision's kaiming-normal (fan_out) init: std sqrt(2 / (64 * 3 * 3)) = .059
    assert abs(net.backbone.layer1[0].conv1.weight.std().item() - (2 / 576) ** 0.5) < 0.003
    # PyTorch's defaults give a head output ~15x wider on these features (measured: .168 vs .011)
    reference, pytorch_default = _head_output_std(True, monkeypatch), _head_output_std(False, monkeypatch)
    assert reference < 0.05 and pytorch_default > 5 * reference


def test_fc_head_gets_the_same_init():
    torch.manual_seed(0)
    net = model.ReSeND(out_dim=2, d_model=64, n_heads=4, n_blocks=1, head="fc", small_stem=True)
    assert abs(net.head_out.weight.std().item() - 0.02) <= 0.02 * (5 / (2 * 128) ** 0.5 + 0.01)
    assert torch.count_nonzero(net.head_out.bias) == 0


def test_small_stem_keeps_resolution():
    big = backbone.resnet18_features(small_stem=False)
    small = backbone.resnet18_features(small_stem=True)
    assert big.conv1.kernel_size == (7, 7) and small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, torch.nn.Identity)


def test_pretrained_lookup_and_loading(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torchhome"))
    monkeypatch.setattr(backbone.Path, "home", lambda: tmp_path / "home")
    with pytest.warns(UserWarning, match=r"pretrained=auto: no resnet18-f37072fd.pth in .*RANDOM init"):
        assert backbone.find_pretrained("auto") is None  # the fallback is said, in one line
    assert backbone.find_pretrained("none") is None
    with pytest.raises(FileNotFoundError, match="no such weight file"):
        backbone.find_pretrained(str(tmp_path / "missing.pth"))
    # a stand-in weight file with torchvision's key layout (random values: nothing is downloaded)
    weights = tmp_path / "torchhome" / "hub" / "checkpoints" / backbone.RESNET18_FILE
    weights.parent.mkdir(parents=True)
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), weights)
    assert backbone.find_pretrained("auto") == weights
    settings = config.resolve("smoke", d_model=16, n_heads=2, small_stem=False, pretrained="auto")
    net, info = model.build(settings, 1, pretrain.backbone_weights(settings))
    assert info["pretrained"].startswith("imagenet")
    assert torch.equal(net.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert torch.equal(net.backbone.conv1.weight, reference.conv1.weight)
    small_settings = config.resolve("smoke", d_model=16, n_heads=2, pretrained=str(weights))
    small, info = model.build(small_settings, 1, pretrain.backbone_weights(small_settings))
    assert "small stem" in info["pretrained"]
    assert torch.equal(small.backbone.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)


def test_pretrained_imagenet_needs_the_hub_file(tmp_path, monkeypatch):
    """pretrained=imagenet: torchvision's IMAGENET1K_V1 file from the torch hub cache, or one line naming the file
    and the folder (nothing is downloaded); with the file present its tensors are the ones loaded."""
    hub = tmp_path / "torchhome" / "hub" / "checkpoints"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torchhome"))
    monkeypatch.setattr(backbone.Path, "home", lambda: tmp_path / "home")
    assert backbone.RESNET18_FILE == "resnet18-f37072fd.pth"
    with pytest.raises(FileNotFoundError) as err:
        backbone.find_pretrained("imagenet")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"pretrained=imagenet: no resnet18-f37072fd.pth in {hub}: put torchvision's "
                              "ResNet18_Weights.IMAGENET1K_V1 file there")
    settings = config.resolve("smoke", d_model=16, n_heads=2, small_stem=False, pretrained="imagenet")
    with pytest.raises(FileNotFoundError, match="pretrained=imagenet: no resnet18-f37072fd.pth"):
        pretrain.backbone_weights(settings)
    hub.mkdir(parents=True)
    torch.manual_seed(3)
    fake = torchvision.models.resnet18(weights=None)  # random weights saved under the hub's file name
    torch.save(fake.state_dict(), hub / "resnet18-f37072fd.pth")
    assert backbone.find_pretrained("imagenet") == hub / "resnet18-f37072fd.pth"
    net, info = model.build(settings, 1, pretrain.backbone_weights(settings))
    assert info["pretrained"] == f"imagenet ({hub / 'resnet18-f37072fd.pth'})"
    assert torch.equal(net.backbone.layer3[0].conv1.weight, fake.layer3[0].conv1.weight)
    assert torch.equal(net.backbone.bn1.running_var, fake.bn1.running_var)
