"""Settings resolution (presets, overrides, types, unknown keys) and run-folder I/O."""

import json

import pytest

from lib import config, runs
from lib.paths import PARAMS_DIR


def test_smoke_preset_is_the_dataclass_defaults():
    assert config.resolve("smoke").to_dict() == config.Settings().to_dict()


def test_preset_then_overrides_win():
    s = config.resolve("mini", objective="mse", mse_c=10, steps=7)
    assert (s.preset, s.objective, s.mse_c, s.steps) == ("mini", "mse", 10.0, 7)
    assert s.d_model == 128  # from mini.yaml
    assert s.objective_params() == {"c": 10.0}
    assert s.default_config_name() == "mse_c10"


def test_override_equal_to_smoke_default_means_take_the_preset():
    # papermill passes every parameter; one left at its smoke default must not undo the preset.
    mini_steps = config.load_yaml(PARAMS_DIR / "presets" / "mini.yaml")["steps"]
    assert mini_steps != config.DEFAULTS["steps"]
    assert config.resolve("mini", steps=config.DEFAULTS["steps"]).steps == mini_steps


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
    ("objective", "l2", r"objective='l2' is not one of"),
    ("n_heads", 5, r"d_model=64 must be divisible by n_heads=5"),
    ("images_per_class", 1, r"images_per_class=1 must be >= 2"),
])
def test_bad_values_get_one_line_errors(key, value, match):
    with pytest.raises(ValueError, match=match):
        config.resolve("smoke", **{key: value})


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'huge': choose one of smoke, mini, paper"):
        config.resolve("huge")


def test_from_notebook_reads_parameters_and_rejects_typos():
    namespace = {"preset": "smoke", "objective": "ce", "seed": 3, "In": [], "get_ipython": print, "json": json}
    s = config.from_notebook(namespace)
    assert (s.objective, s.seed) == ("ce", 3)
    with pytest.raises(KeyError, match="objectve"):
        config.from_notebook({**namespace, "objectve": "ce"})


def test_every_objective_file_resolves():
    from lib.paths import PARAMS_DIR

    files = sorted((PARAMS_DIR / "objectives").glob("*.yaml"))
    assert len(files) == 11  # ECCV ReSeND + the 10 configurations of the ICIAP table
    names = {config.resolve("smoke", **config.load_yaml(f)).default_config_name() for f in files}
    assert {"mse_c1", "mse_c10", "mse_c50", "hinge_d1", "hinge_d0.1", "hinge_d0.01", "bce", "ce"} <= names


def test_run_dir_layout(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "OUTPUTS_DIR", tmp_path)
    s = config.resolve("smoke", objective="hinge", hinge_delta=0.01, seed=2, study="st")
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
