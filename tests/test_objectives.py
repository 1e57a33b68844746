"""lib.objectives: hand-worked values for every registry entry, stable gradients, registry-wide properties."""

import math

import pytest
import torch

from lib import DIFFERENT, SAME, config, objectives
from lib.paths import PARAMS_DIR

LN2 = math.log(2)  # 0.693147
LN3 = math.log(3)  # sigma(ln 3) = 3/4


def one_logit(*xs):
    return torch.tensor([[x] for x in xs], dtype=torch.float64)


def targets(*ts):
    return torch.tensor(ts)


# (objective name, params, output, target, expected mean loss) -- arithmetic in the comments
HAND_WORKED = [
    # bce at x=0: -ln(1/2) = ln 2 for either label
    ("bce", {}, one_logit(0.0, 0.0), targets(SAME, DIFFERENT), LN2),
    # bce x=2 same: ln(1 + e^-2) = ln 1.135335 = 0.126928; different: ln(1 + e^2) = 2.126928; mean 1.126928
    ("bce", {}, one_logit(2.0, 2.0), targets(SAME, DIFFERENT), (0.126928 + 2.126928) / 2),
    # mse c=1 at x=0: y = 2*(1/2) - 1 = 0 -> same (0 - 1)^2 = 1, different (0 + 1)^2 = 1
    ("mse", {"c": 1.0}, one_logit(0.0, 0.0), targets(SAME, DIFFERENT), 1.0),
    # mse c=1 at x=ln 3: y = 2*(3/4) - 1 = 0.5 -> same (0.5 - 1)^2 = 0.25, different (0.5 + 1)^2 = 2.25; mean 1.25
    ("mse", {"c": 1.0}, one_logit(LN3, LN3), targets(SAME, DIFFERENT), 1.25),
    # mse c=10 at x=ln3/10: c*x = ln 3 -> y = 0.5 -> same 0.25
    ("mse", {"c": 10.0}, one_logit(LN3 / 10), targets(SAME), 0.25),
    # bce_focal gamma=3 at x=0: p_t = 1/2 whatever k -> (1/2)^3 * ln 2 = 0.125 * 0.693147 = 0.0866434
    ("bce_focal", {"gamma": 3.0}, one_logit(0.0), targets(SAME), 0.125 * LN2),
    # k=1 is the plain focal BCE. x=ln 3 same: p_t = 3/4 -> (1/4)^3 * -ln(3/4) = 0.015625 * 0.2876821 = 0.00449503
    ("bce_focal", {"gamma": 3.0, "k": 1.0}, one_logit(LN3), targets(SAME), 0.015625 * 0.2876821),
    # k=1, x=ln 3 different: p_t = 1/4 -> (3/4)^3 * ln 4 = 0.421875 * 1.386294 = 0.584843
    ("bce_focal", {"gamma": 3.0, "k": 1.0}, one_logit(LN3), targets(DIFFERENT), 0.421875 * 1.3862944),
    # k=10 (default), x=ln 3 / 10: focal p_t = sigma(10 x) = sigma(ln 3) = 3/4 -> weight (1/4)^3 = 0.015625;
    # BCE on x: sigma(ln 3 / 10) = 1 / (1 + 3^-0.1) = 1 / (1 + 1/1.1161232) = 0.5274377, -ln = 0.6397245
    # -> 0.015625 * 0.6397245 = 0.00999570
    ("bce_focal", {}, one_logit(LN3 / 10), targets(SAME), 0.015625 * 0.6397245),
    # k=10, same x, different pair: weight (3/4)^3 = 0.421875; BCE -ln(1 - 0.5274377) = -ln 0.4725623 = 0.7495857
    # -> 0.421875 * 0.7495857 = 0.3162315; with the x=ln 3 / 10 same pair above: mean (0.0099957 + 0.3162315) / 2
    ("bce_focal", {"gamma": 3.0, "k": 10.0}, one_logit(LN3 / 10, LN3 / 10), targets(SAME, DIFFERENT),
     (0.015625 * 0.6397245 + 0.421875 * 0.7495857) / 2),
    # ce logits [0, 0]: p = 1/2 -> ln 2
    ("ce", {}, torch.zeros(1, 2, dtype=torch.float64), targets(SAME), LN2),
    # ce logits [0, ln 3]: softmax = [1/4, 3/4]; same -> -ln .75 = 0.287682, different -> ln 4 = 1.386294
    ("ce", {}, torch.tensor([[0.0, LN3]] * 2, dtype=torch.float64), targets(SAME, DIFFERENT), (0.2876821 + 1.3862944) / 2),
    # ce_focal gamma=3, [0, ln 3] same: (1/4)^3 * 0.287682 = 0.00449503; different: (3/4)^3 * ln 4 = 0.584843
    ("ce_focal", {"gamma": 3.0}, torch.tensor([[0.0, LN3]] * 2, dtype=torch.float64), targets(SAME, DIFFERENT),
     (0.015625 * 0.2876821 + 0.421875 * 1.3862944) / 2),
    # ce_focal gamma=0 is plain ce: [0, 0] -> ln 2
    ("ce_focal", {"gamma": 0.0}, torch.zeros(1, 2, dtype=torch.float64), targets(DIFFERENT), LN2),
    # hinge delta=1, x=0.3: same max(0, 1 - 0.3) = 0.7, different max(0, 1 + 0.3) = 1.3; mean 1.0
    ("hinge", {"delta": 1.0}, one_logit(0.3, 0.3), targets(SAME, DIFFERENT), 1.0),
    # hinge delta=1, x=2 same: max(0, 1 - 2) = 0
    ("hinge", {"delta": 1.0}, one_logit(2.0), targets(SAME), 0.0),
    # hinge delta=0.1, x=-0.5 different: max(0, 0.1 - 0.5) = 0; x=0.05 same: 0.1 - 0.05 = 0.05; mean 0.025
    ("hinge", {"delta": 0.1}, one_logit(-0.5, 0.05), targets(DIFFERENT, SAME), 0.025),
]


