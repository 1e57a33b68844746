"""lib.stages: the set-up 03_evaluate and 04_r2 share, on a tiny trained run."""

import pytest

from lib import config, data, stages, train


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("stages") / "hinge_d0.1__seed0"
    cfg = config.resolve("smoke", run_dir=str(run_dir), device="cpu", d_model=16, n_heads=2, head_hidden=8,
                         image_size=16, steps=1, warmup_steps=1, source_classes=10, batch_pairs=42, pretrained="none",
                         loss="hinge", hinge_delta=0.1)
    train.train(cfg, run_dir, data.load_source(cfg))
    return run_dir


def test_open_trained_run_merges_model_from_the_run_and_evaluation_from_the_notebook(trained_run):
    requested = config.resolve("smoke", run_dir=str(trained_run), device="cpu", prototypes="knn", prototypes_k=5,
                               r2_pairs=84)  # its model fields (bce, default d_model) must not win
    run_dir, model, objective, cfg = stages.open_trained_run(requested, "evaluate")
    assert run_dir == trained_run and not model.training and objective.name == "hinge"
    assert objective.params == {"delta": 0.1}
    assert (cfg.d_model, cfg.image_size, cfg.loss, cfg.hinge_delta) == (16, 16, "hinge", 0.1)
    assert (cfg.prototypes, cfg.prototypes_k, cfg.r2_pairs, cfg.device) == ("knn", 5, 84, "cpu")
    recorded = config.load_yaml(trained_run / "params_evaluate.yaml")
    assert (recorded["d_model"], recorded["loss"], recorded["prototypes"]) == (16, "hinge", "knn")
    assert not (trained_run / "params_r2.yaml").exists()  # one stage records only its own parameters


def test_open_trained_run_without_a_checkpoint_records_nothing(tmp_path):
    requested = config.resolve("smoke", run_dir=str(tmp_path / "bce__seed0"), device="cpu")
    with pytest.raises(FileNotFoundError, match="no trained model in .*02_train"):
        stages.open_trained_run(requested, "r2")
    assert not (tmp_path / "bce__seed0").exists()


def test_a_refused_evaluation_keeps_the_recorded_parameters(trained_run):
    """Issue 21, case 8: 03 with an unknown benchmark overwrote params_evaluate.yaml before it refused."""
    stages.open_trained_run(config.resolve("smoke", run_dir=str(trained_run), device="cpu"), "evaluate")
    before = (trained_run / "params_evaluate.yaml").read_bytes()
    for benchmarks in ("nonexistent", "real"):  # unknown; only file-backed ones without a data_root
        requested = config.resolve("smoke", run_dir=str(trained_run), device="cpu", benchmarks=benchmarks,
                                   prototypes="knn")
        with pytest.raises(ValueError, match="unknown benchmark 'nonexistent'|selects no benchmark available"):
            stages.open_trained_run(requested, "evaluate")
        assert (trained_run / "params_evaluate.yaml").read_bytes() == before
