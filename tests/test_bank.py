"""Training regime: optimiser settings (adamw, cosine, grad clip), the frozen-backbone feature bank, held-out pair AUROC."""

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision

from lib import SAME, bank, checkpoints, config, features, objectives, pair_eval, pretrain, runs, train
from lib import model as model_lib
from lib.backbone import resnet18_features
from lib.data import TensorImageSet

TINY = dict(d_model=16, n_heads=2, n_blocks=1, head_hidden=8, image_size=16, pretrained="none", neg_to_pos_ratio=3,
            batch_pairs=8, images_per_class=2, steps=6, warmup_steps=2, lr=1e-3, device="cpu")
FROZEN = dict(train_backbone=False, bank_views=3, optimizer="adamw", schedule="cosine", grad_clip=1.0)


@pytest.fixture(scope="module")
def source():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8, generator=gen)
    return TensorImageSet(images, np.repeat(np.arange(4), 4))


@pytest.fixture(autouse=True)
def private_bank_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(bank, "CACHE", tmp_path / "features")
    monkeypatch.setattr(bank, "_LOADED", {})


def tiny(tmp_path, name="run", **overrides):
    return config.resolve("smoke", **{**TINY, "run_dir": str(tmp_path / name), **overrides})


# ----------------------------------------------------------------------------- optimiser settings
def test_defaults_keep_sgd_constant_no_clip_finetune():
    s = config.resolve("smoke")
    assert (s.optimizer, s.schedule, s.grad_clip, s.train_backbone) == ("sgd", "constant", 0.0, True)
    assert isinstance(train.make_optimizer(torch.nn.Linear(2, 2), s), torch.optim.SGD)
    assert {"optimizer", "schedule", "grad_clip", "train_backbone", "bank_views"} <= set(train.TRAIN_KEYS)


def test_adamw_has_the_decay_groups_and_skips_frozen_parameters():
    settings = config.resolve("smoke", optimizer="adamw", weight_decay=0.05, lr=1e-4)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3), torch.nn.Linear(3, 2))
    net[2].requires_grad_(False)
    opt = train.make_optimizer(net, settings)
    assert isinstance(opt, torch.optim.AdamW)
    assert [len(g["params"]) for g in opt.param_groups] == [1, 3]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0] and opt.param_groups[0]["lr"] == 1e-4


def test_cosine_schedule_warms_up_then_decays_to_zero_at_steps():
    factor = train.lr_factor(config.resolve("smoke", schedule="cosine", warmup_steps=2, steps=6))
    assert [factor(s) for s in range(7)] == pytest.approx([0.5, 1.0, 1.0, 0.8535534, 0.5, 0.1464466, 0.0])
    constant = train.lr_factor(config.resolve("smoke", warmup_steps=2, steps=6))
    assert [constant(s) for s in range(7)] == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize(("key", "value", "match"), [
    ("grad_clip", -1.0, r"grad_clip=-1.0 must be >= 0"),
    ("optimizer", "adam", r"optimizer='adam' is not one of"),
    ("schedule", "linear", r"schedule='linear' is not one of"),
    ("bank_views", 0, r"bank_views=0 must be >= 1"),
])
def test_invalid_optimiser_settings(key, value, match):
    with pytest.raises(ValueError, match=match):
        config.resolve("smoke", **{key: value})


def test_lars_needs_sgd():
    with pytest.raises(ValueError, match="lars wraps SGD"):
        config.resolve("smoke", lars=True, optimizer="adamw")


def test_grad_clip_bounds_the_gradient_norm_before_the_step(tmp_path, source, monkeypatch):
    norms = []
    step = torch.optim.AdamW.step

    def record(self, *args, **kwargs):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", record)
    train.train(tiny(tmp_path, optimizer="adamw", grad_clip=1e-3, lr=1e-4), tmp_path / "clip", source)
    assert len(norms) == 6 and max(norms) <= 1e-3 * (1 + 1e-5)


# ----------------------------------------------------------------------------- frozen backbone + bank
def count_backbone_calls(monkeypatch) -> list:
    calls = []
    forward = torchvision.models.ResNet.forward

    def counted(self, x):
        calls.append(len(x))
        return forward(self, x)

    monkeypatch.setattr(torchvision.models.ResNet, "forward", counted)
    return calls