@pytest.mark.parametrize("name,params,output,target,expected", HAND_WORKED)
def test_hand_worked_values(name, params, output, target, expected):
    loss = objectives.make(name, **params).loss(output, target)
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_every_registry_entry_has_a_hand_worked_value():
    assert {case[0] for case in HAND_WORKED} == set(objectives.REGISTRY)


def test_hand_worked_loss_curves():
    p = torch.tensor([0.5, 0.75], dtype=torch.float64)
    # bce / ce: -ln p -> ln 2, 0.287682
    assert torch.allclose(objectives.make("bce").loss_curve(p), torch.tensor([LN2, 0.2876821], dtype=torch.float64))
    # mse c=1: 4 (1 - p)^2 -> 1, 0.25
    assert torch.allclose(objectives.make("mse", c=1).loss_curve(p), torch.tensor([1.0, 0.25], dtype=torch.float64))
    # hinge delta=1: max(0, 1 - logit p) -> 1, 1 - ln 3 = -0.0986 -> 0
    assert torch.allclose(objectives.make("hinge").loss_curve(p), torch.tensor([1.0, 0.0], dtype=torch.float64))
    # bce_focal k=1: -(1 - p)^3 ln p -> (1/2)^3 ln 2 = 0.0866434, (1/4)^3 * 0.287682 = 0.00449503
    assert torch.allclose(objectives.make("bce_focal", k=1).loss_curve(p),
                          torch.tensor([0.125 * LN2, 0.015625 * 0.2876821], dtype=torch.float64))
    # bce_focal k=10 at p = sigma(ln 3 / 10) = 0.5274377: focal weight (1 - sigma(ln 3))^3 = 1/64, -ln p = 0.6397245
    p_compressed = torch.tensor([0.5, 0.5274377161638806], dtype=torch.float64)
    assert torch.allclose(objectives.make("bce_focal").loss_curve(p_compressed),
                          torch.tensor([0.125 * LN2, 0.015625 * 0.6397245], dtype=torch.float64))


