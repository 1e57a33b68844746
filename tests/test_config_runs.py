"""Settings resolution (presets, overrides, types, unknown keys) and run-folder I/O."""

import json

import pytest

from lib import config, runs
from lib.paths import PARAMS_DIR


def test_smoke_preset_is_the_dataclass_defaults():
    assert config.resolve("smoke").to_dict() == config.Settings().to_dict()


def test_preset_then_overrides_win():
    s = config.resolve("mini", loss="mse", mse_c=10, steps=7)
    assert (s.preset, s.loss, s.mse_c, s.steps) == ("mini", "mse", 10.0, 7)
    assert s.d_model == 128  # from mini.yaml
    assert s.objective_params() == {"c": 10.0}
    assert s.default_config_name() == "mse_c10"


@pytest.mark.parametrize(("preset", "key", "value"), [
    ("mini", "steps", 30),  # = the smoke default, mini says 400
    ("paper", "lars", False),  # = the smoke default, paper says True
    ("mini", "pretrained", "auto"),  # = the smoke default, mini says source
    ("mini", "small_stem", True),  # = the smoke default, mini says False
])
def test_every_explicit_value_applies_even_one_equal_to_a_default(preset, key, value):
    assert config.preset_values(preset)[key] != value and config.DEFAULTS[key] == value
    assert getattr(config.resolve(preset, **{key: value}), key) == value


def test_papermill_injected_values_apply_and_untouched_parameters_take_the_preset():
    mini_steps = config.preset_values("mini")["steps"]
    cell = {"preset": "smoke", "steps": 30, "lars": False, "seed": 0}  # the parameters cell as written (smoke)
    injected = '# Parameters\npreset = "mini"\nsteps = 30\n'  # papermill -p preset mini -p steps 30
    s = config.from_notebook({**cell, "preset": "mini", "In": ["", "preset = 'smoke'\nsteps = 30", injected]})
    assert (s.preset, s.steps) == ("mini", 30)
    s = config.from_notebook({**cell, "preset": "mini", "In": ["", '# Parameters\npreset = "mini"\n']})
    assert s.steps == mini_steps  # not passed: the preset's value
    s = config.from_notebook({**cell, "preset": "mini", "steps": 12, "In": []})  # edited in JupyterLab
    assert s.steps == 12
    assert config.injected_names(["x = 1", '# Parameters\nloss = "focal"\nseed = 2\n']) == {"loss", "seed"}


def test_loss_is_the_setting_objective_its_alias_and_focal_resolves_to_bce_focal():
    said = []
    s = config.resolve("smoke", loss="focal", say=said.append)
    assert (s.loss, s.objective_params()) == ("bce_focal", {"gamma": 3.0, "k": 10.0})
    assert said == ["loss 'focal' resolves to 'bce_focal' (the sigmoid focal loss, BCE x (1 - p_t)^focal_gamma, "
                    "focal_gamma 3 by default)"]
    said.clear()
    assert config.resolve("smoke", objective="ce", say=said.append).loss == "ce"
    assert said == ["setting 'objective' is the alias of 'loss': loss = 'ce'"]
    with pytest.raises(KeyError, match="both 'loss' and its alias 'objective' are set"):
        config.resolve("smoke", objective="ce", loss="bce")


def test_paper_preset_holds_the_spec_numbers():
    s = config.resolve("paper")
    assert (s.image_size, s.d_model, s.n_heads, s.n_blocks, s.mlp_ratio) == (224, 768, 12, 4, 4)
    assert (s.batch_pairs, s.steps, s.lr, s.weight_decay, s.warmup_steps) == (4096, 33000, 0.008, 5e-4, 500)
    assert s.lars and s.lars_trust == 1e-3 and s.neg_to_pos_ratio == 20 and s.head_hidden == 256


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("lr", "1e-3", 1e-3),  # YAML reads 1e-3 as a string
    ("steps", "12", 12),
    ("lars", "true", True),
    ("amp", "False", False),
    ("benchmarks", ["a", "b"], "a,b"),
])
def test_types_are_converted(key, value, expected):
    assert getattr(config.resolve("smoke", **{key: value}), key) == expected