def test_frozen_training_reuses_the_bank_and_leaves_the_backbone_untouched(tmp_path, source, monkeypatch):
    calls = count_backbone_calls(monkeypatch)
    settings = tiny(tmp_path, "first", **FROZEN)
    history = train.train(settings, runs.prepare(settings, "train"), source)
    assert sum(calls) == (3 + 1) * len(source)  # K train views + 1 eval view, each image once; no step runs it
    assert np.isfinite(history["loss"]).all() and history["loss"].iloc[0] != history["loss"].iloc[-1]
    assert runs.update_env(settings.resolved_run_dir(), {})["train_regime"] == "frozen backbone, feature bank of 3 views"
    assert len(list((tmp_path / "features").glob("*.pt"))) == 1

    monkeypatch.setattr(bank, "_LOADED", {})  # as in a new process: the bank comes from disk
    calls.clear()
    second = tiny(tmp_path, "second", loss="hinge", **FROZEN)
    train.train(second, second.resolved_run_dir(), source)
    assert calls == []  # same recipe: no source image goes through the backbone again

    state = torch.load(checkpoints.checkpoint_path(settings.resolved_run_dir()), weights_only=False)
    train.seed_everything(settings.seed)
    initial, _ = model_lib.build(settings, objectives.make("bce").out_dim, pretrain.backbone_weights(settings))
    for key, value in initial.backbone.state_dict().items():  # weights and BN statistics, bit for bit
        assert torch.equal(state["model"][f"backbone.{key}"], value), key
    trained = {k: v for k, v in state["model"].items() if not k.startswith("backbone.")}
    assert any(not torch.equal(v, initial.state_dict()[k]) for k, v in trained.items())  # r and c did train
    net, _, _ = checkpoints.load_trained(settings.resolved_run_dir())  # the full model, as 03/04 load it
    assert net.backbone is not None


def test_finetune_regime_is_recorded(tmp_path, source):
    settings = tiny(tmp_path, steps=2)
    train.train(settings, runs.prepare(settings, "train"), source)
    assert runs.update_env(settings.resolved_run_dir(), {})["train_regime"] == "finetune"


def test_frozen_resume_after_a_kill_is_bit_identical(tmp_path, source, train_until_killed):
    straight = tiny(tmp_path, "straight", checkpoint_every=3, **FROZEN)
    expected = train.train(straight, straight.resolved_run_dir(), source)
    killed = tiny(tmp_path, "killed", checkpoint_every=3, **FROZEN)
    train_until_killed(killed, source, at_step=3)
    resumed = train.train(killed, killed.resolved_run_dir(), source)
    a = torch.load(checkpoints.checkpoint_path(straight.resolved_run_dir()), weights_only=False)["model"]
    b = torch.load(checkpoints.checkpoint_path(killed.resolved_run_dir()), weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    columns = [c for c in expected.columns if c not in train.TIMING_COLUMNS]
    pd.testing.assert_frame_equal(resumed[columns], expected[columns], check_exact=True)


def test_bank_is_independent_of_the_run_seed_and_views_are_a_prefix(source):
    backbone = resnet18_features(small_stem=False)
    four = bank.feature_bank(backbone, source, config.resolve("smoke", image_size=16, bank_views=4, seed=0))
    again = bank.feature_bank(backbone, source, config.resolve("smoke", image_size=16, bank_views=4, seed=7))
    assert again is four and four.train.shape == (4, 16, 512) and four.eval.shape == (16, 512)
    two = bank.feature_bank(backbone, source, config.resolve("smoke", image_size=16, bank_views=2))
    assert two.path != four.path and torch.equal(two.train, four.train[:2]) and torch.equal(two.eval, four.eval)
    assert not torch.equal(four.train[0], four.train[1])  # views differ
    other = TensorImageSet(source.images.flip(-1), source.labels)
    assert bank.recipe(backbone, other, config.resolve("smoke"))["source"] != four.recipe["source"]


def test_a_gpu_bank_is_named_apart_from_the_cpu_bank(source):
    """A bank computed on a GPU (its float path, bf16 with amp) must never be served to a CPU run, nor the reverse;
    the CPU bank keeps the name it had before devices entered the recipe (no "device" key)."""
    backbone = resnet18_features(small_stem=False)
    settings = config.resolve("smoke", image_size=16)
    cpu = bank.recipe(backbone, source, settings)
    assert "device" not in cpu and bank.recipe(backbone, source, settings, "cpu") == cpu
    gpu = bank.recipe(backbone, source, settings, torch.device("cuda", 1))
    assert gpu["device"] == f"cuda, amp {bool(settings.amp)}" and bank.bank_path(gpu) != bank.bank_path(cpu)
    no_amp = bank.recipe(backbone, source, config.resolve("smoke", image_size=16, amp=not settings.amp), "cuda")
    assert bank.bank_path(no_amp) != bank.bank_path(gpu)


# ----------------------------------------------------------------------------- held-out pair AUROC
def test_held_out_split_is_fixed_per_class_and_disjoint():
    labels = np.repeat(np.arange(5), [13, 13, 30, 3, 4])
    mask = pair_eval.held_out_mask(labels)
    assert np.array_equal(mask, pair_eval.held_out_mask(labels))
    assert [int(mask[labels == c].sum()) for c in range(5)] == [2, 2, 3, 0, 2]  # >= 2 (a positive), 10 %, none < 4
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (len(labels), 3, 8, 8), dtype=torch.uint8, generator=gen)
    train_set, held = pair_eval.split_source(TensorImageSet(images, labels))
    assert len(train_set) + len(held) == len(labels) and not set(train_set.ids) & set(held.ids)