def test_bce_focal_takes_k_from_the_settings():
    assert objectives.make("bce_focal").params == {"gamma": 3.0, "k": 10.0}  # the reference's default compression
    settings = config.resolve("smoke", loss="bce_focal", focal_k=2.5, focal_gamma=2.0)
    assert settings.objective_params() == {"gamma": 2.0, "k": 2.5}
    assert config.resolve("smoke", loss="ce_focal", focal_k=2.5).objective_params() == {"gamma": 3.0}


def correct_class_output(name, p, target):
    """A head output whose probability of the correct class is p (the loss_curve mapping)."""
    x = torch.log(p) - torch.log1p(-p)
    sign = 1.0 if target == SAME else -1.0
    if objectives.REGISTRY[name].out_dim == 1:
        return (sign * x)[:, None]
    same_logit = sign * x
    return torch.stack([torch.zeros_like(x), same_logit], dim=1)


@pytest.mark.parametrize("name", sorted(objectives.REGISTRY))
@pytest.mark.parametrize("target", [SAME, DIFFERENT])
def test_registry_properties(name, target):
    """For every objective: loss falls as the correct class gains, similarity is monotone, curve decreasing."""
    obj = objectives.make(name)
    p = torch.linspace(0.02, 0.98, 48, dtype=torch.float64)  # 48 points: none at the p = 1/2 tie
    out = correct_class_output(name, p, target)
    per_example = obj.per_example_loss(out, torch.full((len(p),), target))
    # loss_curve(p) is exactly the loss of an example whose correct-class probability is p
    assert torch.allclose(per_example, obj.loss_curve(p), atol=1e-9)
    diffs = per_example.diff()
    assert (diffs <= 1e-12).all() and (diffs < -1e-6).any(), "loss must decrease as the correct class gains"
    # similarity: a larger "same" logit (x, or the CE same logit) means more similar
    same_logit = torch.linspace(-5, 5, 21, dtype=torch.float64)
    if obj.out_dim == 1:
        sims = obj.similarity(same_logit[:, None])
    else:
        sims = obj.similarity(torch.stack([torch.zeros_like(same_logit), same_logit], dim=1))
    assert sims.shape == (21,) and (sims.diff() > 0).all()
    assert obj.predicts_same(out).tolist() == [(pi > 0.5) == (target == SAME) for pi in p.tolist()]
    curve = obj.loss_curve(torch.linspace(0.01, 0.99, 99, dtype=torch.float64))
    assert torch.isfinite(curve).all() and (curve.diff() <= 1e-12).all() and curve[0] > curve[-1]


@pytest.mark.parametrize("name", sorted(objectives.REGISTRY))
def test_gradients_finite_at_extreme_logits(name):
    obj = objectives.make(name)
    for scale in (50.0, 1e4):
        values = torch.tensor([scale, -scale, scale, -scale], dtype=torch.float32)
        out = values[:, None].repeat(1, obj.out_dim).clone()
        if obj.out_dim == 2:
            out[:, 0] = -out[:, 0]
        out.requires_grad_(True)
        loss = obj.loss(out, torch.tensor([SAME, SAME, DIFFERENT, DIFFERENT]))
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(out.grad).all(), (name, scale, loss, out.grad)


def test_out_dims_and_errors():
    assert objectives.make("ce").out_dim == 2 and objectives.make("hinge").out_dim == 1
    assert objectives.make("mse", c=10).params == {"c": 10.0}
    with pytest.raises(KeyError, match="unknown objective"):
        objectives.make("triplet")
    with pytest.raises(KeyError, match="unknown"):
        objectives.make("bce", gamma=2)


