"""lib.pretrain: the source-pretrained backbone (pretrained=source) is built once per recipe, cached, and loaded."""

import dataclasses
import json

import pytest
import torch

from lib import config, model, pretrain, supervised

TINY = dict(pretrained="source", pretrain_classes=10, pretrain_epochs=2, image_size=16, d_model=16, n_heads=2,
            head_hidden=8)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrain, "CACHE", tmp_path / "pretrained")
    return tmp_path / "pretrained"


def test_built_once_then_loaded_into_resend(cache, monkeypatch):
    settings = config.resolve("smoke", **TINY)
    path = pretrain.source_backbone(settings, verbose=False)
    assert path.parent == cache and path.exists()
    meta = json.loads(path.with_suffix(".json").read_text())
    # glyph source: 10 characters x 13 printed fonts; batch 128 -> 1 step per epoch (last partial batch dropped)
    assert (meta["classes"], meta["images"], meta["steps"], meta["epochs"]) == (10, 130, 2.0, 2.0)
    assert meta["recipe"] == pretrain.recipe(settings) and 0.0 <= meta["fit_accuracy"] <= 1.0
    state = torch.load(path, weights_only=True)
    assert not any(k.startswith("fc.") for k in state) and "layer4.1.conv2.weight" in state

    def no_training(*args, **kwargs):
        raise AssertionError("the cached backbone must not be retrained")

    monkeypatch.setattr(supervised, "train_classifier", no_training)
    assert pretrain.source_backbone(settings, verbose=False) == path
    net, info = model.build(settings, 1, pretrain.backbone_weights(settings))
    assert info["pretrained"].startswith("source classifier (glyph)") and "conv1 random" not in info["pretrained"]
    assert torch.equal(net.backbone.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert torch.equal(net.backbone.conv1.weight, state["conv1.weight"])  # small stem trained here: loaded too


def test_one_backbone_per_recipe_shared_by_runs_and_seeds():
    settings = config.resolve("smoke", **TINY)
    same = dataclasses.replace(settings, seed=3, loss="hinge", steps=99, source_classes=7)
    assert pretrain.weight_path(same) == pretrain.weight_path(settings)
    for change in ({"pretrain_epochs": 3}, {"pretrain_classes": 11}, {"image_size": 24}, {"small_stem": False},
                   {"pretrain_lr": 0.05}, {"dataset": "emoji"}):
        assert pretrain.weight_path(dataclasses.replace(settings, **change)) != pretrain.weight_path(settings), change


def test_bad_pretrain_settings_are_rejected():
    with pytest.raises(ValueError, match="pretrained=source needs pretrain_epochs >= 1"):
        config.resolve("smoke", pretrained="source", pretrain_epochs=0)
    with pytest.raises(FileNotFoundError, match=r"no such weight file \(use auto, imagenet, none, source or an existing path\)"):
        sourcee = config.resolve("smoke", pretrained="sourcee", d_model=16, n_heads=2)
        model.build(sourcee, 1, pretrain.backbone_weights(sourcee))
