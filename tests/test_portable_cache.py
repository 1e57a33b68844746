"""The rendered caches travel: a machine with `.cache/glyph_*` and `.cache/emoji_*` but without the Debian fonts and
the npm packages (a GPU node) loads every glyph and emoji benchmark and the source sets from them, identical, and
trains on them."""

from __future__ import annotations

import hashlib

import pytest

from lib import config, data, pretrain, train
from lib.datasets import emoji, glyphs


def fingerprint(imageset) -> str:
    return hashlib.sha1(imageset.images.contiguous().numpy().tobytes() + imageset.labels.tobytes()
                        + "\n".join(imageset.ids).encode()).hexdigest()


def everything(settings) -> dict[str, str]:
    out = {}
    for name in data.benchmark_names("glyph,emoji"):
        bench = data.load_benchmark(name, settings)
        out[name] = fingerprint(bench.support) + fingerprint(bench.test) + str(bench.num_known)
    for dataset in ("glyph", "emoji"):
        out[f"source_{dataset}"] = fingerprint(data.load_source(config.resolve("smoke", dataset=dataset)))
    out["char_plan"] = pretrain.recipe(settings)["char_plan"]
    return out


def forget(monkeypatch) -> None:
    """Drop every in-process memo of the data layer, so the next load reads the files again."""
    for module in (glyphs, emoji, data):
        monkeypatch.setattr(module, "_MEMO", {})
    glyphs._plan_fingerprint.cache_clear()


def test_the_caches_load_without_fonts_and_npm_packages(tmp_path, monkeypatch):
    settings = config.resolve("smoke")
    try:
        with_sources = everything(settings)  # renders the caches if needed; writes the plan and index files
    except FileNotFoundError as error:
        pytest.skip(f"data sources not installed here: {error}")
    forget(monkeypatch)
    monkeypatch.setattr(glyphs, "FONT_ROOT", tmp_path / "no-fonts")
    monkeypatch.setattr(emoji, "NPM_DIR", tmp_path / "no-npm")
    with pytest.raises(FileNotFoundError, match="font file"):
        glyphs.check_fonts(glyphs.FONTS)  # the fonts are really gone
    with pytest.raises(FileNotFoundError, match="npm package"):
        emoji.check_packages()
    assert everything(settings) == with_sources
    # and a smoke training runs on the glyph source read from the caches alone (issue 23: a GPU node without fonts)
    run = config.resolve("smoke", pretrained="none", steps=2, log_every=1, device="cpu", run_dir=str(tmp_path / "run"))
    history = train.train(run, run.resolved_run_dir(), data.load_source(run))
    assert list(history["step"]) == [1, 2] and history["loss"].notna().all()
    glyphs._plan_fingerprint.cache_clear()
    monkeypatch.setattr(glyphs, "CACHE_DIR", tmp_path / "empty-cache")  # neither fonts nor a plan file: the hint
    with pytest.raises(FileNotFoundError, match="copy .cache/glyph_plan"):
        glyphs.plan_fingerprint()