OBJECTIVE_FILES = sorted(p.name for p in (PARAMS_DIR / "objectives").glob("*.yaml"))


def test_the_iciap_configurations_are_present():
    assert len(OBJECTIVE_FILES) >= 10


@pytest.mark.parametrize("filename", OBJECTIVE_FILES)
def test_objective_file_resolves(filename):
    values = config.load_yaml(PARAMS_DIR / "objectives" / filename)
    settings = config.resolve("smoke", **values)
    obj = objectives.make(settings.loss, **settings.objective_params())
    assert obj.name == values["loss"]
    file_params = {"mse_c": "c", "focal_gamma": "gamma", "focal_k": "k", "hinge_delta": "delta"}
    for key, param in file_params.items():
        if key in values:
            assert obj.params[param] == float(values[key])
    loss = obj.loss(torch.zeros(2, obj.out_dim), torch.tensor([SAME, DIFFERENT]))
    assert torch.isfinite(loss)


# ----------------------------------------------------------------------------- the configuration registry
@pytest.mark.parametrize("name", list(objectives.CONFIGS))
def test_every_configuration_has_its_file_with_its_settings(name):
    path = PARAMS_DIR / "objectives" / f"{name}.yaml"
    assert path.exists(), f"{name} is in lib.objectives.CONFIGS but {path.name} is missing"
    assert config.load_yaml(path) == objectives.config_settings(name)


def test_every_configuration_file_is_in_the_registry():
    assert sorted(p.removesuffix(".yaml") for p in OBJECTIVE_FILES) == sorted(objectives.CONFIGS)


def test_the_study_table_order_and_paper_values_come_from_the_registry():
    from lib import summary

    assert summary.CONFIG_ORDER == ["resend_eccv", "mse_c1", "mse_c10", "mse_c50", "bce", "bce_focal", "ce", "ce_focal",
                                    "hinge_d1", "hinge_d0.1", "hinge_d0.01"]
    assert summary.PAPER_R2 == {"mse_c1": .520, "mse_c10": .111, "mse_c50": .015, "bce": .592, "bce_focal": .441,
                                "ce": .592, "ce_focal": .362, "hinge_d1": .487, "hinge_d0.1": .251, "hinge_d0.01": .101}
    assert config.CHOICES["loss"] == tuple(objectives.REGISTRY)


@pytest.mark.parametrize("name", list(objectives.CONFIGS))
def test_a_configuration_names_its_run_folder_and_its_settings_shape_the_weights(name):
    from lib import train

    values = objectives.config_settings(name)
    settings = config.resolve("smoke", **values)
    if not objectives.CONFIGS[name][1].model:  # resend_eccv (mse c=1 + fc head) is named by its file, not derived
        assert settings.default_config_name() == name
    assert set(values) <= set(train.TRAIN_KEYS), "a setting a configuration changes must be one that shapes the weights"
    assert settings.objective_params() == {p: float(v) for p, v in objectives.CONFIGS[name][1].params.items()}


def test_objective_parameters_live_in_settings_fields():
    for name, spec in objectives.REGISTRY.items():
        assert set(spec.settings) == set(spec.defaults), name
        assert set(spec.settings.values()) <= set(config.FIELDS), name
        for param, field_name in spec.settings.items():  # the Settings default is the objective's default
            assert config.DEFAULTS[field_name] == spec.defaults[param], (name, param)