def test_unknown_key_is_an_error_naming_it():
    with pytest.raises(KeyError, match=r"unknown setting\(s\) \['nmae'\]"):
        config.resolve("smoke", nmae=3)


@pytest.mark.parametrize(("key", "value", "match"), [
    ("steps", "many", r"setting 'steps' must be int"),
    ("steps", 2.5, r"setting 'steps' must be int"),
    ("lars", "maybe", r"setting 'lars' must be bool"),
    ("loss", "l2", r"loss='l2' is not one of"),
    ("n_heads", 5, r"d_model=64 must be divisible by n_heads=5"),
    ("lr", -1, r"setting lr=-1.0 must be > 0: fix it in the YAML or the -p flag"),
    ("mse_c", 0, r"setting mse_c=0.0 must be > 0"),
    ("hinge_delta", 0, r"setting hinge_delta=0.0 must be > 0"),
    ("weight_decay", -1e-4, r"setting weight_decay=-0.0001 must be >= 0"),
    ("momentum", 1.0, r"momentum=1.0 must be in \[0, 1\)"),
    ("lr", "nan", r"setting lr=nan must be > 0"),
    ("images_per_class", 1, r"images_per_class=1 must be >= 2"),
])
def test_bad_values_get_one_line_errors(key, value, match):
    with pytest.raises(ValueError, match=match):
        config.resolve("smoke", **{key: value})


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'huge': choose one of smoke, mini, paper"):
        config.resolve("huge")


def test_from_notebook_reads_parameters_and_rejects_typos():
    namespace = {"preset": "smoke", "loss": "ce", "seed": 3, "In": [], "get_ipython": print, "json": json}
    s = config.from_notebook(namespace)
    assert (s.loss, s.seed) == ("ce", 3)
    with pytest.raises(KeyError, match="lsos"):
        config.from_notebook({**namespace, "lsos": "ce"})


def test_every_objective_file_resolves():
    from lib.paths import PARAMS_DIR

    files = sorted((PARAMS_DIR / "objectives").glob("*.yaml"))
    assert len(files) == 11  # ECCV ReSeND + the 10 configurations of the ICIAP table
    names = {config.resolve("smoke", **config.load_yaml(f)).default_config_name() for f in files}
    assert {"mse_c1", "mse_c10", "mse_c50", "hinge_d1", "hinge_d0.1", "hinge_d0.01", "bce", "ce"} <= names


def test_run_dir_layout(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "OUTPUTS_DIR", tmp_path)
    s = config.resolve("smoke", loss="hinge", hinge_delta=0.01, seed=2, study="st")
    assert s.resolved_run_dir() == tmp_path / "st" / "hinge_d0.01__seed2"
    run_dir = runs.prepare(s, "train")
    assert config.load_yaml(run_dir / "params.yaml")["hinge_delta"] == 0.01
    env = json.loads((run_dir / "env.json").read_text())
    assert env["torch"].startswith("2.14.1") and "commit" in env


def test_metrics_merge_and_stay_plain(tmp_path):
    import numpy as np

    runs.write_metrics(tmp_path, {"auroc__glyph_printed": np.float32(0.75)})
    merged = runs.write_metrics(tmp_path, {"r2": 0.5})
    assert merged == {"auroc__glyph_printed": 0.75, "r2": 0.5}
    assert json.loads((tmp_path / "metrics.json").read_text()) == merged
    assert runs.is_finished(tmp_path)
    with pytest.raises(ValueError, match="flat snake_case"):
        runs.write_metrics(tmp_path, {"AUROC": 1.0})


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "x.bin"
    runs.atomic_write_bytes(target, b"old")

    with pytest.raises(TypeError):
        runs.atomic_write_bytes(target, object())  # fails mid-write
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_paths_are_shown_relative_to_the_repository_only_when_inside_it(tmp_path):
    """The sweep prints the files it wrote with `paths.shown`: RESEND_OUTPUTS may point outside the repository
    (a scratch disk), where `Path.relative_to` raised after a finished sweep."""
    from lib import paths

    assert paths.shown(paths.REPO_ROOT / "outputs" / "mini" / "tables.md") == "outputs/mini/tables.md"
    assert paths.shown(tmp_path / "mini" / "tables.md") == str(tmp_path / "mini" / "tables.md")