def test_held_out_pairs_are_one_to_k():
    labels = np.repeat(np.arange(6), 2)
    triples = pair_eval.held_out_pairs(labels, neg_to_pos_ratio=4)
    assert len(triples) == 12 * 5 and (triples[:, 2] == SAME).sum() == 12
    same = triples[:, 2] == SAME
    assert (labels[triples[same, 0]] == labels[triples[same, 1]]).all() and (triples[same, 0] != triples[same, 1]).all()
    assert (labels[triples[~same, 0]] != labels[triples[~same, 1]]).all()
    assert np.array_equal(triples, pair_eval.held_out_pairs(labels, neg_to_pos_ratio=4))


class _DotModel(torch.nn.Module):
    """relate = sign * (<fa, fb> - 0.5): with one-hot class features, > 0 exactly for same pairs when sign = 1."""

    def __init__(self, sign=1.0):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.sign = sign

    def relate(self, fa, fb):
        return self.sign * ((fa * fb).sum(1, keepdim=True) - 0.5)


def test_pair_metrics_of_a_perfect_and_an_inverted_model():
    labels = np.repeat(np.arange(5), 2)
    held = TensorImageSet(torch.zeros(10, 3, 8, 8, dtype=torch.uint8), labels)
    feats = torch.nn.functional.one_hot(torch.as_tensor(labels), 5).float()
    settings = config.resolve("smoke", neg_to_pos_ratio=3)
    metrics = pair_eval.pair_metrics(_DotModel(), objectives.make("bce"), held, settings, features=feats)
    assert metrics == {"pair_auroc": 1.0, "pair_acc_same": 1.0, "pair_acc_diff": 1.0, "pair_count": 40.0}
    inverted = pair_eval.pair_metrics(_DotModel(-1.0), objectives.make("bce"), held, settings, features=feats)
    assert inverted["pair_auroc"] == 0.0 and inverted["pair_acc_same"] == 0.0


def test_pair_metrics_extract_features_with_the_trained_model(tmp_path, source):
    settings = tiny(tmp_path, steps=2)
    train.train(settings, settings.resolved_run_dir(), source)
    net, objective, _ = checkpoints.load_trained(settings.resolved_run_dir())
    metrics = pair_eval.pair_metrics(net, objective, source, settings)
    assert 0.0 <= metrics["pair_auroc"] <= 1.0 and metrics["pair_count"] == 16 * 4


def test_frozen_runs_share_evaluation_features_on_disk(tmp_path, source, monkeypatch):
    """A frozen run's support/test features go to a disk memo keyed by the backbone's content; a second run with
    the same backbone (another objective, another seed) evaluates without a backbone pass, with the same scores."""
    from lib import evaluate, paths
    from lib.data import Benchmark

    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    named = TensorImageSet(source.images, source.labels, ids=[f"font:{i}" for i in range(len(source))])  # content ids
    bench = Benchmark("tiny", "intra", named.subset(np.flatnonzero(named.labels < 2)), named, 2, "d", "d")
    monkeypatch.setattr("lib.data.load_benchmark", lambda name, settings: bench)
    results = []
    for name, loss in (("first", "bce"), ("second", "hinge")):
        settings = tiny(tmp_path, name, loss=loss, **FROZEN)
        train.train(settings, settings.resolved_run_dir(), source)
        net, objective, trained = checkpoints.load_trained(settings.resolved_run_dir())
        memo = features.FeatureMemo.for_frozen_backbone(net.backbone, trained.image_size)
        metrics, scores = evaluate.evaluate_benchmarks((net, objective), trained, ["tiny"], memo=memo)
        memo.save()
        results.append((memo.computed, memo.hits, scores["tiny"]))
    (computed_first, _, first), (computed_second, hits_second, second) = results
    assert computed_first == len(source) and computed_second == 0 and hits_second == len(bench.support) + len(source)
    assert first.is_known.tolist() == second.is_known.tolist()
    assert memo.path.parent == tmp_path / "cache" / "features"