# ----------------------------------------------------------------------------- loss shapes (05_loss_shapes)
def test_loss_curves_values_and_autograd_gradients_by_hand():
    p = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
    curves = objectives.loss_curves({"bce": objectives.make("bce"), "mse_c1": objectives.make("mse", c=1.0),
                                     "hinge_d1": objectives.make("hinge", delta=1.0)}, p)
    assert list(curves.columns) == ["config", "p", "loss", "grad"] and len(curves) == 3 * 3
    bce, mse, hinge = (curves[curves["config"] == c] for c in ("bce", "mse_c1", "hinge_d1"))
    # bce: L = -ln p, dL/dp = -1/p -> ln 4, ln 2, ln 4/3 and -4, -2, -4/3
    assert bce["loss"].tolist() == pytest.approx([math.log(4), LN2, math.log(4 / 3)])
    assert bce["grad"].tolist() == pytest.approx([-4.0, -2.0, -4 / 3])
    # mse c=1: L = 4 (1 - p)^2, dL/dp = -8 (1 - p) -> 2.25, 1, .25 and -6, -4, -2
    assert mse["loss"].tolist() == pytest.approx([2.25, 1.0, 0.25]) and mse["grad"].tolist() == pytest.approx([-6, -4, -2])
    # hinge d=1 at p=.5: logit 0, L = 1, dL/dp = -1 / (p (1 - p)) = -4; at p=.75 logit ln 3 = 1.0986 > 1: flat 0
    assert hinge["loss"].tolist()[1:] == pytest.approx([1.0, 0.0]) and hinge["grad"].tolist()[1:] == pytest.approx([-4, 0])
    assert curves["p"].tolist()[:3] == [0.25, 0.5, 0.75]


def test_curve_grid_and_table_interpolate_the_hand_worked_ratios():
    grid = objectives.curve_grid()
    assert grid.dtype == torch.float64 and len(grid) == 199 and float(grid[0]) == 0.005 and float(grid[-1]) == pytest.approx(0.995)
    curves = objectives.loss_curves({"mse_c1": objectives.make("mse", c=1.0), "bce": objectives.make("bce")})
    table = objectives.curve_table(curves, 0.5, 0.9)
    assert list(table.columns) == ["loss_at_p0.5", "loss_at_p0.9", "grad_ratio_0.9_over_0.5"]
    assert list(table.index) == ["bce", "mse_c1"]  # sorted by config
    # bce: -ln .9 = .105361; |dL/dp| ratio (1/.9) / (1/.5) = .5/.9; mse c=1: 4 * .1^2 = .04, ratio 8 * .1 / (8 * .5) = .2
    assert table.at["bce", "loss_at_p0.5"] == pytest.approx(LN2) and table.at["bce", "loss_at_p0.9"] == pytest.approx(0.105361, rel=1e-5)
    assert table.at["bce", "grad_ratio_0.9_over_0.5"] == pytest.approx(0.5 / 0.9, rel=1e-6)
    assert table.at["mse_c1", "loss_at_p0.9"] == pytest.approx(0.04) and table.at["mse_c1", "grad_ratio_0.9_over_0.5"] == pytest.approx(0.2)
    # between grid points the table interpolates linearly: p = .375 on the grid (.25, .5) of bce is (ln 4 + ln 2) / 2
    coarse = objectives.loss_curves({"bce": objectives.make("bce")}, torch.tensor([0.25, 0.5], dtype=torch.float64))
    mid = objectives.curve_table(coarse, 0.25, 0.375)
    assert mid.at["bce", "loss_at_p0.375"] == pytest.approx(1.5 * LN2) and mid.at["bce", "grad_ratio_0.375_over_0.25"] == pytest.approx(0.75)


def test_rising_curves_flags_only_a_loss_that_rises_with_p():
    import pandas as pd

    curves = pd.DataFrame({"config": ["flat"] * 3 + ["falls"] * 3 + ["rises"] * 3, "p": [0.1, 0.5, 0.9] * 3,
                           "loss": [1.0, 1.0, 1.0, 3.0, 2.0, 0.0, 1.0, 2.0, 0.0]})
    assert objectives.rising_curves(curves) == ["rises"]
    every = {name: objectives.make(name) for name in objectives.REGISTRY}
    assert objectives.rising_curves(objectives.loss_curves(every)) == []  # every registry loss falls in p
