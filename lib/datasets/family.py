"""The one interface of a dataset family: each family module (glyphs, emoji, fashion, real) defines one `Family`,
and `lib.data` looks families up by name in its registry (`data.FAMILIES`) instead of branching on them.

Adding a family = a module with its builders and its `FAMILY`, one entry in `data.FAMILIES`, its tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from lib.datasets.imagesets import Benchmark, ImageSet

OUTLIER_SEED = 0  # the fixed-seed subsample of an outlier pool larger than its cap


@dataclass(frozen=True)
class Family:
    """A dataset family. `benchmarks`: name -> {kind, domain_support, domain_test[, real]} in table order;
    `benchmark(name, settings) -> Benchmark`; `source(settings) -> ImageSet`, the relational training set of each
    dataset in `datasets` (None: the family has none, `no_source` says why); `outlier_images(settings) ->
    ImageSet`, the images it lends other families' benchmarks as auxiliary outliers (None: it lends none);
    `outlier_family`: the family whose images its own benchmarks get; `mirror_invariant` False where a mirror image
    is another class (never flipped in training); `file_backed`: read from settings.data_root (its benchmarks
    depend on it and are skipped without it)."""

    name: str
    benchmarks: dict[str, dict]
    benchmark: Callable[[str, object], Benchmark]
    outlier_family: str
    mirror_invariant: bool = True
    file_backed: bool = False
    datasets: tuple[str, ...] = ()
    source: Callable[[object], ImageSet] | None = None
    no_source: str = ""
    outlier_images: Callable[[object], ImageSet] | None = None

    def outliers(self, settings, max_images: int) -> ImageSet:
        """This family's outlier images, at most `max_images` of them (a fixed-seed subsample, in index order)."""
        if self.outlier_images is None:
            raise ValueError(f"dataset family {self.name!r} lends no outlier images: pick a family that does "
                             "(its Family.outlier_images)")
        pool = self.outlier_images(settings)
        if len(pool) > max_images:
            keep = np.random.default_rng(OUTLIER_SEED).choice(len(pool), max_images, replace=False)
            pool = pool.subset(np.sort(keep))
        return pool

    def load_source(self, dataset: str, settings) -> ImageSet:
        """The relational training set of `dataset` (one of `datasets`); a family without one raises `no_source`."""
        if self.source is None:
            raise ValueError(self.no_source or f"dataset {dataset!r} has no relational training set: pick another")
        return self.source(settings)
